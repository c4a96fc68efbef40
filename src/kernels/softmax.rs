//! Softmax over the last dimension, in place, on the CPU backend's f32 buffers, with an `exp` the
//! compiler vectorises.
//!
//! Why by hand: burn-flex's fused softmax calls the C library's scalar `expf` per element, and
//! for masked attention entries (`-1e30`) that takes the library's slow underflow path (errno);
//! in an attention-heavy step this was about a tenth of the CPU time. Other backends and dtypes
//! use the backend's softmax.

use super::cpu::{exp_nonpositive, f32_values, with_simd};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// A backend's softmax over the last dimension, with a faster CPU implementation.
pub trait RowSoftmax: Backend {
    fn softmax_last(t: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = t.shape().num_dims() - 1;
        Self::softmax(t, last)
    }

    /// The softmax and each row's log-sum-exp (`[.., 1]`), e.g. for a cross-entropy.
    fn softmax_lse_last(t: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        softmax_lse_composed::<Self>(t)
    }

    /// `softmax(scores + bias)` over the last dimension, for attention scores
    /// `[b, h, q, k]` and an additive bias `[b, 1, q, k]` shared by the heads.
    fn softmax_biased(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::softmax_last(Self::float_add(scores, bias))
    }

    /// The softmax's backward pass, `p * (dp - correction)`, for `p`, `dp` of one shape and a
    /// `correction` with 1 in the last dimension (each row's `sum(dp * p)`).
    fn softmax_backward(
        p: FloatTensor<Self>,
        dp: FloatTensor<Self>,
        correction: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_mul(Self::float_sub(dp, correction), p)
    }
}

/// The softmax and log-sum-exp from the backend's elementwise ops (max-shifted for stability).
fn softmax_lse_composed<B: Backend>(t: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let last = t.shape().num_dims() - 1;
    let max = B::float_max_dim(t.clone(), last);
    let e = B::float_exp(B::float_sub(t, max.clone()));
    let sum = B::float_sum_dim(e.clone(), last);
    let lse = B::float_add(B::float_log(sum.clone()), max);
    (B::float_div(e, sum), lse)
}

impl RowSoftmax for Flex {
    fn softmax_biased(scores: FlexTensor, bias: FlexTensor) -> FlexTensor {
        match flex_softmax_biased(scores, &bias) {
            Ok(p) => p,
            Err(scores) => Flex::softmax_last(Flex::float_add(scores, bias)),
        }
    }

    fn softmax_backward(p: FlexTensor, dp: FlexTensor, correction: FlexTensor) -> FlexTensor {
        match flex_softmax_backward(&p, dp, &correction) {
            Ok(ds) => ds,
            Err(dp) => Flex::float_mul(Flex::float_sub(dp, correction), p),
        }
    }

    fn softmax_last(t: FlexTensor) -> FlexTensor {
        flex_softmax(t).map(|(p, _)| p).unwrap_or_else(|t| {
            let last = t.shape().num_dims() - 1;
            Flex::softmax(t, last)
        })
    }

    fn softmax_lse_last(t: FlexTensor) -> (FlexTensor, FlexTensor) {
        match flex_softmax(t) {
            Ok((p, lse)) => {
                let mut dims = p.shape().to_vec();
                *dims.last_mut().expect("rank >= 1") = 1;
                let lse = Flex::float_from_data(TensorData::new(lse, dims), &p.device());
                (p, lse)
            }
            Err(t) => softmax_lse_composed::<Flex>(t),
        }
    }
}

/// In place on an f32 tensor that owns its whole buffer (else handed back): the softmax and the
/// log-sum-exp of each row.
fn flex_softmax(t: FlexTensor) -> Result<(FlexTensor, Vec<f32>), FlexTensor> {
    let shape = t.shape();
    let row = shape[shape.num_dims() - 1];
    if !whole_f32(&t) || row == 0 {
        return Err(t);
    }
    let mut t = t;
    // Copies first only if the buffer is shared (never for freshly computed scores).
    let data: &mut [f32] = t.storage_mut();
    let mut lse = vec![0f32; data.len() / row];
    // Rows in parallel, in blocks large enough to amortise the task overhead.
    const ROWS: usize = 32;
    data.par_chunks_mut(row * ROWS)
        .zip(lse.par_chunks_mut(ROWS))
        .for_each(|(block, lse)| softmax_rows(block, row, lse));
    Ok((t, lse))
}

/// Whether `t` is an f32 tensor that owns its whole buffer in row-major order, so that it can be
/// overwritten in place (a shared buffer is copied first by `storage_mut`).
fn whole_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
        && t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.shape().num_elements() * 4
}

/// In place: `softmax(scores + bias)` with `scores: [b, h, q, k]`, `bias: [b, 1, q, k]` (one
/// pass per row instead of a broadcast add that burn-flex runs serially element by element).
fn flex_softmax_biased(scores: FlexTensor, bias: &FlexTensor) -> Result<FlexTensor, FlexTensor> {
    let dims = scores.shape().to_vec();
    let bdims = bias.shape().to_vec();
    let fits = dims.len() == 4
        && bdims == [dims[0], 1, dims[2], dims[3]]
        && bias.dtype() == DType::F32
        && dims[3] > 0;
    if !fits || !whole_f32(&scores) {
        return Err(scores);
    }
    let (h, q, k) = (dims[1], dims[2], dims[3]);
    let bias = f32_values(bias);
    let mut scores = scores;
    let data: &mut [f32] = scores.storage_mut();
    const ROWS: usize = 32;
    data.par_chunks_mut(k * ROWS)
        .enumerate()
        .for_each(|(block, rows)| {
            with_simd(|| {
                for (i, r) in rows.chunks_mut(k).enumerate() {
                    let row = block * ROWS + i; // (b, h, q) flattened
                    let b_row = (row / (h * q)) * q + row % q;
                    for (x, &m) in r.iter_mut().zip(&bias[b_row * k..(b_row + 1) * k]) {
                        *x += m;
                    }
                    softmax_row(r);
                }
            })
        });
    Ok(scores)
}

/// In place on `dp`: `p * (dp - correction)` row by row (two serial broadcast passes otherwise).
fn flex_softmax_backward(
    p: &FlexTensor,
    dp: FlexTensor,
    correction: &FlexTensor,
) -> Result<FlexTensor, FlexTensor> {
    let shape = dp.shape();
    let k = shape[shape.num_dims() - 1];
    let fits = p.shape() == shape
        && correction.shape().num_elements() * k == shape.num_elements()
        && p.dtype() == DType::F32
        && correction.dtype() == DType::F32
        && k > 0;
    if !fits || !whole_f32(&dp) {
        return Err(dp);
    }
    let (p, c) = (f32_values(p), f32_values(correction));
    let mut dp = dp;
    let data: &mut [f32] = dp.storage_mut();
    const ROWS: usize = 32;
    data.par_chunks_mut(k * ROWS)
        .zip(p.par_chunks(k * ROWS))
        .zip(c.par_chunks(ROWS))
        .for_each(|((d, p), c)| {
            with_simd(|| {
                for ((d, p), &c) in d.chunks_mut(k).zip(p.chunks(k)).zip(c) {
                    for (d, &p) in d.iter_mut().zip(p) {
                        *d = p * (*d - c);
                    }
                }
            })
        });
    Ok(dp)
}

/// In place, row by row (`row` elements each): the softmax, and each row's log-sum-exp in `lse`.
pub(crate) fn softmax_rows(block: &mut [f32], row: usize, lse: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for (checked above).
        unsafe { softmax_rows_avx2(block, row, lse) };
        return;
    }
    for (r, l) in block.chunks_mut(row).zip(lse) {
        *l = softmax_row(r);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(block: &mut [f32], row: usize, lse: &mut [f32]) {
    for (r, l) in block.chunks_mut(row).zip(lse) {
        *l = softmax_row(r);
    }
}

const LANES: usize = 8;

/// max, then exp(x - max) with the sum, then scale: three passes over a cache-resident row, each
/// written over `LANES` independent accumulators so that it vectorises. Returns the row's
/// log-sum-exp.
#[inline(always)]
fn softmax_row(r: &mut [f32]) -> f32 {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut chunks = r.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            max[i] = if c[i] > max[i] { c[i] } else { max[i] };
        }
    }
    let mut m = max
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &x in chunks.remainder() {
        m = if x > m { x } else { m };
    }
    let mut sum = [0f32; LANES];
    let mut chunks = r.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp_nonpositive(c[i] - m);
            sum[i] += c[i];
        }
    }
    let mut s: f32 = sum.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - m);
        s += *x;
    }
    let inv = 1.0 / s;
    for x in r.iter_mut() {
        *x *= inv;
    }
    m + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_library_on_the_softmax_range() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(-1e30), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn rows_match_a_plain_softmax_including_masked_entries() {
        let row = 37; // not a multiple of the lane count
        let mut data: Vec<f32> = (0..3 * row)
            .map(|i| ((i * 7919) % 101) as f32 / 9.0 - 5.0)
            .collect();
        data[5] = -1e30; // a masked entry
        let mut want = Vec::new();
        let mut want_lse = Vec::new();
        for r in data.chunks(row) {
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = r.iter().map(|x| ((x - m) as f64).exp()).sum();
            want.extend(r.iter().map(|x| (((x - m) as f64).exp() / s) as f32));
            want_lse.push(m + s.ln() as f32);
        }
        let mut lse = vec![0f32; 3];
        softmax_rows(&mut data, row, &mut lse);
        for (g, w) in data.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert_eq!(data[5], 0.0);
        for (g, w) in lse.iter().zip(&want_lse) {
            assert!((g - w).abs() < 1e-5, "log-sum-exp {g} vs {w}");
        }
    }

    fn flex(dims: [usize; 4], seed: f32) -> FlexTensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 4.0)
            .collect();
        FlexTensor::from_data(TensorData::new(v, dims))
    }

    fn close(a: FlexTensor, b: FlexTensor) {
        let (a, b) = (a.into_data(), b.into_data());
        a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
    }

    #[test]
    fn biased_softmax_adds_each_sequences_bias_to_every_head() {
        let (b, h, q, k) = (2, 3, 5, 11);
        let scores = flex([b, h, q, k], 0.0);
        let mut bias = flex([b, 1, q, k], 1.0);
        bias.storage_mut::<f32>()[3] = crate::kernels::attention::MASKED;
        let want = Flex::softmax(Flex::float_add(scores.clone(), bias.clone()), 3);
        let got = flex_softmax_biased(scores, &bias).expect("the in-place path");
        close(got, want);
    }

    #[test]
    fn softmax_backward_matches_the_composed_ops() {
        let dims = [2, 2, 7, 9];
        let (p, dp) = (flex(dims, 0.5), flex(dims, 2.0));
        let c = flex([2, 2, 7, 1], 3.0);
        let want = Flex::float_mul(Flex::float_sub(dp.clone(), c.clone()), p.clone());
        let got = flex_softmax_backward(&p, dp, &c).expect("the in-place path");
        close(got, want);
    }
}
