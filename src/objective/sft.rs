//! L_vlm: next-token cross-entropy on the supervised tokens of the full view (mean over tokens,
//! as transformers computes it). Logits are computed only at the supervised positions: with a
//! 150k vocabulary the full `[batch, seq, vocab]` logits would dominate the step's memory.

use crate::kernels::tensor::index_tensor;
use crate::model::Vlm;
use burn::tensor::Tensor;

pub use crate::kernels::cross_entropy::cross_entropy;
use crate::kernels::head_loss::{HeadWeight, head_cross_entropy};

/// Positions whose next token is supervised: flat index `b * seq + t` of position `t`, the token
/// at `t + 1` it must predict, and the example it belongs to.
#[derive(Debug, Clone, Default)]
pub struct NextTokens {
    pub positions: Vec<usize>,
    pub targets: Vec<i64>,
    pub example: Vec<usize>,
}

pub fn next_tokens(labels: &[i64], batch: usize, seq: usize) -> NextTokens {
    let mut out = NextTokens::default();
    for b in 0..batch {
        for t in 0..seq.saturating_sub(1) {
            let l = labels[b * seq + t + 1];
            if l != -100 {
                out.positions.push(b * seq + t);
                out.targets.push(l);
                out.example.push(b);
            }
        }
    }
    out
}

/// Rows `positions` of `hidden: [batch, seq, d]` as `[n, d]`.
pub fn rows(hidden: &Tensor<3>, positions: &[usize]) -> Tensor<2> {
    let [b, s, d] = hidden.dims();
    hidden
        .clone()
        .reshape([b * s, d])
        .select(0, index_tensor(positions, &hidden.device()))
}

/// L_vlm from the full view's final hidden states `[batch, seq, d]`.
pub fn vlm_loss(model: &Vlm, hidden: &Tensor<3>, next: &NextTokens) -> Tensor<1> {
    lm_loss(model, rows(hidden, &next.positions), &next.targets)
}

/// Mean cross-entropy of the logits of final hidden states `h: [n, d]`: the head and the loss
/// as one op (the logits never materialised), unless the head carries a LoRA adapter.
pub fn lm_loss(model: &Vlm, h: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    match model.lm_head() {
        None => {
            let embed = HeadWeight::Tied(model.embed_tokens().weight.val());
            head_cross_entropy(h, embed, None, targets)
        }
        Some(head) if head.lora.is_none() => {
            let bias = head.base.bias.as_ref().map(|b| b.val());
            head_cross_entropy(h, HeadWeight::InOut(head.base.weight.val()), bias, targets)
        }
        Some(_) => cross_entropy(model.logits(h), targets),
    }
}
