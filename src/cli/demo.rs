//! `pearl demo [--out DIR] [--quick] [--seeds N] [--device D]`: the paper's comparison on a CPU (`crate::demo`).

use crate::demo::{self, DemoConfig};
use crate::model::device::DeviceSpec;
use anyhow::Context;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Report directory (created; an earlier demo's files in it are replaced).
    #[arg(long, default_value = "pearl-report")]
    out: PathBuf,
    /// The smoke version (what CI runs): every stage on a handful of examples and steps.
    #[arg(long)]
    quick: bool,
    /// Fine-tune every method with this many seeds and report paired differences over them.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Seed of the data and of the first fine-tuning.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A JSON file of settings that replace the defaults' (or --quick's), nested objects field by
    /// field, e.g. `{"finetune": {"steps": 500}, "data": {"test": 800}}` (names as in the
    /// report's settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where every stage trains and evaluates: `cpu`, `cuda:N` (a build with `--features cuda`) or
    /// `wgpu`, `wgpu:gl`, `wgpu:vulkan` (a build with `--features wgpu`).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    device: DeviceSpec,
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let base = if a.quick {
        DemoConfig::quick()
    } else {
        DemoConfig::default()
    };
    let base = DemoConfig {
        seeds: a.seeds,
        seed: a.seed,
        device: a.device.to_string(),
        ..base
    };
    let cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let patch: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            base.patched(&patch)
                .with_context(|| format!("applying {}", path.display()))?
        }
        None => base,
    };
    let outcome = demo::run(&cfg, &a.out, std::io::stderr().is_terminal())?;
    println!("{}", demo::report::table_markdown(&outcome.data.table));
    println!("{}", outcome.data.verdict.statement);
    println!("report: {}", outcome.report.display());
    Ok(())
}
