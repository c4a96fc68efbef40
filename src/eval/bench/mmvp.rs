//! MMVP: `Questions.csv` with columns `Index, Question, Options, Correct Answer`
//! (`Options` like "(a) Open (b) Closed", the answer like "(a)") and images
//! `MMVP Images/{Index}.jpg` (the hub download's folder name; `MMVP_Images/`, the authors'
//! spelling, is read too). Questions come in CLIP-blind pairs of consecutive indices
//! (1, 2), (3, 4), ...: each item's `meta.pair` is `(Index - 1) / 2`, which the summary uses for
//! MMVP's official pair accuracy (both questions of a pair right).

use super::images::existing_image;
use super::options::split_lettered;
use crate::data::mcq::McqItem;
use anyhow::Context;
use std::path::Path;

pub const CATEGORY: &str = "mmvp";

/// The image folder's names: the hub download's, then the authors' eval script's.
const IMAGE_FOLDERS: [&str; 2] = ["MMVP Images", "MMVP_Images"];

pub fn load(path: &Path) -> anyhow::Result<Vec<McqItem>> {
    let csv_path = if path.is_dir() {
        path.join("Questions.csv")
    } else {
        path.to_path_buf()
    };
    let base = csv_path.parent().unwrap_or(Path::new("."));
    anyhow::ensure!(
        csv_path.is_file(),
        "{} does not exist (MMVP: a folder holding Questions.csv and \"MMVP Images/\", or the CSV)",
        csv_path.display()
    );
    let image_folder = IMAGE_FOLDERS
        .iter()
        .find(|f| base.join(f).is_dir())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no image folder beside it (looked for {})",
                csv_path.display(),
                IMAGE_FOLDERS.map(|f| format!("\"{f}/\"")).join(", ")
            )
        })?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(&csv_path)
        .with_context(|| format!("cannot open {}", csv_path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header", csv_path.display()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no column {name:?} (header: {})",
                    csv_path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
    };
    let (c_index, c_question, c_options, c_answer) = (
        col("Index")?,
        col("Question")?,
        col("Options")?,
        col("Correct Answer")?,
    );

    let mut items = vec![];
    for (i, record) in reader.records().enumerate() {
        let what = format!("{}: row {}", csv_path.display(), i + 1);
        let record = record.with_context(|| format!("{what}: malformed CSV"))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let index: u32 = field(c_index)
            .parse()
            .with_context(|| format!("{what}: Index {:?} is not a number", field(c_index)))?;
        anyhow::ensure!(index >= 1, "{what}: Index must start at 1");
        let (_, options) = split_lettered(field(c_options)).ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: Options {:?} are not \"(a) .. (b) ..\"",
                field(c_options)
            )
        })?;
        let answer = field(c_answer)
            .trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
            .to_uppercase();
        let image = existing_image(&format!("{image_folder}/{index}.jpg"), base, &what)?;
        items.push(McqItem {
            id: format!("mmvp/{index}"),
            images: vec![image],
            question: field(c_question).to_string(),
            options,
            answer,
            category: CATEGORY.into(),
            meta: serde_json::json!({ "pair": (index - 1) / 2 }),
        });
    }
    Ok(items)
}
