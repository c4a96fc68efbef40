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

use crate::kernels::softmax::RowSoftmax;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor, TensorMetadata};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{
    BackendPrimitive, Float, FloatDType, IndexingUpdateOp, Int, Shape, Tensor, TensorData,
};

/// Mean cross-entropy of `logits: [n, vocab]` against `targets` (`n` ids, each `< vocab`).
pub fn cross_entropy(logits: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    let device = logits.device();
    let n = targets.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [n, 1]), &device);
    if crate::kernels::fused::enabled() {
        if let Some(loss) = fused_on::<Autodiff<Flex, NoCheckpointing>>(&logits, &ids) {
            return loss;
        }
        if let Some(loss) = fused_on::<Autodiff<Flex, BalancedCheckpointing>>(&logits, &ids) {
            return loss;
        }
        if let Some(loss) = fused_on::<Flex>(&logits, &ids) {
            return loss;
        }
    }
    CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, ids.reshape([n]))
}

fn fused_on<B: FusedCrossEntropy>(logits: &Tensor<2>, ids: &Tensor<2, Int>) -> Option<Tensor<1>>
where
    Float: BackendPrimitive<B, Primitive = FloatTensor<B>>,
    Int: BackendPrimitive<B, Primitive = IntTensor<B>>,
    DispatchTensor: DispatchKindConversion<B>,
{
    let x = logits.clone().try_into_primitive::<B>().ok()?;
    let ids = ids.clone().try_into_primitive::<B>().ok()?;
    Some(Tensor::from_primitive::<B>(B::fused_cross_entropy(x, ids)))
}

trait FusedCrossEntropy: Backend {
    fn fused_cross_entropy(x: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self>;
}

impl FusedCrossEntropy for Flex {
    fn fused_cross_entropy(x: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        forward::<Flex>(x, ids).0
    }
}

impl<B: RowSoftmax, C: CheckpointStrategy> FusedCrossEntropy for Autodiff<B, C> {
    fn fused_cross_entropy(x: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        let prep = CrossEntropyBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let (loss, saved) = forward::<B>(x.into_primitive(), ids);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(saved, loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
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

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: Backend> Backward<B, 1> for CrossEntropyBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let d_loss = grads.consume::<B>(&ops.node);
        let Some(node) = node else { return };
        let Saved { p, ids } = ops.state;
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
        grads.register::<B>(node.id, B::float_mul(dx, scale));
    }
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
