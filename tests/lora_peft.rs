//! LoRA adapters in PEFT's format: the fixture's PEFT adapter loads, saves back identically,
//! changes the model, and merges into plain weights that compute the same function.

mod common;
use burn::tensor::Device;
use common::*;
use pearl::model::{Qwen2_5Vl, VlBatch};
use pearl::peft::lora::{LoraConfig, init_lora, load_peft_adapter, merge_lora, save_peft_adapter};

fn logits(m: &Qwen2_5Vl, b: &VlBatch) -> Vec<f32> {
    tensor_vec(m.logits(m.forward(b, false).unwrap().last_hidden))
}

fn base() -> Qwen2_5Vl {
    Qwen2_5Vl::from_dir(&fixture_dir().join("model"), &Device::flex()).unwrap()
}

#[test]
fn peft_adapter_round_trips_and_merges() {
    let adapter_dir = fixture_dir().join("adapter");
    let model = load_peft_adapter(base(), &adapter_dir).unwrap();
    assert_eq!(model.lora_count(), 36);
    let b = fixture_batch("forward_batch");
    let with_adapter = logits(&model, &b);
    assert!(
        max_abs_diff(&with_adapter, &logits(&base(), &b), |_| true) > 1e-4,
        "the adapter must change the model"
    );

    let tmp = tempfile::tempdir().unwrap();
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_regex: None,
    };
    save_peft_adapter(&model, &cfg, "../model", tmp.path()).unwrap();
    let ours = Tensors::read(&tmp.path().join("adapter_model.safetensors"));
    let theirs = Tensors::read(&adapter_dir.join("adapter_model.safetensors"));
    let mut keys: Vec<_> = theirs.map.keys().cloned().collect();
    keys.sort();
    let mut our_keys: Vec<_> = ours.map.keys().cloned().collect();
    our_keys.sort();
    assert_eq!(keys, our_keys);
    for k in &keys {
        assert_eq!(ours.shape(k), theirs.shape(k), "{k}");
        assert_eq!(ours.f32(k), theirs.f32(k), "{k}");
    }
    // Our saved adapter loads back to the same function.
    let reloaded = load_peft_adapter(base(), tmp.path()).unwrap();
    assert_eq!(logits(&reloaded, &b), with_adapter);

    let merged = merge_lora(model);
    assert_eq!(merged.lora_count(), 0);
    let diff = max_abs_diff(&logits(&merged, &b), &with_adapter, |_| true);
    assert!(diff < 1e-4, "merged model differs by {diff}");
}

#[test]
fn fresh_adapters_start_as_identity_and_respect_targets() {
    let b = fixture_batch("forward_batch");
    let cfg = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        lora_dropout: 0.0,
        target_regex: Some(r"^model\.layers\.\d+\.self_attn\.(q|v)_proj$".into()),
    };
    let model = init_lora(base(), &cfg, 1).unwrap();
    assert_eq!(model.lora_count(), 2 * 2);
    assert_eq!(
        logits(&model, &b),
        logits(&base(), &b),
        "B = 0 at init: the model is unchanged"
    );
    let none = LoraConfig {
        target_regex: Some("^nothing$".into()),
        ..cfg
    };
    assert!(init_lora(base(), &none, 1).is_err());
}

#[test]
fn mismatched_adapter_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_dir().join("adapter");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    cfg["r"] = serde_json::json!(8);
    std::fs::write(tmp.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        tmp.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let err = format!("{:#}", load_peft_adapter(base(), tmp.path()).unwrap_err());
    assert!(err.contains("shape") && err.contains("[8, "), "{err}");
}
