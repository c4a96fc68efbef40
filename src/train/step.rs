//! One optimizer step on a list of micro-batches: forward, backward and accumulate each, clip the
//! global gradient norm, apply AdamW. A step whose loss or gradient is not finite is skipped (the
//! model and optimizer state are left as they were) and reported, so the caller can count it.
//! This is the function `pearl bench train` times.

use super::optim::{AdamW, clip_global_norm};
use crate::objective::{Batch, LossValues, Method, PearlModel, method_losses};
use anyhow::{Result, ensure};
use burn::optim::{GradientsAccumulator, GradientsParams};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Each loss term, averaged over the micro-batches.
    pub losses: LossValues,
    /// Global gradient norm before clipping (NaN when the step was skipped before backward).
    pub grad_norm: f64,
    /// False when a loss or gradient was not finite and the update was skipped.
    pub applied: bool,
    /// Tokens of the full views (no padding) and supervised tokens, over all micro-batches.
    pub tokens: usize,
    pub supervised_tokens: usize,
}

/// Forward + backward over `micro_batches` (gradients summed, each loss weighted `1 / n` so the
/// step sees their mean), global-norm clipping at `max_grad_norm` (0 = none), one AdamW update
/// with rate `lr`. `model` must live on an autodiff device.
pub fn train_step(
    model: PearlModel,
    optim: &mut AdamW,
    micro_batches: &[Batch],
    method: Method,
    lr: f64,
    max_grad_norm: f64,
) -> Result<(PearlModel, StepReport)> {
    let StepGradients {
        mut grads,
        values,
        finite,
    } = step_gradients(&model, micro_batches, method)?;
    let mut report = StepReport {
        losses: mean_values(&values),
        grad_norm: f64::NAN,
        applied: false,
        tokens: micro_batches.iter().map(Batch::tokens).sum(),
        supervised_tokens: micro_batches.iter().map(Batch::supervised_tokens).sum(),
    };
    if !finite {
        return Ok((model, report));
    }
    report.grad_norm = clip_global_norm(&model, &mut grads, max_grad_norm);
    if !report.grad_norm.is_finite() {
        return Ok((model, report));
    }
    report.applied = true;
    Ok((optim.step(lr, model, grads), report))
}

/// The summed gradients of a step's micro-batches and their loss values.
pub struct StepGradients {
    pub grads: GradientsParams,
    pub values: Vec<LossValues>,
    /// False when a loss was not finite; the micro-batches after it were not run.
    pub finite: bool,
}

/// The gradient of the step's loss on one device: the mean of the micro-batches' losses (each a
/// mean over its own supervised tokens, as transformers computes it), so each loss is divided by
/// `n` before its backward pass and the gradients are summed.
pub fn step_gradients(
    model: &PearlModel,
    micro_batches: &[Batch],
    method: Method,
) -> Result<StepGradients> {
    ensure!(
        !micro_batches.is_empty(),
        "a step needs at least one micro-batch"
    );
    let n = micro_batches.len() as f64;
    let mut acc = GradientsAccumulator::<PearlModel>::new();
    let mut values = Vec::with_capacity(micro_batches.len());
    for batch in micro_batches {
        let losses = method_losses(model, batch, method)?;
        values.push(losses.values);
        if !losses.values.total.is_finite() {
            // Backward through a non-finite loss only produces non-finite gradients.
            return Ok(StepGradients {
                grads: acc.grads(),
                values,
                finite: false,
            });
        }
        let grads = losses.total.div_scalar(n).backward();
        acc.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Ok(StepGradients {
        grads: acc.grads(),
        values,
        finite: true,
    })
}

/// Term-by-term mean of loss values (terms absent in every entry stay absent).
pub fn mean_values(values: &[LossValues]) -> LossValues {
    let n = values.len().max(1) as f64;
    let mean = |f: fn(&LossValues) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = values.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    LossValues {
        vlm: values.iter().map(|v| v.vlm).sum::<f64>() / n,
        jepa: mean(|v| v.jepa),
        nextlat_state: mean(|v| v.nextlat_state),
        nextlat_token: mean(|v| v.nextlat_token),
        latent: mean(|v| v.latent),
        total: values.iter().map(|v| v.total).sum::<f64>() / n,
    }
}

/// The device RNG seed of a step (SplitMix64 of seed and step: nearby steps get unrelated seeds).
pub fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
