//! `--device` on every command that runs a model, parsed by one function: a bad spelling, and a
//! GPU in a build without GPU support, are refused with a message naming the problem before any
//! work starts (the model directories here do not exist, so any work would fail differently).

use std::process::Command;

/// Every command that runs a model, with its other required arguments (paths that do not exist).
fn commands() -> Vec<Vec<&'static str>> {
    let m = "/nonexistent/model";
    vec![
        vec!["generate", "--model", m, "--prompt", "hi"],
        vec![
            "eval", "--model", m, "--bench", "mmvp", "--data", m, "--out", m,
        ],
        vec!["serve", "--model", m],
        vec![
            "inspect",
            "forward",
            "--model",
            m,
            "--messages",
            m,
            "--out",
            m,
        ],
        vec!["inspect", "loss", "--model", m, "--data", m],
        vec!["merge", "--model", m, "--adapter", m, "--out", m],
        vec!["bench", "train", "--config", m, "--data", m],
        vec!["bench", "generate", "--config", m],
        vec!["bench", "load", "--model", m],
        vec!["demo", "--config", m],
    ]
}

/// Whether `pearl ARGS --device DEVICE` succeeded, and its stderr.
fn pearl(args: &[&str], device: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(args)
        .args(["--device", device])
        .output()
        .expect("cannot run pearl");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

/// The failure message of `pearl ARGS --device DEVICE`.
fn refused(args: &[&str], device: &str) -> String {
    let (ok, stderr) = pearl(args, device);
    assert!(!ok, "{args:?} --device {device}: {stderr}");
    assert!(
        !stderr.contains("/nonexistent"),
        "{args:?}: the device must be refused before the model is touched: {stderr}"
    );
    stderr
}

#[test]
fn a_bad_spelling_is_refused_by_every_command() {
    for args in commands() {
        let e = refused(&args, "gpu0");
        assert!(e.contains("unknown device \"gpu0\""), "{args:?}: {e}");
        assert!(
            e.contains("cpu, cuda, cuda:N, wgpu, wgpu:gl"),
            "{args:?}: {e}"
        );
    }
}

/// (A build with `--features cuda` accepts the spelling.)
#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_without_gpu_support_is_refused_by_every_command() {
    for args in commands() {
        let e = refused(&args, "cuda:1");
        assert!(e.contains("--features cuda"), "{args:?}: {e}");
        assert!(e.contains("cuda:1"), "{args:?}: {e}");
    }
}

/// (A build with `--features wgpu` accepts the spelling.)
#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_without_its_backend_is_refused_by_every_command() {
    for args in commands() {
        let e = refused(&args, "wgpu:gl");
        assert!(e.contains("--features wgpu"), "{args:?}: {e}");
        assert!(e.contains("wgpu:gl"), "{args:?}: {e}");
    }
}

/// `cpu` parses on every command (the error is then the missing model, not the device).
#[test]
fn cpu_is_accepted_by_every_command() {
    for args in commands() {
        let (_, stderr) = pearl(&args, "cpu");
        assert!(!stderr.contains("device"), "{args:?}: {stderr}");
    }
}
