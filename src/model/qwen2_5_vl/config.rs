//! `config.json` of the Qwen2.5-VL family, in both layouts users meet: the hub layout (text fields at
//! the top level, `rope_scaling.mrope_section`) and the one current transformers writes
//! (`text_config`, `rope_parameters`).

use crate::model::config_json::{self, Fields, TokenIds};
use crate::model::decoder::DecoderDims;
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
    /// The patch embedding's Conv3d kernel without its output dim: `[C, T, P, P]`.
    pub fn patch_kernel(&self) -> [usize; 4] {
        let p = self.patch_size;
        [self.in_chans, self.temporal_patch_size, p, p]
    }
    /// Input features of one patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        self.patch_kernel().iter().product()
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
        // `max(1)`: a config with no heads is refused by `validate`, not by a division.
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The Qwen2 decoder: q/k/v biases, no o bias, no q/k norms, `head_dim = hidden / heads`.
    pub fn decoder(&self) -> DecoderDims {
        DecoderDims {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim(),
            rms_norm_eps: self.rms_norm_eps,
            qkv_bias: true,
            o_bias: false,
            qk_norm: false,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2_5VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tokens: TokenIds,
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
        let tf = Fields {
            obj: t,
            fallback: Some(v),
            prefix: "",
        };
        let rope = tf.object(&["rope_scaling", "rope_parameters"]);
        let mrope_section = config_json::usize_list(
            rope.and_then(|r| r.get("mrope_section")).context(
                "missing `rope_scaling.mrope_section` (or `rope_parameters.mrope_section`)",
            )?,
            "mrope_section",
        )?;
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| tf.f64_or("rope_theta", 1_000_000.0));
        let text = TextConfig {
            vocab_size: tf.usize("vocab_size")?,
            hidden_size: tf.usize("hidden_size")?,
            intermediate_size: tf.usize("intermediate_size")?,
            num_hidden_layers: tf.usize("num_hidden_layers")?,
            num_attention_heads: tf.usize("num_attention_heads")?,
            num_key_value_heads: tf.usize("num_key_value_heads")?,
            rms_norm_eps: tf.f64_or("rms_norm_eps", 1e-6),
            rope_theta,
            mrope_section,
            tie_word_embeddings: tf.bool_or("tie_word_embeddings", false),
            hidden_act: tf.str_or("hidden_act", "silu"),
        };
        let vf = Fields {
            obj: v.get("vision_config").context("missing `vision_config`")?,
            fallback: None,
            prefix: "vision_config.",
        };
        let vision = VisionConfig {
            depth: vf.usize("depth")?,
            hidden_size: vf.usize("hidden_size")?,
            intermediate_size: vf.usize("intermediate_size")?,
            num_heads: vf.usize("num_heads")?,
            in_chans: vf.usize_or("in_chans", vf.usize_or("in_channels", 3)),
            out_hidden_size: vf.usize_or("out_hidden_size", text.hidden_size),
            patch_size: vf.usize_or("patch_size", 14),
            spatial_merge_size: vf.usize_or("spatial_merge_size", 2),
            temporal_patch_size: vf.usize_or("temporal_patch_size", 2),
            window_size: vf.usize_or("window_size", 112),
            fullatt_block_indexes: vf
                .get("fullatt_block_indexes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|x| x as usize)
                        .collect()
                })
                .unwrap_or_default(),
            tokens_per_second: vf.f64_or("tokens_per_second", 2.0),
            hidden_act: vf.str_or("hidden_act", "silu"),
        };
        let cfg = Qwen2_5VlConfig {
            text,
            vision,
            tokens: config_json::token_ids(v, t),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the model code relies on, so a bad config fails here with a reason
    /// rather than as a shape error deep in a forward pass.
    pub fn validate(&self) -> anyhow::Result<()> {
        let t = &self.text;
        let v = &self.vision;
        // Qwen2's head_dim is hidden / heads, so the heads must divide the width.
        if !t.hidden_size.is_multiple_of(t.num_attention_heads.max(1)) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size,
                t.num_attention_heads
            );
        }
        config_json::check_text(&t.decoder(), &t.mrope_section)?;
        config_json::check_vision(
            v.depth,
            v.hidden_size,
            v.num_heads,
            v.patch_kernel(),
            v.spatial_merge_size,
        )?;
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
        self.text.decoder().num_params() + self.vision_params()
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
