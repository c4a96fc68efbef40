//! `pearl demo [--out DIR] [--quick] [--seeds N] [--device D]`: the paper's comparison on a CPU (`crate::demo`).

use crate::demo::{self, BaseSource, DemoConfig};
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
    /// Pretrain the base model from random weights instead of using the shipped one
    /// (`assets/demo-base/`).
    #[arg(long, conflicts_with = "base")]
    from_scratch: bool,
    /// Fine-tune this base model directory (a demo's `pretrain/base`) instead.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Stop after the base model: with --from-scratch, this rebuilds the shipped base, and says
    /// whether its checksum equals the shipped one's.
    #[arg(long)]
    pretrain_only: bool,
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let base = if a.quick {
        DemoConfig::quick()
    } else {
        DemoConfig::default()
    };
    let source = match (&a.base, a.from_scratch) {
        (Some(dir), _) => BaseSource::Dir(dir.clone()),
        (None, true) => BaseSource::Pretrain,
        (None, false) => base.base.clone(),
    };
    let base = DemoConfig {
        seeds: a.seeds,
        seed: a.seed,
        device: a.device.to_string(),
        base: source,
        pretrain_only: a.pretrain_only,
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
    match &outcome.data {
        Some(data) => {
            println!("{}", demo::report::table_markdown(&data.table));
            println!("{}", data.verdict.statement);
            println!("report: {}", outcome.report.display());
        }
        None => report_base(&outcome.report)?,
    }
    Ok(())
}

/// After `--pretrain-only`: where the base is, its checksum, and whether it is the shipped one.
fn report_base(dir: &std::path::Path) -> anyhow::Result<()> {
    let built: demo::shipped::Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join(demo::shipped::MANIFEST_FILE))
            .context("the base model directory has no base.json")?,
    )?;
    let shipped = demo::shipped::manifest()?;
    println!("base model: {}", dir.display());
    println!("sha256 {}", built.sha256);
    if built.recipe != shipped.recipe {
        println!("made with other settings than the shipped base (assets/demo-base/)");
    } else if built.sha256 == shipped.sha256 {
        println!("equal to the shipped base (assets/demo-base/model.safetensors)");
    } else {
        println!(
            "the shipped base's is {}: same recipe, other bits (a rebuild on another CPU may              differ in the last bits of the weights)",
            shipped.sha256
        );
    }
    Ok(())
}
