//! V* Bench in its original folder format: one folder per sub-task (`direct_attributes`,
//! `relative_position`), each holding `NAME.jpg` and `NAME.json` with
//! `{"target_object": [..], "bbox": [[x, y, w, h], ..], "question": "..", "options": [..]}`.
//!
//! The first option is the correct one. Presented in that order, "A" would always be right, so
//! the options are shuffled per item with a ChaCha8 RNG seeded by the FNV-1a hash of the item id
//! (`vstar/<folder>/<NAME>`): the same item gets the same order in every run, on every machine.

use crate::data::mcq::{McqItem, option_letter};
use crate::eval::ids::stable_hash;
use anyhow::Context;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct VstarJson {
    question: String,
    options: Vec<String>,
    #[serde(default)]
    target_object: serde_json::Value,
    #[serde(default)]
    bbox: serde_json::Value,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPG"];

/// The ways V* is downloaded. `craigwu/vstar_bench` holds both the sub-task folders and
/// `test_questions.jsonl`; `lmms-lab/vstar-bench` holds parquet files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Sub-task folders of `NAME.json` + image (`--bench vstar`).
    Folder,
    /// The Hugging Face test split as parquet: the file, or a folder searched for them.
    Parquet,
    /// The test split as `test_questions.jsonl` (this file).
    Jsonl(PathBuf),
}

/// The layouts `path` holds, in the order a loader preferring `Folder` (`--bench vstar`) or the
/// Hugging Face split (`--bench vstar-hf`) should try them; an error naming both when none fits.
pub fn layouts(path: &Path, prefer_folder: bool) -> anyhow::Result<Vec<Layout>> {
    let mut folder = vec![];
    let mut hf = vec![];
    if path.is_file() {
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => hf.push(Layout::Parquet),
            Some("jsonl") => hf.push(Layout::Jsonl(path.to_path_buf())),
            _ => {}
        }
    } else if path.is_dir() {
        let subs = sorted_entries(path)?;
        let has_items = |d: &Path| {
            sorted_entries(d)
                .is_ok_and(|v| v.iter().any(|p| p.extension().is_some_and(|e| e == "json")))
        };
        if subs.iter().any(|p| p.is_dir() && has_items(p)) {
            folder.push(Layout::Folder);
        }
        if super::parquet_rows::parquet_files(path).is_ok() {
            hf.push(Layout::Parquet);
        }
        let jsonl = path.join("test_questions.jsonl");
        if jsonl.is_file() {
            hf.push(Layout::Jsonl(jsonl));
        }
    } else {
        anyhow::bail!("{} does not exist", path.display());
    }
    anyhow::ensure!(
        !folder.is_empty() || !hf.is_empty(),
        "{} is not a V* download: expected sub-task folders of NAME.json + image \
         (`--bench vstar`), or the Hugging Face test split as parquet or test_questions.jsonl \
         (`--bench vstar-hf`)",
        path.display()
    );
    Ok(if prefer_folder {
        folder.into_iter().chain(hf).collect()
    } else {
        hf.into_iter().chain(folder).collect()
    })
}

/// Reads the folder layout ([`Layout::Folder`]).
pub fn load(root: &Path) -> anyhow::Result<Vec<McqItem>> {
    anyhow::ensure!(
        root.is_dir(),
        "{} is not a V* folder (expected sub-task folders inside)",
        root.display()
    );
    let mut items = vec![];
    for sub in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let category = sub
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for json in sorted_entries(&sub)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            items.push(load_item(&json, &category)?);
        }
    }
    anyhow::ensure!(
        !items.is_empty(),
        "{}: no sub-task folder holds NAME.json files",
        root.display()
    );
    Ok(items)
}

fn load_item(json: &Path, category: &str) -> anyhow::Result<McqItem> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let v: VstarJson = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a V* item JSON", json.display()))?;
    anyhow::ensure!(
        v.options.len() >= 2,
        "{}: needs at least 2 options, has {}",
        json.display(),
        v.options.len()
    );
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let image = IMAGE_EXTENSIONS
        .iter()
        .map(|e| json.with_extension(e))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no image {stem}.jpg/.jpeg/.png beside it",
                json.display()
            )
        })?;
    let image = std::path::absolute(&image)
        .with_context(|| format!("cannot make {} absolute", image.display()))?;

    let id = format!("vstar/{category}/{stem}");
    let mut order: Vec<usize> = (0..v.options.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stable_hash(&id)));
    let answer = order
        .iter()
        .position(|&i| i == 0)
        .map(option_letter)
        .unwrap_or('A');
    Ok(McqItem {
        id,
        images: vec![image.display().to_string()],
        question: v.question,
        options: order.iter().map(|&i| v.options[i].clone()).collect(),
        answer: answer.to_string(),
        category: category.to_string(),
        meta: serde_json::json!({ "target_object": v.target_object, "bbox_xywh": v.bbox }),
    })
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    v.sort();
    Ok(v)
}
