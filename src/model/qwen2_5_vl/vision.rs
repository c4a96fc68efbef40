//! The Qwen2.5-VL vision tower: patch embedding, 2-D rotary attention blocks (window attention except
//! in `fullatt_block_indexes`), and the patch merger that turns 2x2 patches into one LLM token.
//! Follows transformers' `Qwen2_5_VisionTransformerPretrainedModel` in the order data flows.

use super::config::VisionConfig;
use super::rope::{vision_cos_sin, vision_patch_coords};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::swiglu::swiglu;
use crate::kernels::tensor::index_tensor;
use crate::model::nn::{Proj, load_rms_norm};
use crate::model::precision::cast_all;
use crate::model::vision_attention::Segments;
pub use crate::model::vision_attention::VisionAttention;
use crate::model::weights::WeightSource;
use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::activation::gelu;
use burn::tensor::{DType, Device, Tensor};

#[derive(Module, Debug)]
pub struct VisionMlp {
    pub gate_proj: Proj,
    pub up_proj: Proj,
    pub down_proj: Proj,
}

#[derive(Module, Debug)]
pub struct VisionBlock {
    pub norm1: RmsNorm,
    pub attn: VisionAttention,
    pub norm2: RmsNorm,
    pub mlp: VisionMlp,
}

/// RMSNorm, then an MLP over each group of merge x merge patches (concatenated).
#[derive(Module, Debug)]
pub struct PatchMerger {
    pub ln_q: RmsNorm,
    pub mlp0: Proj,
    pub mlp2: Proj,
}

#[derive(Module, Debug)]
pub struct VisionTower {
    /// The Conv3d with kernel = stride is a linear map over flattened (C, T, P, P) patches.
    pub patch_embed: Proj,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    #[module(skip)]
    pub cfg: VisionConfig,
}

impl VisionTower {
    pub fn load(
        cfg: &VisionConfig,
        src: &mut dyn WeightSource,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        let d = cfg.hidden_size;
        let kernel = cfg.patch_kernel();
        let patch_embed =
            Proj::load_patch_embed(src, "visual.patch_embed.proj", kernel, d, false, device)?;
        let patch_embed = cast_all(patch_embed, dtype);
        let eps = 1e-6;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let p = format!("visual.blocks.{i}");
            let block = VisionBlock {
                norm1: load_rms_norm(src, &format!("{p}.norm1"), d, eps, device)?,
                attn: VisionAttention {
                    qkv: Proj::load(src, &format!("{p}.attn.qkv"), d, 3 * d, true, device)?,
                    proj: Proj::load(src, &format!("{p}.attn.proj"), d, d, true, device)?,
                    num_heads: cfg.num_heads,
                },
                norm2: load_rms_norm(src, &format!("{p}.norm2"), d, eps, device)?,
                mlp: VisionMlp {
                    gate_proj: Proj::load(
                        src,
                        &format!("{p}.mlp.gate_proj"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?,
                    up_proj: Proj::load(
                        src,
                        &format!("{p}.mlp.up_proj"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?,
                    down_proj: Proj::load(
                        src,
                        &format!("{p}.mlp.down_proj"),
                        cfg.intermediate_size,
                        d,
                        true,
                        device,
                    )?,
                },
            };
            // Stored in the load precision block by block: the f32 copy of one block at a time.
            blocks.push(cast_all(block, dtype));
        }
        let merged = d * cfg.merge_unit();
        let merger = PatchMerger {
            ln_q: load_rms_norm(src, "visual.merger.ln_q", d, eps, device)?,
            mlp0: Proj::load(src, "visual.merger.mlp.0", merged, merged, true, device)?,
            mlp2: Proj::load(
                src,
                "visual.merger.mlp.2",
                merged,
                cfg.out_hidden_size,
                true,
                device,
            )?,
        };
        Ok(Self {
            patch_embed,
            blocks,
            merger: cast_all(merger, dtype),
            cfg: cfg.clone(),
        })
    }

    /// `pixel_values: [patches, C*T*P*P]` (the processor's patch order) -> image embeddings
    /// `[patches / merge^2, out_hidden_size]` in the same (merged) order.
    pub fn forward(
        &self,
        pixel_values: Tensor<2>,
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<Tensor<2>> {
        let device = pixel_values.device();
        let [n, _] = pixel_values.dims();
        let cfg = &self.cfg;
        let unit = cfg.merge_unit();
        let expected: usize = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if n != expected {
            anyhow::bail!("pixel_values has {n} patches but image_grid_thw describes {expected}");
        }
        let plan = WindowPlan::new(grid_thw, cfg);
        let d = cfg.hidden_size;

        // Patches are processed in window order so each attention window is a contiguous segment.
        let x = self.patch_embed.forward(pixel_values);
        let order = index_tensor(&plan.patch_order, &device);
        let x = x.select(0, order); // [n, d], window order
        let coords = vision_patch_coords(grid_thw, cfg.spatial_merge_size);
        let coords: Vec<(usize, usize)> = plan.patch_order.iter().map(|&i| coords[i]).collect();
        let (cos, sin) = vision_cos_sin(&coords, cfg.head_dim(), &device);
        let windows = Segments::new(&plan.window_segments, &device);
        let images = Segments::new(&plan.image_segments, &device);

        let mut x = x;
        for (i, blk) in self.blocks.iter().enumerate() {
            let segs = if cfg.fullatt_block_indexes.contains(&i) {
                &images
            } else {
                &windows
            };
            let h = blk.attn.forward(
                rms_norm(&blk.norm1, x.clone()),
                cos.clone(),
                sin.clone(),
                segs,
            );
            x = x + h;
            let h = rms_norm(&blk.norm2, x.clone());
            let m = blk.mlp.down_proj.forward(swiglu(
                blk.mlp.gate_proj.forward(h.clone()),
                blk.mlp.up_proj.forward(h),
            ));
            x = x + m;
        }

        let x = rms_norm(&self.merger.ln_q, x).reshape([n / unit, d * unit]);
        let x = self.merger.mlp2.forward(gelu(self.merger.mlp0.forward(x)));
        // Back from window order to the processor's order of merged tokens.
        Ok(x.select(0, index_tensor(&plan.unit_inverse, &device)))
    }
}

/// How window attention rearranges the patches (transformers' `get_window_index`): merged tokens
/// are grouped into windows of `window_size / (merge * patch)` tokens per side, scanned row-major per
/// frame; windows cut by the image border are smaller.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// Patch index (processor order) at each position of the window-ordered sequence.
    pub patch_order: Vec<usize>,
    /// Inverse permutation at merged-token granularity: window-ordered slot of each merged token.
    pub unit_inverse: Vec<usize>,
    /// (start, len) of every non-empty window, in patches, over the window-ordered sequence.
    pub window_segments: Vec<(usize, usize)>,
    /// (start, len) of every image frame (full attention), in patches.
    pub image_segments: Vec<(usize, usize)>,
}

impl WindowPlan {
    pub fn new(grid_thw: &[[usize; 3]], cfg: &VisionConfig) -> Self {
        let m = cfg.spatial_merge_size;
        let unit = m * m;
        let ws = cfg.window_size / m / cfg.patch_size;
        let mut unit_order = Vec::new();
        let mut window_segments = Vec::new();
        let mut image_segments = Vec::new();
        let mut offset = 0; // merged tokens before this image
        let mut pos = 0; // patches emitted so far
        for &[t, h, w] in grid_thw {
            let (gh, gw) = (h / m, w / m);
            for ti in 0..t {
                image_segments.push((pos, gh * gw * unit));
                for wy in (0..gh).step_by(ws) {
                    for wx in (0..gw).step_by(ws) {
                        let start = pos;
                        for y in wy..(wy + ws).min(gh) {
                            for x in wx..(wx + ws).min(gw) {
                                unit_order.push(offset + ti * gh * gw + y * gw + x);
                                pos += unit;
                            }
                        }
                        window_segments.push((start, pos - start));
                    }
                }
            }
            offset += t * gh * gw;
        }
        let patch_order = unit_order
            .iter()
            .flat_map(|&u| (0..unit).map(move |k| u * unit + k))
            .collect();
        let mut unit_inverse = vec![0; unit_order.len()];
        for (slot, &u) in unit_order.iter().enumerate() {
            unit_inverse[u] = slot;
        }
        Self {
            patch_order,
            unit_inverse,
            window_segments,
            image_segments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window: usize) -> VisionConfig {
        VisionConfig {
            depth: 1,
            hidden_size: 16,
            intermediate_size: 32,
            num_heads: 2,
            in_chans: 3,
            out_hidden_size: 8,
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            window_size: window,
            fullatt_block_indexes: vec![],
            tokens_per_second: 2.0,
            hidden_act: "silu".into(),
        }
    }

    #[test]
    fn windows_tile_the_merged_grid_row_major() {
        // 3x5 merged grid with 2x2 windows: windows of 4,4,2 / 2,2,1 tokens.
        let plan = WindowPlan::new(&[[1, 6, 10]], &cfg(56));
        let lens: Vec<usize> = plan.window_segments.iter().map(|s| s.1 / 4).collect();
        assert_eq!(lens, vec![4, 4, 2, 2, 2, 1]);
        assert_eq!(&plan.patch_order[..8], &[0, 1, 2, 3, 4, 5, 6, 7]); // tokens 0,1 of row 0
        assert_eq!(plan.patch_order[8] / 4, 5); // then token (1,0)
        assert_eq!(plan.image_segments, vec![(0, 60)]);
        // unit_inverse is the inverse permutation.
        let units: Vec<usize> = plan.patch_order.iter().step_by(4).map(|p| p / 4).collect();
        for (slot, &u) in units.iter().enumerate() {
            assert_eq!(plan.unit_inverse[u], slot);
        }
    }

    #[test]
    fn several_images_are_offset_and_segmented() {
        let plan = WindowPlan::new(&[[1, 4, 4], [1, 2, 2]], &cfg(112));
        assert_eq!(plan.window_segments, vec![(0, 16), (16, 4)]);
        assert_eq!(plan.image_segments, vec![(0, 16), (16, 4)]);
        assert_eq!(plan.unit_inverse, vec![0, 1, 2, 3, 4]);
    }
}
