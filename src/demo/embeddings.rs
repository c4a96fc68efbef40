//! The two views' embeddings (the paper's Figure 4): for held-out trajectories, the input view
//! <I0, Q> with the predictor tokens (JEPA's prediction) and the trajectory view (JEPA's target),
//! each the last-token hidden state, as `objective::compute_losses` computes them. The SFT model
//! never trained these, which is the point of the comparison: the batch is built the same way for
//! both models, only the weights differ.

use crate::model::Vlm;
use crate::objective::{
    Method, ObjectiveConfig, PearlModel, TrainBatch, compute_losses, prepare_tokenizer,
};
use crate::peft::lora::{load_peft_adapter, merge_lora};
use crate::processor::Processor;
use crate::train::data::Item;
use anyhow::{Context, Result, anyhow};
use burn::tensor::{Device, Tensor};
use serde::Serialize;
use std::path::Path;

/// Predicted (input-view) and target (trajectory-view) embeddings, one row per trajectory.
#[derive(Debug, Clone)]
pub struct ViewEmbeddings {
    pub predicted: Vec<Vec<f32>>,
    pub target: Vec<Vec<f32>>,
    /// Category of each trajectory (the colour in the figure).
    pub categories: Vec<String>,
}

/// How well the two views line up: the mean cosine of each prediction with its own target, and
/// with the other trajectories' targets (what "aligned" would have to beat). Each view's rows are
/// centred on that view's mean first: last-token states share a large common component that
/// would make every cosine close to 1.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Alignment {
    pub matched_cosine: f64,
    pub mismatched_cosine: f64,
}

/// Embeds `items` with the base model plus `adapter` (merged), `batch` trajectories at a time.
pub fn view_embeddings(
    base: &Path,
    adapter: &Path,
    items: &[Item],
    batch: usize,
    device: &Device,
) -> Result<ViewEmbeddings> {
    let device = device.clone();
    let mut processor = Processor::from_dir(base)?;
    // The input view needs the predictor tokens; NextLat's head is not needed for embeddings.
    let objective = ObjectiveConfig {
        nextlat: false,
        ..ObjectiveConfig::pearl()
    };
    prepare_tokenizer(&mut processor.tokenizer, Method::Pearl(&objective));
    let mut vlm = Vlm::from_dir(base, &device)?;
    vlm.ensure_vocab(processor.tokenizer.vocab_size());
    let vlm = merge_lora(load_peft_adapter(vlm, adapter)?);
    let model = PearlModel {
        vlm,
        dynamics: None,
    };
    let mut out = ViewEmbeddings {
        predicted: Vec::new(),
        target: Vec::new(),
        categories: Vec::new(),
    };
    for chunk in items.chunks(batch.max(1)) {
        let examples: Vec<_> = chunk.iter().map(Item::example).collect();
        let b = TrainBatch::build(&processor, &examples, &objective)?;
        let (pred, target) = compute_losses(&model, &b, &objective)?
            .embeddings
            .context("the objective returned no embeddings")?;
        out.predicted.extend(rows(pred)?);
        out.target.extend(rows(target)?);
        out.categories.extend(chunk.iter().map(|i| {
            i.trajectory
                .meta
                .category
                .clone()
                .unwrap_or_else(|| i.trajectory.task.clone())
        }));
    }
    Ok(out)
}

fn rows(t: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [n, d] = t.dims();
    let flat = t
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow!("cannot read embeddings: {e:?}"))?;
    Ok((0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect())
}

impl ViewEmbeddings {
    pub fn alignment(&self) -> Alignment {
        let (predicted, target) = (centred(&self.predicted), centred(&self.target));
        let n = predicted.len();
        let (mut matched, mut mismatched) = (0.0, 0.0);
        for (i, p) in predicted.iter().enumerate() {
            for (j, t) in target.iter().enumerate() {
                let c = cosine(p, t);
                if i == j {
                    matched += c;
                } else {
                    mismatched += c;
                }
            }
        }
        Alignment {
            matched_cosine: matched / n.max(1) as f64,
            mismatched_cosine: mismatched / (n * n.saturating_sub(1)).max(1) as f64,
        }
    }
}

/// Rows minus their mean row.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let d = rows.first().map_or(0, Vec::len);
    let n = rows.len().max(1) as f32;
    let mean: Vec<f32> = (0..d)
        .map(|k| rows.iter().map(|r| r[k]).sum::<f32>() / n)
        .collect();
    rows.iter()
        .map(|r| r.iter().zip(&mean).map(|(x, m)| x - m).collect())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_separates_matched_from_mismatched_pairs() {
        // A shared offset (10, 10) on every row: centring removes it.
        let e = ViewEmbeddings {
            predicted: vec![vec![11.0, 10.0], vec![9.0, 10.0]],
            target: vec![vec![12.0, 10.0], vec![8.0, 10.0]],
            categories: vec!["a".into(), "b".into()],
        };
        let a = e.alignment();
        assert!((a.matched_cosine - 1.0).abs() < 1e-6, "{a:?}");
        assert!((a.mismatched_cosine + 1.0).abs() < 1e-6, "{a:?}");
    }
}
