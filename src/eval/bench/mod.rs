//! Benchmark loaders: each reads one format the benchmarks ship in into `McqItem`s whose images
//! are absolute paths (or `data:` URIs from the project's JSONL), ready for the runner.
//!
//! | format | what `path` is | category |
//! |---|---|---|
//! | `vstar` | V* folder: `direct_attributes/`, `relative_position/` with `NAME.jpg` + `NAME.json` | subfolder |
//! | `vstar-hf` | V* test split: a parquet file or folder of them, or `test_questions.jsonl` | `category` |
//! | `mmvp` | folder with `Questions.csv` and `MMVP Images/` or `MMVP_Images/` (or the CSV itself) | `mmvp` |
//!
//! V* is read from whatever layout the path holds ([`vstar::layouts`]): `vstar` prefers the
//! folder layout, `vstar-hf` the test split, and each falls back to the other.
//! | `blink` | a BLINK parquet file, or a folder searched for them (one per sub-task) | `sub_task` |
//! | `tsv` | a VLMEvalKit TSV (base64 images) | `category` |
//! | `jsonl` | the project's MCQ JSONL (`McqItem` per line) | `category` |

pub mod blink;
pub mod images;
pub mod jsonl;
pub mod mmvp;
pub mod options;
pub mod parquet_rows;
pub mod vlmeval_tsv;
pub mod vstar;
pub mod vstar_hf;

use crate::data::mcq::McqItem;
use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    /// V* Bench folder format (first option correct; options shuffled per item).
    Vstar,
    /// V* Bench Hugging Face test split (`question_id, image, text, label, category`).
    VstarHf,
    /// MMVP `Questions.csv` + `MMVP Images/` (or `MMVP_Images/`).
    Mmvp,
    /// BLINK per-sub-task parquet.
    Blink,
    /// VLMEvalKit TSV.
    Tsv,
    /// The project's MCQ JSONL.
    Jsonl,
}

/// Every file below the folder `dir`, sorted; hidden files and folders (a hub download's
/// `.cache/`) left out.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(dir.is_dir(), "{} does not exist", dir.display());
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let p = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Loads `path` in `format`. Images embedded in the files are written under `cache_dir`.
/// The items are validated (`validate`) before they are returned.
pub fn load(format: BenchFormat, path: &Path, cache_dir: &Path) -> anyhow::Result<Vec<McqItem>> {
    let items = match format {
        BenchFormat::Vstar | BenchFormat::VstarHf => {
            let prefer_folder = format == BenchFormat::Vstar;
            match vstar::layouts(path, prefer_folder)?.remove(0) {
                vstar::Layout::Folder => vstar::load(path)?,
                vstar::Layout::Parquet => {
                    vstar_hf::load_parquet(path, &images::ImageCache::new(cache_dir)?)?
                }
                vstar::Layout::Jsonl(file) => vstar_hf::load_jsonl(&file)?,
            }
        }
        BenchFormat::Mmvp => mmvp::load(path)?,
        BenchFormat::Blink => blink::load(path, &images::ImageCache::new(cache_dir)?)?,
        BenchFormat::Tsv => vlmeval_tsv::load(path, &images::ImageCache::new(cache_dir)?)?,
        BenchFormat::Jsonl => jsonl::load(path)?,
    };
    validate(&items, &path.display().to_string())?;
    Ok(items)
}

/// Checks what the runner relies on: at least one item, unique ids, 2 to 26 options, an answer
/// letter within them, a question.
pub fn validate(items: &[McqItem], source: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!items.is_empty(), "{source}: no items found");
    let mut seen = HashSet::new();
    for it in items {
        anyhow::ensure!(
            seen.insert(it.id.as_str()),
            "{source}: item id {:?} appears twice",
            it.id
        );
        anyhow::ensure!(
            (2..=26).contains(&it.options.len()),
            "{source}: item {:?} has {} options (need 2 to 26)",
            it.id,
            it.options.len()
        );
        anyhow::ensure!(
            it.answer_index().is_some(),
            "{source}: item {:?} has answer {:?}, not the letter of one of its {} options",
            it.id,
            it.answer,
            it.options.len()
        );
        anyhow::ensure!(
            !it.question.trim().is_empty(),
            "{source}: item {:?} has an empty question",
            it.id
        );
    }
    Ok(())
}

/// Keeps the items whose category is in `categories` (all when empty); errors on a requested
/// category no item has, listing those that exist.
pub fn filter_categories(
    items: Vec<McqItem>,
    categories: &[String],
) -> anyhow::Result<Vec<McqItem>> {
    if categories.is_empty() {
        return Ok(items);
    }
    let present: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i.category.as_str()).collect();
    for c in categories {
        anyhow::ensure!(
            present.contains(c.as_str()),
            "no items in category {c:?}; categories present: {}",
            present.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(items
        .into_iter()
        .filter(|i| categories.contains(&i.category))
        .collect())
}
