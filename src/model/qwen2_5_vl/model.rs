//! Qwen2.5-VL for conditional generation: the vision tower's image embeddings are placed at the
//! `<|image_pad|>` positions of the token embeddings, then the text decoder runs with M-RoPE.

use super::config::Qwen2_5VlConfig;
use super::rope::{VisionTokens, mrope_cos_sin, mrope_position_ids};
use super::text::{KvCache, TextModel};
use super::vision::VisionTower;
use crate::kernels::attention::Mask;
use crate::model::batch::place_image_features;
pub use crate::model::batch::{Decoded, VlBatch, VlOutput};
use crate::model::names::named_params;
use crate::model::nn::tensor2;
use crate::model::precision::{Precision, cast, cast_all, cast_frozen};
use crate::model::weights::{RandomWeights, SafetensorsWeights, WeightSource};
use anyhow::Context;
use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use std::path::Path;

#[derive(Module, Debug)]
pub struct Qwen2_5Vl {
    pub visual: VisionTower,
    pub model: TextModel,
    #[module(skip)]
    pub cfg: Qwen2_5VlConfig,
    /// The dtype of frozen weights and activations ([`Precision`]; f32 unless switched).
    #[module(skip)]
    pub precision: Precision,
}

impl Qwen2_5Vl {
    /// Loads `config.json` and the safetensors weights of a model directory (in f32).
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        Self::from_dir_in(dir, device, Precision::F32)
    }

    /// [`from_dir`](Self::from_dir) with every weight stored in `precision` as it is read (in bf16
    /// the f32 copy of only one layer exists at a time).
    pub fn from_dir_in(dir: &Path, device: &Device, precision: Precision) -> anyhow::Result<Self> {
        let cfg = Qwen2_5VlConfig::from_file(&dir.join("config.json"))?;
        let mut src = SafetensorsWeights::open(dir)?;
        Self::load_in(&cfg, &mut src, device, precision)
            .with_context(|| format!("cannot load the model in {}", dir.display()))
    }

    /// A randomly initialised model of the given config (demo pretraining, benchmarks).
    pub fn random(cfg: &Qwen2_5VlConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        Self::random_in(cfg, seed, device, Precision::F32)
    }

    /// [`random`](Self::random) stored in `precision` layer by layer (the same values, rounded).
    pub fn random_in(
        cfg: &Qwen2_5VlConfig,
        seed: u64,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        Self::load_in(cfg, &mut RandomWeights::new(seed, 0.02), device, precision)
    }

    pub fn load(
        cfg: &Qwen2_5VlConfig,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::load_in(cfg, src, device, Precision::F32)
    }

    pub fn load_in(
        cfg: &Qwen2_5VlConfig,
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
            v.in_chans,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ]
    }

    pub fn vision_tokens(&self) -> VisionTokens {
        VisionTokens {
            image_token_id: self.cfg.image_token_id as i64,
            vision_start_token_id: self.cfg.vision_start_token_id as i64,
            spatial_merge_size: self.cfg.vision.spatial_merge_size,
        }
    }

    /// Image embeddings `[tokens, d]` of the batch's images (vision tower + merger).
    pub fn encode_images(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<Tensor<2>> {
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

    /// Token embeddings `[batch, seq, d]` with image embeddings placed at the image-token positions
    /// (one gather over [token embeddings; image embeddings], so gradients reach both).
    pub fn embed(
        &self,
        batch: &VlBatch,
        image_embeds: Option<Tensor<2>>,
    ) -> anyhow::Result<Tensor<3>> {
        let device = self.device();
        let (b, s) = (batch.batch, batch.seq_len);
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(batch.input_ids.clone(), [b, s]), &device);
        let x = self.embed_ids(ids);
        place_image_features(
            x,
            &batch.input_ids,
            &batch.attention_mask,
            self.cfg.image_token_id as i64,
            image_embeds,
        )
    }

    /// Full forward pass over a batch. `all_hidden` keeps every layer's hidden states.
    pub fn forward(&self, batch: &VlBatch, all_hidden: bool) -> anyhow::Result<VlOutput> {
        let image_embeds = if batch.image_grid_thw.is_empty() {
            None
        } else {
            Some(self.encode_images(&batch.pixel_values, &batch.image_grid_thw)?)
        };
        let x = self.embed(batch, image_embeds.clone())?;
        let (last_hidden, hidden_states, position_ids, rope_deltas) =
            self.decode(x, batch, all_hidden)?;
        Ok(VlOutput {
            last_hidden,
            hidden_states,
            image_embeds,
            deepstack_features: vec![],
            position_ids,
            rope_deltas,
        })
    }

    /// The decoder over given input embeddings (lets callers reuse image features across views).
    pub fn decode(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        all_hidden: bool,
    ) -> anyhow::Result<Decoded> {
        self.decode_cached(x, batch, all_hidden, None)
    }

    /// [`decode`](Self::decode) that also leaves every layer's keys and values in `cache` (empty
    /// on entry), for continuations of the sequence.
    pub fn decode_cached(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
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
        let (cos, sin) = mrope_cos_sin(&pos, b, s, &self.cfg.text, &device);
        let mask = Mask::causal(0, &batch.attention_mask);
        let (last, mut hidden) = self
            .model
            .forward(x.clone(), cos, sin, &mask, cache, all_hidden);
        if all_hidden {
            hidden[0] = x;
        }
        Ok((last, hidden, pos, deltas))
    }

    /// One incremental decoding step: embeddings of new tokens `[batch, new, d]` at M-RoPE
    /// positions `positions` (`[3, batch, new]`), attending to the cache plus themselves.
    /// `key_mask` is `[batch, past + new]` (1 = real token).
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
        self.model.forward(x, cos, sin, &mask, Some(cache), false).0
    }

    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        self.model.logits(hidden)
    }
}

impl Qwen2_5Vl {
    /// The dtype activations flow in.
    pub fn compute_dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// Switches the model to `precision`: frozen parameters are cast to its dtype (call it after
    /// choosing what trains) and activations flow in it. `F32` casts frozen parameters back.
    /// Refused where the model's device cannot hold that dtype (e.g. a GPU without bf16).
    pub fn with_precision(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_frozen(self, precision.dtype());
        model.precision = precision;
        Ok(model)
    }

    /// For inference: every parameter stored in `precision`, since nothing trains and nothing
    /// needs an f32 master copy; activations flow in it.
    pub fn for_inference(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_all(self, precision.dtype());
        model.precision = precision;
        Ok(model)
    }
}

impl Qwen2_5Vl {
    /// Number of projections carrying a LoRA adapter.
    pub fn lora_count(&self) -> usize {
        named_params(self)
            .iter()
            .filter(|p| p.path.ends_with(".lora.a"))
            .count()
    }
}
