//! `pearl inspect forward` end to end: processor + model from the fixture's conversation files
//! reproduce transformers' token ids, masks, image grids and pixel values exactly, and its logits.
//! Bad input exits non-zero with a message, never a panic.

mod common;
use common::*;
use std::process::Command;

fn pearl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pearl"))
}

/// Runs `cmd` and requires success, showing its stderr otherwise (`what` names the case).
fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn inspect_forward_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        run_ok(
            pearl()
                .args(["inspect", "forward", "--model"])
                .arg(fixture_dir().join("model"))
                .arg("--messages")
                .arg(fixture_dir().join(format!("expected/{name}.json")))
                .arg("--out")
                .arg(&out),
            name,
        );
        let got = Tensors::read(&out);
        let want = Tensors::read(&fixture_dir().join(format!("expected/{name}.safetensors")));
        assert_eq!(got.i64("input_ids"), want.i64("input_ids"), "{name}");
        assert_eq!(
            got.i64("attention_mask"),
            want.i64("attention_mask"),
            "{name}"
        );
        let mask = want.i64("attention_mask");
        if want.has("image_grid_thw") {
            assert_eq!(
                got.i64("image_grid_thw"),
                want.i64("image_grid_thw"),
                "{name}"
            );
            assert_eq!(
                got.shape("pixel_values"),
                want.shape("pixel_values"),
                "{name}"
            );
            continue;
        }
        let v = want.shape("logits")[2];
        let d = max_abs_diff(&got.f32("logits"), &want.f32("logits"), |i| {
            mask[i / v] != 0
        });
        assert!(d <= 1e-3, "{name}: logits differ by {d}");
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let conv = tmp.path().join("conv.json");
    std::fs::write(&conv, r#"{"conversations": [[{"role": "user", "content": [{"type": "image", "image": "missing.png"}, {"type": "text", "text": "hi"}]}]], "add_generation_prompt": [true]}"#).unwrap();
    let out = pearl()
        .args(["inspect", "forward", "--model"])
        .arg(fixture_dir().join("model"))
        .arg("--messages")
        .arg(&conv)
        .arg("--out")
        .arg(tmp.path().join("o.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("missing.png") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        !tmp.path().join("o.safetensors").exists(),
        "no output on failure"
    );

    let out = pearl()
        .args(["inspect", "params", "--config"])
        .arg(tmp.path().join("nope.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nope.json") && !err.contains("panicked"),
        "{err}"
    );
}

/// `pearl inspect loss` on the fixture's trajectories: the five terms and the gradient file match
/// the reference; a model dir without weights is a clear error.
#[test]
fn inspect_loss_prints_terms_and_writes_gradients() {
    let f = fixture_dir();
    check_inspect_loss(&f);
    let tmp = tempfile::tempdir().unwrap();
    let out = pearl()
        .args(["inspect", "loss", "--model"])
        .arg(tmp.path())
        .arg("--data")
        .arg(f.join("expected/pearl_trajectories.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && err.contains("preprocessor_config.json"),
        "{err}"
    );
}

/// `inspect forward` takes the model options every model-running command takes: the adapter is
/// merged (logits as the library computes them with it), and an adapter pearl re-saved with
/// `inspect adapter` computes the same.
#[test]
fn inspect_forward_takes_the_adapter_like_every_model_command() {
    use burn::tensor::Device;
    use pearl::peft::lora::{load_peft_adapter, merge_lora};
    let tmp = tempfile::tempdir().unwrap();
    let forward = |adapter: &std::path::Path, out: &std::path::Path| {
        run_ok(
            pearl()
                .args(["inspect", "forward", "--model"])
                .arg(fixture_dir().join("model"))
                .arg("--adapter")
                .arg(adapter)
                .args(["--precision", "f32", "--messages"])
                .arg(fixture_dir().join("expected/forward_single.json"))
                .arg("--out")
                .arg(out),
            "pearl",
        );
        Tensors::read(out).f32("logits")
    };
    let adapter = fixture_dir().join("adapter");
    let got = forward(&adapter, &tmp.path().join("a.safetensors"));
    let model_dir = fixture_dir().join("model");
    let base = pearl::model::Vlm::from_dir(&model_dir, &Device::flex()).unwrap();
    let merged = merge_lora(load_peft_adapter(base, &adapter).unwrap());
    let b = fixture_batch("forward_single");
    let want = tensor_vec(merged.logits(merged.forward(&b, false).unwrap().last_hidden));
    let d = max_abs_diff(&got, &want, |_| true);
    assert!(d < 1e-4, "adapter logits differ by {d}");
    let plain = Tensors::read(&fixture_dir().join("expected/forward_single.safetensors"));
    assert!(
        max_abs_diff(&got, &plain.f32("logits"), |_| true) > 1e-3,
        "the adapter must count"
    );

    let resaved = tmp.path().join("resaved");
    run_ok(
        pearl()
            .args(["inspect", "adapter", "--model"])
            .arg(&model_dir)
            .arg("--adapter")
            .arg(&adapter)
            .arg("--out")
            .arg(&resaved),
        "pearl",
    );
    let again = forward(&resaved, &tmp.path().join("b.safetensors"));
    assert!(max_abs_diff(&again, &got, |_| true) < 1e-5);
}

/// `pearl inspect forward` on a Qwen3-VL model directory: the family comes from `model_type`,
/// and every tensor (DeepStack features included) matches transformers' within the tolerances.
#[test]
fn inspect_forward_matches_the_qwen3_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = qwen3_fixture_dir();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        run_ok(
            pearl()
                .args(["inspect", "forward", "--model"])
                .arg(dir.join("model"))
                .arg("--messages")
                .arg(dir.join(format!("expected/{name}.json")))
                .arg("--out")
                .arg(&out),
            name,
        );
        let got = Tensors::read(&out);
        let want = Tensors::read(&dir.join(format!("expected/{name}.safetensors")));
        for k in ["input_ids", "attention_mask"] {
            assert_eq!(got.i64(k), want.i64(k), "{name}: {k}");
        }
        let mask = want.i64("attention_mask");
        let mut close = vec![("logits", 1e-3)];
        if want.has("image_grid_thw") {
            assert_eq!(got.i64("image_grid_thw"), want.i64("image_grid_thw"));
            // Positions of padding are a convention: compare the real tokens' (3 streams).
            let (gp, wp) = (got.i64("position_ids"), want.i64("position_ids"));
            assert_eq!(gp.len(), wp.len(), "{name}: position_ids");
            for i in (0..wp.len()).filter(|i| mask[i % mask.len()] != 0) {
                assert_eq!(gp[i], wp[i], "{name}: position id {i}");
            }
            close.extend([("pixel_values", 1e-5), ("image_embeds", 1e-3)]);
            close.extend([
                ("deepstack_features.0", 1e-3),
                ("deepstack_features.1", 1e-3),
            ]);
        } else {
            assert!(!got.has("deepstack_features.0"), "{name}: no images");
        }
        let hidden: Vec<String> = (0..4).map(|l| format!("hidden_states.{l}")).collect();
        close.extend(hidden.iter().map(|k| (k.as_str(), 1e-3)));
        for (k, tol) in close {
            assert_eq!(got.shape(k), want.shape(k), "{name}: {k}");
            let row = *want.shape(k).last().unwrap();
            // Rows of padded positions hold a convention, not a value: compare real tokens only.
            let per_token = k == "logits" || k.starts_with("hidden_states");
            let d = max_abs_diff(&got.f32(k), &want.f32(k), |i| {
                !per_token || mask[i / row] != 0
            });
            assert!(d <= tol, "{name}: {k} differs by {d}");
        }
    }
}

/// `pearl inspect loss` on the fixture in `f` prints the reference losses (relative 1e-4) and
/// writes every reference gradient (relative L2 1e-3).
fn check_inspect_loss(f: &std::path::Path) {
    let tmp = tempfile::tempdir().unwrap();
    let grads = tmp.path().join("grads.safetensors");
    let out = run_ok(
        pearl()
            .args(["inspect", "loss", "--model"])
            .arg(f.join("model"))
            .arg("--adapter")
            .arg(f.join("adapter"))
            .arg("--dynamics-head")
            .arg(f.join("dynamics_head.safetensors"))
            .arg("--data")
            .arg(f.join("expected/pearl_trajectories.jsonl"))
            .arg("--grads-out")
            .arg(&grads),
        "pearl",
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("expected/pearl_loss.json")).unwrap())
            .unwrap();
    for k in ["vlm", "jepa", "nextlat_state", "nextlat_token", "total"] {
        let (a, b) = (
            got[k].as_f64().unwrap(),
            want["losses"][k].as_f64().unwrap(),
        );
        assert!((a - b).abs() / b < 1e-4, "{k}: {a} vs {b}");
    }
    let ours = Tensors::read(&grads);
    let reference = Tensors::read(&f.join("expected/pearl_grads.safetensors"));
    for n in want["grad_names"].as_array().unwrap() {
        let n = n.as_str().unwrap();
        let (a, b) = (ours.f32(n), reference.f32(n));
        let err: f32 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = b.iter().map(|y| y * y).sum::<f32>().sqrt();
        assert!(err <= 1e-3 * norm, "{n}: relative error {}", err / norm);
    }
}

/// The same on Qwen3-VL: the family comes from the model directory, the adapter reaches the
/// DeepStack mergers, and losses and gradients match its reference.
#[test]
fn inspect_loss_matches_the_qwen3_reference() {
    check_inspect_loss(&qwen3_fixture_dir());
}
