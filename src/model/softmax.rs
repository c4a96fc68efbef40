//! Softmax over the last dimension, in place, on the CPU backend's f32 buffers, with an `exp` the
//! compiler vectorises.
//!
//! Why by hand: burn-flex's fused softmax calls the C library's scalar `expf` per element, and
//! for masked attention entries (`-1e30`) that takes the library's slow underflow path (errno);
//! in an attention-heavy step this was about a tenth of the CPU time. Other backends and dtypes
//! use the backend's softmax.

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
    let whole = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == shape.num_elements() * 4;
    if t.dtype() != DType::F32 || !whole || row == 0 {
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

fn softmax_rows(block: &mut [f32], row: usize, lse: &mut [f32]) {
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

/// `e^x` for `x <= 0` (relative error about 1e-7; exactly 0 below -87, where f32 underflows):
/// `x = n ln2 + f`, `e^f` by Cephes' degree-6 polynomial on `|f| <= ln2/2`, `2^n` by building
/// the exponent bits. Branch-free, so a loop over it vectorises.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let f = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * f + 1.398_199_9e-3;
    p = p * f + 8.333_452e-3;
    p = p * f + 4.166_579_6e-2;
    p = p * f + 1.666_666_5e-1;
    p = p * f + 0.5;
    let ef = p * f * f + f + 1.0;
    let two_n = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    let e = ef * two_n;
    if x < -87.0 { 0.0 } else { e }
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
}
