//! The model beyond the one fixture: other checkpoint layouts and dtypes, configs of the real
//! models, other window sizes, tied embeddings, padding, and gradients reaching every parameter.

mod common;
use burn::tensor::Device;
use common::*;
use pearl::model::checkpoint::write_safetensors;
use pearl::model::qwen2_5_vl::checkpoint::{hub_tensors, save_hub_checkpoint};
use pearl::model::{Qwen2_5Vl, Qwen2_5VlConfig, VlBatch, VlFamily};
use std::path::Path;

fn fixture_model() -> Qwen2_5Vl {
    Qwen2_5Vl::from_dir(&fixture_dir().join("model"), &Device::flex()).unwrap()
}

fn logits(model: &Qwen2_5Vl, batch: &VlBatch) -> Vec<f32> {
    let out = model.forward(batch, false).unwrap();
    tensor_vec(model.logits(out.last_hidden))
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn hub_checkpoint_round_trips() {
    let model = fixture_model();
    let tmp = tempfile::tempdir().unwrap();
    save_hub_checkpoint(
        &model,
        &config_json(&fixture_dir().join("model")),
        tmp.path(),
    )
    .unwrap();
    // The written keys are exactly the hub checkpoint's keys.
    let ours = Tensors::read(&tmp.path().join("model.safetensors"));
    let theirs = Tensors::read(&fixture_dir().join("model/model.safetensors"));
    let mut a: Vec<_> = ours.map.keys().cloned().collect();
    let mut b: Vec<_> = theirs.map.keys().cloned().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for k in &a {
        assert_eq!(ours.shape(k), theirs.shape(k), "{k}");
        assert_eq!(ours.f32(k), theirs.f32(k), "{k}");
    }
    let reloaded = Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap();
    let batch = fixture_batch("forward_single");
    assert_eq!(logits(&model, &batch), logits(&reloaded, &batch));
}

/// Current transformers' key names, bf16 storage, two shards with an index: the same model.
#[test]
fn sharded_bf16_transformers_layout_loads() {
    let model = fixture_model();
    let tmp = tempfile::tempdir().unwrap();
    let tensors = hub_tensors(&model);
    let rename = |k: &str| {
        if let Some(r) = k.strip_prefix("model.") {
            format!("model.language_model.{r}")
        } else if let Some(r) = k.strip_prefix("visual.") {
            format!("model.visual.{r}")
        } else {
            k.to_string()
        }
    };
    // Round each value to bf16, write as bf16 in two shards.
    let mut weight_map = serde_json::Map::new();
    let mut rounded = Vec::new();
    for (i, chunk) in tensors.chunks(tensors.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let mut owned = Vec::new();
        for (k, s, v) in chunk {
            let b: Vec<u8> = v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect();
            owned.push((rename(k), s.clone(), b));
            weight_map.insert(rename(k), serde_json::Value::String(file.clone()));
            rounded.push((
                k.clone(),
                s.clone(),
                v.iter()
                    .map(|x| half::bf16::from_f32(*x).to_f32())
                    .collect::<Vec<f32>>(),
            ));
        }
        let views: Vec<_> = owned
            .iter()
            .map(|(k, s, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        std::fs::write(
            tmp.path().join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        config_json(&fixture_dir().join("model")).to_string(),
    )
    .unwrap();
    let from_shards = Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap();

    // Reference: the same bf16-rounded values written the plain way.
    let plain = tempfile::tempdir().unwrap();
    write_safetensors(&plain.path().join("model.safetensors"), &rounded, None).unwrap();
    std::fs::write(
        plain.path().join("config.json"),
        config_json(&fixture_dir().join("model")).to_string(),
    )
    .unwrap();
    let reference = Qwen2_5Vl::from_dir(plain.path(), &Device::flex()).unwrap();
    let batch = fixture_batch("forward_batch");
    assert_eq!(logits(&from_shards, &batch), logits(&reference, &batch));

    // A missing shard is a clear error naming it.
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = format!(
        "{:#}",
        Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap_err()
    );
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn wrong_shapes_and_configs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config_json(&fixture_dir().join("model"));
    cfg["intermediate_size"] = serde_json::json!(96);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        fixture_dir().join("model/model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("gate_proj.weight") && err.contains("[128, 64]") && err.contains("[96, 64]"),
        "{err}"
    );

    cfg["model_type"] = serde_json::json!("llava");
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let err = format!(
        "{:#}",
        Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("llava") && err.contains("config.json"),
        "{err}"
    );

    std::fs::write(tmp.path().join("config.json"), "{not json").unwrap();
    let err = format!(
        "{:#}",
        Qwen2_5Vl::from_dir(tmp.path(), &Device::flex()).unwrap_err()
    );
    assert!(err.contains("not valid JSON"), "{err}");

    let mut cfg = config_json(&fixture_dir().join("model"));
    cfg["rope_scaling"]["mrope_section"] = serde_json::json!([2, 2, 2]);
    assert!(
        format!("{:#}", Qwen2_5VlConfig::from_json(&cfg).unwrap_err()).contains("mrope_section")
    );
}

#[test]
fn real_configs_parse_with_published_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/configs");
    let seven = Qwen2_5VlConfig::from_file(&dir.join("qwen2_5_vl_7b_instruct.json")).unwrap();
    let three = Qwen2_5VlConfig::from_file(&dir.join("qwen2_5_vl_3b_instruct.json")).unwrap();
    let three_new =
        Qwen2_5VlConfig::from_file(&dir.join("qwen2_5_vl_3b_instruct_text_config_layout.json"))
            .unwrap();
    assert_eq!(
        three, three_new,
        "both config layouts describe the same model"
    );
    assert!(three.text.tie_word_embeddings && !seven.text.tie_word_embeddings);
    let (p7, p3) = (
        seven.num_params() as f64 / 1e9,
        three.num_params() as f64 / 1e9,
    );
    assert!((p7 - 8.29).abs() < 0.01, "7B: {p7} B parameters");
    assert!((p3 - 3.75).abs() < 0.01, "3B: {p3} B parameters");
}

/// The count from the config formula equals the parameters a built model actually has.
#[test]
fn parameter_count_matches_built_model() {
    let model = fixture_model();
    assert_eq!(
        burn::module::Module::num_params(&model) as u64,
        model.cfg.num_params()
    );
}

/// With windows larger than any image, window attention is full attention: the outputs of a model
/// whose blocks all use windows equal those of one whose blocks all attend fully.
#[test]
fn large_windows_equal_full_attention() {
    let dir = fixture_dir().join("model");
    let mut cfg = Qwen2_5VlConfig::from_file(&dir.join("config.json")).unwrap();
    let batch = fixture_batch("forward_batch");
    cfg.vision.window_size = 56 * 64;
    cfg.vision.fullatt_block_indexes = vec![];
    let mut src = pearl::model::weights::SafetensorsWeights::open(&dir).unwrap();
    let windowed = Qwen2_5Vl::load(&cfg, &mut src, &Device::flex()).unwrap();
    cfg.vision.fullatt_block_indexes = (0..cfg.vision.depth).collect();
    let mut src = pearl::model::weights::SafetensorsWeights::open(&dir).unwrap();
    let full = Qwen2_5Vl::load(&cfg, &mut src, &Device::flex()).unwrap();
    let a = tensor_vec(
        windowed
            .encode_images(&batch.pixel_values, &batch.image_grid_thw)
            .unwrap(),
    );
    let b = tensor_vec(
        full.encode_images(&batch.pixel_values, &batch.image_grid_thw)
            .unwrap(),
    );
    assert!(max_abs_diff(&a, &b, |_| true) < 1e-5);
    // And the fixture's small windows really change the result (the windows are not a no-op).
    let c = tensor_vec(
        fixture_model()
            .encode_images(&batch.pixel_values, &batch.image_grid_thw)
            .unwrap(),
    );
    assert!(max_abs_diff(&a, &c, |_| true) > 1e-4);
}

/// Another member of the family (deeper, other heads, tied embeddings, other windows), random
/// weights: each sequence of a padded batch gets the same logits as when run alone.
#[test]
fn other_config_is_padding_invariant() {
    let cfg = other_config();
    let model = Qwen2_5Vl::random(&cfg, 7, &Device::flex()).unwrap();
    assert!(model.model.lm_head.is_none());
    let batch = fixture_batch("forward_batch");
    let both = logits(&model, &batch);
    let v = cfg.text.vocab_size;
    let lens = batch.lengths();
    // Sequence 1 alone (it holds images 2 and 3 of the batch).
    let s = batch.seq_len;
    let pd = cfg.vision.patch_dim();
    let first_patches = batch.image_grid_thw[0].iter().product::<usize>();
    let alone = VlBatch {
        input_ids: batch.input_ids[s..s + lens[1]].to_vec(),
        attention_mask: vec![1; lens[1]],
        batch: 1,
        seq_len: lens[1],
        pixel_values: batch.pixel_values[first_patches * pd..].to_vec(),
        image_grid_thw: batch.image_grid_thw[1..].to_vec(),
    };
    let one = logits(&model, &alone);
    let diff = max_abs_diff(&both[s * v..(s + lens[1]) * v], &one, |_| true);
    assert!(diff < 1e-4, "padding changed logits by {diff}");
}

/// One backward pass of a loss over logits and the last hidden state reaches every parameter.
#[test]
fn every_parameter_gets_a_gradient() {
    let paths = check_every_parameter_gets_a_gradient(&fixture_dir());
    let values = pearl::model::checkpoint::param_values(
        &Qwen2_5Vl::from_dir(&fixture_dir().join("model"), &Device::flex()).unwrap(),
    );
    assert_eq!(paths.len(), values.len());
}
