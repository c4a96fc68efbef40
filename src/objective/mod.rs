//! Training objectives on expert trajectories: plain SFT, and Pearl (SFT + JEPA + NextLat).
//!
//! Data flows through the files in this order: `views` (one chat -> full / input / trajectory
//! chats and the full view's labels), `batch` (tokens and images of the three views for a batch),
//! `sft` (L_vlm, through the fused `cross_entropy`), `continuation` (running a view as a continuation of the full view's cache),
//! `jepa` (predicted vs target trajectory embedding), `dynamics` + `nextlat` (L_nextlat), and
//! `pearl` (the whole objective on a [`PearlModel`]).

pub mod batch;
pub mod continuation;
pub mod dynamics;
pub mod freeze;
pub mod grads;
pub mod jepa;
pub mod lvr;
pub mod method;
pub mod nextlat;
pub mod pearl;
pub mod sft;
pub mod views;

use crate::model::decoder::HiddenStates;
use serde::{Deserialize, Serialize};

pub use batch::TrainBatch;
pub use dynamics::DynamicsHead;
pub use method::{Batch, Method, MethodExample, MethodKind, method_losses, prepare_tokenizer};
pub use pearl::{LossValues, Losses, PearlModel, compute_losses};

/// Which assistant turns the full view's next-token loss supervises.
/// Any spelling is accepted (`all-assistant`, `all_assistant`): see [`crate::spelling`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Supervise {
    /// Every assistant turn (ThinkMorph, PixelReasoner in the paper).
    AllAssistant,
    /// Only the final answer turn (LVR in the paper).
    LastAssistant,
}

/// The JEPA distance between predicted and target trajectory embeddings. The authors'
/// `--jepa_loss` values (`cosine`, `smoothl1`, `l2`, `mse`) and this project's (`smooth-l1`)
/// are both accepted, on the command line and in the run file ([`crate::spelling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// 1 - cos(pred, target): what produced the paper's numbers.
    Cosine,
    SmoothL1,
    /// Euclidean norm of the difference.
    L2,
    Mse,
}

crate::any_spelling!(Distance);
crate::any_spelling!(Supervise);

/// The objective and its ablation switches. `jepa = nextlat = false` is plain SFT on the same
/// trajectories (the paper's SFT baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    #[serde(default = "default_true")]
    pub jepa: bool,
    #[serde(default = "default_true")]
    pub nextlat: bool,
    /// K predictor tokens appended to the input view (1..=10).
    #[serde(default = "default_predictors")]
    pub predictors: usize,
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    #[serde(default = "default_distance")]
    pub distance: Distance,
    #[serde(default = "default_supervise")]
    pub supervise: Supervise,
    /// Which transformers version's `hidden_states[-1]` the JEPA and NextLat embeddings read, as
    /// the authors' code reads it: `transformers5` (the default; the fixtures' losses) or
    /// `transformers4.57` (the authors' Qwen3-VL runs, whose last entry is before the final
    /// norm). Only Qwen3-VL differs; Qwen2.5-VL's last entry is after the norm in both.
    #[serde(default)]
    pub hidden_states: HiddenStates,
}

fn default_true() -> bool {
    true
}
fn default_predictors() -> usize {
    4
}
fn default_lambda() -> f64 {
    0.2
}
fn default_distance() -> Distance {
    Distance::Cosine
}
fn default_supervise() -> Supervise {
    Supervise::AllAssistant
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self::pearl()
    }
}

impl ObjectiveConfig {
    /// The paper's defaults: K = 4, lambda = 0.2, cosine distance.
    pub fn pearl() -> Self {
        Self {
            jepa: true,
            nextlat: true,
            predictors: default_predictors(),
            lambda: default_lambda(),
            distance: default_distance(),
            supervise: default_supervise(),
            hidden_states: HiddenStates::default(),
        }
    }

    /// SFT on the same trajectories: only the next-token loss.
    pub fn sft() -> Self {
        Self {
            jepa: false,
            nextlat: false,
            ..Self::pearl()
        }
    }

    pub fn is_sft(&self) -> bool {
        !self.jepa && !self.nextlat
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.jepa
            && !(1..=crate::processor::tokenizer::MAX_PREDICTOR_TOKENS).contains(&self.predictors)
        {
            anyhow::bail!(
                "predictors must be between 1 and {} (the added <|predictor_k|> tokens), got {}",
                crate::processor::tokenizer::MAX_PREDICTOR_TOKENS,
                self.predictors
            );
        }
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            anyhow::bail!(
                "lambda must be a finite non-negative number, got {}",
                self.lambda
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run file takes the authors' spelling and the command line's alike.
    #[test]
    fn run_file_accepts_every_spelling_of_the_distance() {
        for (text, want) in [
            ("smoothl1", Distance::SmoothL1),
            ("smooth-l1", Distance::SmoothL1),
            ("cosine", Distance::Cosine),
        ] {
            let cfg: ObjectiveConfig = toml::from_str(&format!(
                "distance = \"{text}\"\nsupervise = \"last-assistant\""
            ))
            .unwrap();
            assert_eq!(cfg.distance, want, "{text}");
            assert_eq!(cfg.supervise, Supervise::LastAssistant);
        }
        let err = toml::from_str::<ObjectiveConfig>("distance = \"huber\"").unwrap_err();
        assert!(err.to_string().contains("smooth-l1"), "{err}");
        // The hidden-state convention: transformers 5 unless the run file names 4.57.
        assert_eq!(
            toml::from_str::<ObjectiveConfig>("").unwrap().hidden_states,
            HiddenStates::Transformers5
        );
        let cfg: ObjectiveConfig = toml::from_str("hidden_states = \"transformers4.57\"").unwrap();
        assert_eq!(cfg.hidden_states, HiddenStates::Transformers4_57);
        let err = toml::from_str::<ObjectiveConfig>("hidden_states = \"4.57\"").unwrap_err();
        assert!(err.to_string().contains("transformers4.57"), "{err}");
        // Written the authors' way.
        assert_eq!(
            serde_json::to_string(&Distance::SmoothL1).unwrap(),
            "\"smoothl1\""
        );
    }
}
