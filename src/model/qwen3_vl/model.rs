//! Qwen3-VL for conditional generation: the vision tower's image embeddings are placed at the
//! `<|image_pad|>` positions of the token embeddings, the Qwen3 text decoder runs with interleaved
//! M-RoPE, and the DeepStack features join the hidden states at those positions after the first
//! decoder layers. Loading, embeddings and the decoder passes are [`VlFamily`]'s.

use super::config::Qwen3VlConfig;
use super::rope::mrope_streams;
use super::vision::{VisionOutput, VisionTower};
use crate::model::decoder::TextModel;
pub use crate::model::family::{ImageFeatures, VlFamily};
use crate::model::nn::patch_rows;
use crate::model::precision::{Precision, cast};
use crate::model::rope::VisionTokens;
use crate::model::weights::WeightSource;
use burn::module::Module;
use burn::tensor::Device;
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

impl VlFamily for Qwen3Vl {
    type Config = Qwen3VlConfig;

    fn read_config(path: &Path) -> anyhow::Result<Qwen3VlConfig> {
        Qwen3VlConfig::from_file(path)
    }

    fn build(
        cfg: &Qwen3VlConfig,
        src: &mut dyn WeightSource,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        let dtype = precision.dtype();
        Ok(Self {
            visual: VisionTower::load(&cfg.vision, src, device, dtype)?,
            model: TextModel::load(&cfg.text.decoder(), src, device, dtype)?,
            cfg: cfg.clone(),
            precision,
        })
    }

    fn text_model(&self) -> &TextModel {
        &self.model
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    fn vision_tokens(&self) -> VisionTokens {
        self.cfg
            .tokens
            .vision_tokens(self.cfg.vision.spatial_merge_size)
    }

    fn image_features(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<ImageFeatures> {
        let v = self.encode_images(pixel_values, grid_thw)?;
        Ok(ImageFeatures {
            embeds: v.image_embeds,
            deepstack: v.deepstack_features,
        })
    }

    fn mrope_streams(&self) -> Vec<usize> {
        mrope_streams(&self.cfg.text.mrope_section)
    }

    fn rope_theta(&self) -> f64 {
        self.cfg.text.rope_theta
    }
}

impl Qwen3Vl {
    /// The patch embedding's Conv3d kernel shape without its output dim: `[C, T, P, P]`.
    pub fn patch_kernel(&self) -> [usize; 4] {
        self.cfg.vision.patch_kernel()
    }

    /// Image embeddings and DeepStack features `[tokens, d]` of the batch's images.
    pub fn encode_images(
        &self,
        pixel_values: &[f32],
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<VisionOutput> {
        let px = patch_rows(pixel_values, self.cfg.vision.patch_dim(), &self.device())?;
        self.visual
            .forward(cast(px, self.compute_dtype()), grid_thw)
    }
}
