//! Stage 1: the synthetic visual-search world (`data::synth`). Two datasets from one seed:
//! - `tools/`: the `mixed` task (single crops, chained crops, several tool types, several crops
//!   with other tools) on large cluttered scenes: fine-tuning trajectories, validation
//!   trajectories and the held-out test items;
//! - `pretrain/`: small plain scenes where the objects are plainly visible, answered directly or
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
    let mut c = world(cfg, Task::Mixed, cfg.seed, d.scene_side);
    (c.train, c.val, c.test) = (d.train, d.val, d.test);
    c.tools = vec![Tool::Crop, Tool::Highlight, Tool::Depth];
    c.distractors = d.distractors;
    synth::generate(&c, &tools).context("cannot synthesize the tool-use data")?;

    // Pretraining: close-ups on plain ground, the objects plainly visible.
    let pretrain = dir.join("pretrain");
    let mut c = world(cfg, Task::Pretrain, cfg.seed ^ 0x5eed, d.pretrain_side);
    (c.train, c.val, c.test) = (d.pretrain_train, d.pretrain_val, 0);
    c.distractors = d.distractors;
    (c.scene.clutter, c.scene.noise, c.scene.plain) = (0, 0, true);
    synth::generate(&c, &pretrain).context("cannot synthesize the pretraining data")?;
    Ok(DemoData { tools, pretrain })
}

/// A world of `side`-pixel square scenes with the default clutter density, the demo's question
/// kinds and options in a fixed order.
fn world(cfg: &DemoConfig, task: Task, seed: u64, side: u32) -> SynthConfig {
    let mut c = SynthConfig::new(task, seed, 0);
    c.canonical_options = true;
    c.unique_colors = true;
    c.kinds = cfg.data.kinds.clone();
    c.scene.width = side;
    c.scene.height = side;
    c.scene.object_size = cfg.data.object_size;
    // 40 blobs on an 896x896 canvas (the synth default), the same density here.
    c.scene.clutter =
        ((40.0 * f64::from(side) * f64::from(side) / (896.0 * 896.0)).round() as usize).max(2);
    c
}
