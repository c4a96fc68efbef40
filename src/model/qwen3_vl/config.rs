//! `config.json` of the Qwen3-VL family, in both layouts users meet: the hub's (`text_config`
//! with `rope_scaling` + `rope_theta`) and the one transformers 5 writes (`rope_parameters` with
//! `rope_theta` inside). Text fields live in `text_config`; the vision tower's in `vision_config`
//! (`model_type` `qwen3_vl` on the hub, `qwen3_vl_vision` once transformers renamed it).

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
    /// The patch embedding's Conv3d kernel without its output dim: `[C, T, P, P]`.
    pub fn patch_kernel(&self) -> [usize; 4] {
        let p = self.patch_size;
        [self.in_channels, self.temporal_patch_size, p, p]
    }
    /// Input features of one patch: channels x temporal x patch x patch.
    pub fn patch_dim(&self) -> usize {
        self.patch_kernel().iter().product()
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

impl TextConfig {
    /// The Qwen3 decoder: per-head `q_norm` / `k_norm` before the rotary, `head_dim` from the
    /// config, biases only with `attention_bias`.
    pub fn decoder(&self) -> DecoderDims {
        DecoderDims {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm: true,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub tokens: TokenIds,
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
        let tf = Fields {
            obj: t,
            fallback: Some(v),
            prefix: "text_config.",
        };
        let rope = tf.object(&["rope_parameters", "rope_scaling"]);
        let mrope_section: Vec<usize> = match rope.and_then(|r| r.get("mrope_section")) {
            // transformers' default when the config names none.
            None => vec![24, 20, 20],
            Some(s) => config_json::usize_list(s, "mrope_section")?,
        };
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| tf.f64_or("rope_theta", 5_000_000.0));
        let hidden_size = tf.usize("hidden_size")?;
        let num_attention_heads = tf.usize("num_attention_heads")?;
        let text = TextConfig {
            vocab_size: tf.usize("vocab_size")?,
            hidden_size,
            intermediate_size: tf.usize("intermediate_size")?,
            num_hidden_layers: tf.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: tf.usize("num_key_value_heads")?,
            head_dim: match tf.get("head_dim") {
                Some(_) => tf.usize("head_dim")?,
                None => hidden_size / num_attention_heads.max(1),
            },
            rms_norm_eps: tf.f64_or("rms_norm_eps", 1e-6),
            rope_theta,
            mrope_section,
            attention_bias: tf.bool_or("attention_bias", false),
            // The top-level flag is the one `Qwen3VLForConditionalGeneration` ties by.
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .or_else(|| t.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            hidden_act: tf.str_or("hidden_act", "silu"),
        };
        let vf = Fields {
            obj: vc,
            fallback: None,
            prefix: "vision_config.",
        };
        let deepstack_visual_indexes = match vf.get("deepstack_visual_indexes") {
            None => vec![],
            Some(a) => config_json::usize_list(a, "vision_config.deepstack_visual_indexes")?,
        };
        let vision = VisionConfig {
            depth: vf.usize("depth")?,
            hidden_size: vf.usize("hidden_size")?,
            intermediate_size: vf.usize("intermediate_size")?,
            num_heads: vf.usize("num_heads")?,
            in_channels: vf.usize_or("in_channels", 3),
            out_hidden_size: vf.usize_or("out_hidden_size", text.hidden_size),
            patch_size: vf.usize_or("patch_size", 16),
            spatial_merge_size: vf.usize_or("spatial_merge_size", 2),
            temporal_patch_size: vf.usize_or("temporal_patch_size", 2),
            num_position_embeddings: vf.usize("num_position_embeddings")?,
            deepstack_visual_indexes,
            hidden_act: vf.str_or("hidden_act", "gelu_pytorch_tanh"),
        };
        let cfg = Qwen3VlConfig {
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
        config_json::check_text(&t.decoder(), &t.mrope_section)?;
        config_json::check_vision(
            v.depth,
            v.hidden_size,
            v.num_heads,
            v.patch_kernel(),
            v.spatial_merge_size,
        )?;
        config_json::require_positive(&[(
            "vision_config.num_position_embeddings",
            v.num_position_embeddings,
        )])?;
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

impl Qwen3VlConfig {
    /// Parameter count of the model this config describes (embeddings counted once when tied),
    /// from the shapes [`crate::model::Qwen3Vl`] builds; equal to a built model's count.
    pub fn num_params(&self) -> u64 {
        self.text.decoder().num_params() + self.vision_params()
    }

    /// Parameters of the vision tower, the patch merger and the DeepStack mergers.
    pub fn vision_params(&self) -> u64 {
        let v = &self.vision;
        let (d, i) = (v.hidden_size as u64, v.intermediate_size as u64);
        let linear = |n_in: u64, n_out: u64| n_in * n_out + n_out; // with bias
        let layer_norm = |n: u64| 2 * n;
        let block =
            2 * layer_norm(d) + linear(d, 3 * d) + linear(d, d) + linear(d, i) + linear(i, d);
        let merged = d * v.merge_unit() as u64;
        let out = v.out_hidden_size as u64;
        let merger = |norm: u64| layer_norm(norm) + linear(merged, merged) + linear(merged, out);
        let patch_embed = linear(v.patch_dim() as u64, d);
        let positions = v.num_position_embeddings as u64 * d;
        patch_embed
            + positions
            + v.depth as u64 * block
            + merger(d)
            + v.deepstack_visual_indexes.len() as u64 * merger(merged)
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
