//! `pearl merge` folds a PEFT adapter into the base model: the output is a plain hub-layout
//! model directory that loads with `Qwen2_5Vl::from_dir` (no adapter) and computes the logits of
//! the adapted model; the processor files come along.

mod common;

use burn::tensor::Device;
use common::{fixture_batch, fixture_dir, max_abs_diff, tensor_vec};
use pearl::model::Vlm;
use pearl::peft::lora::load_peft_adapter;

#[test]
fn merged_model_loads_and_gives_the_adapter_models_logits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
        .arg("merge")
        .arg("--model")
        .arg(fixture_dir().join("model"))
        .arg("--adapter")
        .arg(fixture_dir().join("adapter"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let device = Device::default();
    let merged = Vlm::from_dir(&out, &device).unwrap();
    assert_eq!(merged.lora_count(), 0);
    let adapted = load_peft_adapter(
        Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap(),
        &fixture_dir().join("adapter"),
    )
    .unwrap();
    let plain = Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap();
    let batch = fixture_batch("forward_batch");
    let logits = |m: &Vlm| tensor_vec(m.logits(m.forward(&batch, false).unwrap().last_hidden));
    let (lm, la, lp) = (logits(&merged), logits(&adapted), logits(&plain));
    let mask: Vec<bool> = batch.attention_mask.iter().map(|&m| m != 0).collect();
    let vocab = lm.len() / mask.len();
    let keep = |i: usize| mask[i / vocab];
    let diff = max_abs_diff(&lm, &la, keep);
    assert!(diff < 1e-4, "merged vs adapter logits differ by {diff}");
    // The adapter does change the function (so the comparison above means something).
    assert!(max_abs_diff(&lp, &la, keep) > 1e-3);

    // Bad input: a directory without an adapter.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
        .arg("merge")
        .arg("--model")
        .arg(fixture_dir().join("model"))
        .arg("--adapter")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("adapter_config.json"));
}

/// `pearl merge` on Qwen3-VL writes the published layout (`model.language_model.*`,
/// `model.visual.*`, `lm_head.weight`: exactly the base checkpoint's keys and shapes), which loads
/// and computes the adapted model's logits.
#[test]
fn merged_qwen3_model_has_the_published_keys_and_the_adapter_models_logits() {
    let f = common::qwen3_fixture_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
        .arg("merge")
        .arg("--model")
        .arg(f.join("model"))
        .arg("--adapter")
        .arg(f.join("adapter"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let ours = common::Tensors::read(&out.join("model.safetensors"));
    let base = common::Tensors::read(&f.join("model/model.safetensors"));
    let mut a: Vec<_> = ours.map.keys().cloned().collect();
    let mut b: Vec<_> = base.map.keys().cloned().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for k in &a {
        assert_eq!(ours.shape(k), base.shape(k), "{k}");
    }
    let device = Device::default();
    let merged = Vlm::from_dir(&out, &device).unwrap();
    let adapted = load_peft_adapter(
        Vlm::from_dir(&f.join("model"), &device).unwrap(),
        &f.join("adapter"),
    )
    .unwrap();
    let batch = common::fixture_batch_in(&f, "forward_batch");
    let logits = |m: &Vlm| tensor_vec(m.logits(m.forward(&batch, false).unwrap().last_hidden));
    let mask: Vec<bool> = batch.attention_mask.iter().map(|&m| m != 0).collect();
    let (lm, la) = (logits(&merged), logits(&adapted));
    let vocab = lm.len() / mask.len();
    let diff = max_abs_diff(&lm, &la, |i| mask[i / vocab]);
    assert!(diff < 1e-4, "merged vs adapter logits differ by {diff}");
}
