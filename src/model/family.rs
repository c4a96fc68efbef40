//! What a model family supplies, and the model API written once over it. A family (its folder)
//! says how it reads its `config.json`, builds itself from weights, encodes images and rotates
//! positions; loading a directory, precision switches, embeddings, the decoder passes and logits
//! are the same for every family and live here.

use super::batch::{Decoded, VlBatch, VlOutput, place_image_features, token_positions};
use super::decoder::{DeepStack, HiddenStates, KvCache, TextModel};
use super::names::named_params;
use super::precision::{Precision, cast, cast_all, cast_frozen};
use super::rope::{VisionTokens, mrope_position_ids};
use super::weights::{RandomWeights, SafetensorsWeights, WeightSource};
use crate::kernels::attention::Mask;
use anyhow::Context;
use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use std::path::Path;

/// What the vision tower hands the decoder: image embeddings `[tokens, d]` placed at the image
/// tokens, and (Qwen3-VL) the DeepStack features `[tokens, d]` added after the first layers.
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    pub embeds: Tensor<2>,
    pub deepstack: Vec<Tensor<2>>,
}

impl ImageFeatures {
    /// The features of the image-token rows `rows` (in that order).
    pub fn select(&self, rows: Tensor<1, Int>) -> Self {
        Self {
            embeds: self.embeds.clone().select(0, rows.clone()),
            deepstack: self
                .deepstack
                .iter()
                .map(|f| f.clone().select(0, rows.clone()))
                .collect(),
        }
    }
}

pub trait VlFamily: Module + Sized {
    type Config: Clone;

    /// This family's `config.json`, validated.
    fn read_config(path: &Path) -> anyhow::Result<Self::Config>;

    /// The model of a validated `cfg` with weights from `src`, each stored in `precision`'s dtype
    /// as it is read (in bf16 the f32 copy of only one layer exists at a time).
    fn build(
        cfg: &Self::Config,
        src: &mut dyn WeightSource,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self>;

    /// The text decoder (embeddings, layers, final norm, head).
    fn text_model(&self) -> &TextModel;

    /// The dtype of frozen weights and activations ([`Precision`]; f32 unless switched).
    fn precision(&self) -> Precision;

    fn set_precision(&mut self, precision: Precision);

    /// The ids and merge size that place images in the token sequence.
    fn vision_tokens(&self) -> VisionTokens;

    /// Image embeddings and (Qwen3-VL) DeepStack features `[tokens, d]` of `pixel_values`
    /// (`[patches, C*T*P*P]`, the processor's order) for images of `grid_thw`.
    fn image_features(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<ImageFeatures>;

    /// The M-RoPE stream (0 = T, 1 = H, 2 = W) of each of the `head_dim / 2` frequencies: how
    /// the family lays out `mrope_section`.
    fn mrope_streams(&self) -> Vec<usize>;

    /// The text rotary's base frequency.
    fn rope_theta(&self) -> f64;

    /// cos/sin `[batch, 1, seq, head_dim]` of the family's M-RoPE for positions `[3, batch, seq]`.
    fn mrope_cos_sin(
        &self,
        position_ids: &[i64],
        batch: usize,
        seq: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let streams = self.mrope_streams();
        super::rope::mrope_cos_sin(
            position_ids,
            batch,
            seq,
            self.rope_theta(),
            &streams,
            &self.device(),
        )
    }

    /// Loads `config.json` and the safetensors weights (single or sharded) of a model directory.
    fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        Self::from_dir_in(dir, device, Precision::F32)
    }

    /// [`from_dir`](Self::from_dir) with every weight stored in `precision` as it is read.
    fn from_dir_in(dir: &Path, device: &Device, precision: Precision) -> anyhow::Result<Self> {
        let cfg = Self::read_config(&dir.join("config.json"))?;
        let mut src = SafetensorsWeights::open(dir)?;
        Self::load_in(&cfg, &mut src, device, precision)
            .with_context(|| format!("cannot load the model in {}", dir.display()))
    }

    /// A randomly initialised model of the given config (demo pretraining, benchmarks).
    fn random(cfg: &Self::Config, seed: u64, device: &Device) -> anyhow::Result<Self> {
        Self::random_in(cfg, seed, device, Precision::F32)
    }

    /// [`random`](Self::random) stored in `precision` layer by layer (the same values, rounded).
    fn random_in(
        cfg: &Self::Config,
        seed: u64,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        Self::load_in(cfg, &mut RandomWeights::new(seed, 0.02), device, precision)
    }

    fn load(
        cfg: &Self::Config,
        src: &mut dyn WeightSource,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::load_in(cfg, src, device, Precision::F32)
    }

    fn load_in(
        cfg: &Self::Config,
        src: &mut dyn WeightSource,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        precision.check_supported(device)?;
        Self::build(cfg, src, device, precision)
    }

    fn device(&self) -> Device {
        self.text_model().embed_tokens.weight.val().device()
    }

    /// The dtype activations flow in.
    fn compute_dtype(&self) -> DType {
        self.precision().dtype()
    }

    /// Switches the model to `precision`: frozen parameters are cast to its dtype (call it after
    /// choosing what trains) and activations flow in it. `F32` casts frozen parameters back.
    /// Refused where the model's device cannot hold that dtype (e.g. a GPU without bf16).
    fn with_precision(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_frozen(self, precision.dtype());
        model.set_precision(precision);
        Ok(model)
    }

    /// For inference: every parameter stored in `precision`, since nothing trains and nothing
    /// needs an f32 master copy; activations flow in it.
    fn for_inference(self, precision: Precision) -> anyhow::Result<Self> {
        precision.check_supported(&self.device())?;
        let mut model = cast_all(self, precision.dtype());
        model.set_precision(precision);
        Ok(model)
    }

    /// Number of projections carrying a LoRA adapter.
    fn lora_count(&self) -> usize {
        named_params(self)
            .iter()
            .filter(|p| p.path.ends_with(".lora.a"))
            .count()
    }

    /// Embeddings `[batch, seq, d]` of token ids `[batch, seq]`, in the compute dtype.
    fn embed_ids(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        cast(
            self.text_model().embed_tokens.forward(ids),
            self.compute_dtype(),
        )
    }

    /// Token embeddings `[batch, seq, d]` with image embeddings placed at the image-token positions
    /// (one gather over [token embeddings; image embeddings], so gradients reach both).
    fn embed(&self, batch: &VlBatch, image_embeds: Option<Tensor<2>>) -> anyhow::Result<Tensor<3>> {
        let (b, s) = (batch.batch, batch.seq_len);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(batch.input_ids.clone(), [b, s]),
            &self.device(),
        );
        place_image_features(
            self.embed_ids(ids),
            &batch.input_ids,
            &batch.attention_mask,
            self.vision_tokens().image_token_id,
            image_embeds,
        )
    }

    /// Full forward pass over a batch. `all_hidden` keeps transformers 5's `hidden_states`
    /// (see [`TextModel::forward`]).
    fn forward(&self, batch: &VlBatch, all_hidden: bool) -> anyhow::Result<VlOutput> {
        let images = if batch.image_grid_thw.is_empty() {
            None
        } else {
            Some(self.image_features(&batch.pixel_values, &batch.image_grid_thw)?)
        };
        let x = self.embed(batch, images.as_ref().map(|f| f.embeds.clone()))?;
        let deepstack = images.as_ref().map_or(&[][..], |f| f.deepstack.as_slice());
        let d = self.decode(x, batch, deepstack, all_hidden)?;
        let (image_embeds, deepstack_features) = match images {
            Some(f) => (Some(f.embeds), f.deepstack),
            None => (None, vec![]),
        };
        Ok(VlOutput {
            last_hidden: d.last_hidden,
            hidden_states: d.hidden_states,
            image_embeds,
            deepstack_features,
            position_ids: d.position_ids,
            rope_deltas: d.rope_deltas,
        })
    }

    /// The decoder over input embeddings `x` of `batch` and its DeepStack features (empty without
    /// images or DeepStack). `all_hidden` keeps transformers 5's `hidden_states`.
    fn decode(
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
    fn decode_cached(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        deepstack: &[Tensor<2>],
        all_hidden: bool,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Decoded> {
        let record = all_hidden.then_some(HiddenStates::Transformers5);
        self.decode_recording(x, batch, deepstack, record, cache)
    }

    /// [`decode_cached`](Self::decode_cached) that keeps `hidden_states` in the convention
    /// `record` names, if any.
    fn decode_recording(
        &self,
        x: Tensor<3>,
        batch: &VlBatch,
        deepstack: &[Tensor<2>],
        record: Option<HiddenStates>,
        cache: Option<&mut KvCache>,
    ) -> anyhow::Result<Decoded> {
        let (b, s) = (batch.batch, batch.seq_len);
        let tokens = self.vision_tokens();
        let (pos, deltas) = mrope_position_ids(
            &batch.input_ids,
            &batch.attention_mask,
            b,
            s,
            &batch.image_grid_thw,
            tokens,
        )?;
        let positions = token_positions(
            &batch.input_ids,
            &batch.attention_mask,
            tokens.image_token_id,
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
        let rope = self.mrope_cos_sin(&pos, b, s);
        let mask = Mask::causal(0, &batch.attention_mask);
        let out = self
            .text_model()
            .forward(x, rope, &mask, cache, deepstack, record);
        Ok(Decoded {
            last_hidden: out.last_hidden,
            pre_norm: out.pre_norm,
            hidden_states: out.hidden_states,
            position_ids: pos,
            rope_deltas: deltas,
        })
    }

    /// One incremental decoding step: embeddings of new tokens `[batch, new, d]` at M-RoPE
    /// positions `positions` (`[3, batch, new]`), attending to the cache plus themselves.
    /// `key_mask` is `[batch, past + new]` (1 = real token). New tokens carry no image, so no
    /// DeepStack. Returns the final-norm hidden states.
    fn decode_step(
        &self,
        x: Tensor<3>,
        positions: &[i64],
        key_mask: &[i64],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let mask = Mask::causal(cache.len(), key_mask);
        let rope = self.mrope_cos_sin(positions, b, n);
        self.text_model()
            .forward(x, rope, &mask, Some(cache), None, None)
            .last_hidden
    }

    /// Logits `[.., vocab]` of final hidden states `[.., d]`, in f32 whatever the compute dtype
    /// (losses and sampling read them).
    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        self.text_model().logits(hidden)
    }
}
