//! The gated activation of the SwiGLU MLPs, `silu(gate) * up`, as ONE differentiable op with a
//! hand-written backward pass, on the CPU backend.
//!
//! Why by hand: burn's autodiff runs it as a sigmoid, two multiplications and their backward
//! passes, each a serial pass over `[tokens, intermediate]` that calls the C library's scalar
//! `expf` (the sigmoid's backward alone was a tenth of the serial time of a training step). Here
//! the forward pass is one parallel, vectorised pass that keeps only its two inputs, and the
//! backward pass computes both input gradients in one more:
//! `d_up = d_out * silu(gate)`, `d_gate = d_out * up * s * (1 + gate * (1 - s))`, `s = sigmoid(gate)`.
//! Other backends and dtypes take the composed ops.

use super::cpu::{f32_tensor, f32_values, rows_per_task, sigmoid, with_simd};
use super::dispatch::{Kernel, fused};
use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// `silu(gate) * up` for tensors of the same shape.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let f32s = gate.dtype() == DType::F32 && up.dtype() == DType::F32;
    if gate.dims() == up.dims()
        && f32s
        && let Some(out) = fused(
            SwiGlu,
            [gate.clone().into_dispatch(), up.clone().into_dispatch()],
        )
    {
        return out;
    }
    composed(gate, up)
}

/// The same function from burn's differentiable ops (any backend).
pub fn composed<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    silu(gate) * up
}

/// The fused op; it keeps its two inputs for the backward pass.
#[derive(Debug, Clone)]
struct SwiGlu;

impl Kernel<Flex, 2> for SwiGlu {
    type Saved = [FlexTensor; 2];

    fn forward(
        &self,
        [gate, up]: [FlexTensor; 2],
        track: bool,
    ) -> (FlexTensor, Option<Self::Saved>) {
        let out = forward(&gate, &up);
        (out, track.then_some([gate, up]))
    }

    fn backward(
        self,
        [gate, up]: Self::Saved,
        d_out: FlexTensor,
        _: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let [dg, du] = backward(&gate, &up, &d_out);
        [Some(dg), Some(du)]
    }
}

fn forward(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (g, u) = (f32_values(gate), f32_values(up));
    let mut out = vec![0f32; g.len()];
    let n = rows_per_task(1);
    out.par_chunks_mut(n)
        .zip(g.par_chunks(n).zip(u.par_chunks(n)))
        .for_each(|(o, (g, u))| {
            with_simd(|| {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = g * sigmoid(g) * u;
                }
            })
        });
    f32_tensor(out, gate.shape())
}

/// Both input gradients in one pass: `[d_gate, d_up]`.
fn backward(gate: &FlexTensor, up: &FlexTensor, d_out: &FlexTensor) -> [FlexTensor; 2] {
    let shape = gate.shape();
    let (g, u, d) = (f32_values(gate), f32_values(up), f32_values(d_out));
    let mut dg = vec![0f32; g.len()];
    let mut du = vec![0f32; g.len()];
    let n = rows_per_task(1);
    dg.par_chunks_mut(n)
        .zip(du.par_chunks_mut(n))
        .zip(g.par_chunks(n).zip(u.par_chunks(n)).zip(d.par_chunks(n)))
        .for_each(|((dg, du), ((g, u), d))| {
            with_simd(|| {
                for i in 0..dg.len() {
                    let s = sigmoid(g[i]);
                    du[i] = d[i] * g[i] * s;
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            })
        });
    [f32_tensor(dg, shape.clone()), f32_tensor(du, shape)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Odd sizes (not a multiple of the vector width or of a task), values well into both
    /// saturated ends of the sigmoid.
    fn inputs(device: &Device) -> (Tensor<3>, Tensor<3>) {
        let n = Distribution::Normal(0.0, 6.0);
        (
            Tensor::random([3, 7, 13], n, device),
            Tensor::random([3, 7, 13], n, device),
        )
    }

    #[test]
    fn fused_forward_matches_the_composed_ops() {
        let device = Device::default();
        let (g, u) = inputs(&device);
        let args = || [g.clone().into_dispatch(), u.clone().into_dispatch()];
        assert!(
            fused::<_, 2, 3>(SwiGlu, args()).is_some(),
            "the CPU path is fused"
        );
        // A non-contiguous gate (a transposed view) takes the same path.
        let gt = g.clone().swap_dims(0, 2);
        let ut = u.clone().swap_dims(0, 2);
        for (g, u) in [(g, u), (gt, ut)] {
            swiglu(g.clone(), u.clone())
                .into_data()
                .assert_approx_eq::<f32>(&composed(g, u).into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn fused_gradients_match_autodiff_of_the_composed_ops() {
        let device = Device::default().autodiff();
        let (g, u) = inputs(&device);
        let args = [g.clone().into_dispatch(), u.clone().into_dispatch()];
        assert!(fused::<_, 2, 3>(SwiGlu, args).is_some());
        let w: Tensor<3> = Tensor::random(g.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads_of = |f: fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
            let (g, u) = (
                g.clone().detach().require_grad(),
                u.clone().detach().require_grad(),
            );
            // A non-contiguous view into the op, as the model's reshapes can produce.
            let grads = (f(g.clone().swap_dims(1, 2), u.clone().swap_dims(1, 2))
                * w.clone().swap_dims(1, 2))
            .sum()
            .backward();
            [g.grad(&grads), u.grad(&grads)].map(|x| x.expect("gradient"))
        };
        let fused = grads_of(swiglu);
        let reference = grads_of(composed);
        for (f, r) in fused.into_iter().zip(reference) {
            f.into_data()
                .assert_approx_eq::<f32>(&r.into_data(), Tolerance::absolute(1e-5));
        }
    }
}
