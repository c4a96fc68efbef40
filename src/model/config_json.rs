//! Reading the `config.json` fields both Qwen-VL families share: the file itself, the special
//! token ids (top level or `text_config`), integer lists, and the positivity checks of sizes.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;

/// The parsed JSON of a model config file.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The ids that mark images and sequence ends, with Qwen's defaults for absent keys.
pub struct TokenIds {
    pub image: u32,
    pub video: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub bos: Option<u32>,
    /// The first id when the config lists several.
    pub eos: Option<u32>,
}

/// [`TokenIds`] of a config `v` whose text fields are in `t` (`text_config`, or `v` itself).
pub fn token_ids(v: &Value, t: &Value) -> TokenIds {
    let get = |key: &str| v.get(key).or_else(|| t.get(key));
    let id = |key: &str, default: u32| {
        get(key)
            .and_then(Value::as_u64)
            .map(|x| x as u32)
            .unwrap_or(default)
    };
    let first_id = |key: &str| {
        let x = get(key)?;
        x.as_u64()
            .or_else(|| x.as_array()?.first()?.as_u64())
            .map(|x| x as u32)
    };
    TokenIds {
        image: id("image_token_id", 151655),
        video: id("video_token_id", 151656),
        vision_start: id("vision_start_token_id", 151652),
        vision_end: id("vision_end_token_id", 151653),
        bos: first_id("bos_token_id"),
        eos: first_id("eos_token_id"),
    }
}

/// A JSON list of non-negative integers called `name` (for error messages).
pub fn usize_list(x: &Value, name: &str) -> anyhow::Result<Vec<usize>> {
    x.as_array()
        .with_context(|| format!("`{name}` is not a list"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("`{name}` holds a non-integer"))
        })
        .collect()
}

/// Every `(name, size)` must be positive.
pub fn require_positive(fields: &[(&str, usize)]) -> anyhow::Result<()> {
    match fields.iter().find(|(_, x)| *x == 0) {
        Some((name, _)) => bail!("`{name}` must be positive"),
        None => Ok(()),
    }
}
