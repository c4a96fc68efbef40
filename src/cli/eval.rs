//! `pearl eval` and `pearl compare`.

use crate::data::tool_protocol::SYSTEM_PROMPT as DEFAULT_SYSTEM_PROMPT;
use crate::eval::agent::AgentConfig;
use crate::eval::answerer::ChatModel;
use crate::eval::bench::{self, BenchFormat};
use crate::eval::card::{Protocol, ProtocolCard, check_runs, dir_sha256, tree_sha256};
use crate::eval::compare::{Comparison, compare_dirs};
use crate::eval::protocol;
use crate::eval::run::{Mode, RunConfig, evaluate};
use crate::eval::stats::Bootstrap;
use crate::processor::image::ImageProcessorConfig;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: super::model_args::ModelArgs,
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
    // Written before the first answer, so an interrupted run says how it was made too.
    let card = protocol_card(&a, &mode, &cfg.bench, items.len())?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create run directory {}", a.out.display()))?;
    card.write(&a.out)?;
    let summary = evaluate(model.as_mut(), &items, &mode, &cfg, &a.out)?;
    let md = summary.to_markdown() + &card.to_markdown();
    let md_path = a.out.join("summary.md");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    print!("{md}");
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The run's protocol card: how answers are asked for, extracted and budgeted, and checksums of
/// the weights and the benchmark files.
fn protocol_card(
    a: &EvalArgs,
    mode: &Mode,
    bench: &str,
    items: usize,
) -> anyhow::Result<ProtocolCard> {
    let pixels = ImageProcessorConfig::from_file(&a.model.dir.join("preprocessor_config.json"))
        .ok()
        .map(|c| (c.min_pixels, c.max_pixels));
    let (mode_name, system_prompt, max_new_tokens, calls) = match mode {
        Mode::Direct => ("direct", None, protocol::MAX_NEW_TOKENS, None),
        Mode::Tools(t) => (
            "tools",
            t.system_prompt.clone(),
            t.max_new_tokens,
            Some(t.max_calls),
        ),
    };
    let adapter_sha256 = match &a.model.adapter {
        Some(dir) => Some(
            dir_sha256(dir)?
                .with_context(|| format!("adapter {} does not exist", dir.display()))?,
        ),
        None => None,
    };
    Ok(ProtocolCard {
        protocol: Protocol {
            bench: bench.to_string(),
            mode: mode_name.into(),
            prompt_template: protocol::prompt_template(),
            system_prompt,
            answer_extraction: protocol::extraction_rule(),
            min_pixels: pixels.map(|p| p.0),
            max_pixels: pixels.map(|p| p.1),
            decoding: "greedy".into(),
            max_new_tokens,
            agent_max_tool_calls: calls,
            latent_steps: a.latent_steps,
            precision: a.model.precision.name().into(),
            model_sha256: dir_sha256(&a.model.dir)?,
            adapter_sha256,
            benchmark_sha256: tree_sha256(&a.data)?,
        },
        items,
        pearl_version: env!("CARGO_PKG_VERSION").into(),
        device: a.model.device_name(),
    })
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
    /// The runs evaluate different weights on purpose (recipe A vs recipe B): model and adapter
    /// checksums may differ; the rest of the protocol must still match.
    #[arg(long)]
    pub models_differ: bool,
    /// Compare even though the protocol cards differ in what changes answers (prompt, answer
    /// extraction, pixels, decoding, token budget, agent limits, precision, weights, benchmark
    /// files); the differences are printed.
    #[arg(long)]
    pub allow_protocol_mismatch: bool,
}

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let all: Vec<PathBuf> = a.runs.iter().chain(&a.a).chain(&a.b).cloned().collect();
    let (diffs, missing) = check_runs(&all, a.models_differ)?;
    for run in &missing {
        eprintln!("warning: {run} has no protocol.json: its protocol cannot be checked");
    }
    if !diffs.is_empty() {
        let listed = diffs.join("\n  ");
        anyhow::ensure!(
            a.allow_protocol_mismatch,
            "the runs were evaluated under different protocols, so their scores are not \
             comparable:\n  {listed}\n(--models-differ allows different weights; \
             --allow-protocol-mismatch compares anyway)"
        );
        eprintln!("warning: comparing runs with different protocols:\n  {listed}");
    }
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
