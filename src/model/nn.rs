//! The model's building blocks, built from a [`WeightSource`]: linear projections (with an optional
//! LoRA adapter), RMSNorm, embeddings. PyTorch stores linears as `[out, in]`; burn multiplies by
//! `[in, out]`, so weights are transposed once, here, at load time.

use super::precision::cast;
use super::weights::{ParamKind, WeightSource};
use crate::kernels::{matvec, projection};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear, RmsNorm};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

pub fn tensor1(data: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

pub fn tensor2(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Row-major `[rows, cols]` -> row-major `[cols, rows]`.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// A linear projection `x W + b`, optionally with a LoRA adapter `+ scale * dropout(x) A B`.
/// The adapter is kept apart from the base weight (rather than folded in) so that dropout applies
/// to its input as in PEFT, and so it can be saved in PEFT's layout.
#[derive(Module, Debug)]
pub struct Proj {
    pub base: Linear,
    pub lora: Option<LoraAdapter>,
}

/// LoRA factors in burn's orientation: `a: [in, r]`, `b: [r, out]` (PEFT stores their transposes).
#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
    pub scale: f64,
    pub dropout: Dropout,
}

impl Proj {
    pub fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::load_shaped(src, prefix, &[d_out, d_in], bias, device)
    }

    /// A Conv3d patch embedding whose kernel equals its stride: the linear map it is over
    /// flattened `kernel = [C, T, P, P]` patches. The hub stores the kernel `[d_out, C, T, P, P]`.
    pub fn load_patch_embed(
        src: &mut dyn WeightSource,
        prefix: &str,
        kernel: [usize; 4],
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let [c, t, p, q] = kernel;
        Self::load_shaped(src, prefix, &[d_out, c, t, p, q], bias, device)
    }

    /// A weight stored as `[d_out, ..]` (the rest flattened into `d_in`) and an optional bias.
    fn load_shaped(
        src: &mut dyn WeightSource,
        prefix: &str,
        shape: &[usize],
        bias: bool,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let (d_out, d_in) = (shape[0], shape[1..].iter().product());
        let w = src.take(&format!("{prefix}.weight"), shape, ParamKind::Weight)?;
        let b = if bias {
            Some(src.take(&format!("{prefix}.bias"), &[d_out], ParamKind::Bias)?)
        } else {
            None
        };
        Ok(Self::from_pytorch(&w, b, d_in, d_out, device))
    }

    /// From a PyTorch-layout weight `[out, in]` (row-major) and optional bias.
    pub fn from_pytorch(
        w: &[f32],
        bias: Option<Vec<f32>>,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Self {
        let weight = tensor2(transpose(w, d_out, d_in), [d_in, d_out], device);
        let bias = bias.map(|b| Param::from_tensor(tensor1(b, device)));
        Self {
            base: Linear {
                weight: Param::from_tensor(weight),
                bias,
            },
            lora: None,
        }
    }

    pub fn d_in(&self) -> usize {
        self.base.weight.dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// Attaches a LoRA adapter with the given factors (`a: [in, r]`, `b: [r, out]`).
    pub fn with_lora(mut self, a: Tensor<2>, b: Tensor<2>, alpha: f64, dropout: f64) -> Self {
        let r = a.dims()[1];
        self.lora = Some(LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: alpha / r as f64,
            dropout: DropoutConfig::new(dropout).init(),
        });
        self
    }

    /// `x W + b (+ LoRA)` in `x`'s dtype. The base weight is used in `x`'s dtype (cast if it is
    /// an f32 master copy under bf16 activations). The adapter runs in its own (f32) dtype, as
    /// PEFT does: `x` is cast up, the rank-r products and the sum are f32, and the result is
    /// rounded once to `x`'s dtype; the factors' gradients are then f32 products too.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // On the CPU in f32: the whole projection, adapter included, as one op.
        match self.fused(&x) {
            Some(y) => y,
            None => self.composed(x),
        }
    }

    /// [`Proj::forward`] as one fused op ([`projection::fused`]) where that applies, else `None`.
    pub fn fused<const D: usize>(&self, x: &Tensor<D>) -> Option<Tensor<D>> {
        let lora = match &self.lora {
            None => None,
            // Dropout is the identity at 0, and off the autodiff device (as burn's `Dropout`).
            Some(l) if l.dropout.prob == 0.0 || !x.device().is_autodiff() => {
                Some((l.a.val(), l.b.val(), l.scale as f32))
            }
            Some(_) => return None,
        };
        let b = self.base.bias.as_ref().map(|b| b.val());
        projection::fused(x, self.base.weight.val(), b, lora)
    }

    /// [`Proj::forward`] from burn's differentiable ops (any backend, any dtype).
    pub fn composed<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let base = |x: Tensor<D>| {
            let w = cast(self.base.weight.val(), dtype);
            let b = self.base.bias.as_ref().map(|b| cast(b.val(), dtype));
            // Decoding's one-row products take the matrix-vector kernel on the CPU.
            matvec::linear(x, w, b)
        };
        match &self.lora {
            None => base(x),
            Some(l) => {
                // The scale goes on the `[r, out]` factor rather than on the `[.., out]` product:
                // one tiny multiplication instead of a pass (and its backward) over activations.
                // `linear` folds the batch dimensions into rows: one matrix product per factor.
                let a = l.a.val();
                let ad = a.dtype();
                let b = l.b.val().mul_scalar(l.scale);
                let delta = linear(
                    linear(l.dropout.forward(cast(x.clone(), ad)), a, None),
                    b,
                    None,
                );
                if ad == dtype {
                    base(x) + delta
                } else {
                    cast(cast(base(x), ad) + delta, dtype)
                }
            }
        }
    }
}

pub fn load_rms_norm(
    src: &mut dyn WeightSource,
    name: &str,
    dim: usize,
    eps: f64,
    device: &Device,
) -> anyhow::Result<RmsNorm> {
    let g = src.take(&format!("{name}.weight"), &[dim], ParamKind::NormScale)?;
    Ok(RmsNorm {
        gamma: Param::from_tensor(tensor1(g, device)),
        epsilon: eps,
    })
}

pub fn load_embedding(
    src: &mut dyn WeightSource,
    name: &str,
    rows: usize,
    dim: usize,
    device: &Device,
) -> anyhow::Result<Embedding> {
    let w = src.take(&format!("{name}.weight"), &[rows, dim], ParamKind::Weight)?;
    Ok(Embedding {
        weight: Param::from_tensor(tensor2(w, [rows, dim], device)),
    })
}

/// `pixel_values` as `[patches, patch_dim]` rows, or an error naming the mismatch.
pub fn patch_rows(
    pixel_values: &[f32],
    patch_dim: usize,
    device: &Device,
) -> anyhow::Result<Tensor<2>> {
    if !pixel_values.len().is_multiple_of(patch_dim) {
        anyhow::bail!(
            "pixel_values holds {} values, not a multiple of the patch size {patch_dim}",
            pixel_values.len()
        );
    }
    Ok(tensor2(
        pixel_values.to_vec(),
        [pixel_values.len() / patch_dim, patch_dim],
        device,
    ))
}
