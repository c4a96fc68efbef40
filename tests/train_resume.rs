//! A run killed midway and resumed from its last checkpoint takes exactly the steps (bit for bit:
//! every loss term, gradient norm and learning rate) of an uninterrupted run, and ends with the
//! same weights. LoRA dropout is on, so the dropout randomness must resume too.

mod train_common;

/// The device RNG (dropout) is process-wide: runs in parallel test threads would draw from each
/// other's streams, so the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

use pearl::train::metrics::{Row, parse_rows};
use pearl::train::{Options, Resume, run};
use train_common::{run_config, synth_data};

fn train_rows(rows: &[Row]) -> Vec<Row> {
    rows.iter()
        .filter(|r| r.split == "train")
        .map(|r| Row {
            seconds: 0.0,
            tokens_per_s: None,
            ..r.clone()
        })
        .collect()
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 8, 2);
    let mut cfg = run_config(dir.path(), train, val, 6);
    cfg.grad_accum = 2; // micro-batches of 2, so 3 steps make one epoch: the resume crosses it
    cfg.save_every = 2;
    cfg.eval_every = 3;
    cfg.objective.supervise = pearl::objective::Supervise::AllAssistant;

    let mut straight = cfg.clone();
    straight.output = dir.path().join("straight");
    let a = run(&straight, &Options::default()).unwrap();
    assert_eq!(a.step, 6);

    // Killed after step 3: the last checkpoint is step 2, step 3 is lost and redone.
    let mut killed = cfg.clone();
    killed.output = dir.path().join("killed");
    let k = run(
        &killed,
        &Options {
            stop_after: Some(3),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(k.step, 3);
    assert!(killed.output.join("step-0000002").is_dir());
    assert!(!killed.output.join("step-0000004").exists());
    let b = run(
        &killed,
        &Options {
            resume: Some(Resume::Latest),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(b.step, 6);

    // Compared as written to metrics.jsonl (the killed run's file was rewound to its checkpoint's
    // copy and continued).
    let on_disk = |out: &std::path::Path| {
        parse_rows(&std::fs::read(out.join("metrics.jsonl")).unwrap()).unwrap()
    };
    let (all_a, all_b) = (on_disk(&straight.output), on_disk(&killed.output));
    let (ra, rb) = (train_rows(&all_a), train_rows(&all_b));
    assert_eq!(ra.len(), 6);
    assert_eq!(ra, rb, "per-step losses differ after resuming");
    // Not trivially equal: the losses move.
    assert_ne!(ra[0].total, ra[5].total);
    let val = |rows: &[Row]| -> Vec<Option<f64>> {
        rows.iter()
            .filter(|r| r.split == "val")
            .map(|r| r.total)
            .collect()
    };
    assert_eq!(val(&all_a), val(&all_b));
    assert_eq!(val(&all_a).len(), 3, "validation at steps 0, 3 and 6");
    for file in [
        "adapter/adapter_model.safetensors",
        "dynamics_head.safetensors",
    ] {
        let fa = std::fs::read(straight.output.join("step-0000006").join(file)).unwrap();
        let fb = std::fs::read(killed.output.join("step-0000006").join(file)).unwrap();
        assert!(fa == fb, "{file} differs after resuming");
    }
}

#[test]
fn a_new_run_refuses_an_output_with_checkpoints_and_a_changed_config_cannot_resume() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut cfg = run_config(dir.path(), train, val, 1);
    cfg.objective = pearl::objective::ObjectiveConfig::sft();
    run(&cfg, &Options::default()).unwrap();
    let e = run(&cfg, &Options::default()).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
    let mut other = cfg.clone();
    other.optimizer.lr = 0.5;
    let e = run(
        &other,
        &Options {
            resume: Some(Resume::Latest),
            ..Options::default()
        },
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("configuration differs"), "{e}");
    assert!(e.contains("optimizer.lr: 0.01 -> 0.5"), "{e}");
}

/// Output-only keys may change on resume: the run continues to its end.
#[test]
fn a_resume_with_only_output_keys_changed_is_accepted() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut cfg = run_config(dir.path(), train, val, 2);
    cfg.objective = pearl::objective::ObjectiveConfig::sft();
    cfg.save_every = 1;
    let first = run(
        &cfg,
        &Options {
            stop_after: Some(1),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(first.step, 1);
    let changed = pearl::train::RunConfig {
        eval_every: 1,
        keep_last: 1,
        ..cfg
    };
    let done = run(
        &changed,
        &Options {
            resume: Some(Resume::Latest),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!((done.step, done.total_steps), (2, 2));
    // keep_last = 1 took effect: only the last step checkpoint is left.
    let steps: Vec<_> = std::fs::read_dir(&changed.output)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .collect();
    assert_eq!(steps.len(), 1);
}
