//! `gradient_checkpointing = true` recomputes activations in the backward pass instead of keeping
//! them; it must train exactly as without it (same losses, same gradient norms), and a run may be
//! resumed with the switch changed.

mod train_common;

use burn::tensor::GradientCheckpointingStrategy;
use pearl::objective::ObjectiveConfig;
use pearl::train::{Options, RunConfig, Trainer, run};
use train_common::{run_config, synth_data};

#[test]
fn checkpointing_trains_as_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut plain = run_config(dir.path(), train, val, 2);
    plain.objective = ObjectiveConfig::pearl();
    plain.output = dir.path().join("plain");
    let checkpointed = RunConfig {
        gradient_checkpointing: true,
        output: dir.path().join("checkpointed"),
        ..plain.clone()
    };
    // The switch is in effect: the trainer's model lives on an autodiff device with the
    // balanced checkpointing strategy (and without it, with checkpointing disabled).
    let strategy = |cfg: &RunConfig, out: &str| {
        let cfg = RunConfig {
            output: dir.path().join(out),
            ..cfg.clone()
        };
        let trainer = Trainer::new(&cfg, &Options::default()).unwrap();
        trainer
            .model()
            .vlm
            .embed_tokens()
            .weight
            .val()
            .gradient_checkpointing_strategy()
    };
    assert_eq!(
        strategy(&checkpointed, "probe-checkpointed"),
        Some(GradientCheckpointingStrategy::Balanced)
    );
    assert_eq!(
        strategy(&plain, "probe-plain"),
        Some(GradientCheckpointingStrategy::Disabled)
    );
    let losses = |cfg: &RunConfig| -> Vec<(String, f64, f64)> {
        run(cfg, &Options::default())
            .unwrap()
            .metrics
            .into_iter()
            .map(|r| {
                (
                    r.split,
                    r.total.unwrap_or(f64::NAN),
                    r.grad_norm.unwrap_or(0.0),
                )
            })
            .collect()
    };
    let (want, got) = (losses(&plain), losses(&checkpointed));
    assert_eq!(want.iter().filter(|r| r.0 == "train").count(), 2);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.0, g.0);
        assert!(w.1.is_finite(), "{w:?}");
        assert!(
            (w.1 - g.1).abs() <= 1e-5 * w.1.abs().max(1.0),
            "{w:?} vs {g:?}"
        );
        assert!(
            (w.2 - g.2).abs() <= 1e-4 * w.2.abs().max(1.0),
            "{w:?} vs {g:?}"
        );
    }
    // The saved run file keeps the switch.
    let saved = std::fs::read_to_string(checkpointed.output.join("best/run.toml")).unwrap();
    assert!(saved.contains("gradient_checkpointing = true"), "{saved}");
}
