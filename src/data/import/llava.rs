//! LLaVA / ShareGPT rows: `{"id":..,"image":"x.jpg" | [..],"conversations":[{"from":"human|gpt|system","value":..}]}`.
//! `<image>` placeholders take the row's images in order (a row without placeholders gets its
//! images at the start of the first human turn); `<tool_call>` blocks in gpt turns (Mini-o3
//! cold-start style) are cut and kept as structured calls.

use crate::data::chat::{Message, Part, Role};
use crate::data::import::{
    ImportPaths, ImportReport, Skip, check_image, run_rows, skip, split_tool_calls,
};
use crate::data::trajectory::{Meta, Trajectory};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, alias = "images")]
    image: Option<serde_json::Value>,
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

pub fn import(paths: &ImportPaths) -> anyhow::Result<ImportReport> {
    let rows = crate::data::import::read_json_rows(&paths.input)?;
    run_rows(paths, rows, |i, v| convert(i, v, paths))
}

fn convert(i: usize, v: serde_json::Value, paths: &ImportPaths) -> Result<Trajectory, Skip> {
    let row: Row = serde_json::from_value(v).map_err(|e| skip("malformed row", e))?;
    let images: Vec<String> = match row.image {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => vec![s],
        Some(v) => {
            serde_json::from_value(v).map_err(|e| skip("malformed row", format!("image: {e}")))?
        }
    };
    if images.is_empty() {
        return Err(skip(
            "no image",
            "text-only row (the canonical format needs an image in the first user turn)",
        ));
    }
    let mut refs = Vec::new();
    for img in &images {
        let p = paths.images.join(img);
        check_image(&p)?;
        refs.push(paths.reference(&p));
    }
    let placeholders: usize = row
        .conversations
        .iter()
        .map(|t| t.value.matches("<image>").count())
        .sum();
    if placeholders != 0 && placeholders != refs.len() {
        return Err(skip(
            "image count mismatch",
            format!("{placeholders} <image> placeholders, {} images", refs.len()),
        ));
    }
    let mut next_image = refs.into_iter();
    let mut messages = Vec::new();
    let mut calls = Vec::new();
    for (turn, t) in row.conversations.iter().enumerate() {
        let role = match t.from.as_str() {
            "human" | "user" => Role::User,
            "gpt" | "assistant" => Role::Assistant,
            "system" => Role::System,
            other => return Err(skip("unknown role", format!("turn {turn}: {other:?}"))),
        };
        let mut text = t.value.clone();
        if role == Role::Assistant {
            let (kept, found) = split_tool_calls(&text, turn)?;
            calls.extend(found);
            text = kept;
        }
        let mut parts = Vec::new();
        if placeholders == 0
            && role == Role::User
            && !messages.iter().any(|m: &Message| m.role == Role::User)
        {
            parts.extend(next_image.by_ref().map(|image| Part::Image { image }));
        }
        for (k, piece) in text.split("<image>").enumerate() {
            if k > 0 {
                let image = next_image
                    .next()
                    .ok_or_else(|| skip("image count mismatch", "more placeholders than images"))?;
                parts.push(Part::Image { image });
            }
            if !piece.trim().is_empty() {
                parts.push(Part::Text {
                    text: piece.trim().to_string(),
                });
            }
        }
        if parts.is_empty() {
            return Err(skip("empty turn", format!("turn {turn} ({})", t.from)));
        }
        messages.push(Message::new(role, parts));
    }
    let id = row
        .id
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .unwrap_or_else(|| format!("llava-{i}"));
    let mut extra = serde_json::Map::new();
    extra.insert("source".into(), "llava".into());
    Ok(Trajectory {
        id,
        messages,
        task: "llava".into(),
        meta: Meta {
            tool_calls: calls,
            category: None,
            extra,
        },
    })
}
