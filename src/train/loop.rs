//! The training loop, read top to bottom like nanoGPT's: [`Trainer::new`] assembles the run
//! (from `setup`: resume point, data, devices, model with its vocabulary grown, what trains and
//! in which precision, optimizer, counters, or all of it restored from a checkpoint);
//! [`Trainer::step`] takes `grad_accum` micro-batches in the seeded data order, runs one
//! optimizer step on the run's devices and logs it; [`Trainer::run`] alternates steps with
//! validation and checkpoints until the last step.
//!
//! Crash safety comes from the checkpoints (written atomically, see `checkpoint`): a run killed
//! at any moment resumes from its last complete checkpoint, and continues bit for bit because
//! every source of variation is a function of the seed and the step (data order, dropout) or is
//! in the checkpoint (weights, AdamW moments, counters).

use super::checkpoint::{self, BEST, Contents, TrainState, Trainable};
use super::config::RunConfig;
use super::data::{Cursor, DataOrder, Examples, batches_per_epoch};
use super::metrics::{MetricsLog, Row, plot_loss_curve};
use super::optim::{AdamW, Schedule};
use super::parallel::DataParallel;
use super::param_ids::ids_from_paths;
use super::resume::Resume;
use super::setup;
use super::step::{StepReport, mean_values, step_seed, train_step};
use crate::objective::{Batch, LossValues, Method, MethodExample, PearlModel, method_losses};
use crate::peft::lora::LoraConfig;
use crate::processor::Processor;
use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

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
    /// Training examples skipped for exceeding `max_tokens` (each time one was drawn).
    pub too_long: usize,
    /// Best validation loss and its step.
    pub best: Option<(usize, f64)>,
    /// Validation losses at the end of the run (when there is validation data).
    pub final_val: Option<LossValues>,
    pub metrics: Vec<Row>,
}

/// Trains as `cfg` says: [`Trainer::new`] then [`Trainer::run`].
pub fn run(cfg: &RunConfig, opts: &Options) -> Result<Summary> {
    Trainer::new(cfg, opts)?.run(opts.stop_after)
}

/// Where the steps run: one device, or a replica on each of several GPUs (data parallelism;
/// device 0's replica is the trainer's `model`).
enum Devices {
    One(Device),
    Parallel(DataParallel),
}

/// How the checkpoints store the trainable weights: the `config.json` of a full fine-tune, or
/// the LoRA settings and base model an adapter names.
struct SavedAs {
    config_json: Option<serde_json::Value>,
    lora: LoraConfig,
    base_model: String,
}

impl SavedAs {
    fn trainable(&self) -> Trainable<'_> {
        match &self.config_json {
            Some(c) => Trainable::Full { config_json: c },
            None => Trainable::Lora {
                cfg: &self.lora,
                base_model: &self.base_model,
            },
        }
    }
}

/// A run in progress: the model and optimizer, the data, where the run stands, its log.
pub struct Trainer<'a> {
    cfg: &'a RunConfig,
    processor: Processor,
    train: Examples,
    val: Examples,
    order: DataOrder,
    schedule: Schedule,
    model: PearlModel,
    optim: AdamW,
    devices: Devices,
    state: TrainState,
    log: MetricsLog,
    run_toml: String,
    saved_as: SavedAs,
    bar: ProgressBar,
}

impl<'a> Trainer<'a> {
    /// Sets up a run: fresh, or the checkpoint's when `opts.resume` says so.
    pub fn new(cfg: &'a RunConfig, opts: &Options) -> Result<Self> {
        cfg.validate()?;
        let out = &cfg.output;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        checkpoint::remove_partial(out)?;
        let resume_dir = setup::resume_point(cfg, opts.resume.as_ref())?;
        let run_toml = cfg.to_toml()?;
        let restored = match &resume_dir {
            Some(d) => Some(setup::read_checkpoint(d, cfg)?),
            None => None,
        };
        let (processor, train, val) = setup::load_data(cfg)?;

        // The model, fresh or the checkpoint's, on the first device; then what trains.
        let devices = setup::train_devices(cfg)?;
        let (mut base, mut config_json) = setup::base_model(cfg, &devices[0])?;
        setup::grow_vocab(
            &mut base,
            config_json.as_mut(),
            processor.tokenizer.vocab_size(),
        );
        let lora = cfg.lora.to_lora_config();
        let model = match &resume_dir {
            Some(d) => setup::restored_model(cfg, d, base)?,
            None => setup::fresh_model(cfg, base, &lora)?,
        };
        let model = setup::trainable_in_precision(cfg, ids_from_paths(model))?;

        // Optimizer, counters and log: fresh, or the checkpoint's.
        let mut optim = AdamW::new(&cfg.optimizer, &model);
        let (state, metrics) = match restored {
            Some(r) => {
                optim = optim.load_state(r.optimizer)?;
                (r.state, r.metrics)
            }
            None => (fresh_state(cfg, train.len()), Vec::new()),
        };
        let log = MetricsLog::reset(&out.join("metrics.jsonl"), &metrics)?;

        let (model, devices) = match devices.as_slice() {
            [one] => (model, Devices::One(one.clone())),
            _ => {
                let (p, m) = DataParallel::start(cfg, &devices, model, &optim)?;
                (m, Devices::Parallel(p))
            }
        };
        let base_model = cfg
            .model
            .as_ref()
            .or(cfg.random_config.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(Self {
            cfg,
            order: DataOrder::new(train.len(), cfg.seed),
            schedule: Schedule::new(&cfg.optimizer, &cfg.schedule, state.total_steps),
            bar: progress_bar(state.total_steps, state.step, opts.progress),
            processor,
            train,
            val,
            model,
            optim,
            devices,
            state,
            log,
            run_toml,
            saved_as: SavedAs {
                config_json,
                lora,
                base_model,
            },
        })
    }

    /// Steps until the last one, validating and saving on schedule (a fresh run validates
    /// before its first step: the start of the validation curve, and a candidate for `best/`).
    /// With `stop_after`, returns after that many steps as a kill would leave the run.
    pub fn run(mut self, stop_after: Option<usize>) -> Result<Summary> {
        let mut final_val = None;
        if self.state.step == 0 {
            final_val = self.validate()?;
        }
        let mut done_here = 0;
        while self.state.step < self.state.total_steps {
            if stop_after.is_some_and(|n| done_here >= n) {
                self.bar.abandon();
                return Ok(self.summary(None));
            }
            self = self.step()?;
            done_here += 1;
            let (step, last) = (self.state.step, self.state.step == self.state.total_steps);
            if last || every(self.cfg.eval_every, step) {
                final_val = self.validate()?;
            }
            if last || every(self.cfg.save_every, step) {
                self.save(&checkpoint::step_name(step))?;
                checkpoint::prune(&self.cfg.output, self.cfg.keep_last)?;
            }
        }
        self.bar.finish();
        if let Some(max) = self.cfg.max_tokens.filter(|_| self.state.too_long > 0) {
            eprintln!(
                "skipped {} training example(s) longer than max_tokens = {max} (named above; `too_long` in metrics.jsonl)",
                self.state.too_long
            );
        }
        if let Err(e) = plot_loss_curve(&self.log.rows, &self.cfg.output.join("loss.png")) {
            eprintln!("warning: no loss curve: {e:#}");
        }
        Ok(self.summary(final_val))
    }

    /// The model being trained (on the first device): what the steps update, on the device and
    /// in the precision the run file chose.
    pub fn model(&self) -> &PearlModel {
        &self.model
    }

    /// One optimizer step: the next `grad_accum` micro-batches, forward and backward on the
    /// run's devices, one AdamW update (skipped and counted when the loss or gradient is not
    /// finite), one metrics row. Fails after `max_bad_steps` non-finite steps in a row.
    pub fn step(mut self) -> Result<Self> {
        let cfg = self.cfg;
        let started = Instant::now();
        let too_long_before = self.state.too_long;
        let batches: Vec<Batch> = (0..cfg.grad_accum)
            .map(|_| {
                next_micro_batch(
                    cfg,
                    &self.processor,
                    &self.train,
                    &mut self.order,
                    &mut self.state,
                    &self.bar,
                )
            })
            .collect::<Result<_>>()?;
        let ids = batches
            .iter()
            .flat_map(Batch::ids)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        // Dropout draws from the device RNG: seed it from the step so a resume draws the same.
        // That RNG is process-wide: two runs in one process (threads) would disturb each other.
        let seed = step_seed(cfg.seed, self.state.step);
        let lr = self.schedule.lr_at(self.state.step);
        let report: StepReport;
        (self.model, self.optim, report) = match &mut self.devices {
            Devices::Parallel(p) => p.step(self.model, self.optim, batches, lr, seed),
            Devices::One(device) => {
                device.seed(seed);
                let mut optim = self.optim;
                train_step(
                    self.model,
                    &mut optim,
                    &batches,
                    cfg.method(),
                    lr,
                    cfg.max_grad_norm,
                )
                .map(|(m, r)| (m, optim, r))
            }
        }
        .with_context(|| format!("step {} (examples {ids})", self.state.step + 1))?;
        let state = &mut self.state;
        state.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        state.elapsed_s += seconds;

        let mut row = Row::new("train", state.step, &report.losses, seconds);
        row.lr = Some(lr);
        row.grad_norm = report.grad_norm.is_finite().then_some(report.grad_norm);
        row.tokens_per_s = Some(report.tokens as f64 / seconds.max(1e-9));
        row.skipped = !report.applied;
        row.too_long = state.too_long - too_long_before;
        self.log.push(row)?;
        self.bar.set_position(state.step as u64);
        self.bar.set_message(live_losses(&report, lr));

        if report.applied {
            state.bad_in_a_row = 0;
            return Ok(self);
        }
        state.skipped += 1;
        state.bad_in_a_row += 1;
        self.bar.println(format!(
            "step {}: non-finite loss or gradient (loss {}, grad norm {}), update skipped ({} in a row)",
            state.step, report.losses.total, report.grad_norm, state.bad_in_a_row
        ));
        if state.bad_in_a_row >= cfg.max_bad_steps {
            self.bar.abandon();
            let last = checkpoint::latest(&cfg.output)?
                .map(|p| format!("the last checkpoint, {}, is intact", p.display()))
                .unwrap_or_else(|| "no checkpoint was written".into());
            bail!(
                "stopping at step {}: {} consecutive steps had a non-finite loss or gradient (max_bad_steps = {}); {last}. Lower the learning rate or check the data.",
                state.step,
                state.bad_in_a_row,
                cfg.max_bad_steps
            );
        }
        Ok(self)
    }

    /// Validation losses (when there is validation data), logged; a new best is saved as `best/`.
    fn validate(&mut self) -> Result<Option<LossValues>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let t = Instant::now();
        let cfg = self.cfg;
        let v = validate(
            &self.model,
            &self.processor,
            &self.val,
            cfg.micro_batch,
            cfg.method(),
        )?;
        let step = self.state.step;
        self.log
            .push(Row::new("val", step, &v, t.elapsed().as_secs_f64()))?;
        if step > 0 {
            self.bar
                .println(format!("step {step}: validation {}", format_losses(&v)));
        }
        if v.total.is_finite() && self.state.best.is_none_or(|(_, b)| v.total < b) {
            self.state.best = Some((step, v.total));
            self.save(BEST)?;
        }
        Ok(Some(v))
    }

    /// Writes checkpoint `name` (atomically, see `checkpoint`).
    fn save(&self, name: &str) -> Result<()> {
        let metrics = self.log.bytes()?;
        checkpoint::write(
            &self.cfg.output,
            name,
            &Contents {
                model: &self.model,
                trainable: self.saved_as.trainable(),
                optimizer: &self.optim,
                state: &self.state,
                run_toml: &self.run_toml,
                metrics: &metrics,
            },
        )
        .with_context(|| format!("at step {}", self.state.step))?;
        Ok(())
    }

    fn summary(&self, final_val: Option<LossValues>) -> Summary {
        let state = &self.state;
        Summary {
            step: state.step,
            total_steps: state.total_steps,
            skipped: state.skipped,
            too_long: state.too_long,
            best: state.best,
            final_val,
            metrics: self.log.rows.clone(),
        }
    }
}

/// The counters of a run that has not taken a step.
fn fresh_state(cfg: &RunConfig, n_train: usize) -> TrainState {
    TrainState {
        step: 0,
        total_steps: total_steps(cfg, n_train),
        cursor: Cursor::default(),
        bad_in_a_row: 0,
        skipped: 0,
        best: None,
        elapsed_s: 0.0,
        too_long: 0,
    }
}

/// The next micro-batch in the data order, without its examples longer than `max_tokens` (each
/// named on the console and counted in `state.too_long`); when a draw keeps none, the next
/// draw. A batch that cannot be built names its examples.
fn next_micro_batch(
    cfg: &RunConfig,
    processor: &Processor,
    train: &Examples,
    order: &mut DataOrder,
    state: &mut TrainState,
    bar: &ProgressBar,
) -> Result<Batch> {
    let build = |examples: &[MethodExample]| {
        Batch::build(processor, examples, cfg.method()).with_context(|| {
            let ids: Vec<&str> = examples.iter().map(MethodExample::id).collect();
            format!("cannot build the micro-batch of examples {ids:?}")
        })
    };
    let mut skipped_here = 0;
    loop {
        let idx = order.next_batch(&mut state.cursor, cfg.micro_batch);
        let examples: Vec<_> = idx.iter().map(|&i| train.get(i)).collect();
        let batch = build(&examples)?;
        let Some(max) = cfg.max_tokens else {
            return Ok(batch);
        };
        let lengths = batch.lengths();
        if lengths.iter().all(|&n| n <= max) {
            return Ok(batch);
        }
        let mut kept = Vec::new();
        for (ex, &n) in examples.iter().zip(&lengths) {
            if n <= max {
                kept.push(*ex);
                continue;
            }
            state.too_long += 1;
            skipped_here += 1;
            // Not `bar.println`: a hidden bar (no terminal, `--quiet`) drops those lines.
            bar.suspend(|| {
                eprintln!(
                    "skipped training example {:?}: {n} tokens, more than max_tokens = {max}",
                    ex.id()
                )
            });
        }
        if !kept.is_empty() {
            return build(&kept);
        }
        ensure!(
            skipped_here < train.len(),
            "every training example drawn is longer than max_tokens = {max}: raise it or check the data"
        );
    }
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
