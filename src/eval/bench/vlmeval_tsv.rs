//! VLMEvalKit's MCQ TSV (V* as `VStarBench`, HR-Bench, ...): columns `index, image, question,
//! A, B, C, D[, E..], answer[, category, hint, ...]`. `image` is base64, a Python-style list of
//! base64 strings for multi-image rows, or, as VLMEvalKit writes to save space, the `index` of an
//! earlier row whose image is the same. Options are the letter columns that are non-empty in the
//! row (pandas writes missing ones as empty). A non-empty `hint` is put before the question as
//! "Hint: ..", as VLMEvalKit's prompt does.

use super::images::ImageCache;
use crate::data::mcq::McqItem;
use anyhow::Context;
use base64::Engine;
use std::collections::HashMap;
use std::path::Path;

/// VLMEvalKit stores an image reference instead of the image when the field is this short.
const MAX_REFERENCE_LEN: usize = 64;

pub fn load(path: &Path, cache: &ImageCache) -> anyhow::Result<Vec<McqItem>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header", path.display()))?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        find(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no column {name:?} (header: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (c_index, c_image, c_question, c_answer) = (
        need("index")?,
        need("image")?,
        need("question")?,
        need("answer")?,
    );
    let (c_category, c_hint) = (find("category"), find("hint"));
    let letter_cols: Vec<usize> = (b'A'..=b'Z')
        .map_while(|l| find(&(l as char).to_string()))
        .collect();
    anyhow::ensure!(
        letter_cols.len() >= 2,
        "{}: needs option columns A, B, ..",
        path.display()
    );
    let bench = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "tsv".into());

    let mut images_by_index: HashMap<String, Vec<String>> = HashMap::new();
    let mut items = vec![];
    for (i, record) in reader.records().enumerate() {
        let what = format!("{}: row {}", path.display(), i + 1);
        let record = record.with_context(|| format!("{what}: malformed TSV"))?;
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let index = field(c_index).to_string();
        anyhow::ensure!(!index.is_empty(), "{what}: empty index");
        let id = format!("{bench}/{index}");

        let raw_image = field(c_image);
        let earlier = (raw_image.len() <= MAX_REFERENCE_LEN)
            .then(|| images_by_index.get(raw_image))
            .flatten();
        let images = match earlier {
            Some(earlier) => earlier.clone(),
            None => decode_images(raw_image, &what)?
                .iter()
                .enumerate()
                .map(|(k, bytes)| cache.store(&id, k + 1, bytes, &what))
                .collect::<anyhow::Result<_>>()?,
        };
        images_by_index.insert(index, images.clone());

        let options: Vec<String> = letter_cols
            .iter()
            .map(|&c| field(c).to_string())
            .take_while(|o| !o.is_empty() && o != "nan")
            .collect();
        let mut question = field(c_question).to_string();
        if let Some(hint) = c_hint.map(field).filter(|h| !h.is_empty() && *h != "nan") {
            question = format!("Hint: {hint}\n{question}");
        }
        items.push(McqItem {
            id,
            images,
            question,
            options,
            answer: field(c_answer).to_string(),
            category: c_category.map(field).unwrap_or("").to_string(),
            meta: serde_json::Value::Null,
        });
    }
    Ok(items)
}

fn decode_images(field: &str, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    anyhow::ensure!(!field.is_empty(), "{what}: empty image field");
    let parts: Vec<&str> = if field.starts_with('[') {
        // A Python list literal of base64 strings: base64 has no quotes or commas, so splitting
        // on them is exact.
        field
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
            .collect()
    } else {
        vec![field]
    };
    parts
        .iter()
        .enumerate()
        .map(|(k, p)| {
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .with_context(|| {
                    format!(
                        "{what}: image {} is neither base64 nor the index of an earlier row",
                        k + 1
                    )
                })
        })
        .collect()
}
