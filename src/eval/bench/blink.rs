//! BLINK: one parquet per sub-task (the hub layout is `<Sub_Task>/val-*.parquet`), rows with
//! `idx, question, choices[], answer ("(A)"), image_1..image_4` (images as `{bytes, path}`,
//! unused slots null) and `sub_task`, which becomes the category (the parent folder's name when
//! the column is missing).
//!
//! Pearl (and LVR) report the validation split on five sub-tasks only, `PEARL_SUBSETS`; pass them
//! to `pearl eval --categories` to reproduce that table, or load everything.

use super::images::ImageCache;
use super::parquet_rows::{for_each_row, parquet_files};
use crate::data::mcq::McqItem;
use std::path::Path;

/// The BLINK sub-tasks in Pearl's evaluation.
pub const PEARL_SUBSETS: [&str; 5] = [
    "Counting",
    "IQ_Test",
    "Jigsaw",
    "Relative_Reflectance",
    "Spatial_Relation",
];

const IMAGE_COLUMNS: [&str; 4] = ["image_1", "image_2", "image_3", "image_4"];

pub fn load(path: &Path, cache: &ImageCache) -> anyhow::Result<Vec<McqItem>> {
    let mut items = vec![];
    for file in parquet_files(path)? {
        let folder = file
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string());
        for_each_row(&file, |row| {
            let what = format!("{}: row {}", file.display(), row.number);
            let idx = row.required_text("idx")?;
            let category = match row.has("sub_task") {
                true => row.required_text("sub_task")?,
                false => folder.clone().unwrap_or_default(),
            };
            let id = format!("blink/{category}/{idx}");
            let mut images = vec![];
            for col in IMAGE_COLUMNS.iter().filter(|c| row.has(c)) {
                if let Some(bytes) = row.image_bytes(col)? {
                    images.push(cache.store(&id, images.len() + 1, &bytes, &what)?);
                }
            }
            anyhow::ensure!(
                !images.is_empty(),
                "{what}: no image in {}",
                IMAGE_COLUMNS.join(", ")
            );
            items.push(McqItem {
                id,
                images,
                question: row.required_text("question")?,
                options: row.text_list("choices")?,
                answer: row
                    .required_text("answer")?
                    .trim()
                    .trim_matches(|c| c == '(' || c == ')')
                    .to_string(),
                category,
                meta: serde_json::Value::Null,
            });
            Ok(())
        })?;
    }
    Ok(items)
}
