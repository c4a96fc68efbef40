//! A projection `x W + b + s (x A) B` (a linear layer with an optional LoRA adapter, `nn::Proj`)
//! as ONE differentiable op on the CPU backend, its products written by gemm into buffers we own.
//!
//! Why by hand: burn runs it as three `linear`s and an addition. burn-flex copies each product's
//! output once more, and adds the bias and the adapter's product in serial broadcast passes; the
//! autodiff backward of each piece does the same again. On two cores those serial passes were
//! about half of the main thread's remaining share of a training step. Here the bias starts the
//! output buffer and both products accumulate into it (the adapter's scale is gemm's factor);
//! the backward pass computes `dx = dy W^T + s (dy B^T) A^T`, `dA = s x^T (dy B^T)`,
//! `dB = s (x A)^T dy`, and `dW`, `db` only when they are trained.
//!
//! Other backends and dtypes and the few rows of decoding (see [`super::matvec`]) get `None`: the
//! caller composes the projection from burn's ops (as it does for an adapter whose dropout is active).

use super::cpu::{f32_tensor, f32_values, gemm_into};
use super::dispatch::{Kernel, fused as dispatch};
use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// LoRA factors `a: [in, r]`, `b: [r, out]` and the scale `s`.
pub type LoraFactors = (Tensor<2>, Tensor<2>, f32);

/// `x W + b + s (x A) B` for `x: [.., in]`, `w: [in, out]`, `b: [out]` as one op where it
/// applies (see the module's documentation), else `None`.
pub fn fused<const D: usize>(
    x: &Tensor<D>,
    w: Tensor<2>,
    b: Option<Tensor<1>>,
    lora: Option<LoraFactors>,
) -> Option<Tensor<D>> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    if rows <= super::matvec::MAX_ROWS && !x.device().is_autodiff() {
        return None; // decoding: `matvec` reads the weights faster than gemm's one-row kernel
    }
    let d_out = w.dims()[1];
    let f32s = std::iter::once(x.dtype())
        .chain([w.dtype()])
        .chain(b.iter().map(|b| b.dtype()))
        .chain(lora.iter().flat_map(|(a, bm, _)| [a.dtype(), bm.dtype()]))
        .all(|t| t == DType::F32);
    if !f32s || w.dims()[0] != d_in || rows == 0 {
        return None;
    }
    let x2 = x.clone().reshape([rows, d_in]);
    // Five inputs always; a missing bias or adapter repeats `x`, and gets no gradient.
    let kernel = FusedProjection {
        has_bias: b.is_some(),
        lora_scale: lora.as_ref().map(|l| l.2),
    };
    let placeholder = || x2.clone().into_dispatch();
    let (a, bm) = match lora {
        Some((a, bm, _)) => (a.into_dispatch(), bm.into_dispatch()),
        None => (placeholder(), placeholder()),
    };
    let b = b.map_or_else(placeholder, |b| b.into_dispatch());
    let inputs = [x2.clone().into_dispatch(), w.into_dispatch(), b, a, bm];
    let out: Tensor<2> = dispatch(kernel, inputs)?;
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    Some(out.reshape(out_dims))
}

/// The fused op on `[x, w, b, a, bm]`.
#[derive(Debug, Clone)]
struct FusedProjection {
    has_bias: bool,
    /// The adapter's scale, if there is an adapter.
    lora_scale: Option<f32>,
}

impl Kernel<Flex, 5> for FusedProjection {
    type Saved = Saved;

    fn forward(
        &self,
        [x, w, b, a, bm]: [FlexTensor; 5],
        track: bool,
    ) -> (FlexTensor, Option<Saved>) {
        let b = self.has_bias.then_some(&b);
        let lora = self.lora_scale.map(|s| (&a, &bm, s));
        let (out, t) = forward(&x, &w, b, lora);
        let saved = Saved {
            x,
            w,
            has_bias: self.has_bias,
            lora: self.lora_scale.zip(t).map(|(s, t)| (a, bm, s, t)),
        };
        (out, track.then_some(saved))
    }

    fn backward(self, saved: Saved, dy: FlexTensor, wanted: [bool; 5]) -> [Option<FlexTensor>; 5] {
        backward(saved, dy, wanted)
    }
}

/// The output `[rows, out]` and, with an adapter, `t = x A` (`[rows, r]`, for `dB`).
fn forward(
    x: &FlexTensor,
    w: &FlexTensor,
    b: Option<&FlexTensor>,
    lora: Option<(&FlexTensor, &FlexTensor, f32)>,
) -> (FlexTensor, Option<Vec<f32>>) {
    let [rows, d_in] = x.shape().dims::<2>();
    let d_out = w.shape()[1];
    let (xv, wv) = (f32_values(x), f32_values(w));
    let mut out = vec![0f32; rows * d_out];
    if let Some(b) = b {
        let b = f32_values(b);
        out.par_chunks_mut(d_out * 64)
            .for_each(|block| block.chunks_mut(d_out).for_each(|r| r.copy_from_slice(&b)));
    }
    // SAFETY (every product here and in the backward pass): dense row-major operands of the
    // stated sizes, read through (row stride, column stride) within their buffers.
    unsafe {
        gemm_into(
            (rows, d_out, d_in),
            &mut out,
            b.is_some(),
            1.0,
            (xv.as_ptr(), d_in as isize, 1),
            (wv.as_ptr(), d_out as isize, 1),
        )
    };
    let t = lora.map(|(a, bm, s)| {
        let r = a.shape()[1];
        let (av, bv) = (f32_values(a), f32_values(bm));
        let mut t = vec![0f32; rows * r];
        unsafe {
            gemm_into(
                (rows, r, d_in),
                &mut t,
                false,
                1.0,
                (xv.as_ptr(), d_in as isize, 1),
                (av.as_ptr(), r as isize, 1),
            );
            gemm_into(
                (rows, d_out, r),
                &mut out,
                true,
                s,
                (t.as_ptr(), r as isize, 1),
                (bv.as_ptr(), d_out as isize, 1),
            );
        }
        t
    });
    (f32_tensor(out, Shape::new([rows, d_out])), t)
}

/// The inputs the gradients need, and `t = x A` with the adapter `(a, b, scale, t)`.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    has_bias: bool,
    lora: Option<(FlexTensor, FlexTensor, f32, Vec<f32>)>,
}

/// `[dx, dW, db, dA, dB]`, each only where wanted and present.
fn backward(
    s: Saved,
    dy: FlexTensor,
    [want_x, want_w, want_b, want_a, want_bm]: [bool; 5],
) -> [Option<FlexTensor>; 5] {
    let [rows, d_in] = s.x.shape().dims::<2>();
    let d_out = s.w.shape()[1];
    let (dyv, xv, wv) = (f32_values(&dy), f32_values(&s.x), f32_values(&s.w));
    let (dy_p, x_p, w_p) = (dyv.as_ptr(), xv.as_ptr(), wv.as_ptr());
    let (i, o) = (d_in as isize, d_out as isize);

    // `u = dy B^T` (`[rows, r]`), shared by `dx` and `dA`.
    let lora = s.lora.as_ref().map(|(a, bm, scale, t)| {
        let r = a.shape()[1];
        let (av, bv) = (f32_values(a), f32_values(bm));
        let mut u = vec![0f32; rows * r];
        unsafe {
            gemm_into(
                (rows, r, d_out),
                &mut u,
                false,
                1.0,
                (dy_p, o, 1),
                (bv.as_ptr(), 1, o),
            )
        };
        (av, r, *scale, t, u)
    });
    let dx = want_x.then(|| {
        let mut dx = vec![0f32; rows * d_in];
        unsafe {
            gemm_into(
                (rows, d_in, d_out),
                &mut dx,
                false,
                1.0,
                (dy_p, o, 1),
                (w_p, 1, o),
            )
        };
        if let Some((av, r, scale, _, u)) = &lora {
            let (r, ri) = (*r, *r as isize);
            unsafe {
                gemm_into(
                    (rows, d_in, r),
                    &mut dx,
                    true,
                    *scale,
                    (u.as_ptr(), ri, 1),
                    (av.as_ptr(), 1, ri),
                )
            };
        }
        f32_tensor(dx, Shape::new([rows, d_in]))
    });
    let dw = want_w.then(|| {
        let mut dw = vec![0f32; d_in * d_out];
        unsafe {
            gemm_into(
                (d_in, d_out, rows),
                &mut dw,
                false,
                1.0,
                (x_p, 1, i),
                (dy_p, o, 1),
            )
        };
        f32_tensor(dw, Shape::new([d_in, d_out]))
    });
    let db = (want_b && s.has_bias).then(|| {
        let mut db = vec![0f32; d_out];
        for row in dyv.chunks(d_out) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
        f32_tensor(db, Shape::new([d_out]))
    });
    let (mut da, mut dbm) = (None, None);
    if let Some((_, r, scale, t, u)) = &lora {
        let ri = *r as isize;
        if want_a {
            let mut da_v = vec![0f32; d_in * r];
            unsafe {
                gemm_into(
                    (d_in, *r, rows),
                    &mut da_v,
                    false,
                    *scale,
                    (x_p, 1, i),
                    (u.as_ptr(), ri, 1),
                )
            };
            da = Some(f32_tensor(da_v, Shape::new([d_in, *r])));
        }
        if want_bm {
            let mut db = vec![0f32; r * d_out];
            unsafe {
                gemm_into(
                    (*r, d_out, rows),
                    &mut db,
                    false,
                    *scale,
                    (t.as_ptr(), 1, ri),
                    (dy_p, o, 1),
                )
            };
            dbm = Some(f32_tensor(db, Shape::new([*r, d_out])));
        }
    }
    [dx, dw, db, da, dbm]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::Proj;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), device)
    }

    /// A projection `in -> out` with or without bias and adapter; every parameter trainable.
    fn proj(d_in: usize, d_out: usize, bias: bool, lora: bool, device: &Device) -> Proj {
        let w: Vec<f32> = random::<2>([d_out, d_in], device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = bias.then(|| {
            random::<1>([d_out], device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        });
        let p = Proj::from_pytorch(&w, b, d_in, d_out, device);
        match lora {
            true => p.with_lora(
                random([d_in, 3], device),
                random([3, d_out], device),
                6.0,
                0.0,
            ),
            false => p,
        }
    }

    /// `(output, dx, [dW, db, dA, dB])` of the composed (`Proj::forward`) or fused projection.
    fn run(
        p: &Proj,
        x: &Tensor<3>,
        weights: &Tensor<3>,
        fused_path: bool,
    ) -> (Tensor<3>, Tensor<3>, Vec<Tensor<2>>) {
        let x = x.clone().detach().require_grad();
        // A view, as the model's reshapes give.
        let xv = x.clone().swap_dims(0, 1);
        let out = match fused_path {
            true => p.fused(&xv).expect("fused path"),
            false => p.composed(xv),
        };
        let grads = (out.clone() * weights.clone()).sum().backward();
        let mut params: Vec<Tensor<2>> = vec![p.base.weight.val().grad(&grads).expect("dW")];
        if let Some(b) = &p.base.bias {
            params.push(b.val().grad(&grads).expect("db").unsqueeze());
        }
        if let Some(l) = &p.lora {
            params.push(l.a.val().grad(&grads).expect("dA"));
            params.push(l.b.val().grad(&grads).expect("dB"));
        }
        (out, x.grad(&grads).expect("dx"), params)
    }

    #[test]
    fn output_and_gradients_match_the_composed_projection() {
        let device = Device::default().autodiff();
        let x: Tensor<3> = random([7, 2, 13], &device); // 14 rows, odd sizes
        for (bias, lora) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = proj(13, 11, bias, lora, &device);
            // A loss weighting every output differently.
            let weights: Tensor<3> = random([2, 7, 11], &device);
            let (out, dx, dp) = run(&p, &x, &weights, true);
            let (r_out, r_dx, r_dp) = run(&p, &x, &weights, false);
            let tol = Tolerance::absolute(1e-4);
            out.into_data()
                .assert_approx_eq::<f32>(&r_out.into_data(), tol);
            dx.into_data()
                .assert_approx_eq::<f32>(&r_dx.into_data(), tol);
            assert_eq!(dp.len(), r_dp.len());
            for (a, b) in dp.into_iter().zip(r_dp) {
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), tol);
            }
        }
    }

    #[test]
    fn frozen_weights_get_no_gradient_and_the_plain_backend_matches() {
        let device = Device::default().autodiff();
        let mut p = proj(9, 5, true, true, &device);
        p.base.weight = p.base.weight.clone().set_require_grad(false);
        let x = random::<2>([4, 9], &device).require_grad();
        let grads = p.fused(&x).expect("fused").sum().backward();
        assert!(p.base.weight.val().grad(&grads).is_none());
        assert!(x.grad(&grads).is_some());

        let plain = Device::default();
        let p = proj(9, 5, true, true, &plain);
        let x = random::<2>([super::super::matvec::MAX_ROWS + 3, 9], &plain); // more rows than decoding
        p.fused(&x)
            .expect("fused")
            .into_data()
            .assert_approx_eq::<f32>(&p.composed(x).into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn active_dropout_and_decoding_rows_are_left_to_the_composed_ops() {
        let device = Device::default().autodiff();
        let w = proj(4, 4, false, false, &device);
        let p = w.with_lora(random([4, 2], &device), random([2, 4], &device), 2.0, 0.1);
        assert!(p.fused(&random::<2>([3, 4], &device)).is_none());
        let plain = Device::default();
        let p = proj(4, 4, true, false, &plain);
        assert!(p.fused(&random::<2>([1, 4], &plain)).is_none());
    }
}
