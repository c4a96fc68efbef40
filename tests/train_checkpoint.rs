//! Checkpoints refuse damage (a flipped byte, a truncated file, a missing manifest) with an error
//! naming the file; a run with non-finite steps skips and counts them, stops after
//! `max_bad_steps` in a row, and never writes a checkpoint holding NaN or Inf; a typo in a run
//! file is refused by `pearl train` with the key named.

mod train_common;

use pearl::train::checkpoint::verify;
use pearl::train::metrics::parse_rows;
use pearl::train::{Options, Resume, run};
use std::path::Path;
use train_common::{fixture_dir, run_config, synth_data};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 4, 1);
    let mut cfg = run_config(dir.path(), train, val, 2);
    cfg.save_every = 1;
    cfg.keep_last = 2;
    run(&cfg, &Options::default()).unwrap();
    let good = cfg.output.join("step-0000002");
    assert_eq!(verify(&good).unwrap(), 2);
    assert!(cfg.output.join("step-0000001").is_dir());

    let damage = |name: &str, f: &dyn Fn(&Path)| -> String {
        let d = dir.path().join(name);
        copy_dir(&good, &d);
        f(&d);
        format!("{:#}", verify(&d).unwrap_err())
    };
    let e = damage("flipped", &|d| {
        let p = d.join("adapter/adapter_model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let i = b.len() - 3;
        b[i] ^= 0x40;
        std::fs::write(&p, b).unwrap();
    });
    assert!(
        e.contains("corrupted") && e.contains("adapter/adapter_model.safetensors"),
        "{e}"
    );
    let e = damage("truncated", &|d| {
        let p = d.join("optimizer.bpk");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
    assert!(
        e.contains("truncated") && e.contains("optimizer.bpk"),
        "{e}"
    );
    let e = damage("missing", &|d| {
        std::fs::remove_file(d.join("dynamics_head.safetensors")).unwrap()
    });
    assert!(e.contains("missing dynamics_head.safetensors"), "{e}");
    let e = damage("no-manifest", &|d| {
        std::fs::remove_file(d.join("manifest.json")).unwrap()
    });
    assert!(e.contains("not a complete checkpoint"), "{e}");

    // Resuming from a damaged checkpoint is refused, not attempted.
    let p = good.join("state.json");
    let mut b = std::fs::read(&p).unwrap();
    b.truncate(b.len() - 1);
    std::fs::write(&p, b).unwrap();
    let e = run(
        &cfg,
        &Options {
            resume: Some(Resume::Latest),
            ..Options::default()
        },
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("cannot resume") && e.contains("state.json"),
        "{e}"
    );
}

#[test]
fn non_finite_steps_are_skipped_counted_and_stop_the_run() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = synth_data(dir.path(), 8, 1);
    let mut cfg = run_config(dir.path(), train, val, 20);
    // An absurd learning rate: the first update blows the weights up, later losses are NaN/Inf.
    cfg.optimizer.lr = 1e30;
    cfg.schedule.warmup_ratio = 0.0;
    cfg.max_grad_norm = 0.0;
    cfg.save_every = 1;
    cfg.keep_last = 20;
    cfg.max_bad_steps = 3;
    let e = run(&cfg, &Options::default()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("3 consecutive steps had a non-finite loss or gradient"),
        "{msg}"
    );
    let rows = parse_rows(&std::fs::read(cfg.output.join("metrics.jsonl")).unwrap()).unwrap();
    let skipped: Vec<bool> = rows
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| r.skipped)
        .collect();
    let n = skipped.len();
    assert!(n >= 4, "{skipped:?}");
    assert_eq!(&skipped[n - 3..], &[true, true, true], "{skipped:?}");
    assert!(!skipped[0]);
    // Every checkpoint on disk is complete and finite (writing a non-finite one is refused).
    let mut checked = 0;
    for e in std::fs::read_dir(&cfg.output).unwrap() {
        let d = e.unwrap().path();
        if !d.is_dir() {
            continue;
        }
        verify(&d).unwrap();
        for f in [
            "adapter/adapter_model.safetensors",
            "dynamics_head.safetensors",
        ] {
            let bytes = std::fs::read(d.join(f)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, t) in st.tensors() {
                assert!(
                    t.data()
                        .chunks_exact(4)
                        .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
                    "{}: {name} is not finite",
                    d.display()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn a_typo_in_the_run_file_is_refused_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run_file = dir.path().join("run.toml");
    std::fs::write(
        &run_file,
        format!(
            "model = {:?}\ntrain = [\"t.jsonl\"]\n[optimizer]\nlearnig_rate = 1e-4\n",
            fixture_dir().join("model")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["train", "--config"])
        .arg(&run_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("learnig_rate") && err.contains("run.toml"),
        "{err}"
    );
    // And an unknown key given on the command line (the file itself is fine).
    std::fs::write(
        &run_file,
        format!(
            "model = {:?}\ntrain = [\"t.jsonl\"]\n",
            fixture_dir().join("model")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["train", "--config"])
        .arg(&run_file)
        .args(["--set", "optimizer.lr=1e-4", "--set", "objective.lamda=0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lamda"), "{err}");
}
