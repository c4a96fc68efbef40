//! `pearl bench train`: the cost of one training step, SFT vs Pearl, on a random-initialised model
//! of a given config with LoRA, on a fixed batch (the workload of `../shared/bench`). Medians over
//! timed steps after warm-up of the step `pearl train` runs (`train::step::train_step`), its
//! forward pass timed apart, tokens/s and peak memory per objective; printed as a table and as JSON.

use super::{median, peak_rss_bytes, process_cpu_seconds, reset_peak_rss, rss_bytes, seq_len};
use crate::data::trajectory::load_jsonl;
use crate::model::Vlm;
use crate::model::device::{DeviceSpec, training_device};
use crate::model::precision::Precision;
use crate::objective::batch::Example;
use crate::objective::freeze::lora_only;
use crate::objective::{Batch, Method, ObjectiveConfig, PearlModel, TrainBatch, compute_losses};
use crate::peft::lora::{LoraConfig, init_lora};
use crate::processor::Processor;
use crate::train::config::OptimizerConfig;
use crate::train::optim::AdamW;
use crate::train::step::train_step;
use anyhow::{Context, Result, ensure};
use burn::module::Module;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainBenchArgs {
    /// A model directory or its `config.json` (weights are not read: random initialisation).
    /// The tokenizer, chat template and preprocessor come from the same directory, unless
    /// `--processor` names another.
    #[arg(long)]
    pub config: PathBuf,
    /// The directory of the tokenizer, chat template and preprocessor (default: the config's).
    #[arg(long)]
    pub processor: Option<PathBuf>,
    /// Trajectories (JSONL); all lines form the batch.
    #[arg(long)]
    pub data: PathBuf,
    /// Objectives to time, comma-separated: sft, pearl (JEPA + NextLat), jepa (JEPA only).
    #[arg(long, value_delimiter = ',', default_value = "sft,pearl,jepa")]
    pub objective: Vec<String>,
    /// Timed steps per objective (after one warm-up step).
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Supervise every non-pad token of the full view, as `torch_reference.py` does, instead of
    /// the assistant turns only (same arithmetic as the reference, for the comparison).
    #[arg(long)]
    pub all_tokens: bool,
    /// Lengthen every trajectory to this many tokens (filler words in its first user turn, see
    /// `bench::seq_len`): memory and step time against the sequence length.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to run: cpu, cuda:N (`cuda` feature) or wgpu[:gl|:vulkan] (`wgpu` feature).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    pub device: DeviceSpec,
    /// Recompute cheap activations in the backward pass instead of keeping them
    /// (burn's balanced gradient checkpointing): less memory, more compute.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// f32, or bf16: frozen weights and activations in bf16, LoRA factors as f32 master copies
    /// (meant for GPUs; on the CPU backend bf16 products convert through f32 and run slower).
    #[arg(long, default_value = "f32", value_parser = Precision::parse)]
    pub precision: Precision,
    /// Run every op in its composed form from burn's ops (the code a GPU runs) instead of the
    /// fused CPU kernels: what the kernels buy.
    #[arg(long)]
    pub no_fused: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub objective: String,
    pub step_s: f64,
    /// CPU seconds (all threads) of a step: steadier than `step_s` on a shared machine.
    pub step_cpu_s: Option<f64>,
    pub forward_s: f64,
    /// The rest of the step: backward, clipping, AdamW.
    pub backward_and_optimizer_s: f64,
    pub tokens_per_s: f64,
    pub peak_rss_mib: Option<f64>,
    /// Resident memory before the first step (the model, its optimizer not yet allocated): what
    /// a step adds is the peak less this.
    pub start_rss_mib: Option<f64>,
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub precision: Precision,
    pub fused_kernels: bool,
    pub params: usize,
    pub trainable_params: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub tokens: usize,
    pub supervised_tokens: usize,
    pub threads: usize,
    pub results: Vec<StepTiming>,
    /// Step time of each objective over the SFT step, when SFT was timed.
    pub over_sft: Vec<(String, f64)>,
}

fn objective_of(name: &str) -> Result<ObjectiveConfig> {
    Ok(match name {
        "sft" => ObjectiveConfig::sft(),
        "pearl" => ObjectiveConfig::pearl(),
        "jepa" => ObjectiveConfig {
            nextlat: false,
            ..ObjectiveConfig::pearl()
        },
        "nextlat" => ObjectiveConfig {
            jepa: false,
            ..ObjectiveConfig::pearl()
        },
        other => {
            anyhow::bail!("unknown objective {other:?} (expected sft, pearl, jepa or nextlat)")
        }
    })
}

fn model_dir(config: &Path) -> PathBuf {
    if config.is_dir() {
        config.to_path_buf()
    } else {
        config.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

pub fn run(a: &TrainBenchArgs) -> Result<TrainBench> {
    ensure!(a.steps > 0, "--steps must be at least 1");
    crate::kernels::fused::set_enabled(!a.no_fused);
    let dir = model_dir(&a.config);
    let config = if a.config.is_dir() {
        dir.join("config.json")
    } else {
        a.config.clone()
    };
    let mut processor = Processor::from_dir(a.processor.as_deref().unwrap_or(&dir))?;
    processor.tokenizer.add_pearl_tokens();
    let file = load_jsonl(&a.data)?;
    ensure!(
        !file.items.is_empty(),
        "{} holds no trajectories",
        a.data.display()
    );
    let ids: Vec<String> = file.items.iter().map(|n| n.trajectory.id.clone()).collect();
    let mut chats: Vec<Vec<_>> = file
        .items
        .iter()
        .map(|n| n.trajectory.messages.clone())
        .collect();
    if let Some(target) = a.seq_len {
        let words = seq_len::words_for(&processor, &chats, &ids, &file.base_dir, target)?;
        chats = chats
            .iter()
            .map(|c| seq_len::lengthened(c, words))
            .collect::<Result<_>>()?;
    }
    let examples: Vec<Example> = chats
        .iter()
        .zip(&ids)
        .map(|(chat, id)| Example {
            id,
            chat,
            base_dir: &file.base_dir,
        })
        .collect();
    let device = training_device(a.device.device()?, a.gradient_checkpointing);
    let lora = LoraConfig {
        r: a.lora_r,
        lora_alpha: a.lora_alpha,
        lora_dropout: 0.0,
        target_regex: None,
    };
    let mut results = Vec::new();
    let mut shape = None;
    for name in &a.objective {
        let obj = objective_of(name)?;
        let mut batch = TrainBatch::build(&processor, &examples, &obj)?;
        if a.all_tokens {
            batch.labels = batch
                .full
                .input_ids
                .iter()
                .zip(&batch.full.attention_mask)
                .map(|(&t, &m)| if m != 0 { t } else { -100 })
                .collect();
        }
        // A fresh model per objective: same seed, same weights, same optimizer state.
        let mut vlm = Vlm::random_from_config(&config, 0, &device)?;
        vlm.ensure_vocab(processor.tokenizer.vocab_size());
        let vlm = init_lora(vlm, &lora, 1)?;
        let mut model = lora_only(PearlModel::new(vlm, &obj, 2));
        model.vlm = model.vlm.with_precision(a.precision)?;
        let params = model.num_params();
        let trainable: usize = crate::model::names::named_params(&model)
            .iter()
            .filter(|p| p.require_grad)
            .map(|p| p.dims.iter().product::<usize>())
            .sum();
        shape = Some((
            params,
            trainable,
            batch.full.batch,
            batch.full.seq_len,
            batch.tokens(),
            batch.supervised_tokens(),
        ));
        let wrapped = Batch::Pearl(batch.clone());
        let mut optim = AdamW::new(&OptimizerConfig::default(), &model);
        let (mut fw, mut total, mut cpu) = (vec![], vec![], vec![]);
        let mut loss = 0.0;
        reset_peak_rss();
        let start = rss_bytes();
        // The training step itself (what `pearl train` runs: clipping and AdamW included)...
        for step in 0..=a.steps {
            let (t0, c0) = (Instant::now(), process_cpu_seconds());
            let (next, report) = train_step(
                model,
                &mut optim,
                std::slice::from_ref(&wrapped),
                Method::Pearl(&obj),
                1e-4,
                1.0,
            )
            .with_context(|| format!("objective {name}"))?;
            model = next;
            device
                .sync()
                .map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
            loss = report.losses.total;
            if step > 0 {
                total.push(t0.elapsed().as_secs_f64());
                if let (Some(c0), Some(c1)) = (c0, process_cpu_seconds()) {
                    cpu.push(c1 - c0);
                }
            }
        }
        // Read before the forward-only passes below: a graph recorded without a backward pass
        // is freed lazily, so those passes would count in the peak though training never runs them.
        let peak = peak_rss_bytes();
        // ...and its forward pass alone (every loss term; reading a value waits for it).
        for _ in 0..a.steps {
            let t1 = Instant::now();
            let forward = compute_losses(&model, &batch, &obj)?;
            let _ = forward.values.total;
            fw.push(t1.elapsed().as_secs_f64());
            // Untimed: the backward pass releases the recorded graph, so the next pass does not
            // run beside it (the gradients are dropped).
            drop(forward.total.backward());
        }
        let step_s = median(&total);
        results.push(StepTiming {
            objective: name.clone(),
            step_s,
            step_cpu_s: (!cpu.is_empty()).then(|| median(&cpu)),
            forward_s: median(&fw),
            backward_and_optimizer_s: step_s - median(&fw),
            tokens_per_s: batch.tokens() as f64 / step_s,
            peak_rss_mib: peak.map(mib),
            start_rss_mib: start.map(mib),
            loss,
        });
    }
    let (params, trainable_params, b, s, tokens, supervised_tokens) =
        shape.context("no objective to time")?;
    let sft = results
        .iter()
        .find(|r| r.objective == "sft")
        .map(|r| r.step_s);
    let over_sft = match sft {
        Some(base) => results
            .iter()
            .map(|r| (r.objective.clone(), r.step_s / base))
            .collect(),
        None => Vec::new(),
    };
    Ok(TrainBench {
        precision: a.precision,
        fused_kernels: !a.no_fused,
        params,
        trainable_params,
        batch: b,
        seq_len: s,
        tokens,
        supervised_tokens,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        results,
        over_sft,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn print(r: &TrainBench) {
    println!(
        "model {:.1} M params ({:.2} M trainable), {}{}, batch {} x {} ({} tokens, {} supervised), {} threads",
        r.params as f64 / 1e6,
        r.trainable_params as f64 / 1e6,
        r.precision.name(),
        if r.fused_kernels {
            ""
        } else {
            ", composed ops"
        },
        r.batch,
        r.seq_len,
        r.tokens,
        r.supervised_tokens,
        r.threads
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>12} {:>9} {:>10} {:>10} {:>8}",
        "objective",
        "step s",
        "cpu s",
        "fwd s",
        "bwd+optim s",
        "tok/s",
        "start MiB",
        "peak MiB",
        "x SFT"
    );
    for t in &r.results {
        let ratio = r
            .over_sft
            .iter()
            .find(|(n, _)| *n == t.objective)
            .map(|(_, x)| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:>9.3} {:>9} {:>9.3} {:>12.3} {:>9.0} {:>10} {:>10} {:>8}",
            t.objective,
            t.step_s,
            t.step_cpu_s
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "-".into()),
            t.forward_s,
            t.backward_and_optimizer_s,
            t.tokens_per_s,
            t.start_rss_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "-".into()),
            t.peak_rss_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "-".into()),
            ratio
        );
    }
}
