//! `pearl train --config RUN.toml [--resume] [overrides]` and `pearl merge`.

use crate::train::{Options, Resume, RunConfig};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Run file (TOML); see docs/training.md. Without it, the flags alone describe the run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in the output directory from its newest checkpoint.
    #[arg(long, conflicts_with = "resume_from")]
    resume: bool,
    /// Continue from this checkpoint directory.
    #[arg(long)]
    resume_from: Option<PathBuf>,
    /// Override any run-file key: `--set optimizer.lr=1e-4 --set objective.jepa=false`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_delimiter = ',')]
    train: Vec<PathBuf>,
    #[arg(long, value_delimiter = ',')]
    val: Vec<PathBuf>,
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    micro_batch: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Data-parallel devices, e.g. `cuda:0,cuda:1` (the run file's `devices`; see
    /// docs/gpu-and-scaling.md). `grad_accum` must be a multiple of their number.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Plain SFT on the same trajectories (no JEPA, no NextLat).
    #[arg(long)]
    sft: bool,
    /// The LVR-style reconstruction baseline instead of Pearl (settings in `[lvr]`).
    #[arg(long, conflicts_with = "sft")]
    lvr: bool,
    /// The tool-calling baseline: SFT on the trajectories rendered with `<tool_call>` turns, as
    /// `pearl eval --agent tools` runs them (every assistant turn supervised).
    #[arg(long, conflicts_with_all = ["sft", "lvr"])]
    toolcall: bool,
    /// Full fine-tuning instead of LoRA.
    #[arg(long)]
    full: bool,
    #[arg(long)]
    skip_invalid: bool,
    /// Skip training examples longer than this many tokens (the run file's `max_tokens`).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    /// The named flags as `key=value` overrides, then the `--set` ones (which win).
    fn overrides(&self) -> Vec<String> {
        let mut o = Vec::new();
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string()).to_string();
        let strings = |items: Vec<String>| {
            toml::Value::Array(items.into_iter().map(toml::Value::String).collect()).to_string()
        };
        let paths = |ps: &[PathBuf]| strings(ps.iter().map(|p| p.display().to_string()).collect());
        if let Some(p) = &self.model {
            o.push(format!("model={}", path(p)));
        }
        if !self.train.is_empty() {
            o.push(format!("train={}", paths(&self.train)));
        }
        if !self.val.is_empty() {
            o.push(format!("val={}", paths(&self.val)));
        }
        if !self.devices.is_empty() {
            o.push(format!("devices={}", strings(self.devices.clone())));
        }
        if let Some(p) = &self.output {
            o.push(format!("output={}", path(p)));
        }
        let mut num = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("{k}={v}"));
            }
        };
        num("steps", self.steps.map(|x| x.to_string()));
        num("epochs", self.epochs.map(|x| x.to_string()));
        num("optimizer.lr", self.lr.map(|x| format!("{x:e}")));
        num("micro_batch", self.micro_batch.map(|x| x.to_string()));
        num("grad_accum", self.grad_accum.map(|x| x.to_string()));
        num("seed", self.seed.map(|x| x.to_string()));
        num("max_tokens", self.max_tokens.map(|x| x.to_string()));
        if self.sft {
            o.push("objective.jepa=false".into());
            o.push("objective.nextlat=false".into());
        }
        if self.lvr {
            o.push("method=\"lvr\"".into());
        }
        if self.toolcall {
            o.push("method=\"toolcall\"".into());
        }
        if self.full {
            o.push("full=true".into());
        }
        if self.skip_invalid {
            o.push("skip_invalid=true".into());
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let overrides = a.overrides();
    let cfg = match &a.config {
        Some(path) => RunConfig::load(path, &overrides)?,
        None => RunConfig::from_overrides(&overrides)?,
    };
    let resume = match (&a.resume_from, a.resume) {
        (Some(d), _) => Some(Resume::Dir(d.clone())),
        (None, true) => Some(Resume::Latest),
        (None, false) => None,
    };
    let opts = Options {
        resume,
        stop_after: None,
        progress: !a.quiet,
    };
    let s = crate::train::run(&cfg, &opts)?;
    println!(
        "{}",
        serde_json::json!({
            "output": cfg.output,
            "steps": s.step,
            "skipped_steps": s.skipped,
            "best": s.best.map(|(step, loss)| serde_json::json!({"step": step, "val_total": loss})),
            "final_val": s.final_val,
        })
    );
    Ok(())
}

#[derive(Args)]
pub struct MergeArgs {
    /// Base model directory (hub layout).
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    #[arg(long)]
    adapter: PathBuf,
    /// Output directory: a plain hub-layout checkpoint with the adapter folded in.
    #[arg(long)]
    out: PathBuf,
    /// Where the merge runs: cpu, cuda:N (`cuda` feature) or wgpu[:gl|:vulkan] (`wgpu` feature).
    #[arg(long, default_value = "cpu", value_parser = crate::model::device::DeviceSpec::parse_available)]
    device: crate::model::device::DeviceSpec,
}

pub fn run_merge(a: MergeArgs) -> anyhow::Result<()> {
    let files =
        crate::train::merge::merge_adapter(&a.model, &a.adapter, &a.out, &a.device.device()?)?;
    println!("wrote {} ({} files)", a.out.display(), files.len());
    Ok(())
}
