//! The tanh-approximated GELU of Qwen3-VL's vision MLPs (`gelu_pytorch_tanh`),
//! `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, as ONE differentiable op with
//! a hand-written backward pass, on the CPU backend.
//!
//! Why by hand: burn composes it from seven elementwise ops (a power, products, a tanh), each a
//! serial pass over `[patches, intermediate]` whose output autodiff keeps. Here the forward pass
//! is one parallel, vectorised pass that keeps only its input, and the backward pass is one more:
//! `d_x = d_y * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))`, `t = tanh(u)`.
//! Other backends and dtypes take [`composed`] (burn's `gelu_approximate`).

use super::cpu::{exp_nonpositive, f32_tensor, f32_values, rows_per_task, with_simd};
use super::dispatch::{Kernel, fused};
use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;

/// `gelu_pytorch_tanh(x)`, fused on the CPU backend.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32
        && let Some(y) = fused(GeluTanh, [x.clone().into_dispatch()])
    {
        return y;
    }
    composed(x)
}

/// The same function from burn's differentiable ops (any backend, any dtype).
pub fn composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    gelu_approximate(x)
}

/// `tanh(u)` from `exp` of a non-positive argument (vectorisable; `f32::tanh` is a libm call).
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp_nonpositive(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

/// The fused op; it keeps its input for the backward pass.
#[derive(Debug, Clone)]
struct GeluTanh;

impl Kernel<Flex, 1> for GeluTanh {
    type Saved = FlexTensor;

    fn forward(&self, [x]: [FlexTensor; 1], track: bool) -> (FlexTensor, Option<FlexTensor>) {
        let shape = x.shape();
        let xs = f32_values(&x);
        let mut y = vec![0f32; xs.len()];
        let chunk = rows_per_task(1);
        y.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .for_each(|(y, x)| {
                with_simd(|| {
                    for (y, &x) in y.iter_mut().zip(x) {
                        let t = tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
                        *y = 0.5 * x * (1.0 + t);
                    }
                })
            });
        drop(xs);
        (f32_tensor(y, shape), track.then_some(x))
    }

    fn backward(
        self,
        x: FlexTensor,
        d_y: FlexTensor,
        [want_x]: [bool; 1],
    ) -> [Option<FlexTensor>; 1] {
        if !want_x {
            return [None];
        }
        let shape = x.shape();
        let (xs, dy) = (f32_values(&x), f32_values(&d_y));
        let mut dx = vec![0f32; xs.len()];
        let chunk = rows_per_task(1);
        dx.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk).zip(dy.par_chunks(chunk)))
            .for_each(|(dx, (x, dy))| {
                with_simd(|| {
                    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                        let t = tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
                        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x);
                        *dx = dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
                    }
                })
            });
        [Some(f32_tensor(dx, shape))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    #[test]
    fn fused_forward_matches_burns_composition() {
        let device = Device::default();
        let x: Tensor<3> = Tensor::random([3, 70, 41], Distribution::Normal(0.0, 3.0), &device);
        assert!(fused::<_, 1, 3>(GeluTanh, [x.clone().into_dispatch()]).is_some());
        gelu_tanh(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&composed(x).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn fused_gradient_matches_autodiff_of_the_composition() {
        let device = Device::default().autodiff();
        // Enough elements for several tasks (rows_per_task(1) = 65536).
        let x: Tensor<2> = Tensor::random([300, 701], Distribution::Normal(0.0, 3.0), &device);
        let w: Tensor<2> = Tensor::random([300, 701], Distribution::Normal(0.0, 1.0), &device);
        assert!(fused::<_, 1, 2>(GeluTanh, [x.clone().into_dispatch()]).is_some());
        let grad_of = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                gelu_tanh(x.clone())
            } else {
                composed(x.clone())
            };
            let grads = (y * w.clone()).sum().backward();
            x.grad(&grads).expect("x gradient")
        };
        grad_of(true)
            .into_data()
            .assert_approx_eq::<f32>(&grad_of(false).into_data(), Tolerance::absolute(1e-5));
    }
}
