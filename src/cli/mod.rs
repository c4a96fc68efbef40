//! The `pearl` command line: one file per command family.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod data;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod inspect_loss;
pub mod model_args;
pub mod serve;
pub mod train;

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
    /// Evaluate a model on a benchmark under the fixed protocol (or with the tool agent).
    Eval(eval::EvalArgs),
    /// Generate one answer to a prompt (and images) with a model directory.
    Generate(generate::GenerateArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Benchmarks (latency, memory).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Train with the Pearl objective (or plain SFT) from a TOML run file.
    Train(train::TrainArgs),
    /// Fold a LoRA adapter into its base model: a plain hub-layout checkpoint.
    Merge(train::MergeArgs),
    /// The paper's comparison end to end on a CPU: data, base model, four fine-tunings, report.
    Demo(demo::DemoArgs),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Data(a) => data::run(a),
        Command::Compare(a) => eval::run_compare(a),
        Command::Eval(a) => eval::run_eval(a, |a| match a.latent_steps {
            None => Ok(Box::new(a.model.load_chat_model()?)),
            Some(steps) => Ok(Box::new(crate::infer::lvr::LvrChatModel::load(
                &a.model.dir,
                a.model.adapter.as_deref(),
                steps,
                &a.model.device()?,
                a.model.precision,
            )?)),
        }),
        Command::Generate(a) => generate::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Train(a) => train::run(a),
        Command::Merge(a) => train::run_merge(a),
        Command::Demo(a) => demo::run(a),
    }
}
