//! Stage 1: the synthetic visual-search world (`data::synth`). Two datasets from one seed:
//! - `tools/`: the `mixed` task (single crops, chained crops, several tool types, several crops
//!   with other tools) on large cluttered scenes: fine-tuning trajectories, validation
//!   trajectories and the held-out test items;
//! - `pretrain/`: small scenes where the objects are plainly visible, answered directly or
//!   captioned, without tools: what the base model learns before it sees a tool.

use super::config::DemoConfig;
use crate::data::synth::{self, SynthConfig, Task, Tool};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the two datasets are.
#[derive(Debug, Clone)]
pub struct DemoData {
    pub tools: PathBuf,
    pub pretrain: PathBuf,
}

impl DemoData {
    pub fn train(&self) -> PathBuf {
        self.tools.join("train.jsonl")
    }
    pub fn val(&self) -> PathBuf {
        self.tools.join("val.jsonl")
    }
    pub fn test_items(&self) -> PathBuf {
        self.tools.join("test_mcq.jsonl")
    }
}

/// Writes both datasets under `dir`.
pub fn synthesize(cfg: &DemoConfig, dir: &Path) -> Result<DemoData> {
    let d = &cfg.data;
    let tools = dir.join("tools");
    let mut c = world(Task::Mixed, cfg.seed, d.scene_side, d.object_size);
    (c.train, c.val, c.test) = (d.train, d.val, d.test);
    c.tools = vec![Tool::Crop, Tool::Highlight, Tool::Depth];
    synth::generate(&c, &tools).context("cannot synthesize the tool-use data")?;

    // Pretraining scenes are 16 object sizes wide (what `pearl data synth --task pretrain` uses).
    let pretrain = dir.join("pretrain");
    let side = (d.object_size * 16.0).round() as u32;
    let mut c = world(Task::Pretrain, cfg.seed ^ 0x5eed, side, d.object_size);
    (c.train, c.val, c.test) = (d.pretrain_train, d.pretrain_val, 0);
    synth::generate(&c, &pretrain).context("cannot synthesize the pretraining data")?;
    Ok(DemoData { tools, pretrain })
}

/// A world of `side`-pixel square scenes with the default clutter density.
fn world(task: Task, seed: u64, side: u32, object_size: f64) -> SynthConfig {
    let mut c = SynthConfig::new(task, seed, 0);
    c.canonical_options = true;
    c.scene.width = side;
    c.scene.height = side;
    c.scene.object_size = object_size;
    // 40 blobs on an 896x896 canvas (the synth default), the same density here.
    c.scene.clutter =
        ((40.0 * f64::from(side) * f64::from(side) / (896.0 * 896.0)).round() as usize).max(2);
    c
}
