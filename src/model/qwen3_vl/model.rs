//! Qwen3-VL for conditional generation: the vision tower's image embeddings are placed at the
//! `<|image_pad|>` positions of the token embeddings, the text decoder runs with interleaved
//! M-RoPE, and the DeepStack features join the hidden states at those positions after the first
//! decoder layers.

use super::config::Qwen3VlConfig;
use super::rope::mrope_cos_sin;
use super::text::{DeepStack, TextModel};
use super::vision::{VisionOutput, VisionTower};
use crate::kernels::attention::Mask;
use crate::model::batch::{Decoded, VlBatch, VlOutput, place_image_features, token_positions};
use crate::model::decoder::KvCache;
use crate::model::names::named_params;
use crate::model::nn::tensor2;
use crate::model::precision::{Precision, cast, cast_all, cast_frozen};
use crate::model::rope::{VisionTokens, mrope_position_ids};
use crate::model::weights::{RandomWeights, SafetensorsWeights, WeightSource};
use anyhow::Context;
use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use std::path::Path;

#[derive(Module, Debug)]
pub struct Qwen3Vl {
    pub visual: VisionTower,
    pub model: TextModel,
    #[module(skip)]
    pub cfg: Qwen3VlConfig,
    /// The dtype of frozen weights and activations ([`Precision`]; f32 unless switched).
    #[module(skip)]
    pub precision: Precision,
}

impl Qwen3Vl {
    /// Loads `config.json` and the safetensors weights (single or sharded) of a model directory.
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        Self::from_dir_in(dir, device, Precision::F32)
    }

    /// [`from_dir`](Self::from_dir) with every weight stored in `precision` as it is read.
    pub fn from_dir_in(dir: &Path, device: &Device, precision: Precision) -> anyhow::Result<Self> {
        let cfg = Qwen3VlConfig::from_file(&dir.join("config.json"))?;
        let mut src = SafetensorsWeights::open(dir)?;
        Self::load_in(&cfg, &mut src, device, precision)
            .with_context(|| format!("cannot load the model in {}", dir.display()))
    }

    /// A randomly initialised model of the given config.
    pub fn random(cfg: &Qwen3VlConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        Self::load_in(
            cfg,
            &mut RandomWeights::new(seed, 0.02),
            device,
            Precision::F32,
        )
    }

    pub fn load(
        cfg: &Qwen3VlConfig,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::load_in(cfg, src, device, Precision::F32)
    }

    pub fn load_in(
        cfg: &Qwen3VlConfig,
        src: &mut dyn WeightSource,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        precision.check_supported(device)?;
        let dtype = precision.dtype();
        Ok(Self {
            visual: VisionTower::load(&cfg.vision, src, device, dtype)?,
            model: TextModel::load(&cfg.text, src, device, dtype)?,
            cfg: cfg.clone(),
            precision,
        })
    }

    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.val().device()
    }

    /// The patch embedding's Conv3d kernel shape without its output dim: `[C, T, P, P]`.
    pub fn patch_kernel(&self) -> [usize; 4] {
        let v = &self.cfg.vision;
        [
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ]
    }

    /// Makes sure the embedding (and an untied lm_head) has at least `rows` rows; returns how
    /// many rows were added.
    pub fn ensure_vocab(&mut self, rows: usize) -> usize {
        let added = crate::model::decoder::grow_vocab(
            &mut self.model.embed_tokens,
            self.model.lm_head.as_mut(),
            rows,
        );
        self.cfg.text.vocab_size += added;
        added
    }

    pub fn vision_tokens(&self) -> VisionTokens {
        VisionTokens {
            image_token_id: self.cfg.image_token_id as i64,
            vision_start_token_id: self.cfg.vision_start_token_id as i64,
            spatial_merge_size: self.cfg.vision.spatial_merge_size,
        }
    }

    /// Image embeddings and DeepStack features `[tokens, d]` of the batch's images.
    pub fn encode_images(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<VisionOutput> {
        let pd = self.cfg.vision.patch_dim();
        if !pixel_values.len().is_multiple_of(pd) {
            anyhow::bail!(
                "pixel_values holds {} values, not a multiple of the patch size {pd}",
                pixel_values.len()
            );
        }
        let px = tensor2(
            pixel_values.to_vec(),
            [pixel_values.len() / pd, pd],
            &self.device(),
        );
        self.visual
            .forward(cast(px, self.compute_dtype()), grid_thw)
    }

    /// Embeddings `[batch, seq, d]` of token ids `[batch, seq]`, in the compute dtype.
    pub fn embed_ids(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        cast(self.model.embed_tokens.forward(ids), self.compute_dtype())
    }

    /// Token embeddings `[batch, seq, d]` with image embeddings placed at the image-token positions.
    pub fn embed(
        &self,
        batch: &VlBatch,
        image_embeds: Option<Tensor<2>>,
    ) -> anyhow::Result<Tensor<3>> {
        let (b, s) = (batch.batch, batch.seq_len);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(batch.input_ids.clone(), [b, s]),
            &self.device(),
        );
        place_image_features(
            self.embed_ids(ids),
            &batch.input_ids,
            &batch.attention_mask,
            self.cfg.image_token_id as i64,
            image_embeds,
        )
    }

    /// Full forward pass over a batch. `all_hidden` keeps every layer's hidden states
    /// (transformers 5's convention, see [`TextModel::forward`]).
    pub fn forward(&self, batch: &VlBatch, all_hidden: bool) -> anyhow::Result<VlOutput> {
        let vision = if batch.image_grid_thw.is_empty() {
            None
        } else {
            Some(self.encode_images(&batch.pixel_values, &batch.image_grid_thw)?)
        };
        let (image_embeds, deepstack_features) = match vision {
            Some(v) => (Some(v.image_embeds), v.deepstack_features),
            None => (None, vec![]),
        };
        let x = self.embed(batch, image_embeds.clone())?;
        let (last_hidden, hidden_states, position_ids, rope_deltas) =
            self.decode(x, batch, &deepstack_features, all_hidden)?;
        Ok(VlOutput {
            last_hidden,
            hidden_states,
            image_embeds,
            deepstack_features,
            position_ids,
            rope_deltas,
        })
    }

    /// The decoder over given input embeddings and DeepStack features (empty without images).
    pub fn decode(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        deepstack: &[Tensor<2>],
        all_hidden: bool,
    ) -> anyhow::Result<Decoded> {
        self.decode_cached(x, batch, deepstack, all_hidden, None)
    }

    /// [`decode`](Self::decode) that also leaves every layer's keys and values in `cache` (empty
    /// on entry), for continuations of the sequence.
    pub fn decode_cached(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        deepstack: &[Tensor<2>],
        all_hidden: bool,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Decoded> {
        let device = self.device();
        let (b, s) = (batch.batch, batch.seq_len);
        let (pos, deltas) = mrope_position_ids(
            &batch.input_ids,
            &batch.attention_mask,
            b,
            s,
            &batch.image_grid_thw,
            self.vision_tokens(),
        )?;
        let positions = token_positions(
            &batch.input_ids,
            &batch.attention_mask,
            self.cfg.image_token_id as i64,
        );
        if let Some(f) = deepstack.iter().find(|f| f.dims()[0] != positions.len()) {
            anyhow::bail!(
                "DeepStack features have {} rows but the batch has {} image tokens",
                f.dims()[0],
                positions.len()
            );
        }
        let deepstack = (!deepstack.is_empty()).then_some(DeepStack {
            positions: &positions,
            features: deepstack,
        });
        let (cos, sin) = mrope_cos_sin(&pos, b, s, &self.cfg.text, &device);
        let mask = Mask::causal(0, &batch.attention_mask);
        let (last, hidden) = self
            .model
            .forward(x, (cos, sin), &mask, cache, deepstack, all_hidden);
        Ok((last, hidden, pos, deltas))
    }

    /// One incremental decoding step: embeddings of new tokens `[batch, new, d]` at M-RoPE
    /// positions `positions` (`[3, batch, new]`), attending to the cache plus themselves.
    /// `key_mask` is `[batch, past + new]` (1 = real token). New tokens carry no image, so no
    /// DeepStack.
    pub fn decode_step(
        &self,
        x: Tensor<3>,
        positions: &[i64],
        key_mask: &[i64],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let device = self.device();
        let [b, n, _] = x.dims();
        let past = cache.len();
        let (cos, sin) = mrope_cos_sin(positions, b, n, &self.cfg.text, &device);
        let mask = Mask::causal(past, key_mask);
        self.model
            .forward(x, (cos, sin), &mask, Some(cache), None, false)
            .0
    }

    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        self.model.logits(hidden)
    }

    /// The dtype activations flow in.
    pub fn compute_dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// Switches the model to `precision`: frozen parameters are cast to its dtype (call it after
    /// choosing what trains) and activations flow in it.
    pub fn with_precision(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_frozen(self, precision.dtype());
        model.precision = precision;
        Ok(model)
    }

    /// For inference: every parameter stored in `precision`; activations flow in it.
    pub fn for_inference(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_all(self, precision.dtype());
        model.precision = precision;
        Ok(model)
    }

    /// Number of projections carrying a LoRA adapter.
    pub fn lora_count(&self) -> usize {
        named_params(self)
            .iter()
            .filter(|p| p.path.ends_with(".lora.a"))
            .count()
    }
}
