//! The training methods a run can use, behind one interface for the trainer and the benchmarks:
//! Pearl (with SFT and the ablations as switches of [`ObjectiveConfig`]) and the LVR-style
//! reconstruction baseline. Each builds its own batch from a trajectory and returns the same
//! [`Losses`] (LVR's text loss in `vlm`, its latent regression in `latent`).

use super::ObjectiveConfig;
use super::batch::{Example, TrainBatch};
use super::lvr::{LvrBatch, LvrConfig, LvrExample, lvr_losses};
use super::pearl::{LossValues, Losses, PearlModel, compute_losses};
use crate::processor::{Processor, QwenTokenizer};
use anyhow::Result;
use serde::Serialize;

/// Which objective a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// Pearl, SFT or an ablation, as `[objective]` says.
    #[default]
    Pearl,
    /// The LVR-style reconstruction baseline, as `[lvr]` says.
    Lvr,
    /// The tool-calling baseline (PixelReasoner / DeepEyes family): the trajectories rendered
    /// for a tool-calling model (`Trajectory::render_for_tool_agent`), next-token loss on every
    /// assistant turn, the calls included ([`ObjectiveConfig::sft`]; `[objective]` is not read).
    #[serde(rename = "toolcall")]
    #[value(name = "toolcall")]
    ToolCall,
}

crate::any_spelling!(MethodKind);

/// The objective of [`MethodKind::ToolCall`]: SFT on every assistant turn.
pub static TOOLCALL_OBJECTIVE: std::sync::LazyLock<ObjectiveConfig> =
    std::sync::LazyLock::new(ObjectiveConfig::sft);

/// A method with its settings.
#[derive(Debug, Clone, Copy)]
pub enum Method<'a> {
    Pearl(&'a ObjectiveConfig),
    Lvr(&'a LvrConfig),
}

/// One micro-batch of either method.
#[derive(Debug, Clone)]
pub enum Batch {
    Pearl(TrainBatch),
    Lvr(LvrBatch),
}

/// A training example as each method needs it.
#[derive(Debug, Clone, Copy)]
pub enum MethodExample<'a> {
    Pearl(Example<'a>),
    Lvr(&'a LvrExample),
}

impl MethodExample<'_> {
    pub fn id(&self) -> &str {
        match self {
            MethodExample::Pearl(e) => e.id,
            MethodExample::Lvr(e) => &e.id,
        }
    }
}

impl Batch {
    pub fn build(
        processor: &Processor,
        examples: &[MethodExample],
        method: Method,
    ) -> Result<Self> {
        match method {
            Method::Pearl(cfg) => {
                let ex: Vec<Example> = examples
                    .iter()
                    .filter_map(|e| match e {
                        MethodExample::Pearl(x) => Some(*x),
                        MethodExample::Lvr(_) => None,
                    })
                    .collect();
                anyhow::ensure!(
                    ex.len() == examples.len(),
                    "Pearl batches need Pearl examples"
                );
                Ok(Batch::Pearl(TrainBatch::build(processor, &ex, cfg)?))
            }
            Method::Lvr(_) => {
                let ex: Vec<LvrExample> = examples
                    .iter()
                    .filter_map(|e| match e {
                        MethodExample::Lvr(x) => Some((*x).clone()),
                        MethodExample::Pearl(_) => None,
                    })
                    .collect();
                anyhow::ensure!(ex.len() == examples.len(), "LVR batches need LVR examples");
                Ok(Batch::Lvr(LvrBatch::build(processor, &ex)?))
            }
        }
    }

    /// Tokens of the trained sequences (no padding).
    pub fn tokens(&self) -> usize {
        self.lengths().iter().sum()
    }

    /// Per example, the length of its trained sequence (the full view for Pearl).
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Batch::Pearl(b) => b.full.lengths(),
            Batch::Lvr(b) => b.tokens.lengths(),
        }
    }

    /// The examples' ids, in batch order.
    pub fn ids(&self) -> &[String] {
        match self {
            Batch::Pearl(b) => &b.ids,
            Batch::Lvr(b) => &b.ids,
        }
    }

    pub fn supervised_tokens(&self) -> usize {
        let labels = match self {
            Batch::Pearl(b) => &b.labels,
            Batch::Lvr(b) => &b.labels,
        };
        labels.iter().filter(|&&l| l != -100).count()
    }
}

/// The method's loss on one batch.
pub fn method_losses(model: &PearlModel, batch: &Batch, method: Method) -> Result<Losses> {
    match (batch, method) {
        (Batch::Pearl(b), Method::Pearl(cfg)) => compute_losses(model, b, cfg),
        (Batch::Lvr(b), Method::Lvr(cfg)) => {
            let l = lvr_losses(&model.vlm, b, cfg)?;
            let total = f64::from(l.total.clone().into_scalar::<f32>());
            Ok(Losses {
                total: l.total,
                values: LossValues {
                    vlm: l.text,
                    latent: Some(l.latent),
                    total,
                    ..LossValues::default()
                },
                embeddings: None,
            })
        }
        _ => anyhow::bail!("the batch was built for another method"),
    }
}

/// Adds the tokens a method needs, always in the same order so that ids agree between training
/// and inference: Pearl's 14 (when JEPA is on, or for LVR), then LVR's.
pub fn prepare_tokenizer(tokenizer: &mut QwenTokenizer, method: Method) {
    match method {
        Method::Pearl(cfg) => {
            if cfg.jepa {
                tokenizer.add_pearl_tokens();
            }
        }
        Method::Lvr(_) => {
            tokenizer.add_pearl_tokens();
            tokenizer.add_lvr_tokens();
        }
    }
}
