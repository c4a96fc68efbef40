//! What the hand-written CPU kernels of the fused ops (`swiglu`, `rms_norm`,
//! `rope_apply`, `softmax`, `matmul`, `projection`, the
//! head's loss) share: reading a CPU-backend tensor as a dense f32 slice, wrapping a result vector
//! as a tensor without a copy, the size of a thread-pool task, vectorisable sigmoid and dot
//! products, and gemm into a buffer of ours.
//!
//! Why by hand: burn-flex runs elementwise ops on one thread, one op per pass over memory, and
//! burn's autodiff keeps each intermediate; on a 2-core machine those serial passes were about
//! half of a training step's wall time once the matrix products ran on both cores.

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use std::borrow::Cow;

/// The tensor's elements in row-major order (borrowed when it is dense already).
pub fn f32_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("dense").to_vec()),
    }
}

/// A dense f32 tensor of the given shape over `values`.
pub fn f32_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Rows per task when rows of `row` elements are split over the thread pool: tasks of at least
/// ~64k elements, so that the pool's overhead stays small.
pub fn rows_per_task(row: usize) -> usize {
    (65_536 / row.max(1)).max(1)
}

/// `e^x` for `x <= 0` (relative error about 1e-7; exactly 0 below -87, where f32 underflows):
/// `x = n ln2 + f`, `e^f` by Cephes' degree-6 polynomial on `|f| <= ln2/2`, `2^n` by building
/// the exponent bits. Branch-free, so a loop over it vectorises.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
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

/// `1 / (1 + e^-x)` from [`exp_nonpositive`] of `-|x|` (branch-free, so loops over it vectorise).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 { s } else { e * s }
}

/// Runs `f` compiled for AVX2 + FMA where the CPU has them, so that the loops in it vectorise
/// with fused multiply-adds; plain code elsewhere.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports the features `run` is compiled for (checked above).
        return unsafe { run(f) };
    }
    f()
}

const LANES: usize = 8;

/// `sum_i a_i * b_i`, over `LANES` independent accumulators so that it vectorises.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `sum_i a_i * b_i * c_i`, vectorised like [`dot`].
#[inline(always)]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let tail: f32 = (ca.remainder().iter().zip(cb.remainder()))
        .zip(cc.remainder())
        .map(|((x, y), z)| x * y * z)
        .sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i] * z[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Products below this many multiply-adds run on the calling thread (burn-flex's threshold):
/// waking the pool costs more than it saves.
const PARALLEL_FROM: usize = 192 * 192 * 192;

/// `dst [m, n] = (dst if accumulate) + scale * lhs [m, k] x rhs [k, n]` with gemm (on the thread
/// pool when large); `dst` is row-major, each operand is (pointer, row stride, column stride).
///
/// # Safety
/// The operands' strides must address elements of live buffers that `dst` does not overlap.
pub unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    scale: f32,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    assert!(dst.len() >= m * n, "gemm_into: output too small");
    let parallelism = match m * n * k >= PARALLEL_FROM {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    // SAFETY: the caller's contract; `dst` holds `m x n` row-major elements (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}
