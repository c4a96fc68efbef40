//! L_nextlat: the dynamics head predicts each next hidden state of the full view from the current
//! one and the next token's embedding. Two terms, on the positions whose next token is supervised:
//! SmoothL1 to the stop-gradient true state (mean per example over positions and features, then
//! over examples), and the next-token cross-entropy of the prediction decoded by the language-model
//! head with its weights frozen (the gradient reaches the dynamics head and the model, not the head).

use super::dynamics::DynamicsHead;
use super::sft::{NextTokens, rows};
use crate::kernels::head_loss::{HeadWeight, head_cross_entropy};
use crate::model::precision::in_f32;
use crate::model::{VlBatch, Vlm};
use burn::nn::loss::SmoothL1LossConfig;
use burn::tensor::{Int, Tensor, TensorData};

pub struct NextLat {
    pub state: Tensor<1>,
    pub token: Tensor<1>,
}

pub fn nextlat_losses(
    model: &Vlm,
    head: &DynamicsHead,
    full: &VlBatch,
    hidden: &Tensor<3>,
    next: &NextTokens,
) -> NextLat {
    let device = hidden.device();
    let n = next.positions.len();
    // NextLat runs in f32: the dynamics head is a trainable (master) module.
    let h_t = in_f32(rows(hidden, &next.positions));
    let after: Vec<usize> = next.positions.iter().map(|p| p + 1).collect();
    let h_next = in_f32(rows(hidden, &after).detach());
    let ids: Vec<i64> = after.iter().map(|&p| full.input_ids[p]).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
    let d = h_t.dims()[1];
    let e_next = in_f32(model.embed_tokens().forward(ids)).reshape([n, d]);
    let pred = head.forward(h_t, e_next);

    // Mean per example, then over the examples that have supervised positions.
    let mut count = vec![0usize; full.batch];
    for &b in &next.example {
        count[b] += 1;
    }
    let examples = count.iter().filter(|&&c| c > 0).count() as f32;
    let weights: Vec<f32> = next
        .example
        .iter()
        .map(|&b| 1.0 / (count[b] as f32 * examples))
        .collect();
    let per_position = SmoothL1LossConfig::new()
        .init()
        .forward(pred.clone(), h_next)
        .mean_dim(1)
        .reshape([n]);
    let w = Tensor::<1>::from_data(TensorData::new(weights, [n]), &device);
    let state = (per_position * w).sum();

    let token = frozen_head_loss(model, pred, &next.targets);
    NextLat { state, token }
}

/// Next-token cross-entropy of `h` through the language-model head with its weights cut from
/// the graph (head and loss as one op).
fn frozen_head_loss(model: &Vlm, h: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    match model.lm_head() {
        Some(head) => {
            let w = HeadWeight::InOut(head.base.weight.val().detach());
            let bias = head.base.bias.as_ref().map(|b| b.val().detach());
            head_cross_entropy(h, w, bias, targets)
        }
        None => {
            let embed = HeadWeight::Tied(model.embed_tokens().weight.val().detach());
            head_cross_entropy(h, embed, None, targets)
        }
    }
}
