//! Products of a few rows by a weight matrix, `[rows, k] x [k, n]` with `rows <= MAX_ROWS`: every
//! projection and the language-model head while decoding (one new token per sequence).
//!
//! Why by hand: burn-flex hands a one-row product to gemm, which sends it to its matrix-vector
//! kernel. That kernel runs on one thread whatever parallelism is asked for, and for each of the
//! `k` input elements makes a pass over the whole `n`-wide output (128 KiB for a 32768-word
//! head: out of L1 on every pass); gemm's AVX-512 build made it about 1 ms per token slower than
//! its AVX2 one. Here the output is cut into column blocks that stay in L1, the blocks are spread
//! over the thread pool, and each weight element is read once for all rows.
//!
//! A row-major weight (a `Linear`'s `[in, out]`) is summed in gemm's order, one fused
//! multiply-add per input element from first to last, so a one-row result is bitwise what gemm
//! gave; a transposed view (a tied head `E^T`) is summed as dot products of the rows of `E`.
//! Autodiff tensors, other backends and dtypes, and more rows take burn's `linear`.

use super::cpu::{dot, f32_tensor, f32_values, with_simd};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

/// Rows up to which the products take this path (sequences decoded together).
pub const MAX_ROWS: usize = 8;

/// `x W + b` for `W: [k, n]`, like `burn::tensor::module::linear`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if let Some(out) = few_rows_on_flex(&x, &weight, bias.as_ref()) {
        return out;
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// `layer.forward(x)` through [`linear`].
pub fn forward<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// The product on the plain CPU backend, or `None` where it does not apply.
fn few_rows_on_flex<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    let dims = x.dims();
    let k = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let [wk, n] = weight.dims();
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.dims() == [n]);
    let fits = super::fused::enabled() && (1..=MAX_ROWS).contains(&rows) && wk == k && k > 0;
    if !fits || !f32s {
        return None;
    }
    let xf = x.clone().try_into_primitive::<Flex>().ok()?;
    let wf = weight.clone().try_into_primitive::<Flex>().ok()?;
    let bf = match bias {
        Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
        None => None,
    };
    let xv = f32_values(&xf);
    let mut out = match weight_layout(&wf, k, n)? {
        Layout::RowMajor(w) => by_rows(&xv, rows, k, w, n),
        Layout::Transposed(wt) => by_columns(&xv, rows, k, wt, n),
    };
    if let Some(b) = bf {
        // After the product, as burn adds it.
        let b = f32_values(&b);
        for row in out.chunks_mut(n) {
            row.iter_mut().zip(b.iter()).for_each(|(o, b)| *o += b);
        }
    }
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    Some(Tensor::from_primitive::<Flex>(f32_tensor(
        out,
        Shape::from(out_dims.to_vec()),
    )))
}

/// How the `[k, n]` weight lies in memory: dense row-major, or the transposed view of a dense
/// `[n, k]` matrix.
enum Layout<'a> {
    RowMajor(&'a [f32]),
    Transposed(&'a [f32]),
}

fn weight_layout(w: &FlexTensor, k: usize, n: usize) -> Option<Layout<'_>> {
    if let Some(s) = w.as_slice::<f32>() {
        return Some(Layout::RowMajor(s));
    }
    let l = w.layout();
    let start = l.start_offset();
    let storage = w.storage::<f32>();
    (l.strides() == [1, k as isize] && storage.len() >= start + n * k)
        .then(|| Layout::Transposed(&storage[start..start + n * k]))
}

/// Weights (`k * n`) from which the product is split over the thread pool: waking the pool's
/// threads costs tens of microseconds on a small VM, more than a smaller product gains (measured:
/// a 512 x 512 product takes about 40 us on one thread), while the language-model head (16 M
/// weights) runs about 1.5x faster on two.
const PARALLEL_FROM: usize = 4 << 20;

/// Output columns per task: one contiguous block per thread for a large product (long runs of
/// each weight row, which the prefetcher streams well), the whole width otherwise.
fn block_width(k: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads();
    if k * n < PARALLEL_FROM || threads < 2 {
        n
    } else {
        n.div_ceil(threads).next_multiple_of(16)
    }
}

/// The `[rows, n]` output assembled from column blocks computed in parallel by `block(j0, j1)`,
/// each `[rows, j1 - j0]` row-major.
fn by_blocks(
    rows: usize,
    k: usize,
    n: usize,
    block: impl Fn(usize, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let bw = block_width(k, n);
    if bw >= n {
        return block(0, n);
    }
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(bw))
        .into_par_iter()
        .map(|i| block(i * bw, ((i + 1) * bw).min(n)))
        .collect();
    let mut out = vec![0f32; rows * n];
    for (i, b) in blocks.iter().enumerate() {
        let (j0, w) = (i * bw, b.len() / rows);
        for r in 0..rows {
            out[r * n + j0..r * n + j0 + w].copy_from_slice(&b[r * w..(r + 1) * w]);
        }
    }
    out
}

/// `x [rows, k]` times a row-major `w [k, n]`.
fn by_rows(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    by_blocks(rows, k, n, |j0, j1| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // A named function rather than `with_simd`'s closure: the closure was not inlined
            // into the AVX2 + FMA function here, and `mul_add` outside it is a library call.
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fma(
                x: &[f32],
                rows: usize,
                k: usize,
                w: &[f32],
                n: usize,
                j0: usize,
                j1: usize,
            ) -> Vec<f32> {
                rows_block(x, rows, k, w, n, j0, j1)
            }
            // SAFETY: the CPU supports the features `fma` is compiled for (checked above).
            return unsafe { fma(x, rows, k, w, n, j0, j1) };
        }
        rows_block(x, rows, k, w, n, j0, j1)
    })
}

/// Output columns `j0..j1` of [`by_rows`], `[rows, j1 - j0]`: for each input element in order,
/// one fused multiply-add of its weight row into the accumulators (gemm's order), eight input
/// elements per pass over the accumulators (which then cost an eighth of the weights' traffic).
#[inline(always)]
fn rows_block(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    j0: usize,
    j1: usize,
) -> Vec<f32> {
    const STEP: usize = 8;
    let bw = j1 - j0;
    let mut acc = vec![0f32; rows * bw];
    let wrow = |kk: usize| &w[kk * n + j0..kk * n + j1];
    let whole = k / STEP * STEP;
    for kk in (0..whole).step_by(STEP) {
        let ws: [&[f32]; STEP] = std::array::from_fn(|i| wrow(kk + i));
        for (r, a) in acc.chunks_exact_mut(bw).enumerate() {
            let xr = &x[r * k + kk..r * k + kk + STEP];
            for j in 0..bw {
                let mut s = a[j];
                for i in 0..STEP {
                    s = xr[i].mul_add(ws[i][j], s);
                }
                a[j] = s;
            }
        }
    }
    for kk in whole..k {
        let w0 = wrow(kk);
        for (r, a) in acc.chunks_exact_mut(bw).enumerate() {
            let xr = x[r * k + kk];
            for j in 0..bw {
                a[j] = xr.mul_add(w0[j], a[j]);
            }
        }
    }
    acc
}

/// `x [rows, k]` times `wt^T`, where `wt [n, k]` is dense: one dot product per output.
fn by_columns(x: &[f32], rows: usize, k: usize, wt: &[f32], n: usize) -> Vec<f32> {
    by_blocks(rows, k, n, |j0, j1| {
        let bw = j1 - j0;
        let mut out = vec![0f32; rows * bw];
        with_simd(|| {
            for j in j0..j1 {
                let col = &wt[j * k..(j + 1) * k];
                for r in 0..rows {
                    out[r * bw + j - j0] = dot(&x[r * k..(r + 1) * k], col);
                }
            }
        });
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), device)
    }

    /// Odd sizes: `k` not a multiple of the four-element step, `n` not a multiple of a block.
    const K: usize = 67;
    const N: usize = 1037;

    fn assert_bitwise_as_burn<const D: usize>(x: Tensor<D>, w: &Tensor<2>, b: &Tensor<1>) {
        assert!(few_rows_on_flex(&x, w, Some(b)).is_some(), "fast path");
        let got = linear(x.clone(), w.clone(), Some(b.clone())).into_data();
        let want = burn::tensor::module::linear(x, w.clone(), Some(b.clone())).into_data();
        assert_eq!(got.shape(), want.shape());
        assert_eq!(
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap()
        );
    }

    #[test]
    fn one_row_is_bitwise_what_burn_gives() {
        let device = Device::default();
        // Three threads (an uneven split); the second size is split over them.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for n in [N, PARALLEL_FROM / K + 1] {
                assert_eq!(block_width(K, n) < n, n > N, "split over threads");
                let (w, b) = (random([K, n], &device), random([n], &device));
                assert_bitwise_as_burn(random([1, 1, K], &device), &w, &b);
                assert_bitwise_as_burn(random([1, K], &device), &w, &b);
            }
        });
    }

    #[test]
    fn several_rows_and_transposed_weights_match_burn() {
        let device = Device::default();
        let w = random([K, N], &device);
        let wt = random([N, K], &device).transpose(); // a tied head's view
        for rows in [2, 3, MAX_ROWS] {
            let x = random([rows, 1, K], &device);
            for w in [w.clone(), wt.clone()] {
                assert!(few_rows_on_flex(&x, &w, None).is_some(), "fast path");
                linear(x.clone(), w.clone(), None)
                    .into_data()
                    .assert_approx_eq::<f32>(
                        &burn::tensor::module::linear(x.clone(), w, None).into_data(),
                        Tolerance::absolute(1e-4),
                    );
            }
        }
    }

    #[test]
    fn other_cases_take_burns_linear() {
        let device = Device::default();
        let w = random([K, N], &device);
        // More rows than the path takes, and autodiff tensors.
        let many = random([MAX_ROWS + 1, K], &device);
        assert!(few_rows_on_flex(&many, &w, None).is_none());
        let ad = Device::default().autodiff();
        let (x, wa) = (random([1, K], &ad), random([K, N], &ad).require_grad());
        assert!(few_rows_on_flex(&x, &wa, None).is_none());
        let grads = linear(x, wa.clone(), None).sum().backward();
        assert!(wa.grad(&grads).is_some(), "gradient through burn's linear");
        linear(many.clone(), w.clone(), None)
            .into_data()
            .assert_approx_eq::<f32>(
                &burn::tensor::module::linear(many, w, None).into_data(),
                Tolerance::absolute(1e-5),
            );
    }
}
