//! Stage 3: the base model fine-tuned five ways on the same trajectories, with the same steps,
//! learning rate, LoRA rank and seed: SFT, Pearl, Pearl without NextLat, the LVR-style
//! reconstruction baseline, and the tool-calling baseline (the trajectories rendered with
//! `<tool_call>` turns, the ones whose calls the agent can run). Only the objective differs (LVR, as its authors do, also keeps the
//! vision tower frozen: its targets are that tower's output). Each run keeps its best checkpoint
//! by validation loss, the paper's selection rule.
//!
//! Except for the tool-calling baseline, the next-token loss supervises the final answer turn only (the paper's LVR-data setting, and
//! what LVR itself trains): the protocol asks for the letter at once, and a model this small
//! that learns to write the expert's tool turns first never reaches the letter in 4 tokens.
//! The trajectory still reaches SFT as context and Pearl as its JEPA target.

use super::config::DemoConfig;
use super::data::DemoData;
pub use super::method::Method;
use crate::objective::{MethodKind, ObjectiveConfig, Supervise};
use crate::train::config::{LoraSection, OptimizerConfig};
use crate::train::{self, Options, RunConfig};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// How a method sets up its fine-tuning: the objective (or the training method) it trains with.
fn apply(method: Method, run: &mut RunConfig) {
    let pearl = ObjectiveConfig {
        supervise: Supervise::LastAssistant,
        ..ObjectiveConfig::pearl()
    };
    match method {
        Method::Sft => {
            run.objective = ObjectiveConfig {
                jepa: false,
                nextlat: false,
                ..pearl
            }
        }
        Method::Pearl => run.objective = pearl,
        Method::PearlNoNextLat => {
            run.objective = ObjectiveConfig {
                nextlat: false,
                ..pearl
            }
        }
        // LVR supervises the answer turn by construction.
        Method::Lvr => run.method = MethodKind::Lvr,
        // Every assistant turn: the model must learn to write the calls, then answer.
        Method::ToolCall => run.method = MethodKind::ToolCall,
    }
}

/// One finished fine-tuning.
#[derive(Debug, Clone)]
pub struct Finetuned {
    pub method: Method,
    pub seed: u64,
    pub run_dir: PathBuf,
    /// `best/adapter` of the run (PEFT format).
    pub adapter: PathBuf,
    pub summary: train::Summary,
}

/// Fine-tunes `base` with `method` and `seed` into `runs_dir/<method>-seed<seed>`.
pub fn finetune(
    cfg: &DemoConfig,
    base: &Path,
    data: &DemoData,
    method: Method,
    seed: u64,
    runs_dir: &Path,
    progress: bool,
) -> Result<Finetuned> {
    let s = &cfg.finetune;
    let run_dir = runs_dir.join(format!("{}-seed{seed}", method.slug()));
    if run_dir.exists() {
        // A rerun starts the run afresh (the training loop refuses a used directory).
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot replace {}", run_dir.display()))?;
    }
    let mut run = RunConfig {
        model: Some(base.to_path_buf()),
        train: vec![data.train()],
        val: vec![data.val()],
        output: run_dir.clone(),
        seed,
        micro_batch: s.micro_batch,
        steps: Some(s.steps),
        eval_every: s.eval_every,
        save_every: 0,
        keep_last: 1,
        max_pixels: Some(cfg.max_pixels),
        devices: Some(vec![cfg.device.clone()]),
        lora: LoraSection {
            r: cfg.lora_rank,
            alpha: 2.0 * cfg.lora_rank as f64,
            ..LoraSection::default()
        },
        optimizer: OptimizerConfig {
            lr: s.lr,
            ..Default::default()
        },
        ..RunConfig::default()
    };
    apply(method, &mut run);
    let summary = train::run(
        &run,
        &Options {
            progress,
            ..Options::default()
        },
    )
    .with_context(|| format!("fine-tuning {} (seed {seed})", method.label()))?;
    // best/ is all the demo reads; the last step checkpoint is a copy it does not need.
    for (_, dir) in train::checkpoint::step_dirs(&run_dir)? {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(Finetuned {
        method,
        seed,
        adapter: run_dir.join(train::checkpoint::BEST).join("adapter"),
        run_dir,
        summary,
    })
}
