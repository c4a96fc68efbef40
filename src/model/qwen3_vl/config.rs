//! `config.json` of the Qwen3-VL family, in both layouts users meet: the hub's (`text_config`
//! with `rope_scaling` + `rope_theta`) and the one transformers 5 writes (`rope_parameters` with
//! `rope_theta` inside). Text fields live in `text_config`; the vision tower's in `vision_config`
//! (`model_type` `qwen3_vl` on the hub, `qwen3_vl_vision` once transformers renamed it).

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
    pub in_channels: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    /// Rows of the learned position table, a square `side x side` grid.
    pub num_position_embeddings: usize,
    /// Vision blocks whose output feeds a DeepStack merger; feature `k` is added after decoder layer `k`.
    pub deepstack_visual_indexes: Vec<usize>,
    /// Activation of the blocks' MLP (`gelu_pytorch_tanh`); the mergers use exact GELU.
    pub hidden_act: String,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Input features of one patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Patches merged into one LLM token.
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
    /// Side of the square learned position table.
    pub fn position_grid_side(&self) -> usize {
        (self.num_position_embeddings as f64).sqrt().round() as usize
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
    /// Per-head dimension, from the config (Qwen3 decouples it from hidden / heads).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies per stream (T, H, W), interleaved T H W T H W ... (see `rope::mrope_streams`).
    pub mrope_section: Vec<usize>,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    pub hidden_act: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Qwen3VlConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let v = config_json::read(path)?;
        Self::from_json(&v).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "qwen3_vl" {
            bail!("model_type {model_type:?} is not the Qwen3-VL family (\"qwen3_vl\")");
        }
        let t = v
            .get("text_config")
            .filter(|t| t.is_object())
            .context("missing `text_config` (Qwen3-VL keeps the text fields there)")?;
        let vc = v
            .get("vision_config")
            .filter(|t| t.is_object())
            .context("missing `vision_config`")?;
        check_sub_family(t, "text_config", &["qwen3_vl_text"])?;
        check_sub_family(vc, "vision_config", &["qwen3_vl", "qwen3_vl_vision"])?;
        // Qwen2.5-VL's window attention has no place in this family: a config carrying it mixes families.
        for key in ["window_size", "fullatt_block_indexes"] {
            if vc.get(key).is_some() {
                bail!(
                    "`vision_config.{key}` belongs to Qwen2.5-VL's window attention; this config mixes families"
                );
            }
        }
        let get = |key: &str| t.get(key).or_else(|| v.get(key));
        let usize_of = |key: &str| -> anyhow::Result<usize> {
            get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .with_context(|| format!("missing or non-integer field `text_config.{key}`"))
        };
        let rope = get("rope_parameters")
            .filter(|r| r.is_object())
            .or_else(|| get("rope_scaling").filter(|r| r.is_object()));
        let mrope_section: Vec<usize> = match rope.and_then(|r| r.get("mrope_section")) {
            // transformers' default when the config names none.
            None => vec![24, 20, 20],
            Some(s) => config_json::usize_list(s, "mrope_section")?,
        };
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| get("rope_theta").and_then(Value::as_f64))
            .unwrap_or(5_000_000.0);
        let hidden_size = usize_of("hidden_size")?;
        let num_attention_heads = usize_of("num_attention_heads")?;
        let text = TextConfig {
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: usize_of("num_key_value_heads")?,
            head_dim: match get("head_dim") {
                Some(_) => usize_of("head_dim")?,
                None => hidden_size / num_attention_heads.max(1),
            },
            rms_norm_eps: get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            attention_bias: get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            // The top-level flag is the one `Qwen3VLForConditionalGeneration` ties by.
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .or_else(|| t.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            hidden_act: get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
        };
        let vu = |key: &str, default: Option<usize>| -> anyhow::Result<usize> {
            match vc.get(key).and_then(Value::as_u64) {
                Some(x) => Ok(x as usize),
                None => default
                    .with_context(|| format!("missing or non-integer field `vision_config.{key}`")),
            }
        };
        let deepstack_visual_indexes = match vc.get("deepstack_visual_indexes") {
            None => vec![],
            Some(a) => config_json::usize_list(a, "vision_config.deepstack_visual_indexes")?,
        };
        let vision = VisionConfig {
            depth: vu("depth", None)?,
            hidden_size: vu("hidden_size", None)?,
            intermediate_size: vu("intermediate_size", None)?,
            num_heads: vu("num_heads", None)?,
            in_channels: vu("in_channels", Some(3))?,
            out_hidden_size: vu("out_hidden_size", Some(text.hidden_size))?,
            patch_size: vu("patch_size", Some(16))?,
            spatial_merge_size: vu("spatial_merge_size", Some(2))?,
            temporal_patch_size: vu("temporal_patch_size", Some(2))?,
            num_position_embeddings: vu("num_position_embeddings", None)?,
            deepstack_visual_indexes,
            hidden_act: vc
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("gelu_pytorch_tanh")
                .to_string(),
        };
        let ids = config_json::token_ids(v, t);
        let cfg = Qwen3VlConfig {
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
            ("head_dim", t.head_dim),
            ("vision_config.depth", v.depth),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
            ("vision_config.temporal_patch_size", v.temporal_patch_size),
            (
                "vision_config.num_position_embeddings",
                v.num_position_embeddings,
            ),
        ];
        config_json::require_positive(&positive)?;
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads,
                t.num_key_value_heads
            );
        }
        if t.mrope_section.len() != 3 || t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim {
            bail!(
                "mrope_section {:?} must have 3 entries summing to head_dim/2 = {}",
                t.mrope_section,
                t.head_dim / 2
            );
        }
        if !v.hidden_size.is_multiple_of(v.num_heads) || !v.head_dim().is_multiple_of(4) {
            bail!(
                "vision hidden_size {} / num_heads {} must give a head_dim divisible by 4 (2-D rotary)",
                v.hidden_size,
                v.num_heads
            );
        }
        let side = v.position_grid_side();
        if side * side != v.num_position_embeddings {
            bail!(
                "vision_config.num_position_embeddings {} is not a square (the position table is a side x side grid)",
                v.num_position_embeddings
            );
        }
        if let Some(&i) = v.deepstack_visual_indexes.iter().find(|&&i| i >= v.depth) {
            bail!(
                "deepstack_visual_indexes names vision block {i} but the vision tower has depth {}",
                v.depth
            );
        }
        if v.deepstack_visual_indexes.len() > t.num_hidden_layers {
            bail!(
                "{} DeepStack features (deepstack_visual_indexes) but only {} decoder layers to add them after",
                v.deepstack_visual_indexes.len(),
                t.num_hidden_layers
            );
        }
        if t.hidden_act != "silu" {
            bail!(
                "`text_config.hidden_act` = {:?} is not supported (Qwen3-VL uses silu)",
                t.hidden_act
            );
        }
        if !matches!(v.hidden_act.as_str(), "gelu_pytorch_tanh" | "gelu") {
            bail!(
                "`vision_config.hidden_act` = {:?} is not supported (Qwen3-VL uses gelu_pytorch_tanh)",
                v.hidden_act
            );
        }
        Ok(())
    }
}

/// A sub-config's `model_type`, when it has one, must name this family's part.
fn check_sub_family(v: &Value, what: &str, allowed: &[&str]) -> anyhow::Result<()> {
    match v.get("model_type").and_then(Value::as_str) {
        Some(mt) if !allowed.contains(&mt) => bail!(
            "`{what}.model_type` is {mt:?}, not Qwen3-VL's ({}); this config mixes families",
            allowed.join(" or ")
        ),
        _ => Ok(()),
    }
}
