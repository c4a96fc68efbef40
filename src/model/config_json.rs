//! Reading the `config.json` fields both Qwen-VL families share: the file itself, typed fields
//! named in errors, the special token ids (top level or `text_config`), integer lists, and the
//! checks of sizes and head layouts.

use crate::model::decoder::DecoderDims;
use crate::model::rope::VisionTokens;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The parsed JSON of a model config file.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The ids that mark images and sequence ends, with Qwen's defaults for absent keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenIds {
    pub image: u32,
    pub video: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub bos: Option<u32>,
    /// The first id when the config lists several.
    pub eos: Option<u32>,
}

impl TokenIds {
    /// The ids that place images in the token sequence, for patches merged `spatial_merge_size`
    /// to a side.
    pub fn vision_tokens(&self, spatial_merge_size: usize) -> VisionTokens {
        VisionTokens {
            image_token_id: i64::from(self.image),
            vision_start_token_id: i64::from(self.vision_start),
            spatial_merge_size,
        }
    }
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

/// Typed fields of a config object, each looked up in `obj` and then in `fallback` (the top
/// level, for text fields a layout keeps there), and named `{prefix}{key}` in errors.
pub struct Fields<'a> {
    pub obj: &'a Value,
    pub fallback: Option<&'a Value>,
    pub prefix: &'static str,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj
            .get(key)
            .or_else(|| self.fallback.and_then(|f| f.get(key)))
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> anyhow::Result<usize> {
        self.get(key)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .with_context(|| format!("missing or non-integer field `{}{key}`", self.prefix))
    }

    /// An integer with a default for an absent (or non-integer) field.
    pub fn usize_or(&self, key: &str, default: usize) -> usize {
        self.get(key)
            .and_then(Value::as_u64)
            .map_or(default, |x| x as usize)
    }

    pub fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.get(key).and_then(Value::as_f64).unwrap_or(default)
    }

    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(default)
    }

    pub fn str_or(&self, key: &str, default: &str) -> String {
        self.get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    }

    /// The first of `keys` that holds an object (`rope_scaling` / `rope_parameters`).
    pub fn object(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter()
            .find_map(|k| self.get(k).filter(|r| r.is_object()))
    }
}

/// A decoder's sizes (named as the config names them) are positive, its query heads a multiple
/// of its key/value heads (grouped-query attention), and its three M-RoPE sections cover the
/// `head_dim / 2` frequencies.
pub fn check_text(dims: &DecoderDims, mrope_section: &[usize]) -> anyhow::Result<()> {
    require_positive(&[
        ("vocab_size", dims.vocab_size),
        ("hidden_size", dims.hidden_size),
        ("intermediate_size", dims.intermediate_size),
        ("num_hidden_layers", dims.num_layers),
        ("num_attention_heads", dims.num_heads),
        ("num_key_value_heads", dims.num_kv_heads),
        ("head_dim", dims.head_dim),
    ])?;
    let (heads, kv) = (dims.num_heads, dims.num_kv_heads);
    if !heads.is_multiple_of(kv) {
        bail!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}");
    }
    if mrope_section.len() != 3 || mrope_section.iter().sum::<usize>() * 2 != dims.head_dim {
        bail!(
            "mrope_section {mrope_section:?} must have 3 entries summing to head_dim/2 = {}",
            dims.head_dim / 2
        );
    }
    Ok(())
}

/// A vision tower's sizes are positive and `hidden / heads` is divisible by 4 (2-D rotary over
/// half the features).
pub fn check_vision(
    depth: usize,
    hidden_size: usize,
    num_heads: usize,
    patch_kernel: [usize; 4],
    spatial_merge_size: usize,
) -> anyhow::Result<()> {
    require_positive(&[
        ("vision_config.depth", depth),
        ("vision_config.hidden_size", hidden_size),
        ("vision_config.num_heads", num_heads),
        ("vision_config.patch_size", patch_kernel[2]),
        ("vision_config.spatial_merge_size", spatial_merge_size),
        ("vision_config.temporal_patch_size", patch_kernel[1]),
    ])?;
    if !hidden_size.is_multiple_of(num_heads) || !(hidden_size / num_heads).is_multiple_of(4) {
        bail!(
            "vision hidden_size {hidden_size} / num_heads {num_heads} must give a head_dim divisible by 4 (2-D rotary)"
        );
    }
    Ok(())
}
