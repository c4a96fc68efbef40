//! Shared by the training tests: a small synthetic dataset and a run config on the tiny fixture
//! model, sized so that a step takes a fraction of a second on a CPU.
#![allow(dead_code)]

use pearl::data::synth::{SynthConfig, Task, generate};
use pearl::train::RunConfig;
use pearl::train::config::LoraSection;
use std::path::{Path, PathBuf};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny")
}

/// Chain-of-crops trajectories on 112-px scenes: `train` training and `val` validation examples.
pub fn synth_data(dir: &Path, train: usize, val: usize) -> (PathBuf, PathBuf) {
    let mut cfg = SynthConfig::new(Task::Chain, 3, train + 2 * val);
    (cfg.train, cfg.val, cfg.test) = (train, val, 1);
    cfg.scene.width = 112;
    cfg.scene.height = 112;
    cfg.scene.object_size = 8.0;
    cfg.scene.clutter = 2;
    cfg.threads = 1;
    let out = dir.join("data");
    generate(&cfg, &out).expect("synthetic data");
    (out.join("train.jsonl"), out.join("val.jsonl"))
}

/// A LoRA run on the tiny model: rank 4, images at most 112x112 pixels.
pub fn run_config(dir: &Path, train: PathBuf, val: PathBuf, steps: usize) -> RunConfig {
    RunConfig {
        model: Some(fixture_dir().join("model")),
        train: vec![train],
        val: vec![val],
        output: dir.join("run"),
        steps: Some(steps),
        max_pixels: Some(112 * 112),
        micro_batch: 2,
        grad_accum: 1,
        eval_every: 0,
        save_every: 0,
        lora: LoraSection {
            r: 4,
            alpha: 8.0,
            dropout: 0.1,
            target_regex: None,
        },
        optimizer: pearl::train::config::OptimizerConfig {
            lr: 1e-2,
            ..Default::default()
        },
        ..RunConfig::default()
    }
}
