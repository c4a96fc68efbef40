//! Mean cross-entropy of logits `[n, vocab]` against target ids, as ONE differentiable op with a
//! hand-written backward pass: `loss = mean(logsumexp(x) - x[target])`, `dx = (softmax(x) -
//! onehot) / n`.
//!
//! Why by hand: burn's loss runs log-softmax as its decomposition into elementwise ops, so with a
//! 150k (here 32k) vocabulary and a thousand supervised tokens each op allocates and several keep
//! an `[n, vocab]` tensor. Here the logits are turned into the probabilities in place (with the
//! vectorised softmax of [`crate::kernels::softmax`]) and only
//! those are kept for the backward pass, which turns them into the gradient in place too.
//! The op runs on the CPU backend; other backends (CUDA) take burn's `CrossEntropyLoss`.

use super::dispatch::{Kernel, fused};
use super::softmax::RowSoftmax;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{FloatDType, IndexingUpdateOp, Int, Shape, Tensor, TensorData};
use std::sync::Arc;

/// Mean cross-entropy of `logits: [n, vocab]` against `targets` (`n` ids, each `< vocab`).
pub fn cross_entropy(logits: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    let kernel = FusedCrossEntropy {
        targets: targets.into(),
    };
    if let Some(loss) = fused(kernel, [logits.clone().into_dispatch()]) {
        return loss;
    }
    let device = logits.device();
    let ids =
        Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [targets.len()]), &device);
    CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, ids)
}

/// The fused op on the logits; it keeps the probabilities and the target ids.
#[derive(Debug, Clone)]
struct FusedCrossEntropy {
    targets: Arc<[i64]>,
}

impl<B: RowSoftmax> Kernel<B, 1> for FusedCrossEntropy {
    type Saved = Saved<B>;

    fn forward(&self, [x]: [FloatTensor<B>; 1], track: bool) -> (FloatTensor<B>, Option<Saved<B>>) {
        let n = self.targets.len();
        let data = TensorData::new(self.targets.to_vec(), [n, 1]);
        let ids = B::int_from_data(data, &x.device());
        let (loss, saved) = forward::<B>(x, ids);
        (loss, track.then_some(saved))
    }

    fn backward(
        self,
        saved: Saved<B>,
        d_loss: FloatTensor<B>,
        _: [bool; 1],
    ) -> [Option<FloatTensor<B>>; 1] {
        [Some(backward::<B>(saved, d_loss))]
    }
}

/// The probabilities `[n, vocab]` and the target ids `[n, 1]`.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    p: FloatTensor<B>,
    ids: IntTensor<B>,
}

/// The loss `[1]` and what the backward pass needs.
fn forward<B: RowSoftmax>(x: FloatTensor<B>, ids: IntTensor<B>) -> (FloatTensor<B>, Saved<B>) {
    let target = B::float_gather(1, x.clone(), ids.clone());
    // `x` is no longer shared here, so it can become the probabilities in place.
    let (p, lse) = B::softmax_lse_last(x);
    let loss = B::float_mean(B::float_sub(lse, target));
    (loss, Saved { p, ids })
}

/// `dx = (p - onehot) * d_loss / n`, in place of the probabilities.
fn backward<B: Backend>(Saved { p, ids }: Saved<B>, d_loss: FloatTensor<B>) -> FloatTensor<B> {
    let n = p.shape().dims::<2>()[0];
    let minus_one = B::float_full(
        Shape::new([n, 1]),
        (-1.0f32).into(),
        &p.device(),
        FloatDType::from(p.dtype()),
    );
    let dx = B::float_scatter(1, p, ids, minus_one, IndexingUpdateOp::Add);
    let scale = B::float_reshape(
        B::float_div_scalar(d_loss, (n as f32).into()),
        Shape::new([1, 1]),
    );
    B::float_mul(dx, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn reference(logits: Tensor<2>, targets: &[i64]) -> Tensor<1> {
        let device = logits.device();
        let t = Tensor::<1, Int>::from_data(
            TensorData::new(targets.to_vec(), [targets.len()]),
            &device,
        );
        CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, t)
    }

    #[test]
    fn loss_and_gradient_match_burns_cross_entropy() {
        let device = Device::default().autodiff();
        // Large logits: the log-sum-exp must not overflow.
        let x: Tensor<2> = Tensor::random([6, 50], Distribution::Normal(0.0, 30.0), &device);
        let targets = [0, 49, 7, 7, 13, 21];
        let run = |f: fn(Tensor<2>, &[i64]) -> Tensor<1>| {
            let x = x.clone().detach().require_grad();
            let loss = f(x.clone(), &targets).mul_scalar(3.0);
            let grads = loss.clone().backward();
            (loss, x.grad(&grads).expect("gradient"))
        };
        let (loss, grad) = run(cross_entropy);
        let (ref_loss, ref_grad) = run(reference);
        let tol = Tolerance::absolute(1e-4);
        loss.into_data()
            .assert_approx_eq::<f32>(&ref_loss.into_data(), tol);
        grad.into_data()
            .assert_approx_eq::<f32>(&ref_grad.into_data(), tol);
    }
}
