//! Scaled dot-product attention, `softmax(q k^T / sqrt(hd) + mask) v`, with grouped key/value
//! heads, as ONE differentiable op with a hand-written backward pass, in two forms:
//!
//! - on the CPU backend in f32, the fused kernel below (first choice there): it keeps the
//!   probabilities `p` for the backward pass, and its products go through [`super::matmul`];
//! - everywhere else (CUDA, wgpu, bf16, or the fused kernels off), [`blockwise`] attention
//!   written in burn's tensor ops: memory linear in the sequence length, no `[q, k]` tensor kept.
//!
//! The mask is described by its structure ([`Mask`]: causal order, real keys); the fused kernel
//! materialises it as a dense bias, blockwise attention only block by block.
//!
//! The fused kernel, why by hand: burn 0.22's autodiff runs attention (and softmax) as their
//! decomposition into elementwise ops, each of which allocates and several of which keep a
//! `[batch, heads, q, k]` tensor for the backward pass; at 1k tokens that was most of a training
//! step's memory and a large share of its time. Here the forward pass keeps only the
//! probabilities `p` (plus the small `q`, `k`, `v`, output), uses a fused softmax
//! ([`super::softmax`]), and the backward pass is the usual `dS = p * (dP - rowsum(dO * O))` in a
//! handful of large passes. Grouped-query attention needs no repeated keys: the query heads of
//! one group are stacked as rows of one matrix product.
//!
//! Causal masks: on the CPU, queries are cut into blocks of rows, and each block attends only to
//! the keys up to the last one any of its rows sees ([`key_extents`]). The keys after it are
//! masked for the whole block, so their probabilities are exactly 0 and skipping them changes
//! nothing; for a causal mask this skips about half of the products, forward and backward.

pub mod blockwise;
pub mod mask;

pub use mask::Mask;

use super::dispatch::{Kernel, fused};
use super::matmul::BatchMatmul;
use super::softmax::RowSoftmax;
use super::tensor::{cast, in_f32};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchTensor, Flex, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor};

/// The additive value used for masked attention entries (large negative; exp underflows to 0 and an
/// all-masked row cannot produce NaN).
pub const MASKED: f32 = -1e30;

type Prim<B> = FloatTensor<B>;

/// Attention of queries `q: [batch, heads, q_len, hd]` over keys and values
/// `k, v: [batch, kv_heads, k_len, hd]` (`heads` a multiple of `kv_heads`; query head `j` uses
/// key/value head `j / (heads / kv_heads)`) under `mask` (the same for every head).
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &Mask) -> Tensor<4> {
    let f32s = [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32);
    if super::fused::enabled() && f32s && super::dispatch::on_cpu(&q) {
        let [b, _, sq, _] = q.dims();
        let sk = k.dims()[2];
        mask.check(b, sk);
        let bias = mask.dense_bias(b, sq, sk, &q.device());
        return with_bias(q, k, v, bias);
    }
    blockwise(q, k, v, mask)
}

/// [`attention`] in its blockwise form (any backend, any dtype). Autodiff tensors on a backend
/// without the portable op's rungs (see [`super::dispatch::portable`]) take the dense composed
/// form.
pub fn blockwise(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &Mask) -> Tensor<4> {
    let op = blockwise::Blockwise {
        mask: mask.clone(),
        block: blockwise::BLOCK,
    };
    match super::dispatch::portable(op, [q.clone(), k.clone(), v.clone()]) {
        Some(out) => out,
        None => {
            let [b, _, sq, _] = q.dims();
            let bias = mask.bias(b, sq, k.dims()[2], &q.device());
            composed(q, k, v, bias)
        }
    }
}

/// Attention under a dense additive `bias: [batch, 1, q_len, k_len]` broadcast over heads (0, or
/// [`MASKED`] for masked keys), through the fused CPU kernel where it applies. No gradient flows
/// to `bias`.
fn with_bias(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    let f32s = [&q, &k, &v, &bias].iter().all(|t| t.dtype() == DType::F32);
    if !super::fused::enabled() || !f32s {
        return composed(q, k, v, bias);
    }
    let Some(blocks) = key_extents(&bias) else {
        return whole(q, k, v, bias);
    };
    // Views of the inputs (the products read through strides); the output blocks are joined.
    let outs = blocks
        .into_iter()
        .map(|Block { rows, keys }| {
            let n = rows.end - rows.start;
            whole(
                q.clone().narrow(2, rows.start, n),
                k.clone().narrow(2, 0, keys),
                v.clone().narrow(2, 0, keys),
                bias.clone().narrow(2, rows.start, n).narrow(3, 0, keys),
            )
        })
        .collect();
    Tensor::cat(outs, 2)
}

/// Query rows `rows` attend to the first `keys` keys.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    rows: std::ops::Range<usize>,
    keys: usize,
}

/// Query rows per block: large enough to keep the products efficient and the per-block overhead
/// (a few small copies) low.
const BLOCK_ROWS: usize = 128;

/// The blocks of query rows and the keys each needs, from a CPU-backend `bias: [b, 1, sq, sk]`:
/// a block needs the keys up to the last one that any row of any sequence leaves unmasked; a row
/// that masks every key needs them all (its softmax is uniform over all keys). `None` where
/// splitting would skip less than a tenth of the products, or off the CPU backend (reading the
/// bias back would stall a GPU).
fn key_extents(bias: &Tensor<4>) -> Option<Vec<Block>> {
    let [b, _, sq, sk] = bias.dims();
    if sq < 2 * BLOCK_ROWS {
        return None;
    }
    let flex = bias.clone().inner().try_into_primitive::<Flex>().ok()?;
    if flex.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let values = super::cpu::f32_values(&flex);
    let unmasked = |x: f32| x > MASKED / 2.0;
    let blocks: Vec<Block> = (0..sq)
        .step_by(BLOCK_ROWS)
        .map(|r0| {
            let rows = r0..(r0 + BLOCK_ROWS).min(sq);
            let keys = (0..b)
                .flat_map(|bi| rows.clone().map(move |i| (bi * sq + i) * sk))
                .map(|start| {
                    let row = &values[start..start + sk];
                    row.iter().rposition(|&x| unmasked(x)).map_or(sk, |j| j + 1)
                })
                .max()
                .unwrap_or(sk);
            Block { rows, keys }
        })
        .collect();
    let kept: usize = blocks.iter().map(|bl| bl.keys * bl.rows.len()).sum();
    (kept * 10 < sq * sk * 9).then_some(blocks)
}

/// Attention over all the given keys (one fused op, or the composed one).
fn whole(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    match fused(FusedAttention, args(&q, &k, &v, &bias)) {
        Some(out) => out,
        None => composed(q, k, v, bias),
    }
}

/// The same function from burn's differentiable tensor ops (any backend, any dtype): products
/// in the inputs' dtype, the biased softmax in f32 (as transformers' eager attention).
pub fn composed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
    let [b, h, sq, hd] = q.dims();
    let [_, kvh, sk, _] = k.dims();
    let g = h / kvh;
    let dtype = q.dtype();
    let q = q
        .mul_scalar(1.0 / (hd as f64).sqrt())
        .reshape([b, kvh, g * sq, hd]);
    let scores = in_f32(q.matmul(k.swap_dims(2, 3)).reshape([b, h, sq, sk])) + in_f32(bias);
    let p = burn::tensor::activation::softmax(scores, 3).reshape([b, kvh, g * sq, sk]);
    cast(p, dtype).matmul(v).reshape([b, h, sq, hd])
}

/// The fused op's inputs `[q, k, v, bias]`; no gradient flows to the bias.
fn args(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>) -> [DispatchTensor; 4] {
    [q, k, v, &bias.clone().detach()].map(|t| t.clone().into_dispatch())
}

/// The fused op, on any backend with a row softmax and batched products (the CPU's).
#[derive(Debug, Clone)]
struct FusedAttention;

impl<B: RowSoftmax + BatchMatmul> Kernel<B, 4> for FusedAttention {
    type Saved = Saved<B>;

    fn forward(&self, [q, k, v, bias]: [Prim<B>; 4], track: bool) -> (Prim<B>, Option<Saved<B>>) {
        let (out, saved) = forward::<B>(q, k, v, bias);
        (out, track.then_some(saved))
    }

    fn backward(self, saved: Saved<B>, d_out: Prim<B>, wanted: [bool; 4]) -> [Option<Prim<B>>; 4] {
        backward::<B>(saved, d_out, wanted)
    }
}

/// What the backward pass needs: the scaled queries grouped `[b, kvh, g*sq, hd]`, keys, values,
/// probabilities grouped `[b, kvh, g*sq, sk]` and the output `[b, h, sq, hd]`.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    q: Prim<B>,
    k: Prim<B>,
    v: Prim<B>,
    p: Prim<B>,
    out: Prim<B>,
    scale: f64,
}

fn dims4<B: Backend>(t: &Prim<B>) -> [usize; 4] {
    t.shape().dims::<4>()
}

fn forward<B: RowSoftmax + BatchMatmul>(
    q: Prim<B>,
    k: Prim<B>,
    v: Prim<B>,
    bias: Prim<B>,
) -> (Prim<B>, Saved<B>) {
    let [b, h, sq, hd] = dims4::<B>(&q);
    let [_, kvh, sk, _] = dims4::<B>(&k);
    let g = h / kvh;
    let scale = 1.0 / (hd as f64).sqrt();
    // Scaling the queries costs `sq * hd` multiplications instead of `sq * sk`.
    let q = B::float_reshape(
        B::float_mul_scalar(q, scale.into()),
        Shape::new([b, kvh, g * sq, hd]),
    );
    let scores = B::batch_matmul(q.clone(), B::float_swap_dims(k.clone(), 2, 3));
    let scores = B::float_reshape(scores, Shape::new([b, h, sq, sk]));
    let p = B::float_reshape(
        B::softmax_biased(scores, bias),
        Shape::new([b, kvh, g * sq, sk]),
    );
    let out = B::float_reshape(
        B::batch_matmul(p.clone(), v.clone()),
        Shape::new([b, h, sq, hd]),
    );
    let saved = Saved {
        q,
        k,
        v,
        p,
        out: out.clone(),
        scale,
    };
    (out, saved)
}

/// `[dq, dk, dv, None]`, each only where wanted.
fn backward<B: RowSoftmax + BatchMatmul>(
    s: Saved<B>,
    d_out: Prim<B>,
    [want_q, want_k, want_v, _]: [bool; 4],
) -> [Option<Prim<B>>; 4] {
    let [b, h, sq, hd] = dims4::<B>(&s.out);
    let kvh = dims4::<B>(&s.k)[1];
    let rows = h / kvh * sq;
    // rowsum(dP * p) = rowsum(dO * O): the small tensors give the softmax correction.
    let correction = B::float_reshape(
        B::float_sum_dim(B::float_mul(d_out.clone(), s.out), 3),
        Shape::new([b, kvh, rows, 1]),
    );
    let d_out = B::float_reshape(d_out, Shape::new([b, kvh, rows, hd]));
    let dv = want_v.then(|| B::batch_matmul(B::float_swap_dims(s.p.clone(), 2, 3), d_out.clone()));
    if !want_q && !want_k {
        return [None, None, dv, None];
    }
    let dp = B::batch_matmul(d_out, B::float_swap_dims(s.v, 2, 3));
    let ds = B::softmax_backward(s.p, dp, correction);
    let dk = want_k.then(|| B::batch_matmul(B::float_swap_dims(ds.clone(), 2, 3), s.q));
    let dq = want_q.then(|| {
        let dq = B::float_mul_scalar(B::batch_matmul(ds, s.k), s.scale.into());
        B::float_reshape(dq, Shape::new([b, h, sq, hd]))
    });
    [dq, dk, dv, None]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData, Tolerance};

    fn inputs(device: &Device) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) {
        let (b, h, kvh, sq, sk, hd) = (2, 4, 2, 5, 7, 8);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::random([b, h, sq, hd], n, device);
        let k = Tensor::random([b, kvh, sk, hd], n, device);
        let v = Tensor::random([b, kvh, sk, hd], n, device);
        // Mask the last two keys of the second sequence, and key j > i + 2 (a shifted causal mask).
        let mut bias = vec![0f32; b * sq * sk];
        for bi in 0..b {
            for i in 0..sq {
                for j in 0..sk {
                    if j > i + 2 || (bi == 1 && j >= sk - 2) {
                        bias[(bi * sq + i) * sk + j] = MASKED;
                    }
                }
            }
        }
        let bias = Tensor::from_data(TensorData::new(bias, [b, 1, sq, sk]), device);
        (q, k, v, bias)
    }

    #[test]
    fn fused_forward_matches_the_composed_ops() {
        let device = Device::default();
        let (q, k, v, bias) = inputs(&device);
        assert!(
            fused::<_, 4, 4>(FusedAttention, args(&q, &k, &v, &bias)).is_some(),
            "the CPU path is fused"
        );
        let fused = with_bias(q.clone(), k.clone(), v.clone(), bias.clone());
        let reference = composed(q, k, v, bias);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn fused_gradients_match_autodiff_of_the_composed_ops() {
        let device = Device::default().autodiff();
        let (q, k, v, bias) = inputs(&device);
        assert!(fused::<_, 4, 4>(FusedAttention, args(&q, &k, &v, &bias)).is_some());
        // A loss that weights every output element differently.
        let w: Tensor<4> = Tensor::random(q.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads_of = |f: fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let (q, k, v) = (
                q.clone().detach().require_grad(),
                k.clone().detach().require_grad(),
                v.clone().detach().require_grad(),
            );
            let grads = (f(q.clone(), k.clone(), v.clone(), bias.clone()) * w.clone())
                .sum()
                .backward();
            [q.grad(&grads), k.grad(&grads), v.grad(&grads)].map(|g| g.expect("gradient"))
        };
        let fused = grads_of(with_bias);
        let reference = grads_of(composed);
        for (f, r) in fused.into_iter().zip(reference) {
            f.into_data()
                .assert_approx_eq::<f32>(&r.into_data(), Tolerance::absolute(1e-5));
        }
    }

    /// A causal mask over `sq` queries and keys, with the second sequence's last `pad` keys
    /// masked and its last query row masking every key.
    fn causal_bias(b: usize, sq: usize, pad: usize, device: &Device) -> Tensor<4> {
        let mut bias = vec![0f32; b * sq * sq];
        for bi in 0..b {
            for i in 0..sq {
                for j in 0..sq {
                    let padded = bi == 1 && (j >= sq - pad || i == sq - 1);
                    if j > i || padded {
                        bias[(bi * sq + i) * sq + j] = MASKED;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(bias, [b, 1, sq, sq]), device)
    }

    #[test]
    fn causal_masks_skip_the_masked_keys() {
        let device = Device::default();
        let sq = 2 * BLOCK_ROWS + 45;
        let blocks = key_extents(&causal_bias(2, sq, 7, &device)).expect("split");
        let want: Vec<Block> = (0..3)
            .map(|i| {
                let rows = i * BLOCK_ROWS..((i + 1) * BLOCK_ROWS).min(sq);
                // The last block holds the row that masks everything: all keys.
                let keys = if i == 2 { sq } else { rows.end };
                Block { rows, keys }
            })
            .collect();
        assert_eq!(blocks, want);
        // No mask, or too few rows: one block.
        let none = Tensor::<4>::zeros([2, 1, sq, sq], &device);
        assert!(key_extents(&none).is_none());
        assert!(key_extents(&causal_bias(2, BLOCK_ROWS, 0, &device)).is_none());
    }

    #[test]
    fn split_attention_matches_the_composed_ops_with_gradients() {
        let device = Device::default().autodiff();
        let (b, h, kvh, sq, hd) = (2, 4, 2, 2 * BLOCK_ROWS + 45, 8);
        let n = Distribution::Normal(0.0, 1.0);
        let q: Tensor<4> = Tensor::random([b, h, sq, hd], n, &device);
        let k: Tensor<4> = Tensor::random([b, kvh, sq, hd], n, &device);
        let v: Tensor<4> = Tensor::random([b, kvh, sq, hd], n, &device);
        let bias = causal_bias(b, sq, 7, &device);
        assert!(key_extents(&bias).is_some());
        let w: Tensor<4> = Tensor::random(q.dims(), n, &device);
        let run = |f: fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let (q, k, v) = (
                q.clone().detach().require_grad(),
                k.clone().detach().require_grad(),
                v.clone().detach().require_grad(),
            );
            let out = f(q.clone(), k.clone(), v.clone(), bias.clone());
            let grads = (out.clone() * w.clone()).sum().backward();
            let g = [q.grad(&grads), k.grad(&grads), v.grad(&grads)];
            (out, g.map(|g| g.expect("gradient")))
        };
        let (out, grads) = run(with_bias);
        let (ref_out, ref_grads) = run(composed);
        let tol = Tolerance::absolute(1e-4);
        out.into_data()
            .assert_approx_eq::<f32>(&ref_out.into_data(), tol);
        for (g, r) in grads.into_iter().zip(ref_grads) {
            g.into_data().assert_approx_eq::<f32>(&r.into_data(), tol);
        }
    }
}
