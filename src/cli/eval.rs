//! `pearl eval` and `pearl compare`.

use crate::data::tool_protocol::SYSTEM_PROMPT as DEFAULT_SYSTEM_PROMPT;
use crate::eval::agent::AgentConfig;
use crate::eval::answerer::ChatModel;
use crate::eval::bench::{self, BenchFormat};
use crate::eval::compare::{Comparison, compare_dirs};
use crate::eval::run::{Mode, RunConfig, evaluate};
use crate::eval::stats::Bootstrap;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model directory (hub layout).
    #[arg(long)]
    pub model: PathBuf,
    /// LoRA adapter directory to apply on top of the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// f32, or bf16: weights and activations in bf16 (half the memory; on the CPU slower, as
    /// bf16 products convert through f32).
    #[arg(long, default_value = "f32", value_parser = crate::model::precision::Precision::parse)]
    pub precision: crate::model::precision::Precision,
    /// Benchmark file format.
    #[arg(long, value_enum)]
    pub bench: BenchFormat,
    /// Benchmark data: a folder or file, as the format expects (see docs/evaluation.md).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory: items.jsonl, summary.json, summary.md.
    #[arg(long)]
    pub out: PathBuf,
    /// How the model answers: `none` (the fixed protocol) or `tools` (the tool-using agent).
    #[arg(long, value_enum, default_value = "none")]
    pub agent: AgentKind,
    /// Answer with LVR's latent decoding: this many latent steps before the answer (a model
    /// trained with `pearl train --lvr`).
    #[arg(long)]
    pub latent_steps: Option<usize>,
    /// Prompts per generate call. Keep 1 when latencies will be compared.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Evaluate only the first N items (after category filtering).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only these categories, comma-separated (BLINK as in Pearl:
    /// Counting,IQ_Test,Jigsaw,Relative_Reflectance,Spatial_Relation).
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Where images embedded in benchmark files are extracted (default OUT/images).
    #[arg(long)]
    pub image_cache: Option<PathBuf>,
    /// Tool agent: tool calls allowed per item.
    #[arg(long, default_value_t = 4)]
    pub max_tool_calls: usize,
    /// Tool agent: new-token budget of each assistant turn.
    #[arg(long, default_value_t = 512)]
    pub turn_tokens: usize,
    /// Tool agent: a file holding the system prompt (default: the PixelReasoner-style crop tool).
    #[arg(long)]
    pub system_prompt: Option<PathBuf>,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    None,
    Tools,
}

/// Runs `pearl eval` with the model `load_model` returns (the caller owns model loading, so this
/// file stays independent of the model's backend).
pub fn run_eval(
    a: EvalArgs,
    load_model: impl FnOnce(&EvalArgs) -> anyhow::Result<Box<dyn ChatModel>>,
) -> anyhow::Result<()> {
    let cache = a
        .image_cache
        .clone()
        .unwrap_or_else(|| a.out.join("images"));
    let items = bench::load(a.bench, &a.data, &cache)?;
    let mut items = bench::filter_categories(items, &a.categories)?;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    let mode = match a.agent {
        AgentKind::None => Mode::Direct,
        AgentKind::Tools => {
            let system_prompt = match &a.system_prompt {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => DEFAULT_SYSTEM_PROMPT.to_string(),
            };
            Mode::Tools(AgentConfig {
                max_calls: a.max_tool_calls,
                max_new_tokens: a.turn_tokens,
                crop_dir: a.out.join("crops"),
                system_prompt: Some(system_prompt),
            })
        }
    };
    let cfg = RunConfig {
        bench: clap::ValueEnum::to_possible_value(&a.bench)
            .map_or_else(String::new, |v| v.get_name().to_string()),
        batch_size: a.batch_size,
        bootstrap: Bootstrap {
            resamples: a.resamples,
            seed: a.seed,
            ..Bootstrap::default()
        },
        progress: !a.quiet,
    };
    let mut model = load_model(&a)?;
    let summary = evaluate(model.as_mut(), &items, &mode, &cfg, &a.out)?;
    print!("{}", summary.to_markdown());
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Run directories: the first is A, each later one is compared with it as B.
    pub runs: Vec<PathBuf>,
    /// Several runs of recipe A (seeds), comma-separated; use with --b instead of positional runs.
    #[arg(long, value_delimiter = ',')]
    pub a: Vec<PathBuf>,
    /// Several runs of recipe B (seeds), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub b: Vec<PathBuf>,
    /// Also write the comparisons as a JSON list.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let boot = Bootstrap {
        resamples: a.resamples,
        seed: a.seed,
        ..Bootstrap::default()
    };
    let comparisons: Vec<Comparison> = match (a.runs.as_slice(), a.a.is_empty(), a.b.is_empty()) {
        ([], false, false) => vec![compare_dirs(&a.a, &a.b, &boot)?],
        ([base, rest @ ..], true, true) if !rest.is_empty() => rest
            .iter()
            .map(|other| {
                compare_dirs(
                    std::slice::from_ref(base),
                    std::slice::from_ref(other),
                    &boot,
                )
            })
            .collect::<anyhow::Result<_>>()?,
        _ => anyhow::bail!("give either two or more run directories, or --a DIRS and --b DIRS"),
    };
    for c in &comparisons {
        println!("{}", c.to_markdown());
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&comparisons)? + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}
