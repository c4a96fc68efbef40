//! PixelReasoner SFT rows: `{"message_list":[{"role":..,"content":[{"text":..,"image":..,"video":..}]}]}`
//! from JSON, JSONL, or parquet (the column holds the list, nested or as a JSON string).
//! As the authors render it (`pearl/data.py`): the system turn is cut to its first
//! `len("You are a helpful assistant.")` characters (the dataset's lists the tools, `<tool_call>`
//! markup included); in every turn after the first user turn everything from `<tool_call>` on is
//! cut (the calls of assistant turns go to `meta.tool_calls`); within a turn images come before
//! text; the crops stay as images; rows with video are dropped (counted).

use crate::data::chat::{Message, Part, Role};
use crate::data::import::{
    ImportPaths, ImportReport, SYSTEM_PROMPT, Skip, check_image, run_rows, skip, split_tool_calls,
};
use crate::data::trajectory::{Meta, Trajectory, strip_tool_call_text};
use anyhow::Context;
use serde_json::Value;
use std::path::Path;

pub fn import(paths: &ImportPaths) -> anyhow::Result<ImportReport> {
    let rows = read_rows(&paths.input)?;
    run_rows(paths, rows, |i, v| convert(i, v, paths))
}

/// Rows as JSON objects, whatever the container.
fn read_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    if path.extension().is_some_and(|e| e == "parquet") {
        return read_parquet(path);
    }
    crate::data::import::read_json_rows(path)
}

fn read_parquet(path: &Path) -> anyhow::Result<Vec<Value>> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a parquet file", path.display()))?;
    let col = builder
        .schema()
        .index_of("message_list")
        .map_err(|_| anyhow::anyhow!("{}: no `message_list` column", path.display()))?;
    let mut rows = Vec::new();
    for batch in builder.build()? {
        let batch =
            batch.with_context(|| format!("{}: cannot read a record batch", path.display()))?;
        let array = batch.column(col);
        for i in 0..batch.num_rows() {
            let v = crate::data::import::arrow_json::value_at(array, i)
                .with_context(|| format!("{}: row {}", path.display(), rows.len()))?;
            // Some exports store the list as a JSON string.
            let v = match v {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                v => v,
            };
            rows.push(serde_json::json!({ "message_list": v }));
        }
    }
    Ok(rows)
}

fn convert(i: usize, row: Value, paths: &ImportPaths) -> Result<Trajectory, Skip> {
    let list = row
        .get("message_list")
        .and_then(Value::as_array)
        .ok_or_else(|| skip("malformed row", "no message_list list"))?;
    let mut messages = Vec::new();
    let mut calls = Vec::new();
    // The authors count turns by position (0 system, 1 first user); by role here, which is the
    // same on the dataset's rows and still right on a row without a system turn.
    let first_user = list
        .iter()
        .position(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    for (turn, m) in list.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            other => return Err(skip("unknown role", format!("message {turn}: {other:?}"))),
        };
        let items: Vec<Value> = match m.get("content") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::String(s)) => vec![serde_json::json!({ "text": s })],
            _ => {
                return Err(skip(
                    "malformed row",
                    format!("message {turn} has no content list"),
                ));
            }
        };
        let (mut images, mut texts) = (Vec::new(), Vec::new());
        for item in &items {
            if item.get("video").is_some_and(|v| !v.is_null()) {
                return Err(skip("video", format!("message {turn} holds a video")));
            }
            if let Some(img) = item.get("image").and_then(Value::as_str) {
                let path = if img.starts_with("data:") {
                    None
                } else {
                    Some(paths.images.join(img))
                };
                match path {
                    Some(p) => {
                        check_image(&p)?;
                        images.push(Part::Image {
                            image: paths.reference(&p),
                        });
                    }
                    None => images.push(Part::Image {
                        image: img.to_string(),
                    }),
                }
            }
            if let Some(text) = item.get("text").and_then(Value::as_str) {
                let text = if role == Role::System {
                    text.chars().take(SYSTEM_PROMPT.chars().count()).collect()
                } else if first_user.is_some_and(|u| turn > u) {
                    if role == Role::Assistant {
                        let (kept, found) = split_tool_calls(text, turn)?;
                        calls.extend(found);
                        kept
                    } else {
                        strip_tool_call_text(text).to_string()
                    }
                } else {
                    text.to_string()
                };
                if !text.trim().is_empty() {
                    texts.push(Part::Text { text });
                }
            }
        }
        let mut parts = images;
        parts.extend(texts);
        if parts.is_empty() {
            return Err(skip(
                "empty turn once the tool call is cut",
                format!("message {turn} ({})", role.as_str()),
            ));
        }
        messages.push(Message::new(role, parts));
    }
    let id = ["id", "qid", "question_id"]
        .iter()
        .find_map(|k| {
            row.get(*k).map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
        })
        .unwrap_or_else(|| format!("pixelreasoner-{i}"));
    let mut extra = serde_json::Map::new();
    extra.insert("source".into(), "pixelreasoner".into());
    Ok(Trajectory {
        id,
        messages,
        task: "pixelreasoner".into(),
        meta: Meta {
            tool_calls: calls,
            category: None,
            extra,
        },
    })
}
