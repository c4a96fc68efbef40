//! The model families behind one type: [`Vlm`] holds a Qwen2.5-VL or a Qwen3-VL model, chosen by
//! `model_type` in `config.json`, and delegates to it, so objectives, trainer, generation and
//! commands are written once. What differs between families stays in their folders; here are
//! only the questions the rest of the crate asks a model.

use super::batch::{Decoded, VlBatch, VlOutput};
use super::decoder::{DecoderOutput, DeepStack, HiddenStates, KvCache, grow_vocab};
pub use super::family::ImageFeatures;
use super::family::VlFamily;
use super::precision::Precision;
use super::rope::VisionTokens;
use super::{Qwen2_5Vl, Qwen2_5VlConfig, Qwen3Vl, Qwen3VlConfig};
use crate::kernels::attention::Mask;
use anyhow::Context;
use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{DType, Device, Int, Tensor};
use std::path::Path;

/// The families pearl implements, by their `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen2_5Vl,
    Qwen3Vl,
}

impl Family {
    /// The family of a `config.json` value, from its `model_type`.
    pub fn of_config(v: &serde_json::Value) -> anyhow::Result<Self> {
        match v.get("model_type").and_then(serde_json::Value::as_str) {
            Some("qwen2_5_vl") => Ok(Self::Qwen2_5Vl),
            Some("qwen3_vl") => Ok(Self::Qwen3Vl),
            other => anyhow::bail!(
                "unsupported model_type {other:?}: pearl implements Qwen2.5-VL (\"qwen2_5_vl\") and Qwen3-VL (\"qwen3_vl\")"
            ),
        }
    }

    /// The family of the config file at `path` and the `(vision, text)` parameter counts of the
    /// model it describes, from the shapes the family builds (no weights read or allocated).
    pub fn param_counts(path: &Path) -> anyhow::Result<(Self, u64, u64)> {
        let v = super::config_json::read(path)?;
        let invalid = || format!("invalid model config {}", path.display());
        let family = Self::of_config(&v).with_context(invalid)?;
        let (vision, text) = match family {
            Family::Qwen2_5Vl => {
                let c = Qwen2_5VlConfig::from_json(&v).with_context(invalid)?;
                (c.vision_params(), c.text.decoder().num_params())
            }
            Family::Qwen3Vl => {
                let c = Qwen3VlConfig::from_json(&v).with_context(invalid)?;
                (c.vision_params(), c.text.decoder().num_params())
            }
        };
        Ok((family, vision, text))
    }

    /// The family of the model in `dir` (its `config.json`).
    pub fn of_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.json");
        let v = super::config_json::read(&path)?;
        Self::of_config(&v).with_context(|| format!("invalid model config {}", path.display()))
    }
}

/// A vision-language model of either family. (burn's module visitors see the variant as one
/// more module level; [`crate::model::names`] leaves it out of parameter paths.)
#[derive(Module, Debug)]
pub enum Vlm {
    Qwen2_5Vl(Qwen2_5Vl),
    Qwen3Vl(Qwen3Vl),
}

/// `match` over the families with the same expression for each.
macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Vlm::Qwen2_5Vl($m) => $e,
            Vlm::Qwen3Vl($m) => $e,
        }
    };
}

impl Vlm {
    /// Loads the model in `dir` as the family its `config.json` names (in f32).
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        Self::from_dir_in(dir, device, Precision::F32)
    }

    /// [`from_dir`](Self::from_dir) with every weight stored in `precision` as it is read.
    pub fn from_dir_in(dir: &Path, device: &Device, precision: Precision) -> anyhow::Result<Self> {
        Ok(match Family::of_dir(dir)? {
            Family::Qwen2_5Vl => Self::Qwen2_5Vl(Qwen2_5Vl::from_dir_in(dir, device, precision)?),
            Family::Qwen3Vl => Self::Qwen3Vl(Qwen3Vl::from_dir_in(dir, device, precision)?),
        })
    }

    /// A randomly initialised model of the config in `config_path` (either family).
    pub fn random_from_config(
        config_path: &Path,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let v = super::config_json::read(config_path)?;
        Ok(match Family::of_config(&v)? {
            Family::Qwen2_5Vl => Self::Qwen2_5Vl(Qwen2_5Vl::random(
                &Qwen2_5VlConfig::from_file(config_path)?,
                seed,
                device,
            )?),
            Family::Qwen3Vl => Self::Qwen3Vl(Qwen3Vl::random(
                &Qwen3VlConfig::from_file(config_path)?,
                seed,
                device,
            )?),
        })
    }

    pub fn family(&self) -> Family {
        match self {
            Self::Qwen2_5Vl(_) => Family::Qwen2_5Vl,
            Self::Qwen3Vl(_) => Family::Qwen3Vl,
        }
    }

    pub fn device(&self) -> Device {
        each!(self, m => m.device())
    }

    /// The precision of frozen weights and activations.
    pub fn precision(&self) -> Precision {
        each!(self, m => m.precision())
    }

    /// The dtype activations flow in.
    pub fn compute_dtype(&self) -> DType {
        each!(self, m => m.compute_dtype())
    }

    /// Width of the decoder's hidden states.
    pub fn hidden_size(&self) -> usize {
        each!(self, m => m.cfg.text.hidden_size)
    }

    /// Rows of the token embedding (grows with [`ensure_vocab`](Self::ensure_vocab)).
    pub fn vocab_size(&self) -> usize {
        each!(self, m => m.cfg.text.vocab_size)
    }

    pub fn num_layers(&self) -> usize {
        each!(self, m => m.cfg.text.num_hidden_layers)
    }

    pub fn image_token_id(&self) -> u32 {
        each!(self, m => m.cfg.tokens.image)
    }

    pub fn vision_tokens(&self) -> VisionTokens {
        each!(self, m => m.vision_tokens())
    }

    /// The token embedding table `[vocab, d]`.
    pub fn embed_tokens(&self) -> &Embedding {
        each!(self, m => &m.model.embed_tokens)
    }

    /// The language-model head (`None` when tied to [`embed_tokens`](Self::embed_tokens)).
    pub fn lm_head(&self) -> Option<&super::nn::Proj> {
        each!(self, m => m.model.lm_head.as_ref())
    }

    /// The patch embedding's Conv3d kernel shape without its output dim: `[C, T, P, P]`.
    pub fn patch_kernel(&self) -> [usize; 4] {
        each!(self, m => m.patch_kernel())
    }

    /// Parameter count of the model as built (embeddings counted once when tied).
    pub fn num_params(&self) -> u64 {
        super::names::named_params(self)
            .iter()
            .map(|p| p.dims.iter().product::<usize>() as u64)
            .sum()
    }

    /// Makes sure the embedding (and an untied head) has at least `rows` rows; returns how many
    /// rows were added.
    pub fn ensure_vocab(&mut self, rows: usize) -> usize {
        each!(self, m => {
            let added = grow_vocab(&mut m.model.embed_tokens, m.model.lm_head.as_mut(), rows);
            m.cfg.text.vocab_size += added;
            added
        })
    }

    /// Image embeddings and (Qwen3-VL) DeepStack features of the batch's images.
    pub fn encode_images(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<ImageFeatures> {
        each!(self, m => m.image_features(pixel_values, grid_thw))
    }

    /// Embeddings `[batch, seq, d]` of token ids `[batch, seq]`, in the compute dtype.
    pub fn embed_ids(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        each!(self, m => m.embed_ids(ids))
    }

    /// Token embeddings `[batch, seq, d]` with the image embeddings placed at the image tokens.
    pub fn embed(
        &self,
        batch: &VlBatch,
        images: Option<&ImageFeatures>,
    ) -> anyhow::Result<Tensor<3>> {
        let embeds = images.map(|f| f.embeds.clone());
        each!(self, m => m.embed(batch, embeds))
    }

    /// Full forward pass over a batch; `all_hidden` keeps every layer's hidden states.
    pub fn forward(&self, batch: &VlBatch, all_hidden: bool) -> anyhow::Result<VlOutput> {
        each!(self, m => m.forward(batch, all_hidden))
    }

    /// The decoder over input embeddings of `batch` (whose images gave `images`).
    pub fn decode(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        images: Option<&ImageFeatures>,
        all_hidden: bool,
    ) -> anyhow::Result<Decoded> {
        self.decode_cached(x, batch, images, all_hidden, None)
    }

    /// [`decode`](Self::decode) that also leaves every layer's keys and values in `cache`.
    pub fn decode_cached(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        images: Option<&ImageFeatures>,
        all_hidden: bool,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Decoded> {
        let deepstack = images.map_or(&[][..], |f| f.deepstack.as_slice());
        each!(self, m => m.decode_cached(x, batch, deepstack, all_hidden, cache))
    }

    /// One incremental decoding step (new tokens carry no image): embeddings `[batch, new, d]` at
    /// M-RoPE positions `[3, batch, new]`, `key_mask` `[batch, past + new]`.
    pub fn decode_step(
        &self,
        x: Tensor<3>,
        positions: &[i64],
        key_mask: &[i64],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        each!(self, m => m.decode_step(x, positions, key_mask, cache))
    }

    /// The decoder layers over a continuation: embeddings `[batch, l, d]` at M-RoPE positions
    /// `[3, batch, l]` under an explicit attention `mask` over `cache` plus the continuation;
    /// `images` (Qwen3-VL's DeepStack) apply at the continuation's image tokens `image_rows`
    /// (flat `batch * l` indices).
    pub fn decode_continuation(
        &self,
        x: Tensor<3>,
        positions: &[i64],
        mask: &Mask,
        cache: &mut KvCache,
        images: Option<(&[usize], &ImageFeatures)>,
    ) -> DecoderOutput {
        let [b, l, _] = x.dims();
        let deepstack = images
            .filter(|(_, f)| !f.deepstack.is_empty())
            .map(|(rows, f)| DeepStack {
                positions: rows,
                features: &f.deepstack,
            });
        each!(self, m => {
            let rope = m.mrope_cos_sin(positions, b, l);
            m.model.forward(x, rope, mask, Some(cache), deepstack, None)
        })
    }

    /// The last entry of transformers' `hidden_states` in `convention` for a decoder output's
    /// final-norm and pre-norm states: the final-norm one, except for Qwen3-VL under transformers
    /// 4.57, whose last entry is the pre-norm one (Qwen2.5-VL's code appends the final norm's
    /// output in every version).
    pub fn last_hidden_state(
        &self,
        last_hidden: Tensor<3>,
        pre_norm: Tensor<3>,
        convention: HiddenStates,
    ) -> Tensor<3> {
        match (self, convention) {
            (Self::Qwen3Vl(_), HiddenStates::Transformers4_57) => pre_norm,
            _ => last_hidden,
        }
    }

    /// Logits `[.., vocab]` (f32) of final hidden states `[.., d]`.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        each!(self, m => m.logits(hidden))
    }

    /// Frozen parameters cast to `precision`'s dtype, activations in it.
    pub fn with_precision(self, precision: Precision) -> anyhow::Result<Self> {
        Ok(match self {
            Self::Qwen2_5Vl(m) => Self::Qwen2_5Vl(m.with_precision(precision)?),
            Self::Qwen3Vl(m) => Self::Qwen3Vl(m.with_precision(precision)?),
        })
    }

    /// Every parameter stored in `precision` (inference).
    pub fn for_inference(self, precision: Precision) -> anyhow::Result<Self> {
        Ok(match self {
            Self::Qwen2_5Vl(m) => Self::Qwen2_5Vl(m.for_inference(precision)?),
            Self::Qwen3Vl(m) => Self::Qwen3Vl(m.for_inference(precision)?),
        })
    }

    /// Saves the model (adapters merged first) as a checkpoint in its family's published layout,
    /// with the given config JSON.
    pub fn save_hub_checkpoint(
        &self,
        config_json: &serde_json::Value,
        dir: &Path,
    ) -> anyhow::Result<()> {
        match self {
            Self::Qwen2_5Vl(m) => {
                super::qwen2_5_vl::checkpoint::save_hub_checkpoint(m, config_json, dir)
            }
            Self::Qwen3Vl(m) => {
                super::qwen3_vl::checkpoint::save_hub_checkpoint(m, config_json, dir)
            }
        }
    }

    /// Number of projections carrying a LoRA adapter.
    pub fn lora_count(&self) -> usize {
        each!(self, m => m.lora_count())
    }
}

impl From<Qwen2_5Vl> for Vlm {
    fn from(m: Qwen2_5Vl) -> Self {
        Self::Qwen2_5Vl(m)
    }
}

impl From<Qwen3Vl> for Vlm {
    fn from(m: Qwen3Vl) -> Self {
        Self::Qwen3Vl(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Added tokens get rows only when the model lacks them; old rows stay, new ones start at the
    /// mean of the old ones.
    #[test]
    fn vocabulary_grows_only_when_rows_are_missing_and_keeps_old_rows() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/qwen2_5_vl_tiny/model/config.json");
        let cfg = Qwen2_5VlConfig::from_file(&path).unwrap();
        let mut m = Vlm::from(Qwen2_5Vl::random(&cfg, 1, &Device::default()).unwrap());
        let v = cfg.text.vocab_size;
        assert_eq!(m.ensure_vocab(v - 3), 0);
        let before = m.embed_tokens().weight.val();
        assert_eq!(m.ensure_vocab(v + 5), 5);
        let after = m.embed_tokens().weight.val();
        assert_eq!(after.dims()[0], v + 5);
        assert_eq!(m.vocab_size(), v + 5);
        let old = after.clone().slice(0..v);
        assert_eq!(old.into_data(), before.clone().into_data());
        let new_row: Vec<f32> = after.slice(v..v + 1).try_into_vec_as().unwrap();
        let mean: Vec<f32> = before.mean_dim(0).try_into_vec_as().unwrap();
        assert_eq!(new_row, mean);
        if let Some(h) = m.lm_head() {
            assert_eq!(h.base.weight.dims()[1], v + 5);
        }
    }
}
