//! `pearl inspect forward` end to end: processor + model from the fixture's conversation files
//! reproduce transformers' token ids, masks, image grids and pixel values exactly, and its logits.
//! Bad input exits non-zero with a message, never a panic.

mod common;
use common::*;
use std::process::Command;

fn pearl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pearl"))
}

#[test]
fn inspect_forward_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["forward_single", "forward_batch", "forward_text_only"] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        let st = pearl()
            .args(["inspect", "forward", "--model"])
            .arg(fixture_dir().join("model"))
            .arg("--messages")
            .arg(fixture_dir().join(format!("expected/{name}.json")))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&st.stderr)
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
