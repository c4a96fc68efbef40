//! Applying a rotary embedding, `x * cos + rotate_half(x) * sin` (`rotate_half(x) = [-x2, x1]` for
//! the two halves of the last dimension), as ONE differentiable op with a hand-written backward
//! pass on the CPU backend. `cos`/`sin` broadcast over the dimensions where they have size 1 and
//! receive no gradient (they are computed from integer positions).
//!
//! Why by hand: composed, this is two `narrow`s, a negation, a concatenation, two products and a
//! sum, each a serial pass (and the backward of each `narrow` a zero-filled scatter). Here it is
//! one parallel pass each way; the backward is the rotation by the opposite angle,
//! `d_x1 = d1 * cos1 + d2 * sin2`, `d_x2 = d2 * cos2 - d1 * sin1`.
//! Other backends and dtypes take the composed ops.

use super::cpu::{f32_tensor, f32_values, rows_per_task, with_simd};
use super::dispatch::{Kernel, fused};
use super::tensor::{cast, in_f32};
use burn::backend::flex::FlexTensor;
use burn::backend::{DispatchTensor, Flex, TensorMetadata};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// `x * cos + rotate_half(x) * sin`; `cos`, `sin` have `x`'s rank and last dimension (even) and
/// size 1 or `x`'s size in every other dimension.
pub fn apply_rope<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    let f32s = [&x, &cos, &sin].iter().all(|t| t.dtype() == DType::F32);
    let (xd, cd) = (x.dims(), cos.dims());
    let fits = xd[D - 1] % 2 == 0
        && cd == sin.dims()
        && (0..D).all(|i| cd[i] == xd[i] || (cd[i] == 1 && i < D - 1));
    if f32s
        && fits
        && let Some(y) = fused(FusedRope, args(&x, &cos, &sin))
    {
        return y;
    }
    composed(x, cos, sin)
}

/// The same function from burn's differentiable ops (any backend, any dtype). Computed in f32
/// and returned in `x`'s dtype, as transformers rotates vision queries and keys.
pub fn composed<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    let (x, cos, sin) = (in_f32(x), in_f32(cos), in_f32(sin));
    cast(x.clone() * cos + rotate_half(x) * sin, dtype)
}

/// `x[..., :d/2], x[..., d/2:] -> cat(-x2, x1)`: the rotation used by both rotary embeddings.
pub fn rotate_half<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let d = x.dims()[D - 1];
    let x1 = x.clone().narrow(D - 1, 0, d / 2);
    let x2 = x.narrow(D - 1, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], D - 1)
}

/// The fused op's inputs `[x, cos, sin]`; the angles never need a gradient, so they leave any
/// autodiff graph.
fn args<const D: usize>(x: &Tensor<D>, cos: &Tensor<D>, sin: &Tensor<D>) -> [DispatchTensor; 3] {
    [x, &cos.clone().detach(), &sin.clone().detach()].map(|t| t.clone().into_dispatch())
}

/// The fused op; it keeps the angles for the backward pass, the rotation by the opposite angles.
#[derive(Debug, Clone)]
struct FusedRope;

impl Kernel<Flex, 3> for FusedRope {
    type Saved = [FlexTensor; 2];

    fn forward(
        &self,
        [x, cos, sin]: [FlexTensor; 3],
        track: bool,
    ) -> (FlexTensor, Option<Self::Saved>) {
        let y = rotate(&x, &cos, &sin, 1.0);
        (y, track.then_some([cos, sin]))
    }

    fn backward(
        self,
        [cos, sin]: Self::Saved,
        d_y: FlexTensor,
        _: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        [Some(rotate(&d_y, &cos, &sin, -1.0)), None, None]
    }
}

/// Rotates each last-dimension row of `x` by its angles (`direction` 1) or by their opposites
/// (`direction` -1, the transpose, for the backward pass). The result is dense, in `x`'s shape.
fn rotate(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, direction: f32) -> FlexTensor {
    let shape = x.shape();
    let dims = shape.to_vec();
    let cdims = cos.shape().to_vec();
    let hd = dims[dims.len() - 1];
    let half = hd / 2;
    let (xs, c, s) = (f32_values(x), f32_values(cos), f32_values(sin));
    // Row `r` of `x` reads angle row `angle_row(r)`: strides of `cos` in rows, 0 where broadcast.
    let outer = &dims[..dims.len() - 1];
    let mut strides = vec![0usize; outer.len()];
    let mut stride = 1;
    for i in (0..outer.len()).rev() {
        if cdims[i] != 1 {
            strides[i] = stride;
        }
        stride *= cdims[i];
    }
    let angle_row = |mut r: usize| {
        let mut a = 0;
        for i in (0..outer.len()).rev() {
            a += (r % outer[i]) * strides[i];
            r /= outer[i];
        }
        a
    };
    let mut y = vec![0f32; xs.len()];
    let rows = rows_per_task(hd);
    y.par_chunks_mut(rows * hd)
        .zip(xs.par_chunks(rows * hd))
        .enumerate()
        .for_each(|(block, (y, x))| {
            with_simd(|| {
                for (i, (y, x)) in y.chunks_mut(hd).zip(x.chunks(hd)).enumerate() {
                    let a = angle_row(block * rows + i) * hd;
                    let (c, s) = (&c[a..a + hd], &s[a..a + hd]);
                    let (y1, y2) = y.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    // Forward: y1 = x1 c1 - x2 s1, y2 = x2 c2 + x1 s2.
                    // Backward: y1 = x1 c1 + x2 s2, y2 = x2 c2 - x1 s1.
                    let (sa, sb) = if direction > 0.0 {
                        (&s[..half], &s[half..])
                    } else {
                        (&s[half..], &s[..half])
                    };
                    for j in 0..half {
                        y1[j] = x1[j] * c[j] - direction * x2[j] * sa[j];
                        y2[j] = x2[j] * c[half + j] + direction * x1[j] * sb[j];
                    }
                }
            })
        });
    f32_tensor(y, shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// `x: [2, 5, 3, 8]` read through a transposed view, angles `[2, 5, 1, 8]` broadcast over
    /// the third dimension (the text model's layout) and arbitrary values.
    fn inputs(device: &Device) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let n = Distribution::Normal(0.0, 1.0);
        let x: Tensor<4> = Tensor::random([2, 3, 5, 8], n, device).swap_dims(1, 2);
        let cos = Tensor::random([2, 5, 1, 8], n, device);
        let sin = Tensor::random([2, 5, 1, 8], n, device);
        (x, cos, sin)
    }

    #[test]
    fn fused_forward_matches_the_composed_ops() {
        let device = Device::default();
        let (x, cos, sin) = inputs(&device);
        assert!(fused::<_, 3, 4>(FusedRope, args(&x, &cos, &sin)).is_some());
        apply_rope(x.clone(), cos.clone(), sin.clone())
            .into_data()
            .assert_approx_eq::<f32>(
                &composed(x, cos, sin).into_data(),
                Tolerance::absolute(1e-5),
            );
        // Angles broadcast over a leading dimension too (the vision tower's layout).
        let x: Tensor<3> = Tensor::random([6, 4, 8], Distribution::Normal(0.0, 1.0), &device);
        let cos: Tensor<3> = Tensor::random([6, 1, 8], Distribution::Normal(0.0, 1.0), &device);
        let sin: Tensor<3> = Tensor::random([6, 1, 8], Distribution::Normal(0.0, 1.0), &device);
        apply_rope(x.clone(), cos.clone(), sin.clone())
            .into_data()
            .assert_approx_eq::<f32>(
                &composed(x, cos, sin).into_data(),
                Tolerance::absolute(1e-5),
            );
    }

    #[test]
    fn fused_gradient_matches_autodiff_of_the_composed_ops() {
        let device = Device::default().autodiff();
        let (x, cos, sin) = inputs(&device);
        assert!(fused::<_, 3, 4>(FusedRope, args(&x, &cos, &sin)).is_some());
        let w: Tensor<4> = Tensor::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grad_of = |f: fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = x.clone().detach().require_grad();
            let grads = (f(x.clone(), cos.clone(), sin.clone()) * w.clone())
                .sum()
                .backward();
            x.grad(&grads).expect("gradient")
        };
        grad_of(apply_rope)
            .into_data()
            .assert_approx_eq::<f32>(&grad_of(composed).into_data(), Tolerance::absolute(1e-5));
    }
}
