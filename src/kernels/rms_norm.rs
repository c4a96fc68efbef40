//! RMSNorm, `y = x / sqrt(mean(x^2) + eps) * gamma` over the last dimension, as ONE
//! differentiable op with a hand-written backward pass, on the CPU backend.
//!
//! Why by hand: burn's `RmsNorm` is five elementwise ops (square, mean, add, sqrt, divide, then
//! the scale), each a serial pass whose output autodiff keeps; a step runs 30 norms forward and
//! backward. Here each row is normalised in one parallel pass that keeps only the input and one
//! reciprocal RMS `r` per row, and the backward pass is, per row with `g = d_y * gamma`,
//! `d_x = r * g - x * r^3 * mean(g * x)`, and `d_gamma = sum over rows of d_y * x * r`.
//! Other backends and dtypes take [`composed`], which normalises in f32 as transformers does.

use super::cpu::{dot, dot3, f32_tensor, f32_values, rows_per_task, with_simd};
use super::dispatch::{Kernel, fused};
use super::tensor::{cast, in_f32};
use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::nn::RmsNorm;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// `norm.forward(x)`, fused on the CPU backend.
pub fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let gamma = norm.gamma.val();
    if x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && let Some(y) = fused(
            FusedRmsNorm { eps: norm.epsilon },
            [x.clone().into_dispatch(), gamma.into_dispatch()],
        )
    {
        return y;
    }
    composed(norm, x)
}

/// transformers' `Qwen2RMSNorm` from burn's differentiable ops (any backend, any dtype):
/// normalised in f32, back in `x`'s dtype, then scaled by `gamma` in that dtype.
pub fn composed<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    let xf = in_f32(x);
    let rms = (xf.clone().square().mean_dim(D - 1) + norm.epsilon).sqrt();
    cast(xf / rms, dtype) * cast(norm.gamma.val(), dtype).unsqueeze()
}

/// The fused op on `[x, gamma]`; it keeps `x`, `gamma` and each row's reciprocal RMS.
#[derive(Debug, Clone)]
struct FusedRmsNorm {
    eps: f64,
}

impl Kernel<Flex, 2> for FusedRmsNorm {
    type Saved = Saved;

    fn forward(&self, [x, gamma]: [FlexTensor; 2], track: bool) -> (FlexTensor, Option<Saved>) {
        let (y, r) = forward(&x, &gamma, self.eps);
        (y, track.then_some(Saved { x, gamma, r }))
    }

    fn backward(
        self,
        saved: Saved,
        d_y: FlexTensor,
        [want_x, want_gamma]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        backward(saved, d_y, want_x, want_gamma)
    }
}

/// The normalised tensor and each row's reciprocal RMS.
fn forward(x: &FlexTensor, gamma: &FlexTensor, eps: f64) -> (FlexTensor, Vec<f32>) {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let (xs, g) = (f32_values(x), f32_values(gamma));
    let mut y = vec![0f32; xs.len()];
    let mut r = vec![0f32; xs.len() / d.max(1)];
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(r.par_chunks_mut(rows))
        .zip(xs.par_chunks(rows * d))
        .for_each(|((y, r), x)| {
            with_simd(|| {
                for ((y, r), x) in y.chunks_mut(d).zip(r.iter_mut()).zip(x.chunks(d)) {
                    let ss = dot(x, x);
                    *r = 1.0 / (ss / d as f32 + eps as f32).sqrt();
                    for ((y, &x), &g) in y.iter_mut().zip(x).zip(g.iter()) {
                        *y = x * *r * g;
                    }
                }
            })
        });
    (f32_tensor(y, shape), r)
}

#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    gamma: FlexTensor,
    r: Vec<f32>,
}

/// `[d_x, d_gamma]`, each only where wanted.
fn backward(
    Saved { x, gamma, r }: Saved,
    d_y: FlexTensor,
    want_x: bool,
    want_gamma: bool,
) -> [Option<FlexTensor>; 2] {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let (xs, g, dy) = (f32_values(&x), f32_values(&gamma), f32_values(&d_y));
    let rows = rows_per_task(d);
    let dx = want_x.then(|| {
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(rows * d)
            .zip(xs.par_chunks(rows * d).zip(dy.par_chunks(rows * d)))
            .zip(r.par_chunks(rows))
            .for_each(|((dx, (x, dy)), r)| {
                with_simd(|| {
                    let rows = dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)).zip(r);
                    for (((dx, x), dy), &r) in rows {
                        let c = r * r * r * dot3(dy, &g, x) / d as f32;
                        for (((dx, &x), &dy), &g) in dx.iter_mut().zip(x).zip(dy).zip(g.iter()) {
                            *dx = r * dy * g - x * c;
                        }
                    }
                })
            });
        f32_tensor(dx, shape.clone())
    });
    let d_gamma = want_gamma.then(|| {
        // Partial sums per block of rows, then their sum.
        let d_gamma = xs
            .par_chunks(rows * d)
            .zip(dy.par_chunks(rows * d))
            .zip(r.par_chunks(rows))
            .map(|((x, dy), r)| {
                let mut acc = vec![0f32; d];
                for ((x, dy), &r) in x.chunks(d).zip(dy.chunks(d)).zip(r) {
                    for ((a, &x), &dy) in acc.iter_mut().zip(x).zip(dy) {
                        *a += dy * x * r;
                    }
                }
                acc
            })
            .reduce(
                || vec![0f32; d],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        f32_tensor(d_gamma, Shape::new([d]))
    });
    [dx, d_gamma]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn norm(d: usize, device: &Device) -> RmsNorm {
        RmsNorm {
            gamma: Param::from_tensor(Tensor::random([d], Distribution::Normal(1.0, 0.5), device)),
            epsilon: 1e-6,
        }
    }

    #[test]
    fn fused_forward_matches_burns_module() {
        let device = Device::default();
        let n = norm(37, &device);
        let x: Tensor<3> = Tensor::random([2, 5, 37], Distribution::Normal(0.0, 3.0), &device);
        assert!(
            fused::<_, 2, 3>(
                FusedRmsNorm { eps: 1e-6 },
                [x.clone().into_dispatch(), n.gamma.val().into_dispatch()]
            )
            .is_some()
        );
        // A transposed view: rows are gathered before normalising.
        let xt: Tensor<3> =
            Tensor::random([37, 5, 2], Distribution::Normal(0.0, 3.0), &device).swap_dims(0, 2);
        for x in [x, xt] {
            rms_norm(&n, x.clone())
                .into_data()
                .assert_approx_eq::<f32>(&n.forward(x).into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn fused_gradients_match_autodiff_of_burns_module() {
        let device = Device::default().autodiff();
        // Enough rows to be split over several tasks (rows_per_task(37) = 1771).
        let x: Tensor<2> = Tensor::random([4000, 37], Distribution::Normal(0.0, 3.0), &device);
        let w: Tensor<2> = Tensor::random([4000, 37], Distribution::Normal(0.0, 1.0), &device);
        let n0 = norm(37, &device);
        assert!(
            fused::<_, 2, 2>(
                FusedRmsNorm { eps: 1e-6 },
                [x.clone().into_dispatch(), n0.gamma.val().into_dispatch()]
            )
            .is_some()
        );
        let grads_of = |fused: bool| {
            let n = RmsNorm {
                gamma: Param::from_tensor(n0.gamma.val().detach().require_grad()),
                epsilon: n0.epsilon,
            };
            let x = x.clone().detach().require_grad();
            let y = if fused {
                rms_norm(&n, x.clone())
            } else {
                n.forward(x.clone())
            };
            let grads = (y * w.clone()).sum().backward();
            let dx = x.grad(&grads).expect("x gradient");
            let dg = n.gamma.val().grad(&grads).expect("gamma gradient");
            (dx, dg)
        };
        let (dx, dg) = grads_of(true);
        let (rdx, rdg) = grads_of(false);
        dx.into_data()
            .assert_approx_eq::<f32>(&rdx.into_data(), Tolerance::absolute(1e-4));
        // A sum over 4000 rows: compare relative to its size.
        dg.into_data()
            .assert_approx_eq::<f32>(&rdg.into_data(), Tolerance::rel_abs(1e-4, 1e-3));
    }
}
