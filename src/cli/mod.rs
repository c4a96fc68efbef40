//! The `pearl` command line: one file per command family.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod data;
pub mod eval;
pub mod inspect;
pub mod inspect_loss;

#[derive(Parser)]
#[command(
    name = "pearl",
    version,
    about = "Pearl: multimodal latent reasoning via predictive embeddings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Diagnostics: run the model or objective on given inputs and dump tensors.
    Inspect(inspect::InspectArgs),
    /// Trajectory data: validate, import, synthesize, summarize.
    Data(data::DataArgs),
    /// Paired comparison of two evaluation runs on the same items.
    Compare(eval::CompareArgs),
    /// Speed and memory benchmarks.
    Bench(bench::BenchArgs),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Data(a) => data::run(a),
        Command::Compare(a) => eval::run_compare(a),
        Command::Bench(a) => bench::run(a),
    }
}
