//! `config.json` of the Qwen2.5-VL family, in both layouts users meet: the hub layout (text fields at
//! the top level, `rope_scaling.mrope_section`) and the one current transformers writes
//! (`text_config`, `rope_parameters`).

use crate::model::config_json;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_chans: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub tokens_per_second: f64,
    pub hidden_act: String,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Input features of one patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        self.in_chans * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Patches merged into one LLM token.
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub mrope_section: Vec<usize>,
    pub tie_word_embeddings: bool,
    pub hidden_act: String,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2_5VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Qwen2_5VlConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let v = config_json::read(path)?;
        Self::from_json(&v).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "qwen2_5_vl" {
            bail!(
                "unsupported model_type {model_type:?}: pearl implements the Qwen2.5-VL family (\"qwen2_5_vl\")"
            );
        }
        // Current transformers nests the text fields in `text_config`; the hub files keep them on top.
        let t = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let get = |key: &str| t.get(key).or_else(|| v.get(key));
        let usize_of = |key: &str| -> anyhow::Result<usize> {
            get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .with_context(|| format!("missing or non-integer field `{key}`"))
        };
        let f64_or = |key: &str, default: f64| get(key).and_then(Value::as_f64).unwrap_or(default);
        let rope = get("rope_scaling")
            .filter(|r| r.is_object())
            .or_else(|| get("rope_parameters").filter(|r| r.is_object()));
        let mrope_section = config_json::usize_list(
            rope.and_then(|r| r.get("mrope_section")).context(
                "missing `rope_scaling.mrope_section` (or `rope_parameters.mrope_section`)",
            )?,
            "mrope_section",
        )?;
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| f64_or("rope_theta", 1_000_000.0));
        let text = TextConfig {
            vocab_size: usize_of("vocab_size")?,
            hidden_size: usize_of("hidden_size")?,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads: usize_of("num_attention_heads")?,
            num_key_value_heads: usize_of("num_key_value_heads")?,
            rms_norm_eps: f64_or("rms_norm_eps", 1e-6),
            rope_theta,
            mrope_section,
            tie_word_embeddings: get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            hidden_act: get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
        };
        let vc = v.get("vision_config").context("missing `vision_config`")?;
        let vu = |key: &str, default: Option<usize>| -> anyhow::Result<usize> {
            match vc.get(key).and_then(Value::as_u64) {
                Some(x) => Ok(x as usize),
                None => default
                    .with_context(|| format!("missing or non-integer field `vision_config.{key}`")),
            }
        };
        let vision = VisionConfig {
            depth: vu("depth", None)?,
            hidden_size: vu("hidden_size", None)?,
            intermediate_size: vu("intermediate_size", None)?,
            num_heads: vu("num_heads", None)?,
            in_chans: vu("in_chans", Some(vu("in_channels", Some(3))?))?,
            out_hidden_size: vu("out_hidden_size", Some(text.hidden_size))?,
            patch_size: vu("patch_size", Some(14))?,
            spatial_merge_size: vu("spatial_merge_size", Some(2))?,
            temporal_patch_size: vu("temporal_patch_size", Some(2))?,
            window_size: vu("window_size", Some(112))?,
            fullatt_block_indexes: vc
                .get("fullatt_block_indexes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|x| x as usize)
                        .collect()
                })
                .unwrap_or_default(),
            tokens_per_second: vc
                .get("tokens_per_second")
                .and_then(Value::as_f64)
                .unwrap_or(2.0),
            hidden_act: vc
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
        };
        let ids = config_json::token_ids(v, t);
        let cfg = Qwen2_5VlConfig {
            text,
            vision,
            image_token_id: ids.image,
            video_token_id: ids.video,
            vision_start_token_id: ids.vision_start,
            vision_end_token_id: ids.vision_end,
            bos_token_id: ids.bos,
            eos_token_id: ids.eos,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the model code relies on, so a bad config fails here with a reason
    /// rather than as a shape error deep in a forward pass.
    pub fn validate(&self) -> anyhow::Result<()> {
        let t = &self.text;
        let v = &self.vision;
        let positive = [
            ("vocab_size", t.vocab_size),
            ("hidden_size", t.hidden_size),
            ("intermediate_size", t.intermediate_size),
            ("num_hidden_layers", t.num_hidden_layers),
            ("num_attention_heads", t.num_attention_heads),
            ("num_key_value_heads", t.num_key_value_heads),
            ("vision_config.depth", v.depth),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
            ("vision_config.temporal_patch_size", v.temporal_patch_size),
        ];
        config_json::require_positive(&positive)?;
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size,
                t.num_attention_heads
            );
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads,
                t.num_key_value_heads
            );
        }
        if !t.head_dim().is_multiple_of(2) {
            bail!(
                "text head_dim {} must be even for rotary embeddings",
                t.head_dim()
            );
        }
        if t.mrope_section.len() != 3 || t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim() {
            bail!(
                "mrope_section {:?} must have 3 entries summing to head_dim/2 = {}",
                t.mrope_section,
                t.head_dim() / 2
            );
        }
        if !v.hidden_size.is_multiple_of(v.num_heads) || !v.head_dim().is_multiple_of(4) {
            bail!(
                "vision hidden_size {} / num_heads {} must give a head_dim divisible by 4 (2-D rotary)",
                v.hidden_size,
                v.num_heads
            );
        }
        let unit = v.spatial_merge_size * v.patch_size;
        if !v.window_size.is_multiple_of(unit) || v.window_size == 0 {
            bail!(
                "vision window_size {} must be a positive multiple of spatial_merge_size*patch_size = {unit}",
                v.window_size
            );
        }
        if let Some(&i) = v.fullatt_block_indexes.iter().find(|&&i| i >= v.depth) {
            bail!(
                "fullatt_block_indexes names block {i} but the vision tower has depth {}",
                v.depth
            );
        }
        for (name, act) in [
            ("hidden_act", &t.hidden_act),
            ("vision_config.hidden_act", &v.hidden_act),
        ] {
            if act != "silu" {
                bail!("`{name}` = {act:?} is not supported (Qwen2.5-VL uses silu)");
            }
        }
        Ok(())
    }

    /// Parameter count of the model this config describes (embeddings counted once when tied).
    pub fn num_params(&self) -> u64 {
        self.text_params() + self.vision_params()
    }

    /// Parameters of the language model (embeddings, decoder, final norm, head).
    pub fn text_params(&self) -> u64 {
        let t = &self.text;
        let (h, i, kv) = (
            t.hidden_size as u64,
            t.intermediate_size as u64,
            (t.num_key_value_heads * t.head_dim()) as u64,
        );
        let attn = h * h + h + 2 * (h * kv + kv) + h * h;
        let layer = attn + 3 * h * i + 2 * h;
        let embed = t.vocab_size as u64 * h;
        embed
            + t.num_hidden_layers as u64 * layer
            + h
            + if t.tie_word_embeddings { 0 } else { embed }
    }

    /// Parameters of the vision tower and patch merger.
    pub fn vision_params(&self) -> u64 {
        let v = &self.vision;
        let (vh, vi) = (v.hidden_size as u64, v.intermediate_size as u64);
        let block =
            2 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh);
        let merged = vh * v.merge_unit() as u64;
        let merger = vh
            + merged * merged
            + merged
            + merged * v.out_hidden_size as u64
            + v.out_hidden_size as u64;
        v.patch_dim() as u64 * vh + v.depth as u64 * block + merger
    }
}
