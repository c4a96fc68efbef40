//! The training loop, top to bottom: set up (processor, data, model, optimizer, or all of it
//! restored from a checkpoint), then per step: take `grad_accum` micro-batches in the seeded data
//! order, [`train_step`] them, count non-finite steps, log, validate, checkpoint.
//!
//! Crash safety comes from the checkpoints (written atomically, see `checkpoint`): a run killed
//! at any moment resumes from its last complete checkpoint, and continues bit for bit because
//! every source of variation is a function of the seed and the step (data order, dropout) or is
//! in the checkpoint (weights, AdamW moments, counters).

use super::checkpoint::{self, BEST, Contents, TrainState, Trainable};
use super::config::RunConfig;
use super::data::{Cursor, DataOrder, Examples, batches_per_epoch, load_items};
use super::metrics::{MetricsLog, Row, plot_loss_curve};
use super::optim::{AdamW, Schedule};
use super::parallel::DataParallel;
use super::param_ids::ids_from_paths;
use super::step::{StepReport, mean_values, train_step};
use crate::model::lora::{LoraConfig, init_lora};
use crate::model::precision::Precision;
use crate::model::{Qwen2_5Vl, Qwen2_5VlConfig};
use crate::objective::freeze::{lora_only, set_trainable};
use crate::objective::lvr::lvr_lora_only;
use crate::objective::{
    Batch, DynamicsHead, LossValues, Method, MethodKind, PearlModel, method_losses,
    prepare_tokenizer,
};
use crate::processor::Processor;
use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where to resume from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The newest step checkpoint of the run directory.
    Latest,
    Dir(PathBuf),
}

/// Knobs for tests and tools, not for run files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub resume: Option<Resume>,
    /// Return after this many steps of this invocation, without the end-of-run validation,
    /// checkpoint or plot: what a kill at that moment leaves behind.
    pub stop_after: Option<usize>,
    /// Show the progress bar (on a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct Summary {
    /// Steps done (all invocations), and the total planned.
    pub step: usize,
    pub total_steps: usize,
    pub skipped: usize,
    /// Best validation loss and its step.
    pub best: Option<(usize, f64)>,
    /// Validation losses at the end of the run (when there is validation data).
    pub final_val: Option<LossValues>,
    pub metrics: Vec<Row>,
}

pub fn run(cfg: &RunConfig, opts: &Options) -> Result<Summary> {
    cfg.validate()?;
    let out = &cfg.output;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    checkpoint::remove_partial(out)?;
    let resume_dir = match &opts.resume {
        None => {
            if let Some(last) = checkpoint::latest(out)? {
                bail!(
                    "{} already holds checkpoints ({}): pass --resume to continue that run, or choose another output",
                    out.display(),
                    last.display()
                );
            }
            None
        }
        Some(Resume::Dir(d)) => Some(d.clone()),
        Some(Resume::Latest) => Some(checkpoint::latest(out)?.with_context(|| {
            format!("nothing to resume: {} holds no checkpoint", out.display())
        })?),
    };
    let run_toml = cfg.to_toml()?;
    let restored = match &resume_dir {
        Some(d) => {
            let r = checkpoint::read(d)
                .with_context(|| format!("cannot resume from {}", d.display()))?;
            ensure!(
                same_run(&r.run_toml, cfg),
                "the run configuration differs from the one {} was trained with ({}): resume with the same configuration",
                d.display(),
                d.join("run.toml").display()
            );
            Some(r)
        }
        None => None,
    };

    // Processor and data.
    let mut processor = Processor::from_dir(cfg.processor_dir()?)?;
    processor.set_pixel_limits(cfg.min_pixels, cfg.max_pixels)?;
    prepare_tokenizer(&mut processor.tokenizer, cfg.method());
    let train = Examples::new(
        load_items(&cfg.train, cfg.skip_invalid, "training")?,
        cfg.method,
        "training",
    )?;
    let val = if cfg.val.is_empty() {
        Examples::new(Vec::new(), cfg.method, "validation")?
    } else {
        Examples::new(
            load_items(&cfg.val, cfg.skip_invalid, "validation")?,
            cfg.method,
            "validation",
        )?
    };

    // Model and optimizer: fresh, or the checkpoint's, on the first device.
    let devices = train_devices(cfg)?;
    let device = devices[0].clone();
    let (mut base, mut config_json) = base_model(cfg, &device)?;
    // Released checkpoints have spare rows for Pearl's added tokens; a model without them grows.
    let grown = base.ensure_vocab(processor.tokenizer.vocab_size());
    if grown > 0 {
        eprintln!("note: grew the embeddings by {grown} rows for the added tokens");
        if let Some(json) = config_json.as_mut() {
            let rows = serde_json::json!(base.cfg.text.vocab_size);
            json["vocab_size"] = rows.clone();
            if let Some(text) = json.get_mut("text_config").filter(|t| t.is_object()) {
                text["vocab_size"] = rows;
            }
        }
    }
    let lora_cfg = cfg.lora.to_lora_config();
    let model = match &resume_dir {
        Some(d) => {
            let vlm = checkpoint::restore_vlm(d, base)?;
            let dynamics = checkpoint::restore_head(d, &vlm)?;
            ensure!(
                dynamics.is_some() == cfg.has_dynamics_head(),
                "{}: the checkpoint's dynamics head does not match the objective",
                d.display()
            );
            PearlModel { vlm, dynamics }
        }
        None => fresh_model(cfg, base, &lora_cfg)?,
    };
    let model = ids_from_paths(model);
    let mut model = match (cfg.full, cfg.method) {
        (true, _) => set_trainable(model, |_| true),
        (false, MethodKind::Pearl | MethodKind::ToolCall) => lora_only(model),
        // LVR's targets are the vision tower's own output: it trains with that tower frozen.
        (false, MethodKind::Lvr) => lvr_lora_only(model),
    };
    // After choosing what trains: frozen weights take the run's precision, trainable ones stay f32.
    model.vlm = model.vlm.with_precision(cfg.precision)?;
    let mut optim = AdamW::new(&cfg.optimizer);
    let mut state = TrainState {
        step: 0,
        total_steps: total_steps(cfg, train.len()),
        cursor: Cursor::default(),
        bad_in_a_row: 0,
        skipped: 0,
        best: None,
        elapsed_s: 0.0,
    };
    let mut log = MetricsLog::reset(&out.join("metrics.jsonl"), &[])?;
    if let Some(r) = restored {
        optim = optim.load_state(r.optimizer)?;
        state = r.state;
        log = MetricsLog::reset(&out.join("metrics.jsonl"), &r.metrics)?;
    }
    // Several devices: a replica on each of the others, device 0's stays `model`.
    let mut parallel = None;
    if devices.len() > 1 {
        let (p, m) = DataParallel::start(cfg, &devices, model, &optim)?;
        model = m;
        parallel = Some(p);
    }
    let schedule = Schedule::new(&cfg.optimizer, &cfg.schedule, state.total_steps);
    let mut order = DataOrder::new(train.len(), cfg.seed);
    let base_name = cfg
        .model
        .as_ref()
        .or(cfg.random_config.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let trainable = || match &config_json {
        Some(c) => Trainable::Full { config_json: c },
        None => Trainable::Lora {
            cfg: &lora_cfg,
            base_model: &base_name,
        },
    };

    let bar = progress_bar(state.total_steps, state.step, opts.progress);
    let mut final_val = None;
    let mut done_here = 0;
    // A fresh run validates before its first step: the start of the validation curve, and a
    // candidate for `best/`.
    let mut validate_now = state.step == 0;
    let mut save_now = false;
    loop {
        if validate_now && !val.is_empty() {
            let t = Instant::now();
            let v = validate(&model, &processor, &val, cfg.micro_batch, cfg.method())?;
            log.push(Row::new("val", state.step, &v, t.elapsed().as_secs_f64()))?;
            if state.step > 0 {
                bar.println(format!(
                    "step {}: validation {}",
                    state.step,
                    format_losses(&v)
                ));
            }
            if v.total.is_finite() && state.best.is_none_or(|(_, b)| v.total < b) {
                state.best = Some((state.step, v.total));
                write(
                    out,
                    BEST,
                    &model,
                    trainable(),
                    &optim,
                    &state,
                    &run_toml,
                    &log,
                )?;
            }
            final_val = Some(v);
        }
        if save_now {
            let name = checkpoint::step_name(state.step);
            write(
                out,
                &name,
                &model,
                trainable(),
                &optim,
                &state,
                &run_toml,
                &log,
            )?;
            checkpoint::prune(out, cfg.keep_last)?;
        }
        if state.step >= state.total_steps {
            break;
        }
        if opts.stop_after.is_some_and(|n| done_here >= n) {
            bar.abandon();
            return Ok(summary(&state, None, &log));
        }
        let started = Instant::now();
        let batches: Vec<Batch> = (0..cfg.grad_accum)
            .map(|_| {
                let idx = order.next_batch(&mut state.cursor, cfg.micro_batch);
                let examples: Vec<_> = idx.iter().map(|&i| train.get(i)).collect();
                Batch::build(&processor, &examples, cfg.method())
            })
            .collect::<Result<_>>()?;
        // Dropout draws from the device RNG: seed it from the step so a resume draws the same.
        // That RNG is process-wide: two runs in one process (threads) would disturb each other.
        let seed = step_seed(cfg.seed, state.step);
        let lr = schedule.lr_at(state.step);
        let report: StepReport;
        (model, optim, report) = match parallel.as_mut() {
            Some(p) => p.step(model, optim, batches, lr, seed),
            None => {
                device.seed(seed);
                train_step(
                    model,
                    &mut optim,
                    &batches,
                    cfg.method(),
                    lr,
                    cfg.max_grad_norm,
                )
                .map(|(m, r)| (m, optim, r))
            }
        }
        .with_context(|| format!("step {}", state.step + 1))?;
        state.step += 1;
        done_here += 1;
        let seconds = started.elapsed().as_secs_f64();
        state.elapsed_s += seconds;

        let mut row = Row::new("train", state.step, &report.losses, seconds);
        row.lr = Some(lr);
        row.grad_norm = report.grad_norm.is_finite().then_some(report.grad_norm);
        row.tokens_per_s = Some(report.tokens as f64 / seconds.max(1e-9));
        row.skipped = !report.applied;
        log.push(row)?;
        bar.set_position(state.step as u64);
        bar.set_message(live_losses(&report, lr));

        if report.applied {
            state.bad_in_a_row = 0;
        } else {
            state.skipped += 1;
            state.bad_in_a_row += 1;
            bar.println(format!(
                "step {}: non-finite loss or gradient (loss {}, grad norm {}), update skipped ({} in a row)",
                state.step, report.losses.total, report.grad_norm, state.bad_in_a_row
            ));
            if state.bad_in_a_row >= cfg.max_bad_steps {
                bar.abandon();
                let last = checkpoint::latest(out)?
                    .map(|p| format!("the last checkpoint, {}, is intact", p.display()))
                    .unwrap_or_else(|| "no checkpoint was written".into());
                bail!(
                    "stopping at step {}: {} consecutive steps had a non-finite loss or gradient (max_bad_steps = {}); {last}. Lower the learning rate or check the data.",
                    state.step,
                    state.bad_in_a_row,
                    cfg.max_bad_steps
                );
            }
        }

        let last = state.step == state.total_steps;
        validate_now = last || every(cfg.eval_every, state.step);
        save_now = last || every(cfg.save_every, state.step);
    }
    bar.finish();
    if let Err(e) = plot_loss_curve(&log.rows, &out.join("loss.png")) {
        eprintln!("warning: no loss curve: {e:#}");
    }
    Ok(summary(&state, final_val, &log))
}

/// The run's devices, with autodiff (and gradient checkpointing if asked): the run file's
/// `devices`, or burn's default device.
fn train_devices(cfg: &RunConfig) -> Result<Vec<Device>> {
    let autodiff = |d| crate::model::device::training_device(d, cfg.gradient_checkpointing);
    match cfg.device_specs()? {
        None => Ok(vec![autodiff(Device::default())]),
        Some(specs) => specs
            .into_iter()
            .map(|s| Ok(autodiff(s.device()?)))
            .collect(),
    }
}

/// Whether a checkpoint's run file describes this run. The devices and gradient checkpointing
/// may differ: they change where and how the steps run, not what they compute.
fn same_run(saved_toml: &str, cfg: &RunConfig) -> bool {
    RunConfig::from_toml_str(saved_toml).is_ok_and(|mut saved| {
        saved.devices = cfg.devices.clone();
        saved.gradient_checkpointing = cfg.gradient_checkpointing;
        saved == *cfg
    })
}

/// The VLM before adapters, and for full fine-tuning the `config.json` its checkpoints carry.
fn base_model(cfg: &RunConfig, device: &Device) -> Result<(Qwen2_5Vl, Option<serde_json::Value>)> {
    let config_path = match (&cfg.model, &cfg.random_config) {
        (Some(dir), _) => dir.join("config.json"),
        (None, Some(file)) => file.clone(),
        (None, None) => bail!("set `model` or `random_config`"),
    };
    // The frozen base of a LoRA run is stored in the run's precision as it is read; full
    // fine-tuning trains every weight, so it reads f32 master copies.
    let precision = if cfg.full {
        Precision::F32
    } else {
        cfg.precision
    };
    let vlm = match &cfg.model {
        Some(dir) => Qwen2_5Vl::from_dir_in(dir, device, precision)?,
        None => Qwen2_5Vl::random(&Qwen2_5VlConfig::from_file(&config_path)?, cfg.seed, device)?,
    };
    let config_json = if cfg.full {
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", config_path.display()))?,
        )
    } else {
        None
    };
    Ok((vlm, config_json))
}

/// A new run's model: fresh LoRA adapters (unless full fine-tuning) and dynamics head (NextLat).
fn fresh_model(cfg: &RunConfig, base: Qwen2_5Vl, lora: &LoraConfig) -> Result<PearlModel> {
    let vlm = if cfg.full {
        base
    } else {
        init_lora(base, lora, cfg.seed.wrapping_add(1))?
    };
    let d = vlm.cfg.text.hidden_size;
    let dynamics = match (&cfg.dynamics_head, cfg.has_dynamics_head()) {
        (_, false) => None,
        (Some(p), true) => Some(DynamicsHead::load(p, d, &vlm.device())?),
        (None, true) => Some(DynamicsHead::init(
            d,
            cfg.seed.wrapping_add(2),
            &vlm.device(),
        )),
    };
    Ok(PearlModel { vlm, dynamics })
}

/// Optimizer steps of the run: `steps`, or enough for `epochs` (one by default).
pub fn total_steps(cfg: &RunConfig, n_train: usize) -> usize {
    cfg.steps.unwrap_or_else(|| {
        let micro = batches_per_epoch(n_train, cfg.micro_batch) * cfg.epochs.unwrap_or(1);
        micro.div_ceil(cfg.grad_accum).max(1)
    })
}

fn every(n: usize, step: usize) -> bool {
    n > 0 && step.is_multiple_of(n)
}

/// The device RNG seed of a step (SplitMix64 of seed and step: nearby steps get unrelated seeds).
pub(super) fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Validation losses over `items` (each term averaged over examples), without autodiff.
pub fn validate(
    model: &PearlModel,
    processor: &Processor,
    items: &Examples,
    micro_batch: usize,
    method: Method,
) -> Result<LossValues> {
    let plain = model.valid();
    let mut parts = Vec::new();
    let idx: Vec<usize> = (0..items.len()).collect();
    for chunk in idx.chunks(micro_batch.max(1)) {
        let examples: Vec<_> = chunk.iter().map(|&i| items.get(i)).collect();
        let batch = Batch::build(processor, &examples, method)?;
        let v = method_losses(&plain, &batch, method)?.values;
        // Weight by examples: repeat the chunk's values once per example.
        parts.extend(std::iter::repeat_n(v, chunk.len()));
    }
    Ok(mean_values(&parts))
}

#[allow(clippy::too_many_arguments)]
fn write(
    out: &Path,
    name: &str,
    model: &PearlModel,
    trainable: Trainable,
    optim: &AdamW,
    state: &TrainState,
    run_toml: &str,
    log: &MetricsLog,
) -> Result<()> {
    let metrics = log.bytes()?;
    checkpoint::write(
        out,
        name,
        &Contents {
            model,
            trainable,
            optimizer: optim,
            state,
            run_toml,
            metrics: &metrics,
        },
    )
    .with_context(|| format!("at step {}", state.step))?;
    Ok(())
}

fn summary(state: &TrainState, final_val: Option<LossValues>, log: &MetricsLog) -> Summary {
    Summary {
        step: state.step,
        total_steps: state.total_steps,
        skipped: state.skipped,
        best: state.best,
        final_val,
        metrics: log.rows.clone(),
    }
}

fn progress_bar(total: usize, at: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps [{elapsed_precise}, ETA {eta_precise}] {msg}",
    )
    .expect("static progress template");
    bar.set_style(style);
    bar.set_position(at as u64);
    bar.reset_eta();
    bar
}

fn format_losses(v: &LossValues) -> String {
    let mut s = format!("total {:.4} vlm {:.4}", v.total, v.vlm);
    for (k, x) in [
        ("jepa", v.jepa),
        ("nl_state", v.nextlat_state),
        ("nl_token", v.nextlat_token),
        ("latent", v.latent),
    ] {
        if let Some(x) = x {
            s.push_str(&format!(" {k} {x:.4}"));
        }
    }
    s
}

fn live_losses(r: &StepReport, lr: f64) -> String {
    format!("{} lr {lr:.2e}", format_losses(&r.losses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_may_change_the_devices_but_nothing_else() {
        let cfg = RunConfig::from_toml_str("model = \"m\"\ntrain = [\"t.jsonl\"]\n").unwrap();
        let saved = cfg.to_toml().unwrap();
        let on_gpus = RunConfig {
            devices: Some(vec!["cuda:0".into(), "cuda:1".into()]),
            ..cfg.clone()
        };
        assert!(same_run(&saved, &cfg));
        assert!(same_run(&saved, &on_gpus));
        assert!(same_run(&on_gpus.to_toml().unwrap(), &cfg));
        let other = RunConfig {
            grad_accum: 2,
            ..on_gpus
        };
        assert!(!same_run(&saved, &other));
        assert!(!same_run("not toml [", &cfg));
    }
}
