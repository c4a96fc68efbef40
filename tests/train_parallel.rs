//! Data-parallel loss normalisation, checked where it can be without GPUs: shards of a step run
//! one after another on the CPU, each device's summed gradient computed by the function the
//! workers use (`shard_gradients`, with `loss_scale`), then averaged as the mean all-reduce
//! does. The result must be the one-device gradient of the whole step (`step_gradients`), for
//! SFT and Pearl, with shards whose supervised-token counts differ. Also: the run file's
//! `devices` reaches the training loop (a device the build cannot use, or an unknown spelling, is
//! refused by name before anything is written; one CPU device trains exactly as the default
//! device; a device list the CPU build cannot serve is refused before anything is written).

mod train_common;

use burn::optim::GradientsParams;
use burn::tensor::Device;
use pearl::model::Vlm;
use pearl::objective::freeze::lora_only;
use pearl::objective::grads::named_gradients;
use pearl::objective::{Batch, ObjectiveConfig, PearlModel, prepare_tokenizer};
use pearl::peft::lora::init_lora;
use pearl::processor::Processor;
use pearl::train::data::{Examples, load_items};
use pearl::train::parallel::{loss_scale, shard_gradients};
use pearl::train::param_ids::ids_from_paths;
use pearl::train::step::step_gradients;
use pearl::train::{Options, RunConfig, run};
use std::collections::BTreeMap;
use std::path::Path;
use train_common::{fixture_dir, run_config, synth_data};

/// The tiny model with LoRA (no dropout: the shards and the whole step must draw the same) and
/// one-example micro-batches, ordered from fewest to most supervised tokens.
fn setup(dir: &Path, objective: ObjectiveConfig) -> (RunConfig, PearlModel, Vec<Batch>) {
    let (train, val) = synth_data(dir, 6, 1);
    let mut cfg = run_config(dir, train, val, 1);
    cfg.objective = objective;
    cfg.lora.dropout = 0.0;
    let mut processor = Processor::from_dir(&fixture_dir().join("model")).unwrap();
    processor.set_pixel_limits(None, cfg.max_pixels).unwrap();
    prepare_tokenizer(&mut processor.tokenizer, cfg.method());
    let items = load_items(&cfg.train, false, "training").unwrap();
    let examples = Examples::new(items, cfg.method, "training").unwrap();
    let mut batches: Vec<Batch> = (0..examples.len())
        .map(|i| Batch::build(&processor, &[examples.get(i)], cfg.method()).unwrap())
        .collect();
    batches.sort_by_key(Batch::supervised_tokens);

    let device = Device::default().autodiff();
    let mut vlm = Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap();
    vlm.ensure_vocab(processor.tokenizer.vocab_size());
    let vlm = init_lora(vlm, &cfg.lora.to_lora_config(), 1).unwrap();
    let model = lora_only(ids_from_paths(PearlModel::new(vlm, &cfg.objective, 2)));
    (cfg, model, batches)
}

fn by_name(model: &PearlModel, grads: &GradientsParams) -> BTreeMap<String, Vec<f32>> {
    named_gradients(model, grads)
        .into_iter()
        .map(|(name, _, values)| (name, values))
        .collect()
}

/// What the mean all-reduce makes of the devices' gradients: their element-wise mean.
fn mean(devices: &[BTreeMap<String, Vec<f32>>]) -> BTreeMap<String, Vec<f32>> {
    let n = devices.len() as f32;
    let mut out = devices[0].clone();
    for (name, values) in out.iter_mut() {
        for (i, v) in values.iter_mut().enumerate() {
            *v = devices.iter().map(|d| d[name][i]).sum::<f32>() / n;
        }
    }
    out
}

fn relative_l2(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f64 {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same parameters receive gradients"
    );
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (name, x) in a {
        for (p, q) in x.iter().zip(&b[name]) {
            diff += f64::from(p - q).powi(2);
            norm += f64::from(*q).powi(2);
        }
    }
    assert!(norm > 0.0, "the reference gradient is zero");
    (diff / norm).sqrt()
}

/// `micro_batches` spread over `devices`: each device's shard with `shard_gradients`, averaged.
fn data_parallel(
    model: &PearlModel,
    micro_batches: &[Batch],
    devices: usize,
    cfg: &RunConfig,
    scale_of_shard: impl Fn(&[Batch]) -> f64,
) -> BTreeMap<String, Vec<f32>> {
    let k = micro_batches.len() / devices;
    let per_device: Vec<_> = micro_batches
        .chunks(k)
        .map(|shard| {
            let (grads, _) =
                shard_gradients(model, shard, cfg.method(), scale_of_shard(shard)).unwrap();
            by_name(model, &grads)
        })
        .collect();
    mean(&per_device)
}

fn check(objective: ObjectiveConfig, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, model, batches) = setup(dir.path(), objective);
    // Four micro-batches, two devices: the fewest-token pair on one, the most on the other.
    let step = [
        batches[0].clone(),
        batches[1].clone(),
        batches[batches.len() - 2].clone(),
        batches[batches.len() - 1].clone(),
    ];
    let tokens = |s: &[Batch]| s.iter().map(Batch::supervised_tokens).sum::<usize>();
    let (low, high) = (tokens(&step[..2]), tokens(&step[2..]));
    assert!(
        high > low + low / 10,
        "{what}: the shards must differ in supervised tokens ({low} vs {high})"
    );

    let one_device = step_gradients(&model, &step, cfg.method()).unwrap();
    assert!(one_device.finite);
    let want = by_name(&model, &one_device.grads);
    assert!(
        want.keys().any(|k| k.contains("lora")),
        "{what}: LoRA factors have gradients"
    );
    if cfg.objective.nextlat {
        assert!(
            want.keys().any(|k| k.starts_with("dynamics_head")),
            "{what}: the dynamics head has gradients"
        );
    }

    for devices in [2, 4] {
        let got = data_parallel(&model, &step, devices, &cfg, |_| {
            loss_scale(devices, step.len())
        });
        let err = relative_l2(&got, &want);
        assert!(
            err <= 1e-4,
            "{what}, {devices} devices: relative L2 {err:e} to the one-device gradient"
        );
    }

    // The test can tell: also weighting each shard by its share of the supervised tokens (right
    // for one big micro-batch, wrong for the mean of micro-batch means a step computes; the same
    // as `loss_scale` when the shards have equal counts) misses the one-device gradient.
    let total = tokens(&step) as f64;
    let by_tokens = data_parallel(&model, &step, 2, &cfg, |shard| {
        loss_scale(2, step.len()) * 2.0 * tokens(shard) as f64 / total
    });
    let err = relative_l2(&by_tokens, &want);
    assert!(
        err > 1e-2,
        "{what}: token-weighted shards should differ, relative L2 {err:e}"
    );
}

#[test]
fn sft_shards_average_to_the_one_device_gradient() {
    check(ObjectiveConfig::sft(), "SFT");
}

#[test]
fn pearl_shards_average_to_the_one_device_gradient() {
    check(ObjectiveConfig::pearl(), "Pearl");
}

#[test]
fn the_device_list_reaches_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut default = run_config(dir.path(), train, val, 2);
    default.objective = ObjectiveConfig::sft();
    default.output = dir.path().join("default");
    let cpu = RunConfig {
        devices: Some(vec!["cpu".into()]),
        output: dir.path().join("cpu"),
        ..default.clone()
    };
    let losses = |cfg: &RunConfig| -> Vec<(String, Option<f64>, Option<f64>)> {
        run(cfg, &Options::default())
            .unwrap()
            .metrics
            .into_iter()
            .map(|r| (r.split, r.total, r.grad_norm))
            .collect()
    };
    // `devices` is read: a device this build cannot use is refused, named, before any work
    // (with the list ignored, these runs would train on the default device and succeed).
    let refused = |devices: &[&str], name: &str, why: &str| {
        let cfg = RunConfig {
            devices: Some(devices.iter().map(|d| d.to_string()).collect()),
            output: dir.path().join(format!("refused-{name}")),
            ..default.clone()
        };
        let e = format!("{:#}", run(&cfg, &Options::default()).unwrap_err());
        assert!(e.contains(name) && e.contains(why), "{devices:?}: {e}");
        assert!(!cfg.output.exists(), "{devices:?}: nothing written");
    };
    refused(&["tpu:0"], "tpu:0", "unknown device");
    if cfg!(not(feature = "cuda")) {
        refused(&["cuda:1"], "cuda:1", "no GPU support");
    }

    // One CPU device trains exactly as the default device.
    let want = losses(&default);
    assert_eq!(want.iter().filter(|r| r.0 == "train").count(), 2);
    assert_eq!(losses(&cpu), want);

    let two = RunConfig {
        devices: Some(vec!["cpu".into(), "cpu".into()]),
        grad_accum: 2,
        output: dir.path().join("two"),
        ..default
    };
    let e = format!("{:#}", run(&two, &Options::default()).unwrap_err());
    assert!(e.contains("no all-reduce"), "{e}");
    assert!(!two.output.exists(), "nothing written for a refused run");
}
