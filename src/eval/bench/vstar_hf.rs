//! V* Bench as published on the Hugging Face hub (test split): rows of `question_id`, `image`,
//! `text` (the question, then "(A) ..", "(B) .." lines, then the answer instruction), `label`
//! (the correct letter) and `category`. Read from the parquet files (images embedded as
//! `{bytes, path}`) or from `test_questions.jsonl` (image as a path relative to the file).
//! Options keep the published order: this variant's labels are already spread over letters.

use super::images::{ImageCache, existing_image};
use super::options::split_lettered;
use super::parquet_rows::{for_each_row, parquet_files};
use crate::data::mcq::McqItem;
use anyhow::Context;
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;

/// Reads the parquet files at `path` (a file or a folder searched for them).
pub fn load_parquet(path: &Path, cache: &ImageCache) -> anyhow::Result<Vec<McqItem>> {
    let mut items = vec![];
    for file in parquet_files(path)? {
        for_each_row(&file, |row| {
            let what = format!("{}: row {}", file.display(), row.number);
            let qid = row.required_text("question_id")?;
            let id = format!("vstar/{qid}");
            let bytes = row
                .image_bytes("image")?
                .ok_or_else(|| anyhow::anyhow!("{what}: no image"))?;
            let image = cache.store(&id, 1, &bytes, &what)?;
            items.push(item(
                id,
                image,
                &row.required_text("text")?,
                row.required_text("label")?,
                row.text("category")?.unwrap_or_default(),
                &what,
            )?);
            Ok(())
        })?;
    }
    Ok(items)
}

#[derive(Deserialize)]
struct JsonlRow {
    question_id: serde_json::Value,
    image: String,
    text: String,
    label: String,
    #[serde(default)]
    category: String,
}

/// Reads `test_questions.jsonl` (images relative to the file).
pub fn load_jsonl(path: &Path) -> anyhow::Result<Vec<McqItem>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut items = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let what = format!("{}: line {}", path.display(), i + 1);
        let line = line.with_context(|| format!("{what}: cannot read"))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: JsonlRow = serde_json::from_str(&line)
            .with_context(|| format!("{what}: not a V* question row"))?;
        let qid = match &r.question_id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let image = existing_image(&r.image, base, &what)?;
        items.push(item(
            format!("vstar/{qid}"),
            image,
            &r.text,
            r.label,
            r.category,
            &what,
        )?);
    }
    Ok(items)
}

fn item(
    id: String,
    image: String,
    text: &str,
    label: String,
    category: String,
    what: &str,
) -> anyhow::Result<McqItem> {
    let (question, options) = split_lettered(text).ok_or_else(|| {
        anyhow::anyhow!("{what}: text has no \"(A) .. (B) ..\" options: {text:?}")
    })?;
    Ok(McqItem {
        id,
        images: vec![image],
        question,
        options,
        answer: label.trim().to_string(),
        category,
        meta: serde_json::Value::Null,
    })
}
