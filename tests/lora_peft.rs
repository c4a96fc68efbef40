//! LoRA adapters in PEFT's format: the fixture's PEFT adapter loads, saves back identically,
//! changes the model, and merges into plain weights that compute the same function.

mod common;
use burn::tensor::Device;
use common::*;
use pearl::model::{VlBatch, Vlm};
use pearl::peft::lora::{LoraConfig, init_lora, load_peft_adapter, merge_lora, save_peft_adapter};

fn logits(m: &Vlm, b: &VlBatch) -> Vec<f32> {
    tensor_vec(m.logits(m.forward(b, false).unwrap().last_hidden))
}

/// The fixture adapter's settings (r 4, alpha 8), every projection targeted.
fn fixture_lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_regex: None,
    }
}

fn base() -> Vlm {
    Vlm::from_dir(&fixture_dir().join("model"), &Device::flex()).unwrap()
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
    let cfg = fixture_lora();
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

/// An adapter directory: the fixture's tensors renamed / rewritten by `edit`, with the fixture's
/// config patched by `config`.
fn edited_adapter(
    dir: &std::path::Path,
    config: serde_json::Value,
    mut edit: impl FnMut(&str, Vec<usize>, Vec<f32>) -> (String, Vec<usize>, Vec<f32>),
) {
    use pearl::model::checkpoint::{RawTensor, write_raw_safetensors};
    let src = fixture_dir().join("adapter");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    for (k, v) in config.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    let theirs = Tensors::read(&src.join("adapter_model.safetensors"));
    let mut keys: Vec<_> = theirs.map.keys().cloned().collect();
    keys.sort();
    let tensors: Vec<RawTensor> = keys
        .iter()
        .map(|k| {
            let (name, shape, data) = edit(k, theirs.shape(k), theirs.f32(k));
            RawTensor::f32(&name, shape, &data)
        })
        .collect();
    write_raw_safetensors(&dir.join("adapter_model.safetensors"), &tensors, None).unwrap();
}

/// `target_modules` as PEFT writes them for this model: unambiguous suffixes, none of which
/// selects the Conv3d patch embedding or a whole block/layer (what PEFT refuses).
#[test]
fn saved_target_modules_are_the_suffixes_peft_writes() {
    let model = load_peft_adapter(base(), &fixture_dir().join("adapter")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fixture_lora();
    save_peft_adapter(&model, &cfg, "../model", tmp.path()).unwrap();
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
            .unwrap()
    };
    let targets = |v: &serde_json::Value| -> Vec<String> {
        let mut t: Vec<String> = v["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    let ours = targets(&read(tmp.path()));
    // The fixture's adapter was written by PEFT itself.
    assert_eq!(ours, targets(&read(&fixture_dir().join("adapter"))));
    for wrong in [
        "visual.patch_embed.proj",
        "model.visual.blocks.0",
        "model.language_model.layers.0",
    ] {
        assert!(
            !ours
                .iter()
                .any(|t| wrong == t || wrong.ends_with(&format!(".{t}"))),
            "{ours:?} selects {wrong}"
        );
    }
}

/// Adapters keyed the pre-transformers-4.52 way (`base_model.model.model.layers.*`,
/// `base_model.model.visual.*`), like most published Qwen2.5-VL adapters, load to the same model.
#[test]
fn adapters_in_the_pre_4_52_layout_load() {
    let tmp = tempfile::tempdir().unwrap();
    edited_adapter(tmp.path(), serde_json::json!({}), |k, s, d| {
        let old = k
            .replace(
                "base_model.model.model.language_model.",
                "base_model.model.model.",
            )
            .replace("base_model.model.model.visual.", "base_model.model.visual.");
        (old, s, d)
    });
    let b = fixture_batch("forward_batch");
    let old = load_peft_adapter(base(), tmp.path()).unwrap();
    assert_eq!(old.lora_count(), 36);
    let new = load_peft_adapter(base(), &fixture_dir().join("adapter")).unwrap();
    assert_eq!(logits(&old, &b), logits(&new, &b));
}

/// `alpha_pattern` and `rank_pattern` with PEFT's meaning: alpha 16 on `q_proj` is the plain
/// adapter with q_proj's B doubled; rank 2 on `v_proj` (with the first two factor rows/columns)
/// scales by alpha / 2. Saving writes the patterns back, and they load to the same function.
#[test]
fn alpha_and_rank_patterns_change_the_scale_as_peft_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (patterned, plain) = (tmp.path().join("patterned"), tmp.path().join("plain"));
    edited_adapter(
        &patterned,
        serde_json::json!({"alpha_pattern": {"q_proj": 16}, "rank_pattern": {"v_proj": 2}}),
        |k, s, d| {
            if !k.contains("v_proj") {
                return (k.into(), s, d);
            }
            // Rank 2: A's first two rows, B's first two columns.
            let (rows, cols) = (s[0], s[1]);
            if k.contains("lora_A") {
                (k.into(), vec![2, cols], d[..2 * cols].to_vec())
            } else {
                let b: Vec<f32> = (0..rows)
                    .flat_map(|i| d[i * cols..i * cols + 2].to_vec())
                    .collect();
                (k.into(), vec![rows, 2], b)
            }
        },
    );
    // The same function without patterns: q_proj's B doubled (16/4 = 2 x 8/4); v_proj's factors
    // zero-padded back to rank 4 with B doubled (8/2 = 2 x 8/4).
    edited_adapter(&plain, serde_json::json!({}), |k, s, d| {
        let (rows, cols) = (s[0], s[1]);
        let d = match (
            k.contains("q_proj"),
            k.contains("v_proj"),
            k.contains("lora_B"),
        ) {
            (true, _, true) => d.iter().map(|x| 2.0 * x).collect(),
            (_, true, false) => d
                .iter()
                .enumerate()
                .map(|(i, x)| if i < 2 * cols { *x } else { 0.0 })
                .collect(),
            (_, true, true) => d
                .iter()
                .enumerate()
                .map(|(i, x)| if i % cols < 2 { 2.0 * x } else { 0.0 })
                .collect(),
            _ => d,
        };
        let _ = rows;
        (k.into(), s, d)
    });
    let b = fixture_batch("forward_batch");
    let with_patterns = load_peft_adapter(base(), &patterned).unwrap();
    let expected = logits(&load_peft_adapter(base(), &plain).unwrap(), &b);
    let got = logits(&with_patterns, &b);
    let diff = max_abs_diff(&got, &expected, |_| true);
    assert!(diff < 1e-4, "patterns differ from their meaning by {diff}");
    let unpatterned = logits(
        &load_peft_adapter(base(), &fixture_dir().join("adapter")).unwrap(),
        &b,
    );
    assert!(
        max_abs_diff(&got, &unpatterned, |_| true) > 1e-3,
        "the patterns must matter"
    );

    let resaved = tmp.path().join("resaved");
    let cfg = fixture_lora();
    save_peft_adapter(&with_patterns, &cfg, "../model", &resaved).unwrap();
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(resaved.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        written["rank_pattern"].as_object().unwrap().len(),
        2,
        "{written}"
    );
    assert_eq!(
        written["alpha_pattern"].as_object().unwrap().len(),
        2,
        "{written}"
    );
    let again = logits(&load_peft_adapter(base(), &resaved).unwrap(), &b);
    assert!(max_abs_diff(&again, &got, |_| true) < 1e-5);
}

/// Options pearl does not honour are refused naming the option.
#[test]
fn unsupported_adapter_options_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mts");
    edited_adapter(
        &dir,
        serde_json::json!({"modules_to_save": ["lm_head"]}),
        |k, s, d| (k.into(), s, d),
    );
    let err = format!("{:#}", load_peft_adapter(base(), &dir).unwrap_err());
    assert!(err.contains("modules_to_save"), "{err}");

    // Factors for lm_head (target_modules naming it) in an otherwise plain config.
    let dir = tmp.path().join("head");
    let mut first = true;
    edited_adapter(&dir, serde_json::json!({}), |k, s, d| {
        if first && k.contains("lora_") {
            first = false;
            let f = if k.contains("lora_A") {
                "lora_A"
            } else {
                "lora_B"
            };
            return (format!("base_model.model.lm_head.{f}.weight"), s, d);
        }
        (k.into(), s, d)
    });
    let err = format!("{:#}", load_peft_adapter(base(), &dir).unwrap_err());
    assert!(
        err.contains("lm_head") && err.contains("target_modules"),
        "{err}"
    );
}

/// A Qwen3-VL adapter as PEFT expects it: the fixture's PEFT adapter loads (43 projections, the
/// DeepStack mergers' included), saves back under the same keys with the `target_modules` PEFT
/// wrote, and the saved adapter computes the same logits.
#[test]
fn qwen3_adapter_saves_with_peft_names_and_targets() {
    let dir = qwen3_fixture_dir();
    let base = || Vlm::from_dir(&dir.join("model"), &Device::flex()).unwrap();
    let model = load_peft_adapter(base(), &dir.join("adapter")).unwrap();
    assert_eq!(model.lora_count(), 43);
    let tmp = tempfile::tempdir().unwrap();
    save_peft_adapter(&model, &fixture_lora(), "../model", tmp.path()).unwrap();
    let config = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
            .unwrap()
    };
    let sorted = |v: &serde_json::Value| -> Vec<String> {
        let mut t: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        sorted(&config(tmp.path())["target_modules"]),
        sorted(&config(&dir.join("adapter"))["target_modules"])
    );
    let keys = |p: &std::path::Path| -> Vec<String> {
        let mut k: Vec<String> = Tensors::read(&p.join("adapter_model.safetensors"))
            .map
            .into_keys()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(tmp.path()), keys(&dir.join("adapter")));
    let b = fixture_batch_in(&dir, "forward_batch");
    let reloaded = load_peft_adapter(base(), tmp.path()).unwrap();
    assert_eq!(logits(&model, &b), logits(&reloaded, &b));
    assert_ne!(logits(&model, &b), logits(&base(), &b));
}
