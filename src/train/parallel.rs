//! Data-parallel training over several GPUs of one machine, on burn's collective engine.
//!
//! One model replica per device, all copies of the same weights. Each optimizer step's
//! `grad_accum` micro-batches are dealt out in equal contiguous shards, and one worker thread per
//! device runs forward and backward over its shard. The trainable parameters are marked
//! distributed (`Tensor::set_distributed`), so during every `backward()` burn-autodiff hands each
//! finished gradient to burn's sync server, which all-reduces it across the devices (NCCL, mean)
//! while the backward pass goes on; `backward()` returns once every gradient is reduced. All
//! replicas then hold the same gradient, measure the same norm and apply the same AdamW update,
//! so they never drift apart: device 0's replica is the model, and the loop validates and
//! checkpoints it alone.
//!
//! Loss normalisation: on one device a step's loss is the mean of its micro-batches' losses (see
//! `step_gradients`). A device here sums the gradients of its `k = M / D` micro-batches and the
//! mean all-reduce divides by `D`, so each micro-batch's loss is multiplied by
//! [`loss_scale`]`(D, M) = D / M` to give exactly the one-device gradient. A run file therefore means
//! the same optimisation on any number of devices (global batch `micro_batch x grad_accum`).
//!
//! Every backward pass is a collective that all devices must join, which shapes the rest:
//! - every device runs the same number of backward passes (`grad_accum` is a multiple of the
//!   number of devices, checked with the run file), even through a non-finite loss, and whether
//!   the step applies is decided afterwards, here, from all devices' losses and norms;
//! - every trainable parameter takes part in every backward pass (a zero-valued term ties in the
//!   ones a shard's batch does not use, such as the vision adapters on a batch without images):
//!   burn's sync server waits for one gradient per device for each parameter it sees;
//! - the workers are long-lived threads that report to this coordinator rather than the other
//!   way round: when one of them fails, the others may be blocked in a collective, and the error
//!   still reaches the caller (the run then ends with it).

use super::config::RunConfig;
use super::optim::{AdamW, clip_global_norm};
use super::step::{StepReport, mean_values, step_seed};
use crate::objective::{Batch, LossValues, Method, PearlModel, method_losses};
use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use burn::tensor::{Device, Tensor};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// The factor on each micro-batch's loss when `micro_batches` micro-batches of a step are spread
/// over `devices` devices whose summed gradients are then averaged (mean all-reduce): the result
/// is the gradient of the mean of all micro-batch losses, what one device computes.
pub fn loss_scale(devices: usize, micro_batches: usize) -> f64 {
    devices as f64 / micro_batches as f64
}

/// Deals a step's micro-batches to `devices` devices in equal contiguous shards (device `d` gets
/// micro-batches `d * k .. (d + 1) * k`).
pub fn deal<T>(micro_batches: Vec<T>, devices: usize) -> Result<Vec<Vec<T>>> {
    let m = micro_batches.len();
    ensure!(
        devices >= 1 && m >= devices && m.is_multiple_of(devices),
        "{m} micro-batches cannot be split evenly over {devices} devices"
    );
    let k = m / devices;
    let mut rest = micro_batches.into_iter();
    Ok((0..devices)
        .map(|_| rest.by_ref().take(k).collect())
        .collect())
}

/// One device's share of a step: each micro-batch's loss times `scale`, plus a zero that ties in
/// every trainable parameter, then backward (where burn all-reduces the marked gradients), the
/// gradients summed. Every backward pass runs, even on a non-finite loss: the other devices are
/// waiting for it.
pub fn shard_gradients(
    model: &PearlModel,
    shard: &[Batch],
    method: Method,
    scale: f64,
) -> Result<(GradientsParams, Vec<LossValues>)> {
    let mut acc = GradientsAccumulator::<PearlModel>::new();
    let mut values = Vec::with_capacity(shard.len());
    for batch in shard {
        let losses = method_losses(model, batch, method)?;
        values.push(losses.values);
        let mut loss = losses.total.mul_scalar(scale);
        if let Some(zero) = zero_over_trainable(model) {
            loss = loss + zero;
        }
        acc.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    Ok((acc.grads(), values))
}

/// `0 * sum(p)` summed over the trainable parameters: adds nothing to the loss or to any
/// gradient, but puts every trainable parameter in the graph.
fn zero_over_trainable(model: &PearlModel) -> Option<Tensor<1>> {
    struct Zeros(Vec<Tensor<1>>);
    impl ModuleVisitor for Zeros {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0.push(param.val().sum().mul_scalar(0.0));
            }
        }
    }
    let mut z = Zeros(Vec::new());
    model.visit(&mut z);
    (!z.0.is_empty()).then(|| Tensor::cat(z.0, 0).sum())
}

/// Marks the trainable parameters distributed, under their own ids (the same on every replica,
/// as they derive from module paths), so that backward all-reduces their gradients.
fn mark_distributed(model: PearlModel) -> PearlModel {
    struct Mark;
    impl ModuleMapper for Mark {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !param.is_require_grad() {
                return param;
            }
            let (id, value, mapper) = param.consume();
            Param::from_mapped_value(id, value.set_distributed(id), mapper)
        }
    }
    model.map(&mut Mark)
}

/// A model replica with its optimizer.
struct Replica {
    model: PearlModel,
    optim: AdamW,
}

enum Job {
    /// Forward, backward and clipping over a shard; device 0 receives its replica with it.
    Backward {
        shard: Vec<Batch>,
        scale: f64,
        seed: u64,
        replica: Option<Box<Replica>>,
    },
    /// Apply the pending gradients (or drop them); device 0 hands its replica back.
    Update { apply: bool, lr: f64 },
}

enum Reply {
    Backward {
        values: Vec<LossValues>,
        grad_norm: f64,
    },
    Updated(Option<Box<Replica>>),
}

type Replies = Sender<(usize, Result<Reply>)>;

/// The worker threads, one per device, and the collective server they use.
pub struct DataParallel {
    devices: Vec<Device>,
    jobs: Vec<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    replies: Receiver<(usize, Result<Reply>)>,
    /// A worker may be left blocked in a collective after a failure: then it is not joined.
    failed: bool,
    /// Dropped after the workers have stopped (fields drop after `Drop::drop`).
    _collectives: Option<DistributedContext>,
}

impl DataParallel {
    /// Starts the collective server for `devices` (autodiff devices; `model` lives on the first)
    /// and one worker per device, each with a replica of `model` and a copy of `optim`'s state.
    /// Returns the coordinator and device 0's replica, marked distributed.
    pub fn start(
        cfg: &RunConfig,
        devices: &[Device],
        model: PearlModel,
        optim: &AdamW,
    ) -> Result<(Self, PearlModel)> {
        // burn's CPU backend would panic at the first collective; say why instead.
        ensure!(
            cfg!(feature = "cuda"),
            "data-parallel training needs CUDA devices (a build with `--features cuda`)"
        );
        Self::start_with(cfg, devices, model, optim, true)
    }

    /// `collectives = false` runs the same machinery with independent replicas (no gradient
    /// exchange): what a CPU test can exercise, since burn's CPU backend has no collectives.
    fn start_with(
        cfg: &RunConfig,
        devices: &[Device],
        model: PearlModel,
        optim: &AdamW,
        collectives: bool,
    ) -> Result<(Self, PearlModel)> {
        ensure!(devices.len() >= 2, "data parallelism needs several devices");
        let context = collectives.then(|| {
            DistributedContext::init(
                devices.to_vec(),
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Mean,
                },
            )
        });
        let mark = |m: PearlModel| if collectives { mark_distributed(m) } else { m };
        let state = optim.state_bytes()?;
        let cfg = Arc::new(cfg.clone());
        let (reply_tx, replies) = channel();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for (rank, device) in devices.iter().enumerate() {
            // Device 0's replica travels with each step (the loop validates and saves it).
            let replica = match rank {
                0 => None,
                _ => Some(Replica {
                    model: mark(model.clone().fork(device)),
                    optim: AdamW::new(&cfg.optimizer, &model).load_state(state.clone())?,
                }),
            };
            let (tx, rx) = channel();
            let worker = Worker {
                rank,
                device: device.clone(),
                cfg: cfg.clone(),
                replica,
                pending: None,
            };
            let replies = reply_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pearl-device-{rank}"))
                .spawn(move || worker.serve(rx, replies))
                .context("cannot start a worker thread")?;
            jobs.push(tx);
            threads.push(thread);
        }
        let parallel = Self {
            devices: devices.to_vec(),
            jobs,
            threads,
            replies,
            failed: false,
            _collectives: context,
        };
        Ok((parallel, mark(model)))
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// One optimizer step over `micro_batches` (all of the step's; dealt out here) with device
    /// 0's replica `model` and `optim`. Returns them updated, with the report of the whole step:
    /// losses averaged over all micro-batches, tokens summed over them.
    pub fn step(
        &mut self,
        model: PearlModel,
        optim: AdamW,
        micro_batches: Vec<Batch>,
        lr: f64,
        seed: u64,
    ) -> Result<(PearlModel, AdamW, StepReport)> {
        // A batch that would fail on one device would leave the others waiting in a collective:
        // refuse the step before any device starts.
        for (i, b) in micro_batches.iter().enumerate() {
            ensure!(
                b.supervised_tokens() > 0,
                "micro-batch {} of the step has no supervised tokens",
                i + 1
            );
        }
        let tokens = micro_batches.iter().map(Batch::tokens).sum();
        let supervised_tokens = micro_batches.iter().map(Batch::supervised_tokens).sum();
        let scale = loss_scale(self.devices(), micro_batches.len());
        let shards = deal(micro_batches, self.devices())?;
        let mut replica = Some(Box::new(Replica { model, optim }));
        for (rank, shard) in shards.into_iter().enumerate() {
            let job = Job::Backward {
                shard,
                scale,
                // Each device draws its own dropout masks, reproducibly from the step.
                seed: if rank == 0 {
                    seed
                } else {
                    step_seed(seed, rank)
                },
                replica: if rank == 0 { replica.take() } else { None },
            };
            self.send(rank, job)?;
        }
        let mut values = vec![Vec::new(); self.devices()];
        let mut norms = vec![f64::NAN; self.devices()];
        for (rank, reply) in self.collect()? {
            let Reply::Backward {
                values: v,
                grad_norm,
            } = reply
            else {
                bail!("device {rank} answered out of turn");
            };
            values[rank] = v;
            norms[rank] = grad_norm;
        }
        let values: Vec<LossValues> = values.concat();
        let finite = values.iter().all(|v| v.total.is_finite());
        let apply = finite && norms.iter().all(|n| n.is_finite());
        if apply {
            self.check_same_gradients(&norms)?;
        }
        for rank in 0..self.devices() {
            self.send(rank, Job::Update { apply, lr })?;
        }
        for (rank, reply) in self.collect()? {
            match reply {
                Reply::Updated(Some(r)) if rank == 0 => replica = Some(r),
                Reply::Updated(_) => {}
                Reply::Backward { .. } => bail!("device {rank} answered out of turn"),
            }
        }
        let Replica { model, optim } = *replica.context("device 0 did not return its model")?;
        let report = StepReport {
            losses: mean_values(&values),
            grad_norm: if finite { norms[0] } else { f64::NAN },
            applied: apply,
            tokens,
            supervised_tokens,
        };
        Ok((model, optim, report))
    }

    /// After the all-reduce every replica holds the same gradient, hence the same norm. Norms
    /// that differ mean the replicas would take different updates and drift apart.
    fn check_same_gradients(&mut self, norms: &[f64]) -> Result<()> {
        let n0 = norms[0];
        for (rank, n) in norms.iter().enumerate().skip(1) {
            if (n - n0).abs() > 1e-5 * n0.abs().max(1e-12) {
                self.failed = true;
                bail!(
                    "the devices' gradients differ after the all-reduce (norm {n0} on {:?}, {n} on {:?}): the replicas would drift apart",
                    self.devices[0],
                    self.devices[rank]
                );
            }
        }
        Ok(())
    }

    fn send(&mut self, rank: usize, job: Job) -> Result<()> {
        if self.jobs[rank].send(job).is_err() {
            self.failed = true;
            bail!("the worker of {:?} has stopped", self.devices[rank]);
        }
        Ok(())
    }

    /// One reply from every device; the first error ends the step (the other workers may be
    /// blocked in a collective that will not complete).
    fn collect(&mut self) -> Result<Vec<(usize, Reply)>> {
        let mut out = Vec::with_capacity(self.devices());
        while out.len() < self.devices() {
            let (rank, reply) = match self.replies.recv() {
                Ok(r) => r,
                Err(_) => {
                    self.failed = true;
                    bail!("the data-parallel workers have stopped");
                }
            };
            match reply {
                Ok(r) => out.push((rank, r)),
                Err(e) => {
                    self.failed = true;
                    return Err(e.context(format!("on {:?}", self.devices[rank])));
                }
            }
        }
        Ok(out)
    }
}

impl Drop for DataParallel {
    fn drop(&mut self) {
        // Closing the job channels ends the workers' loops.
        self.jobs.clear();
        if !self.failed {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// A device's thread: its replica (device 0's only during a step) and the gradients between the
/// two phases of a step.
struct Worker {
    rank: usize,
    device: Device,
    cfg: Arc<RunConfig>,
    replica: Option<Replica>,
    pending: Option<GradientsParams>,
}

impl Worker {
    fn serve(mut self, jobs: Receiver<Job>, replies: Replies) {
        while let Ok(job) = jobs.recv() {
            let reply = catch_unwind(AssertUnwindSafe(|| self.handle(job)))
                .unwrap_or_else(|panic| Err(anyhow!("worker panicked: {}", panic_text(&*panic))));
            if replies.send((self.rank, reply)).is_err() {
                break;
            }
        }
    }

    fn handle(&mut self, job: Job) -> Result<Reply> {
        match job {
            Job::Backward {
                shard,
                scale,
                seed,
                replica,
            } => {
                if let Some(r) = replica {
                    self.replica = Some(*r);
                }
                let r = self.replica.as_ref().context("no model replica")?;
                self.device.seed(seed);
                let (mut grads, values) =
                    shard_gradients(&r.model, &shard, self.cfg.method(), scale)?;
                let grad_norm = clip_global_norm(&r.model, &mut grads, self.cfg.max_grad_norm);
                self.pending = Some(grads);
                Ok(Reply::Backward { values, grad_norm })
            }
            Job::Update { apply, lr } => {
                let grads = self.pending.take().context("no gradients to apply")?;
                let Replica {
                    mut model,
                    mut optim,
                } = self.replica.take().context("no model replica")?;
                if apply {
                    model = optim.step(lr, model, grads);
                }
                let r = Replica { model, optim };
                if self.rank == 0 {
                    return Ok(Reply::Updated(Some(Box::new(r))));
                }
                self.replica = Some(r);
                Ok(Reply::Updated(None))
            }
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{SynthConfig, Task, generate};
    use crate::model::Vlm;
    use crate::objective::freeze::lora_only;
    use crate::objective::{ObjectiveConfig, prepare_tokenizer};
    use crate::peft::lora::init_lora;
    use crate::processor::Processor;
    use crate::train::config::LoraSection;
    use crate::train::data::{Examples, load_items};
    use crate::train::param_ids::ids_from_paths;
    use crate::train::step::train_step;
    use std::path::{Path, PathBuf};

    #[test]
    fn scale_times_devices_over_micro_batches_is_one() {
        // D devices each sum k = M / D scaled micro-batch gradients; the mean all-reduce divides
        // by D: each micro-batch must end up weighted 1 / M.
        for (d, m) in [(2, 2), (2, 8), (4, 4), (8, 16), (3, 9)] {
            let per_micro_batch = loss_scale(d, m) / d as f64;
            assert!((per_micro_batch - 1.0 / m as f64).abs() < 1e-15, "{d} {m}");
        }
        assert_eq!(loss_scale(1, 4), 0.25, "one device: the plain mean");
    }

    #[test]
    fn micro_batches_are_dealt_in_equal_contiguous_shards() {
        let shards = deal((0..6).collect(), 3).unwrap();
        assert_eq!(shards, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        assert!(deal((0..5).collect::<Vec<i32>>(), 2).is_err());
        assert!(deal((0..1).collect::<Vec<i32>>(), 2).is_err());
    }

    fn fixture_model() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny/model")
    }

    /// A LoRA SFT run on the tiny model (no dropout: replicas must draw the same), its model and
    /// one micro-batch of synthetic data.
    fn setup(dir: &Path) -> (RunConfig, PearlModel, Batch) {
        let mut synth = SynthConfig::new(Task::Chain, 3, 4);
        (synth.train, synth.val, synth.test) = (2, 1, 1);
        (synth.scene.width, synth.scene.height) = (112, 112);
        synth.scene.object_size = 8.0;
        synth.scene.clutter = 2;
        synth.threads = 1;
        generate(&synth, &dir.join("data")).unwrap();
        let cfg = RunConfig {
            model: Some(fixture_model()),
            train: vec![dir.join("data/train.jsonl")],
            objective: ObjectiveConfig::sft(),
            max_pixels: Some(112 * 112),
            grad_accum: 2,
            max_grad_norm: 0.0,
            lora: LoraSection {
                r: 4,
                alpha: 8.0,
                dropout: 0.0,
                target_regex: None,
            },
            ..RunConfig::default()
        };
        let mut processor = Processor::from_dir(&fixture_model()).unwrap();
        processor.set_pixel_limits(None, cfg.max_pixels).unwrap();
        prepare_tokenizer(&mut processor.tokenizer, cfg.method());
        let items = load_items(&cfg.train, false, "training").unwrap();
        let examples = Examples::new(items, cfg.method, "training").unwrap();
        let batch = Batch::build(&processor, &[examples.get(0)], cfg.method()).unwrap();
        let device = Device::default().autodiff();
        let vlm = Vlm::from_dir(&fixture_model(), &device).unwrap();
        let vlm = init_lora(vlm, &cfg.lora.to_lora_config(), 1).unwrap();
        let model = lora_only(ids_from_paths(PearlModel {
            vlm,
            dynamics: None,
        }));
        (cfg, model, batch)
    }

    fn trainable_values(model: &PearlModel) -> Vec<f32> {
        struct Values(Vec<f32>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if param.is_require_grad() {
                    self.0.extend(param.val().try_into_vec_as::<f32>().unwrap());
                }
            }
        }
        let mut v = Values(Vec::new());
        model.visit(&mut v);
        v.0
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        assert!(
            diff.sqrt() <= 1e-5 * norm.sqrt(),
            "{what}: relative L2 {}",
            (diff / norm).sqrt()
        );
    }

    /// The worker machinery (threads, the two-phase step, device 0's replica travelling, the
    /// report), without the collectives a CPU lacks: with the same micro-batch on both "devices"
    /// the replicas' gradients agree without an all-reduce, so two data-parallel steps must give
    /// the weights and reports of two one-device steps on the same micro-batches.
    #[test]
    fn two_workers_reproduce_one_device_steps_on_identical_shards() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, model, batch) = setup(dir.path());
        let start = trainable_values(&model);
        let micro_batches = vec![batch.clone(), batch];

        let mut optim = AdamW::new(&cfg.optimizer, &model);
        let mut single = model.clone();
        let mut single_reports = Vec::new();
        for _ in 0..2 {
            let r;
            (single, r) = train_step(
                single,
                &mut optim,
                &micro_batches,
                cfg.method(),
                1e-2,
                cfg.max_grad_norm,
            )
            .unwrap();
            single_reports.push(r);
        }

        let device = Device::default().autodiff();
        let optim = AdamW::new(&cfg.optimizer, &model);
        let (mut parallel, mut model) =
            DataParallel::start_with(&cfg, &[device.clone(), device], model, &optim, false)
                .unwrap();
        let mut optim = optim;
        for (step, want) in single_reports.iter().enumerate() {
            let r;
            (model, optim, r) = parallel
                .step(model, optim, micro_batches.clone(), 1e-2, step as u64)
                .unwrap();
            assert!(r.applied);
            assert_eq!(r.tokens, want.tokens);
            assert_eq!(r.supervised_tokens, want.supervised_tokens);
            assert!((r.losses.total - want.losses.total).abs() < 1e-5 * want.losses.total);
            assert!((r.grad_norm - want.grad_norm).abs() < 1e-4 * want.grad_norm);
        }
        let (a, b) = (trainable_values(&model), trainable_values(&single));
        assert_ne!(a, start, "the steps changed the weights");
        assert_close(&a, &b, "device 0 after two steps");
    }

    /// A worker's error ends the step with that error, naming the device, instead of hanging.
    #[test]
    fn a_failing_worker_fails_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cfg, model, batch) = setup(dir.path());
        // The workers compute LVR losses, the batches are Pearl's: every forward pass fails.
        cfg.method = crate::objective::MethodKind::Lvr;
        let device = Device::default().autodiff();
        let optim = AdamW::new(&cfg.optimizer, &model);
        let (mut parallel, model) =
            DataParallel::start_with(&cfg, &[device.clone(), device], model, &optim, false)
                .unwrap();
        let e = parallel
            .step(model, optim, vec![batch.clone(), batch], 1e-2, 0)
            .err()
            .expect("the step must fail");
        let text = format!("{e:#}");
        assert!(text.contains("another method"), "{text}");
        assert!(text.contains("on "), "{text}");
    }
}
