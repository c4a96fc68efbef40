//! The Qwen3-VL vision tower: Conv3d patch embedding (with bias), a learned position table resampled
//! bilinearly to each image's grid, LayerNorm blocks with 2-D rotary full attention per image and a
//! tanh-GELU MLP, the patch merger, and the DeepStack mergers that hand intermediate blocks'
//! features to the decoder. Follows transformers' `Qwen3VLVisionModel` in the order data flows.

use super::config::VisionConfig;
use crate::kernels::gelu::gelu_tanh;
use crate::kernels::layer_norm::layer_norm;
use crate::kernels::tensor::index_tensor;
use crate::model::nn::{Proj, tensor2};
use crate::model::precision::{cast, cast_all};
use crate::model::rope::{vision_cos_sin, vision_patch_coords};
use crate::model::vision_attention::{Segments, VisionAttention};
use crate::model::weights::{ParamKind, WeightSource};
use anyhow::Context;
use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{DType, Device, Tensor};

/// LayerNorm epsilon of every vision norm.
const EPS: f64 = 1e-6;

#[derive(Module, Debug)]
pub struct VisionMlp {
    pub linear_fc1: Proj,
    pub linear_fc2: Proj,
    /// tanh-approximated GELU (`gelu_pytorch_tanh`) rather than the exact one.
    pub tanh_gelu: bool,
}

#[derive(Module, Debug)]
pub struct VisionBlock {
    pub norm1: LayerNorm,
    pub attn: VisionAttention,
    pub norm2: LayerNorm,
    pub mlp: VisionMlp,
}

/// Merge x merge patches -> one LLM token: LayerNorm, concatenation, `linear_fc1`, exact GELU,
/// `linear_fc2`. The main merger normalises each patch before the concatenation; the DeepStack
/// mergers (`postshuffle_norm`) normalise the concatenated features.
#[derive(Module, Debug)]
pub struct PatchMerger {
    pub norm: LayerNorm,
    pub linear_fc1: Proj,
    pub linear_fc2: Proj,
    pub postshuffle_norm: bool,
}

#[derive(Module, Debug)]
pub struct VisionTower {
    /// The Conv3d with kernel = stride is a linear map over flattened (C, T, P, P) patches.
    pub patch_embed: Proj,
    /// `[side * side, hidden]` learned positions, resampled to each image's grid.
    pub pos_embed: Embedding,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    pub deepstack_merger_list: Vec<PatchMerger>,
    #[module(skip)]
    pub cfg: VisionConfig,
}

/// What the tower returns: image embeddings `[tokens, out_hidden]` and one DeepStack feature
/// `[tokens, out_hidden]` per `deepstack_visual_indexes` entry, tokens in the processor's order.
pub struct VisionOutput {
    pub image_embeds: Tensor<2>,
    pub deepstack_features: Vec<Tensor<2>>,
}

fn load_layer_norm(
    src: &mut dyn WeightSource,
    name: &str,
    dim: usize,
    device: &Device,
) -> anyhow::Result<LayerNorm> {
    let mut norm = LayerNormConfig::new(dim).with_epsilon(EPS).init(device);
    let g = src.take(&format!("{name}.weight"), &[dim], ParamKind::NormScale)?;
    let b = src.take(&format!("{name}.bias"), &[dim], ParamKind::Bias)?;
    norm.gamma = Param::from_tensor(crate::model::nn::tensor1(g, device));
    norm.beta = Some(Param::from_tensor(crate::model::nn::tensor1(b, device)));
    Ok(norm)
}

impl PatchMerger {
    fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        cfg: &VisionConfig,
        postshuffle_norm: bool,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let merged = cfg.hidden_size * cfg.merge_unit();
        let norm_dim = if postshuffle_norm {
            merged
        } else {
            cfg.hidden_size
        };
        Ok(Self {
            norm: load_layer_norm(src, &format!("{prefix}.norm"), norm_dim, device)?,
            linear_fc1: Proj::load(
                src,
                &format!("{prefix}.linear_fc1"),
                merged,
                merged,
                true,
                device,
            )?,
            linear_fc2: Proj::load(
                src,
                &format!("{prefix}.linear_fc2"),
                merged,
                cfg.out_hidden_size,
                true,
                device,
            )?,
            postshuffle_norm,
        })
    }

    /// `x: [patches, hidden]` (merge groups contiguous) -> `[patches / unit, out_hidden]`.
    pub fn forward(&self, x: Tensor<2>, unit: usize) -> Tensor<2> {
        let [n, d] = x.dims();
        let x = if self.postshuffle_norm {
            layer_norm(&self.norm, EPS, x.reshape([n / unit, d * unit]))
        } else {
            layer_norm(&self.norm, EPS, x).reshape([n / unit, d * unit])
        };
        self.linear_fc2.forward(gelu(self.linear_fc1.forward(x)))
    }
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
            Proj::load_patch_embed(src, "visual.patch_embed.proj", kernel, d, true, device)?;
        let patch_embed = cast_all(patch_embed, dtype);
        let table = src
            .take(
                "visual.pos_embed.weight",
                &[cfg.num_position_embeddings, d],
                ParamKind::Weight,
            )
            .with_context(|| {
                format!(
                    "the position table `visual.pos_embed.weight` does not match vision_config.num_position_embeddings = {}",
                    cfg.num_position_embeddings
                )
            })?;
        let pos_embed = cast_all(
            Embedding {
                weight: Param::from_tensor(tensor2(
                    table,
                    [cfg.num_position_embeddings, d],
                    device,
                )),
            },
            dtype,
        );
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let p = format!("visual.blocks.{i}");
            let block = VisionBlock {
                norm1: load_layer_norm(src, &format!("{p}.norm1"), d, device)?,
                attn: VisionAttention {
                    qkv: Proj::load(src, &format!("{p}.attn.qkv"), d, 3 * d, true, device)?,
                    proj: Proj::load(src, &format!("{p}.attn.proj"), d, d, true, device)?,
                    num_heads: cfg.num_heads,
                },
                norm2: load_layer_norm(src, &format!("{p}.norm2"), d, device)?,
                mlp: VisionMlp {
                    linear_fc1: Proj::load(
                        src,
                        &format!("{p}.mlp.linear_fc1"),
                        d,
                        cfg.intermediate_size,
                        true,
                        device,
                    )?,
                    linear_fc2: Proj::load(
                        src,
                        &format!("{p}.mlp.linear_fc2"),
                        cfg.intermediate_size,
                        d,
                        true,
                        device,
                    )?,
                    tanh_gelu: cfg.hidden_act == "gelu_pytorch_tanh",
                },
            };
            // Stored in the load precision block by block: the f32 copy of one block at a time.
            blocks.push(cast_all(block, dtype));
        }
        let merger = PatchMerger::load(src, "visual.merger", cfg, false, device)?;
        let deepstack_merger_list = (0..cfg.deepstack_visual_indexes.len())
            .map(|k| {
                let m = PatchMerger::load(
                    src,
                    &format!("visual.deepstack_merger_list.{k}"),
                    cfg,
                    true,
                    device,
                )?;
                Ok(cast_all(m, dtype))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            patch_embed,
            pos_embed,
            blocks,
            merger: cast_all(merger, dtype),
            deepstack_merger_list,
            cfg: cfg.clone(),
        })
    }

    /// `pixel_values: [patches, C*T*P*P]` (the processor's patch order: 2x2 merge blocks) ->
    /// image embeddings and DeepStack features, one row per merged token, in the same order.
    pub fn forward(
        &self,
        pixel_values: Tensor<2>,
        grid_thw: &[[usize; 3]],
    ) -> anyhow::Result<VisionOutput> {
        let device = pixel_values.device();
        let [n, _] = pixel_values.dims();
        let cfg = &self.cfg;
        let unit = cfg.merge_unit();
        let expected: usize = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if n != expected {
            anyhow::bail!("pixel_values has {n} patches but image_grid_thw describes {expected}");
        }
        let m = cfg.spatial_merge_size;
        if let Some(g) = grid_thw
            .iter()
            .find(|g| !g[1].is_multiple_of(m) || !g[2].is_multiple_of(m))
        {
            anyhow::bail!("image grid {g:?} is not a multiple of spatial_merge_size {m}");
        }
        let coords = vision_patch_coords(grid_thw, m);
        let x = self.patch_embed.forward(pixel_values) + self.positions(grid_thw, &coords);
        let (cos, sin) = vision_cos_sin(&coords, cfg.head_dim(), &device);
        // Full attention within each frame of each image (`cu_seqlens`); no windows.
        let mut frames = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grid_thw {
            for _ in 0..t {
                frames.push((start, h * w));
                start += h * w;
            }
        }
        let frames = Segments::new(&frames, &device);

        let mut x = x;
        let mut deepstack_features = Vec::with_capacity(self.deepstack_merger_list.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = blk.attn.forward(
                layer_norm(&blk.norm1, EPS, x.clone()),
                cos.clone(),
                sin.clone(),
                &frames,
            );
            x = x + h;
            let h = blk
                .mlp
                .linear_fc1
                .forward(layer_norm(&blk.norm2, EPS, x.clone()));
            let h = if blk.mlp.tanh_gelu {
                gelu_tanh(h)
            } else {
                gelu(h)
            };
            x = x + blk.mlp.linear_fc2.forward(h);
            for (k, _) in cfg
                .deepstack_visual_indexes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == i)
            {
                deepstack_features
                    .push((k, self.deepstack_merger_list[k].forward(x.clone(), unit)));
            }
        }
        // In `deepstack_visual_indexes` order (the order the decoder layers take them).
        deepstack_features.sort_by_key(|(k, _)| *k);
        Ok(VisionOutput {
            image_embeds: self.merger.forward(x, unit),
            deepstack_features: deepstack_features.into_iter().map(|(_, f)| f).collect(),
        })
    }

    /// Learned positions `[patches, hidden]` for patches at `coords` (grid row, column): the
    /// `side x side` table resampled to each image's `h x w` patch grid as
    /// `F.interpolate(bilinear, align_corners=True)` does (so corners map to corners), summed from
    /// four gathers of the table so that it receives gradients.
    fn positions(&self, grid_thw: &[[usize; 3]], coords: &[(usize, usize)]) -> Tensor<2> {
        let side = self.cfg.position_grid_side();
        let n = coords.len();
        let mut idx = [(); 4].map(|_| Vec::with_capacity(n));
        let mut wts = [(); 4].map(|_| Vec::with_capacity(n));
        let mut at = 0;
        for &[t, h, w] in grid_thw {
            let hs = resample_axis(side, h);
            let ws = resample_axis(side, w);
            for &(row, col) in &coords[at..at + t * h * w] {
                let ((h0, h1, dh), (w0, w1, dw)) = (hs[row], ws[col]);
                let corners = [
                    (h0 * side + w0, (1.0 - dh) * (1.0 - dw)),
                    (h0 * side + w1, (1.0 - dh) * dw),
                    (h1 * side + w0, dh * (1.0 - dw)),
                    (h1 * side + w1, dh * dw),
                ];
                for (c, (i, wt)) in corners.into_iter().enumerate() {
                    idx[c].push(i);
                    wts[c].push(wt);
                }
            }
            at += t * h * w;
        }
        let table = self.pos_embed.weight.val();
        let device = table.device();
        let dtype = table.dtype();
        idx.iter()
            .zip(wts)
            .map(|(i, w)| {
                let w = cast(tensor2(w, [n, 1], &device), dtype);
                table.clone().select(0, index_tensor(i, &device)) * w
            })
            .reduce(|a, b| a + b)
            .expect("four corners")
    }
}

/// For each of `len` output positions, the two table rows it interpolates between and the weight
/// of the second: `torch.linspace(0, side - 1, len)` split into floor, floor + 1 (clipped) and
/// fraction, in f32 as transformers computes it.
fn resample_axis(side: usize, len: usize) -> Vec<(usize, usize, f32)> {
    let end = (side - 1) as f32;
    (0..len)
        .map(|i| {
            let x = if len == 1 {
                0.0
            } else {
                // torch's linspace: from the start in the first half, from the end in the second.
                let step = end / (len - 1) as f32;
                if i < len / 2 {
                    i as f32 * step
                } else {
                    end - (len - 1 - i) as f32 * step
                }
            };
            let lo = x as usize;
            (lo, (lo + 1).min(side - 1), x - lo as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_maps_corners_to_corners() {
        // 9-row table to 4 rows: positions 0, 8/3, 16/3, 8.
        let r = resample_axis(9, 4);
        assert_eq!((r[0].0, r[0].1, r[0].2), (0, 1, 0.0));
        assert_eq!((r[1].0, r[1].1), (2, 3));
        assert!((r[1].2 - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!((r[2].0, r[2].1), (5, 6));
        assert!((r[2].2 - 1.0 / 3.0).abs() < 1e-6);
        // The last row is the table's last row exactly (clipped, weight 0).
        assert_eq!((r[3].0, r[3].1, r[3].2), (8, 8, 0.0));
        // Up-sampling: 12 positions over 9 rows.
        let r = resample_axis(9, 12);
        assert_eq!(r.len(), 12);
        assert_eq!(r[11], (8, 8, 0.0));
        assert_eq!(resample_axis(9, 1), vec![(0, 1, 0.0)]);
    }
}
