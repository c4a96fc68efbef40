//! Stage 2: the base model. A randomly initialised demo model is fully fine-tuned on the
//! pretraining world (captions and direct questions on small scenes, no tools), which gives it
//! what an instruct model brings to the paper's fine-tunings: it can read the scenes' objects
//! and answer a multiple-choice question with a letter. Its best checkpoint (by validation loss)
//! becomes a self-contained model directory, the base of every fine-tuning.

use super::config::DemoConfig;
use super::data::DemoData;
use super::model_dir::add_processor_files;
use crate::objective::ObjectiveConfig;
use crate::train::{self, Options, RunConfig};
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// The pretraining metrics (`train::metrics` rows) inside a base model directory.
pub const METRICS: &str = "pretrain_metrics.jsonl";

/// A given base model directory (`DemoConfig::base`) and the pretraining metrics it holds (none
/// when it holds none).
pub fn given_base(dir: &Path) -> Result<(PathBuf, Vec<crate::train::metrics::Row>)> {
    ensure!(
        dir.join("config.json").is_file() && dir.join("model.safetensors").is_file(),
        "the base model directory {} has no config.json and model.safetensors",
        dir.display()
    );
    let metrics = dir.join(METRICS);
    let rows = if metrics.is_file() {
        let bytes = std::fs::read(&metrics)
            .with_context(|| format!("cannot read {}", metrics.display()))?;
        crate::train::metrics::parse_rows(&bytes)
            .with_context(|| format!("cannot parse {}", metrics.display()))?
    } else {
        Vec::new()
    };
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    Ok((dir, rows))
}

/// Pretrains into `run_dir` and returns the base model directory (`run_dir/base`).
pub fn pretrain(
    cfg: &DemoConfig,
    model_files: &Path,
    data: &DemoData,
    run_dir: &Path,
    progress: bool,
) -> Result<(PathBuf, train::Summary)> {
    let s = &cfg.pretrain;
    let output = run_dir.join("run");
    if output.exists() {
        // A rerun starts afresh (the training loop refuses a directory with checkpoints).
        std::fs::remove_dir_all(&output)
            .with_context(|| format!("cannot replace {}", output.display()))?;
    }
    let run = RunConfig {
        random_config: Some(model_files.join("config.json")),
        processor: Some(model_files.to_path_buf()),
        train: data.pretrain_files("train.jsonl"),
        val: data.pretrain_files("val.jsonl"),
        output,
        seed: cfg.seed,
        full: true,
        micro_batch: s.micro_batch,
        steps: Some(s.steps),
        eval_every: s.eval_every,
        save_every: 0,
        keep_last: 1,
        max_pixels: Some(cfg.max_pixels),
        devices: Some(vec![cfg.device.clone()]),
        objective: ObjectiveConfig::sft(),
        optimizer: crate::train::config::OptimizerConfig {
            lr: s.lr,
            ..Default::default()
        },
        ..RunConfig::default()
    };
    let summary = train::run(
        &run,
        &Options {
            progress,
            ..Options::default()
        },
    )
    .context("pretraining the base model")?;

    // best/model holds weights and config; the processor files make it a model directory.
    let base = run_dir.join("base");
    if base.exists() {
        std::fs::remove_dir_all(&base)
            .with_context(|| format!("cannot replace {}", base.display()))?;
    }
    let best = run.output.join(train::checkpoint::BEST).join("model");
    copy_dir(&best, &base)?;
    add_processor_files(&base, cfg.max_pixels)?;
    // The pretraining curve travels with the base, for a demo that reuses it (`DemoConfig::base`).
    std::fs::copy(run.output.join("metrics.jsonl"), base.join(METRICS))
        .context("cannot copy the pretraining metrics into the base model directory")?;
    // Only best/ is needed from here on; step checkpoints of a full model are large.
    for (_, dir) in train::checkpoint::step_dirs(&run.output)? {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok((base, summary))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).with_context(|| {
                format!("cannot copy {} to {}", entry.path().display(), to.display())
            })?;
        }
    }
    Ok(())
}
