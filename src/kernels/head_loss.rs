//! The language-model head and the mean next-token cross-entropy as ONE op, over chunks of rows:
//! for each chunk of hidden states `h_c`, the logits `h_c W`, their log-sum-exp and the loss, and
//! already in the forward pass the gradients `dh_c = G_c W^T` and (when `W` is trainable)
//! `dW += h_c^T G_c`, with `G_c = (softmax - onehot) / N`. The backward pass only scales them by
//! the incoming gradient.
//!
//! Why: the `[n, vocab]` logits are never materialised. The composed path keeps the logits'
//! probabilities for the backward pass and allocates the logits and their gradient around them:
//! with 1657 supervised tokens that is 217 MiB per tensor at a 32768-word vocabulary and 1 GiB at
//! Qwen's 151936. Here one `[chunk, vocab]` buffer (about 32 MiB) is reused.
//!
//! Rows whose target is [`IGNORE`] count for nothing (neither the loss nor the mean), as in
//! PyTorch. Other backends and dtypes (or the fused kernels off) take the [`chunked`] form, the
//! same algorithm in burn's tensor ops; a head with a bias and targets out of the vocabulary take
//! the composed path (`cross_entropy` of the logits).

pub mod chunked;

use super::cpu::{f32_tensor, f32_values, gemm_into};
use super::cross_entropy::cross_entropy;
use super::dispatch::{Kernel, fused};
use super::softmax::softmax_rows;
use super::tensor::{cast, in_f32};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// A target that is not supervised.
pub const IGNORE: i64 = -100;

/// The head's weight as the model stores it.
#[derive(Debug, Clone)]
pub enum HeadWeight {
    /// `[d, vocab]`: a `Linear`'s weight (an untied head).
    InOut(Tensor<2>),
    /// `[vocab, d]`: the token embedding (a tied head multiplies by its transpose).
    Tied(Tensor<2>),
}

impl HeadWeight {
    fn tensor(&self) -> &Tensor<2> {
        match self {
            HeadWeight::InOut(w) | HeadWeight::Tied(w) => w,
        }
    }

    /// `[d, vocab]` as a tensor of burn's ops (a view for the tied head).
    fn in_out(&self) -> Tensor<2> {
        match self {
            HeadWeight::InOut(w) => w.clone(),
            HeadWeight::Tied(e) => e.clone().transpose(),
        }
    }
}

/// Mean cross-entropy of the logits `h [n, d] x W (+ bias)` against `targets` (`n` ids, or
/// [`IGNORE`]). With no supervised row the loss is 0 (PyTorch's mean would be NaN).
///
/// `W` should be a parameter's value or detached (as a model's head is): its gradient is
/// computed in the forward pass when `W` requires one as a parameter; a `W` that needs a
/// gradient only through earlier ops gets it by a second pass over the logits in the backward.
pub fn head_cross_entropy(
    h: Tensor<2>,
    weight: HeadWeight,
    bias: Option<Tensor<1>>,
    targets: &[i64],
) -> Tensor<1> {
    let vocab = match &weight {
        HeadWeight::InOut(w) => w.dims()[1],
        HeadWeight::Tied(e) => e.dims()[0],
    };
    in_chunks(h, weight, bias, targets, chunk_rows(vocab))
}

/// [`head_cross_entropy`] with `chunk` rows of logits at a time.
fn in_chunks(
    h: Tensor<2>,
    weight: HeadWeight,
    bias: Option<Tensor<1>>,
    targets: &[i64],
    chunk: usize,
) -> Tensor<1> {
    let [n, d] = h.dims();
    let w = weight.tensor();
    let vocab = weight.in_out().dims()[1];
    let supervised = targets.iter().filter(|&&t| t != IGNORE).count();
    let in_vocab = targets
        .iter()
        .all(|&t| t == IGNORE || (0..vocab as i64).contains(&t));
    if supervised == 0 {
        return h.sum().mul_scalar(0.0);
    }
    let fits = crate::kernels::fused::enabled()
        && bias.is_none()
        && in_vocab
        && targets.len() == n
        && weight.in_out().dims()[0] == d
        && h.dtype() == DType::F32
        && w.dtype() == DType::F32;
    if fits {
        let layout = match weight {
            HeadWeight::InOut(_) => Layout::InOut,
            HeadWeight::Tied(_) => Layout::Tied,
        };
        let p = Problem {
            layout,
            targets: targets.into(),
            chunk,
        };
        if let Some(l) = fused_loss(&h, w, p) {
            return l;
        }
    }
    let shapes_fit = targets.len() == n && weight.in_out().dims()[0] == d;
    if bias.is_none()
        && in_vocab
        && shapes_fit
        && let Some(l) = portable_loss(h.clone(), &weight, targets, chunk)
    {
        return l;
    }
    composed(h, &weight, bias, targets)
}

/// The chunked form on the supervised rows (any backend); `None` for autodiff tensors on a
/// backend without the portable op's rungs (the caller composes the loss).
fn portable_loss(
    h: Tensor<2>,
    weight: &HeadWeight,
    targets: &[i64],
    chunk: usize,
) -> Option<Tensor<1>> {
    let (h, kept) = supervised(h, targets);
    let op = chunked::Chunked {
        targets: kept.clone().into(),
        chunk,
    };
    super::dispatch::portable(op, [h, weight.in_out()])
}

/// The rows of `h` with a supervised target, and their targets.
fn supervised(h: Tensor<2>, targets: &[i64]) -> (Tensor<2>, Vec<i64>) {
    let keep: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i] != IGNORE)
        .collect();
    let kept: Vec<i64> = keep.iter().map(|&i| targets[i]).collect();
    let h = match keep.len() == targets.len() {
        true => h,
        false => {
            let idx = super::tensor::index_tensor(&keep, &h.device());
            h.select(0, idx)
        }
    };
    (h, kept)
}

/// The same loss from the logits and [`cross_entropy`] (any backend): supervised rows only.
pub fn composed(
    h: Tensor<2>,
    weight: &HeadWeight,
    bias: Option<Tensor<1>>,
    targets: &[i64],
) -> Tensor<1> {
    let (h, kept) = supervised(h, targets);
    // In the head's dtype (bf16 under mixed precision), the loss over f32 logits.
    let w = weight.in_out();
    let mut logits = cast(h, w.dtype()).matmul(w);
    if let Some(b) = bias {
        logits = logits.clone() + cast(b, logits.dtype()).unsqueeze();
    }
    cross_entropy(in_f32(logits), &kept)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    InOut,
    Tied,
}

/// The fused op on `h` and the head's weight as stored, if they live on the CPU backend.
fn fused_loss(h: &Tensor<2>, w: &Tensor<2>, problem: Problem) -> Option<Tensor<1>> {
    let kernel = FusedHeadLoss {
        problem,
        w_is_param: w.is_require_grad(),
    };
    fused(
        kernel,
        [h.clone().into_dispatch(), w.clone().into_dispatch()],
    )
}

/// What the op computes besides its tensors.
#[derive(Debug, Clone)]
struct Problem {
    layout: Layout,
    targets: Arc<[i64]>,
    /// Rows of logits at a time.
    chunk: usize,
}

/// The fused op on `[h, w]`. Tracked, it computes `dh` (and `dW` when `W` is a parameter)
/// already in the forward pass.
#[derive(Debug, Clone)]
struct FusedHeadLoss {
    problem: Problem,
    w_is_param: bool,
}

impl Kernel<Flex, 2> for FusedHeadLoss {
    type Saved = Saved;

    fn forward(&self, [h, w]: [FlexTensor; 2], track: bool) -> (FlexTensor, Option<Saved>) {
        if !track {
            return (run(&h, &w, &self.problem, false, false).loss, None);
        }
        let out = run(&h, &w, &self.problem, true, self.w_is_param);
        let saved = Saved {
            dh: out.dh,
            dw: out.dw,
            h,
            w,
        };
        (out.loss, Some(saved))
    }

    fn backward(
        self,
        Saved { dh, dw, h, w }: Saved,
        d_loss: FlexTensor,
        [_, want_w]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let s = f32_values(&d_loss)[0];
        let dw = match (want_w, dw) {
            (true, None) => run(&h, &w, &self.problem, false, true).dw,
            (_, dw) => dw,
        };
        [dh, dw].map(|g| g.map(|g| Flex::float_mul_scalar(g, s.into())))
    }
}

/// The loss `[1]` and the gradients for an incoming gradient of 1.
struct Output {
    loss: FlexTensor,
    dh: Option<FlexTensor>,
    dw: Option<FlexTensor>,
}

/// Rows of logits per chunk: about 64 MiB of them, and at least 64 rows (a full-height gemm
/// micro-kernel block, so that the products keep their speed). Fewer, larger chunks pay less
/// for gemm repacking the whole weight in each chunk's two products (with 32 MiB chunks that
/// packing took a tenth of a Pearl step's CPU time).
fn chunk_rows(vocab: usize) -> usize {
    ((16 << 20) / vocab.max(1)).clamp(64, 1024)
}

/// The forward pass, chunk by chunk, with `dh` (if `grad_h`) and `dW` (if `grad_w`).
fn run(h: &FlexTensor, w: &FlexTensor, p: &Problem, grad_h: bool, grad_w: bool) -> Output {
    let [n, d] = h.shape().dims::<2>();
    let hv = f32_values(h);
    let wv = f32_values(w);
    let head = Head::new(&wv, d, p.layout);
    let v = head.vocab;
    let count = p.targets.iter().filter(|&&t| t != IGNORE).count();
    let scale = 1.0 / count as f32;
    let rows = p.chunk.min(n);
    let mut logits = vec![0f32; rows * v];
    let mut dh = grad_h.then(|| vec![0f32; n * d]);
    let mut dw = grad_w.then(|| vec![0f32; d * v]);
    let mut loss = 0f64;
    for r0 in (0..n).step_by(rows) {
        let m = rows.min(n - r0);
        let (hc, lc) = (&hv[r0 * d..(r0 + m) * d], &mut logits[..m * v]);
        head.logits(hc, m, lc);
        let with_grad = grad_h || grad_w;
        loss += loss_rows(lc, v, &p.targets[r0..r0 + m], with_grad.then_some(scale));
        if let Some(dh) = dh.as_mut() {
            head.input_grad(lc, m, &mut dh[r0 * d..(r0 + m) * d]);
        }
        if let Some(dw) = dw.as_mut() {
            head.accumulate_weight_grad(hc, lc, m, dw);
        }
    }
    let loss = f32_tensor(vec![(loss / count as f64) as f32], Shape::new([1]));
    Output {
        loss,
        dh: dh.map(|g| f32_tensor(g, Shape::new([n, d]))),
        dw: dw.map(|g| f32_tensor(g, w.shape())),
    }
}

/// Per row of a logits chunk, in place: the softmax, and the loss `lse - x[target]` summed over
/// the supervised rows. With `grad_scale`, each row becomes its gradient `(p - onehot) * scale`
/// (zero for an ignored row).
fn loss_rows(chunk: &mut [f32], v: usize, targets: &[i64], grad_scale: Option<f32>) -> f64 {
    // Rows per task: about 64k elements.
    let per_task = (65_536 / v).max(1);
    chunk
        .par_chunks_mut(per_task * v)
        .zip(targets.par_chunks(per_task))
        .map(|(rows, targets)| {
            let picked: Vec<f32> = (rows.chunks(v).zip(targets))
                .map(|(row, &t)| if t == IGNORE { 0.0 } else { row[t as usize] })
                .collect();
            let mut lse = vec![0f32; targets.len()];
            softmax_rows(rows, v, &mut lse);
            let mut sum = 0f64;
            for (((row, &t), x), lse) in rows.chunks_mut(v).zip(targets).zip(picked).zip(lse) {
                if t == IGNORE {
                    row.fill(0.0);
                    continue;
                }
                sum += f64::from(lse - x);
                if let Some(s) = grad_scale {
                    row[t as usize] -= 1.0;
                    row.iter_mut().for_each(|p| *p *= s);
                }
            }
            sum
        })
        .sum()
}

/// The head's weight as gemm operands: `W [d, vocab]` read through its strides, either stored so
/// or as the transpose of a stored `E [vocab, d]`.
struct Head<'a> {
    w: &'a [f32],
    layout: Layout,
    d: usize,
    vocab: usize,
    /// Strides of `W [d, vocab]`: (between rows, between columns).
    rs: isize,
    cs: isize,
}

impl<'a> Head<'a> {
    fn new(w: &'a [f32], d: usize, layout: Layout) -> Self {
        let vocab = w.len() / d;
        let (rs, cs) = match layout {
            Layout::InOut => (vocab as isize, 1),
            Layout::Tied => (1, d as isize),
        };
        Self {
            w,
            layout,
            d,
            vocab,
            rs,
            cs,
        }
    }

    /// `out [m, vocab] = h [m, d] W`.
    fn logits(&self, h: &[f32], m: usize, out: &mut [f32]) {
        let (d, v) = (self.d, self.vocab);
        // SAFETY: every operand is addressed within its slice: `h` is `m x d` row-major, `W` is
        // `d x vocab` through (rs, cs), `out` is `m x vocab` row-major.
        unsafe {
            gemm_into(
                (m, v, d),
                out,
                false,
                1.0,
                (h.as_ptr(), d as isize, 1),
                (self.w.as_ptr(), self.rs, self.cs),
            )
        }
    }

    /// `dh [m, d] = g [m, vocab] W^T`.
    fn input_grad(&self, g: &[f32], m: usize, dh: &mut [f32]) {
        let (d, v) = (self.d, self.vocab);
        // SAFETY: as in `logits`; `W^T [vocab, d]` has the strides of `W` swapped.
        unsafe {
            gemm_into(
                (m, d, v),
                dh,
                false,
                1.0,
                (g.as_ptr(), v as isize, 1),
                (self.w.as_ptr(), self.cs, self.rs),
            )
        }
    }

    /// `dW += h^T g` in `W`'s own layout: `[d, vocab]` (untied) or `[vocab, d]` (tied: `g^T h`).
    fn accumulate_weight_grad(&self, h: &[f32], g: &[f32], m: usize, dw: &mut [f32]) {
        let (d, v) = (self.d, self.vocab);
        // SAFETY: `h^T` is `d x m` (strides 1, d) and `g^T` is `vocab x m` (strides 1, vocab),
        // read within `h` and `g`; `dw` holds `d * vocab` elements in the layout's order.
        unsafe {
            if self.layout == Layout::Tied {
                gemm_into(
                    (v, d, m),
                    dw,
                    true,
                    1.0,
                    (g.as_ptr(), 1, v as isize),
                    (h.as_ptr(), d as isize, 1),
                )
            } else {
                gemm_into(
                    (d, v, m),
                    dw,
                    true,
                    1.0,
                    (h.as_ptr(), 1, d as isize),
                    (g.as_ptr(), v as isize, 1),
                )
            }
        }
    }
}

/// What the backward pass needs: the gradients computed in the forward pass, and the inputs in
/// case `W` needs a gradient that was not computed there.
#[derive(Debug, Clone)]
struct Saved {
    dh: Option<FlexTensor>,
    dw: Option<FlexTensor>,
    h: FlexTensor,
    w: FlexTensor,
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// `(loss, dh, dW)` of `f` on copies of the inputs, the loss scaled by 3 (an upstream
    /// gradient other than 1); `dW` when `w_grad`.
    fn run_with(
        f: &dyn Fn(Tensor<2>, HeadWeight, &[i64]) -> Tensor<1>,
        h: &Tensor<2>,
        w: &Tensor<2>,
        tied: bool,
        w_grad: bool,
        targets: &[i64],
    ) -> (Tensor<1>, Tensor<2>, Option<Tensor<2>>) {
        let h = h.clone().detach().require_grad();
        let w = match w_grad {
            true => w.clone().detach().require_grad(),
            false => w.clone().detach(),
        };
        let head = match tied {
            true => HeadWeight::Tied(w.clone()),
            false => HeadWeight::InOut(w.clone()),
        };
        // A view of `h`, as `rows(hidden, ..)` gives: the op must read through layouts.
        let loss = f(h.clone() * 1.0, head, targets).mul_scalar(3.0);
        let grads = loss.clone().backward();
        (loss, h.grad(&grads).expect("dh"), w.grad(&grads))
    }

    fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-4));
    }

    #[test]
    fn loss_and_gradients_match_the_composed_ops() {
        let device = Device::default().autodiff();
        // 150 rows in chunks of 37 (the last one partial), ignored rows at chunk edges. Large
        // logits (the log-sum-exp must not overflow).
        let (n, d, v) = (150, 13, 70);
        let h: Tensor<2> = Tensor::random([n, d], Distribution::Normal(0.0, 3.0), &device);
        let mut targets: Vec<i64> = (0..n as i64).map(|i| (i * 37) % v as i64).collect();
        for i in [0, 36, 37, 149] {
            targets[i] = IGNORE;
        }
        let fused = |h: Tensor<2>, w: HeadWeight, t: &[i64]| in_chunks(h, w, None, t, 37);
        let reference = |h: Tensor<2>, w: HeadWeight, t: &[i64]| composed(h, &w, None, t);
        for tied in [false, true] {
            let dims = if tied { [v, d] } else { [d, v] };
            let w: Tensor<2> = Tensor::random(dims, Distribution::Normal(0.0, 2.0), &device);
            let p = Problem {
                layout: if tied { Layout::Tied } else { Layout::InOut },
                targets: targets.as_slice().into(),
                chunk: 37,
            };
            assert!(fused_loss(&h, &w, p).is_some(), "fused");
            for w_grad in [false, true] {
                let got = run_with(&fused, &h, &w, tied, w_grad, &targets);
                let want = run_with(&reference, &h, &w, tied, w_grad, &targets);
                assert_close(got.0, want.0);
                assert_close(got.1, want.1);
                assert_eq!(got.2.is_some(), w_grad);
                if let (Some(a), Some(b)) = (got.2, want.2) {
                    assert_close(a, b);
                }
            }
        }
    }

    #[test]
    fn a_weight_needing_a_gradient_through_ops_gets_it_in_the_backward() {
        let device = Device::default().autodiff();
        let h: Tensor<2> = Tensor::random([5, 4], Distribution::Normal(0.0, 1.0), &device);
        let w0: Tensor<2> = Tensor::random([4, 9], Distribution::Normal(0.0, 1.0), &device);
        let targets = [1, 8, IGNORE, 0, 3];
        let grad_of = |fused: bool| {
            let w0 = w0.clone().detach().require_grad();
            let w = HeadWeight::InOut(w0.clone().mul_scalar(2.0)); // not a parameter itself
            let loss = match fused {
                true => head_cross_entropy(h.clone(), w, None, &targets),
                false => composed(h.clone(), &w, None, &targets),
            };
            w0.grad(&loss.backward()).expect("dW0")
        };
        assert_close(grad_of(true), grad_of(false));
    }

    #[test]
    fn plain_backend_bias_and_no_supervised_row() {
        let device = Device::default();
        let h: Tensor<2> = Tensor::random([7, 5], Distribution::Normal(0.0, 1.0), &device);
        let w = HeadWeight::InOut(Tensor::random(
            [5, 11],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        let targets = [0, 10, 3, IGNORE, 4, 4, 9];
        let p = Problem {
            layout: Layout::InOut,
            targets: Arc::from(&targets[..]),
            chunk: 3,
        };
        assert!(fused_loss(&h, w.tensor(), p).is_some(), "fused");
        assert_close(
            in_chunks(h.clone(), w.clone(), None, &targets, 3),
            composed(h.clone(), &w, None, &targets),
        );
        // A bias takes the composed path, with the bias.
        let b: Tensor<1> = Tensor::random([11], Distribution::Normal(0.0, 1.0), &device);
        assert_close(
            head_cross_entropy(h.clone(), w.clone(), Some(b.clone()), &targets),
            composed(h.clone(), &w, Some(b), &targets),
        );
        let none = [IGNORE; 7];
        let zero = head_cross_entropy(h, w, None, &none).into_scalar::<f32>();
        assert_eq!(zero, 0.0);
    }
}
