//! `pearl bench ...`: benchmarks that print a markdown table and JSON.

use crate::bench::train::{self, TrainBenchArgs};
use crate::bench::{answer_cost, generate};
use crate::model::device::DeviceSpec;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCmd {
    /// One training step, SFT vs Pearl (forward / backward / optimizer), on a random model of a
    /// config with LoRA.
    Train(TrainBenchArgs),
    /// Decoding latency of a random model of a config; optionally Pearl-style vs tool-using
    /// answer latency replayed on trajectories.
    Generate(GenerateBenchArgs),
    /// Load time and peak memory of a model directory's weights.
    Load(LoadBenchArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadBenchArgs {
    /// Model directory (config.json and safetensors weights).
    #[arg(long)]
    pub model: PathBuf,
    /// f32, or bf16: the dtype the weights are stored in once loaded.
    #[arg(long, default_value = "f32", value_parser = crate::model::precision::Precision::parse)]
    pub precision: crate::model::precision::Precision,
    /// Where to load: cpu, cuda:N (`cuda` feature) or wgpu[:gl|:vulkan] (`wgpu` feature).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    pub device: DeviceSpec,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateBenchArgs {
    /// A model directory's config.json; the tokenizer and preprocessor are read beside it.
    #[arg(long)]
    pub config: PathBuf,
    /// Images placed before the prompt.
    #[arg(long)]
    pub prompt_images: Vec<PathBuf>,
    #[arg(
        long,
        default_value = "What is the color of the small square?\nOptions:\n(A) red\n(B) blue\n(C) green\n(D) white\nAnswer with the option's letter from the given choices directly."
    )]
    pub prompt: String,
    /// Tokens decoded per timed run.
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Timed runs (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// f32, or bf16 (every weight and activation in bf16).
    #[arg(long, default_value = "f32", value_parser = crate::model::precision::Precision::parse)]
    pub precision: crate::model::precision::Precision,
    /// Where to run: cpu, cuda:N (`cuda` feature) or wgpu[:gl|:vulkan] (`wgpu` feature).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    pub device: DeviceSpec,
    /// Trajectory JSONL: also time answering Pearl-style vs replaying its tool-using turns.
    #[arg(long)]
    pub trajectories: Option<PathBuf>,
    /// Write the results as JSON here (they are printed either way).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Generate(a) => run_generate(a),
        BenchCmd::Train(a) => run_train(a),
        BenchCmd::Load(a) => {
            let r = crate::bench::load::run(&a.model, a.precision, a.device)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
    }
}

fn run_generate(a: GenerateBenchArgs) -> anyhow::Result<()> {
    let b = generate::GenerateBench {
        config: a.config.clone(),
        prompt: a.prompt.clone(),
        images: a.prompt_images.clone(),
        new_tokens: a.new_tokens,
        runs: a.runs,
        seed: a.seed,
        precision: a.precision,
        device: a.device,
    };
    let report = generate::run(&b)?;
    print!("{}", report.to_table());
    let mut json = serde_json::json!({"generate": report});
    if let Some(path) = &a.trajectories {
        let mut model = generate::random_local_model(&a.config, a.seed, a.precision, a.device)?;
        let cost = answer_cost::run(&mut model, path, 4, a.runs)?;
        println!();
        print!("{}", cost.to_table());
        json["answer_cost"] = serde_json::to_value(&cost)?;
    }
    let text = serde_json::to_string_pretty(&json)?;
    println!("\n{text}");
    if let Some(out) = &a.json {
        std::fs::write(out, text + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

fn run_train(a: TrainBenchArgs) -> anyhow::Result<()> {
    let r = train::run(&a)?;
    train::print(&r);
    let text = serde_json::to_string_pretty(&r)?;
    println!("\n{text}");
    if let Some(out) = &a.json {
        std::fs::write(out, text + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}
