//! `pearl demo [--out DIR] [--quick] [--seeds N]`: the paper's comparison on a CPU (`crate::demo`).

use crate::demo::{self, DemoConfig};
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
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let base = if a.quick {
        DemoConfig::quick()
    } else {
        DemoConfig::default()
    };
    let cfg = DemoConfig {
        seeds: a.seeds,
        seed: a.seed,
        ..base
    };
    let outcome = demo::run(&cfg, &a.out, std::io::stderr().is_terminal())?;
    println!("{}", demo::report::table_markdown(&outcome.data.table));
    println!("{}", outcome.data.verdict.statement);
    println!("report: {}", outcome.report.display());
    Ok(())
}
