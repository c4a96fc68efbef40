//! The LVR-style reconstruction baseline (Latent Visual Reasoning, Li et al. 2025, arXiv
//! 2509.24251): what Pearl argues against. The answer is preceded by latent steps between
//! `<|lvr_start|>` and `<|lvr_end|>`; in training the hidden states there regress the
//! stop-gradient vision embeddings of the expert crop's region of I0 (MSE, weight 0.1) next to
//! cross-entropy on the answer; at inference a fixed number of latent steps is decoded by feeding
//! each last hidden state back as the next input embedding.
//!
//! Data flows through the files in this order: `example` (trajectory -> prompt, crop box, answer),
//! `region` (box -> I0's merged tokens), `batch` (tokens, labels, latent slots), `loss` (the
//! objective, with the teacher-forcing convention), `freeze` (what trains), `decode` (latent decoding step by step) and
//! `generate` (answers, and the evaluation harness's `ChatModel`).

pub mod batch;
pub mod example;
pub mod freeze;
pub mod loss;
pub mod region;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

pub use batch::LvrBatch;
pub use example::{LvrExample, LvrExamples, Skipped};
pub use freeze::lvr_lora_only;
pub use loss::{LvrLosses, lvr_losses};
pub use region::region_tokens;

/// The LVR baseline's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvrConfig {
    /// Weight of the latent regression loss (LVR's 0.1).
    #[serde(default = "default_latent_weight")]
    pub latent_weight: f64,
    /// Latent steps decoded at inference (LVR's released checkpoint: 4).
    #[serde(default = "default_latent_steps")]
    pub latent_steps: usize,
}

fn default_latent_weight() -> f64 {
    0.1
}
fn default_latent_steps() -> usize {
    4
}

impl Default for LvrConfig {
    fn default() -> Self {
        Self {
            latent_weight: default_latent_weight(),
            latent_steps: default_latent_steps(),
        }
    }
}

impl LvrConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.latent_weight.is_finite() && self.latent_weight >= 0.0,
            "latent_weight must be a finite non-negative number, got {}",
            self.latent_weight
        );
        ensure!(
            self.latent_steps <= crate::infer::lvr::MAX_LATENT_STEPS,
            "latent_steps must be at most {}, got {}",
            crate::infer::lvr::MAX_LATENT_STEPS,
            self.latent_steps
        );
        Ok(())
    }
}
