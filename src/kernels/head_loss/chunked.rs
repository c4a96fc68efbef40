//! The language-model head and the mean cross-entropy for every backend, written in burn's
//! tensor ops: rows in chunks, so only a `[chunk, vocab]` block of logits exists at a time, never
//! the `[tokens, vocab]` logits. The forward pass keeps the hidden states, the weight and each
//! row's log-sum-exp; the backward pass recomputes each chunk's logits and takes
//! `G = (softmax - onehot) * d_loss / n`, `dh = G W^T`, `dW += h^T G`.
//!
//! Products run in the weight's dtype, the loss in f32 (as the composed form).

use crate::kernels::dispatch::Portable;
use crate::kernels::tensor::{cast, in_f32};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use std::ops::Range;
use std::sync::Arc;

/// The mean cross-entropy of `h [n, d] x W [d, vocab]` against `targets` (`n` ids, every one in
/// the vocabulary: the caller drops unsupervised rows), `chunk` rows at a time.
#[derive(Debug, Clone)]
pub struct Chunked {
    pub targets: Arc<[i64]>,
    pub chunk: usize,
}

/// What the backward pass keeps: `h [n, d]`, `w [d, vocab]` and each row's log-sum-exp `[n, 1]`.
#[derive(Debug, Clone)]
pub struct Saved {
    pub h: Tensor<2>,
    pub w: Tensor<2>,
    pub lse: Tensor<2>,
}

impl Chunked {
    fn chunks(&self, n: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..n)
            .step_by(self.chunk)
            .map(move |r0| r0..(r0 + self.chunk).min(n))
    }

    /// The target ids of `rows` as `[rows, 1]`.
    fn ids(&self, rows: &Range<usize>, device: &Device) -> Tensor<2, Int> {
        let ids = self.targets[rows.clone()].to_vec();
        Tensor::from_data(TensorData::new(ids, [rows.len(), 1]), device)
    }
}

/// The f32 logits `[rows, vocab]` of hidden rows `rows`.
fn logits(h: &Tensor<2>, w: &Tensor<2>, rows: &Range<usize>) -> Tensor<2> {
    let hc = h.clone().narrow(0, rows.start, rows.len());
    in_f32(cast(hc, w.dtype()).matmul(w.clone()))
}

impl Portable<2, 2, 1> for Chunked {
    type Saved = Saved;

    fn forward(&self, [h, w]: [Tensor<2>; 2], track: bool) -> (Tensor<1>, Option<Saved>) {
        let n = h.dims()[0];
        let device = h.device();
        let mut total = Tensor::<1>::zeros([1], &device);
        let mut lses = vec![];
        for rows in self.chunks(n) {
            let x = logits(&h, &w, &rows);
            let target = x.clone().gather(1, self.ids(&rows, &device));
            let m = x.clone().max_dim(1);
            let lse = (x - m.clone()).exp().sum_dim(1).log() + m;
            total = total + (lse.clone() - target).sum();
            lses.push(lse);
        }
        let loss = total.div_scalar(n as f64);
        let saved = track.then(|| Saved {
            h,
            w,
            lse: Tensor::cat(lses, 0),
        });
        (loss, saved)
    }

    fn backward(self, s: Saved, d_loss: Tensor<1>, wanted: [bool; 2]) -> [Option<Tensor<2>>; 2] {
        let n = s.h.dims()[0];
        let device = s.h.device();
        let scale = in_f32(d_loss).reshape([1, 1]).div_scalar(n as f64);
        let (mut dh, mut dw) = (vec![], None::<Tensor<2>>);
        for rows in self.chunks(n) {
            let p =
                (logits(&s.h, &s.w, &rows) - s.lse.clone().narrow(0, rows.start, rows.len())).exp();
            let minus_one = Tensor::<2>::full([rows.len(), 1], -1.0, &device);
            let g = p.scatter(
                1,
                self.ids(&rows, &device),
                minus_one,
                IndexingUpdateOp::Add,
            );
            let g = cast(g * scale.clone(), s.w.dtype());
            if wanted[0] {
                dh.push(in_f32(g.clone().matmul(s.w.clone().transpose())));
            }
            if wanted[1] {
                let hc = cast(s.h.clone().narrow(0, rows.start, rows.len()), s.w.dtype());
                let d = in_f32(hc.transpose().matmul(g));
                dw = Some(match dw {
                    None => d,
                    Some(acc) => acc + d,
                });
            }
        }
        let dh = wanted[0].then(|| cast(Tensor::cat(dh, 0), s.h.dtype()));
        [dh, dw.map(|d| cast(d, s.w.dtype()))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dispatch::portable;
    use crate::kernels::head_loss::{HeadWeight, composed};
    use burn::tensor::{Distribution, Tolerance};

    /// 23 rows in chunks of 5 (the last one partial), large logits (the log-sum-exp must not
    /// overflow), both the hidden states and the weight trained.
    #[test]
    fn loss_and_gradients_match_the_dense_composed_form() {
        let device = Device::default().autodiff();
        let (n, d, vocab) = (23, 6, 40);
        let h0: Tensor<2> = Tensor::random([n, d], Distribution::Normal(0.0, 3.0), &device);
        let w0: Tensor<2> = Tensor::random([d, vocab], Distribution::Normal(0.0, 3.0), &device);
        let targets: Vec<i64> = (0..n as i64).map(|i| (i * 7) % vocab as i64).collect();
        let run = |chunked: bool| {
            let (h, w) = (
                h0.clone().detach().require_grad(),
                w0.clone().detach().require_grad(),
            );
            let loss: Tensor<1> = match chunked {
                true => {
                    let op = Chunked {
                        targets: targets.clone().into(),
                        chunk: 5,
                    };
                    portable(op, [h.clone(), w.clone()]).expect("the CPU autodiff rung")
                }
                false => composed(h.clone(), &HeadWeight::InOut(w.clone()), None, &targets),
            };
            let grads = loss.clone().mul_scalar(3.0).backward();
            (
                loss,
                h.grad(&grads).expect("dh"),
                w.grad(&grads).expect("dw"),
            )
        };
        let (loss, dh, dw) = run(true);
        let (want, want_dh, want_dw) = run(false);
        let tol = Tolerance::absolute(1e-4);
        loss.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), tol);
        dh.into_data()
            .assert_approx_eq::<f32>(&want_dh.into_data(), tol);
        dw.into_data()
            .assert_approx_eq::<f32>(&want_dw.into_data(), tol);
    }

    /// The backward pass keeps one number per row beside the inputs, not the logits.
    #[test]
    fn the_backward_pass_keeps_no_logits() {
        let device = Device::default();
        let h: Tensor<2> = Tensor::random([9, 4], Distribution::Normal(0.0, 1.0), &device);
        let w: Tensor<2> = Tensor::random([4, 30], Distribution::Normal(0.0, 1.0), &device);
        let op = Chunked {
            targets: vec![1; 9].into(),
            chunk: 4,
        };
        let (loss, saved) = op.forward([h, w], true);
        assert_eq!(loss.dims(), [1]);
        let Saved { h, w, lse } = saved.expect("tracked");
        assert_eq!((h.dims(), w.dims(), lse.dims()), ([9, 4], [4, 30], [9, 1]));
    }
}
