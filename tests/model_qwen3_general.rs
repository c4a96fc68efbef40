//! Qwen3-VL beyond the one fixture: another member of the family (other depths, head_dim, GQA
//! ratio, DeepStack layers, tied embeddings), padding, both config layouts, sharded checkpoints,
//! gradients reaching every parameter, and clear errors for configs and checkpoints that do not fit.

mod common;
use burn::tensor::Device;
use common::*;
use pearl::model::{Qwen2_5VlConfig, Qwen3Vl, Qwen3VlConfig, VlBatch, VlFamily};
use serde_json::{Value, json};
use std::path::Path;

fn model_dir() -> std::path::PathBuf {
    qwen3_fixture_dir().join("model")
}

fn config_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(model_dir().join("config.json")).unwrap())
        .unwrap()
}

fn logits(model: &Qwen3Vl, batch: &VlBatch) -> Vec<f32> {
    let out = model.forward(batch, false).unwrap();
    tensor_vec(model.logits(out.last_hidden))
}

/// The fixture's config in transformers 5's layout: `rope_parameters` (theta inside) in both
/// sub-configs, and the renamed vision `model_type`.
fn transformers5_layout(mut v: Value) -> Value {
    let t = v["text_config"].as_object_mut().unwrap();
    let mut rope = t.remove("rope_scaling").unwrap();
    rope["rope_theta"] = t.remove("rope_theta").unwrap();
    t.insert("rope_parameters".into(), rope);
    v["vision_config"]["model_type"] = json!("qwen3_vl_vision");
    v["vision_config"]["rope_parameters"] = json!({"rope_theta": 10000, "rope_type": "axial"});
    v
}

/// Another member of the family: 5 vision blocks with 4 heads and an 8 x 8 position table,
/// DeepStack from blocks 1, 3 and 4; 4 decoder layers with 6 query / 2 KV heads (GQA 3) of
/// head_dim 24 (not hidden / heads = 10.67), sections [4, 4, 4], tied embeddings.
fn other_config() -> Qwen3VlConfig {
    let mut cfg = Qwen3VlConfig::from_file(&model_dir().join("config.json")).unwrap();
    cfg.vision.depth = 5;
    cfg.vision.num_heads = 4;
    cfg.vision.num_position_embeddings = 64;
    cfg.vision.deepstack_visual_indexes = vec![1, 3, 4];
    cfg.text.num_hidden_layers = 4;
    cfg.text.num_attention_heads = 6;
    cfg.text.num_key_value_heads = 2;
    cfg.text.head_dim = 24;
    cfg.text.mrope_section = vec![4, 4, 4];
    cfg.text.tie_word_embeddings = true;
    cfg.validate().unwrap();
    cfg
}

#[test]
fn other_config_builds_and_runs_with_the_right_shapes() {
    let cfg = other_config();
    let model = Qwen3Vl::random(&cfg, 11, &Device::flex()).unwrap();
    assert!(model.model.lm_head.is_none(), "tied: no lm_head");
    assert_eq!(model.visual.deepstack_merger_list.len(), 3);
    let q = &model.model.layers[0].self_attn;
    assert_eq!(q.q_proj.d_out(), 6 * 24);
    assert_eq!(q.k_proj.d_out(), 2 * 24);
    assert_eq!(q.o_proj.d_in(), 6 * 24);
    let batch = fixture_batch_in(&qwen3_fixture_dir(), "forward_batch");
    let out = model.forward(&batch, true).unwrap();
    let tokens = batch
        .image_grid_thw
        .iter()
        .map(|g| g[0] * g[1] * g[2] / 4)
        .sum::<usize>();
    assert_eq!(
        out.image_embeds.as_ref().unwrap().dims(),
        [tokens, cfg.text.hidden_size]
    );
    assert_eq!(out.deepstack_features.len(), 3);
    for f in &out.deepstack_features {
        assert_eq!(f.dims(), [tokens, cfg.text.hidden_size]);
    }
    assert_eq!(out.hidden_states.len(), 5);
    let l = model.logits(out.last_hidden);
    assert_eq!(l.dims(), [batch.batch, batch.seq_len, cfg.text.vocab_size]);
    assert!(tensor_vec(l).iter().all(|x| x.is_finite()));
}

/// DeepStack features reach the decoder: the hidden state after layer 0 differs from the
/// reported (pre-DeepStack) output exactly at the image tokens, by feature 0.
#[test]
fn deepstack_adds_feature_k_after_layer_k_at_image_tokens() {
    let model = Qwen3Vl::from_dir(&model_dir(), &Device::flex()).unwrap();
    let batch = fixture_batch_in(&qwen3_fixture_dir(), "forward_single");
    let with = model.forward(&batch, true).unwrap();
    // The decoder without DeepStack over the same input embeddings.
    let x = model.embed(&batch, with.image_embeds.clone()).unwrap();
    let decoded = model.decode(x, &batch, &[], true).unwrap();
    let (last, without) = (decoded.last_hidden, decoded.hidden_states);
    // Layer 0's output is the same either way (DeepStack is added after it) ...
    let d0 = max_abs_diff(
        &tensor_vec(with.hidden_states[1].clone()),
        &tensor_vec(without[1].clone()),
        |_| true,
    );
    assert!(d0 < 1e-6, "layer 0 output changed by {d0}");
    // ... and the logits are not.
    let d = max_abs_diff(
        &tensor_vec(model.logits(with.last_hidden)),
        &tensor_vec(model.logits(last)),
        |_| true,
    );
    assert!(d > 1e-3, "DeepStack changed the logits by only {d}");
    // Features of the wrong size are refused.
    let x = model.embed(&batch, with.image_embeds.clone()).unwrap();
    let short = with.deepstack_features[0].clone().narrow(0, 0, 3);
    let err = model.decode(x, &batch, &[short], false).unwrap_err();
    assert!(format!("{err:#}").contains("DeepStack"), "{err:#}");
}

/// Each sequence of a padded batch gets the same logits as when run alone (other config).
#[test]
fn other_config_is_padding_invariant() {
    let cfg = other_config();
    let model = Qwen3Vl::random(&cfg, 7, &Device::flex()).unwrap();
    let batch = fixture_batch_in(&qwen3_fixture_dir(), "forward_batch");
    let both = logits(&model, &batch);
    let v = cfg.text.vocab_size;
    let lens = batch.lengths();
    assert!(lens[0] < batch.seq_len, "the first sequence is padded");
    let pd = cfg.vision.patch_dim();
    let first_patches = batch.image_grid_thw[0].iter().product::<usize>();
    let alone = |row: usize| -> VlBatch {
        let s = batch.seq_len;
        let (px, grids) = if row == 0 {
            (
                batch.pixel_values[..first_patches * pd].to_vec(),
                batch.image_grid_thw[..1].to_vec(),
            )
        } else {
            (
                batch.pixel_values[first_patches * pd..].to_vec(),
                batch.image_grid_thw[1..].to_vec(),
            )
        };
        VlBatch {
            input_ids: batch.input_ids[row * s..row * s + lens[row]].to_vec(),
            attention_mask: vec![1; lens[row]],
            batch: 1,
            seq_len: lens[row],
            pixel_values: px,
            image_grid_thw: grids,
        }
    };
    for row in 0..2 {
        let one = logits(&model, &alone(row));
        let s = batch.seq_len;
        let diff = max_abs_diff(&both[row * s * v..(row * s + lens[row]) * v], &one, |_| {
            true
        });
        assert!(diff < 1e-4, "padding changed row {row}'s logits by {diff}");
    }
}

#[test]
fn both_config_layouts_give_the_same_config() {
    let hub = Qwen3VlConfig::from_json(&config_json()).unwrap();
    let t5 = Qwen3VlConfig::from_json(&transformers5_layout(config_json())).unwrap();
    assert_eq!(hub, t5);
    assert_eq!(hub.text.rope_theta, 5e6);
    assert_eq!(hub.text.mrope_section, vec![6, 5, 5]);
    assert_eq!(hub.text.head_dim, 32);
    assert_eq!(hub.vision.deepstack_visual_indexes, vec![0, 2]);
    assert_eq!(hub.vision.position_grid_side(), 9);
    assert!(!hub.text.tie_word_embeddings);
}

/// Write the fixture's tensors in two shards (with an index) under `dir`, leaving out `skip`.
fn write_shards(dir: &Path, config: &Value, skip: &[&str]) {
    let t = Tensors::read(&model_dir().join("model.safetensors"));
    let mut names: Vec<&String> = t
        .map
        .keys()
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (shape, bytes, dtype) = &t.map[*k];
                weight_map.insert((*k).clone(), Value::String(file.clone()));
                (
                    (*k).clone(),
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        std::fs::write(
            dir.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// Sharded weights with the transformers-5 config layout load as the same model; a tied config
/// loads without `lm_head.weight` and uses the embeddings as the head.
#[test]
fn sharded_and_tied_checkpoints_load() {
    let reference = Qwen3Vl::from_dir(&model_dir(), &Device::flex()).unwrap();
    let batch = fixture_batch_in(&qwen3_fixture_dir(), "forward_batch");
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path(), &transformers5_layout(config_json()), &[]);
    let sharded = Qwen3Vl::from_dir(tmp.path(), &Device::flex()).unwrap();
    assert_eq!(logits(&sharded, &batch), logits(&reference, &batch));

    let tied_dir = tempfile::tempdir().unwrap();
    let mut cfg = config_json();
    cfg["tie_word_embeddings"] = json!(true);
    cfg["text_config"]["tie_word_embeddings"] = json!(true);
    write_shards(tied_dir.path(), &cfg, &["lm_head.weight"]);
    let tied = Qwen3Vl::from_dir(tied_dir.path(), &Device::flex()).unwrap();
    assert!(tied.model.lm_head.is_none());
    let out = tied.forward(&batch, false).unwrap();
    let [b, s, d] = out.last_hidden.dims();
    let h = out.last_hidden.reshape([b * s, d]);
    let got = tensor_vec(tied.logits(h.clone()));
    let emb = tied.model.embed_tokens.weight.val();
    let want = tensor_vec(h.matmul(emb.transpose()));
    assert!(max_abs_diff(&got, &want, |_| true) < 1e-5);

    // The untied config without `lm_head.weight` names the missing tensor.
    let untied = tempfile::tempdir().unwrap();
    write_shards(untied.path(), &config_json(), &["lm_head.weight"]);
    let err = format!(
        "{:#}",
        Qwen3Vl::from_dir(untied.path(), &Device::flex()).unwrap_err()
    );
    assert!(err.contains("lm_head.weight"), "{err}");
}

fn config_error(edit: impl Fn(&mut Value)) -> String {
    let mut v = config_json();
    edit(&mut v);
    format!("{:#}", Qwen3VlConfig::from_json(&v).unwrap_err())
}

#[test]
fn configs_that_do_not_fit_are_clear_errors() {
    // Mixing families.
    let e = config_error(|v| v["vision_config"]["fullatt_block_indexes"] = json!([1]));
    assert!(
        e.contains("fullatt_block_indexes") && e.contains("mixes"),
        "{e}"
    );
    let e = config_error(|v| v["text_config"]["model_type"] = json!("qwen2_5_vl_text"));
    assert!(
        e.contains("text_config.model_type") && e.contains("mixes"),
        "{e}"
    );
    let e = config_error(|v| v["vision_config"]["model_type"] = json!("qwen2_5_vl"));
    assert!(e.contains("vision_config.model_type"), "{e}");
    let e = config_error(|v| v["model_type"] = json!("qwen2_5_vl"));
    assert!(e.contains("qwen2_5_vl") && e.contains("Qwen3-VL"), "{e}");
    // The other family's parser refuses this family's config by its model_type.
    let e = format!(
        "{:#}",
        Qwen2_5VlConfig::from_json(&config_json()).unwrap_err()
    );
    assert!(e.contains("qwen3_vl"), "{e}");
    // DeepStack indexes out of range, or more features than decoder layers.
    let e = config_error(|v| v["vision_config"]["deepstack_visual_indexes"] = json!([0, 4]));
    assert!(
        e.contains("deepstack_visual_indexes") && e.contains("4"),
        "{e}"
    );
    let e = config_error(|v| {
        v["vision_config"]["deepstack_visual_indexes"] = json!([0, 1, 2, 3]);
    });
    assert!(e.contains("decoder layers"), "{e}");
    // A position table that is not square, sections that do not fit head_dim.
    let e = config_error(|v| v["vision_config"]["num_position_embeddings"] = json!(80));
    assert!(e.contains("num_position_embeddings"), "{e}");
    let e = config_error(|v| v["text_config"]["head_dim"] = json!(16));
    assert!(e.contains("mrope_section"), "{e}");
}

/// A position table that does not match `num_position_embeddings` is named in the error.
#[test]
fn position_table_mismatch_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config_json();
    cfg["vision_config"]["num_position_embeddings"] = json!(64);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        model_dir().join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        Qwen3Vl::from_dir(tmp.path(), &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("pos_embed") && err.contains("num_position_embeddings = 64"),
        "{err}"
    );
}

/// One backward pass of a loss over logits and the last hidden state reaches every parameter
/// (the position table, both kinds of merger, q/k norms included).
#[test]
fn every_parameter_gets_a_gradient() {
    let paths = check_every_parameter_gets_a_gradient(&qwen3_fixture_dir());
    assert!(paths.iter().any(|p| p == "visual.pos_embed.weight"));
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("visual.deepstack_merger_list.1."))
    );
}

/// Every parameter the model builds has the hub name of exactly one checkpoint tensor, and every
/// checkpoint tensor is used (the names module translates Qwen3-VL's layers too).
#[test]
fn parameter_names_are_the_checkpoint_keys() {
    let model = Qwen3Vl::from_dir(&model_dir(), &Device::flex()).unwrap();
    let mut ours: Vec<String> = pearl::model::names::named_params(&model)
        .iter()
        .filter_map(|p| pearl::model::names::hub_name(&p.path))
        .collect();
    let t = Tensors::read(&model_dir().join("model.safetensors"));
    let mut theirs: Vec<String> = t
        .map
        .keys()
        .map(|k| pearl::model::weights::canonical_key(k))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

/// A model directory loads as the family its `config.json` names; parameter paths are the same
/// whether the model is held as its family's type or as a `Vlm`; an unknown family is refused.
#[test]
fn family_comes_from_model_type() {
    use pearl::model::{Family, Vlm};
    let device = Device::flex();
    let q3 = Vlm::from_dir(&model_dir(), &device).unwrap();
    assert_eq!(q3.family(), Family::Qwen3Vl);
    let q25 = Vlm::from_dir(&fixture_dir().join("model"), &device).unwrap();
    assert_eq!(q25.family(), Family::Qwen2_5Vl);
    let bare = Qwen3Vl::from_dir(&model_dir(), &device).unwrap();
    let paths = |ps: Vec<pearl::model::names::NamedParam>| -> Vec<String> {
        ps.into_iter().map(|p| p.path).collect()
    };
    assert_eq!(
        paths(pearl::model::names::named_params(&q3)),
        paths(pearl::model::names::named_params(&bare))
    );
    assert_eq!(q3.num_params(), {
        let t = Tensors::read(&model_dir().join("model.safetensors"));
        t.map
            .values()
            .map(|(s, ..)| s.iter().product::<usize>() as u64)
            .sum::<u64>()
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config_json();
    cfg["model_type"] = json!("llava");
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let err = format!("{:#}", Vlm::from_dir(tmp.path(), &device).unwrap_err());
    assert!(err.contains("llava") && err.contains("qwen3_vl"), "{err}");
}

/// The count `pearl inspect params` reports equals the parameters a built model has: the fixture
/// (untied, DeepStack from 3 blocks) and the other config (tied, GQA 3, head_dim 24).
#[test]
fn parameter_count_matches_built_models() {
    let fixture = Qwen3VlConfig::from_file(&model_dir().join("config.json")).unwrap();
    for cfg in [fixture, other_config()] {
        let model = Qwen3Vl::random(&cfg, 3, &Device::flex()).unwrap();
        assert_eq!(
            burn::module::Module::num_params(&model) as u64,
            cfg.num_params(),
            "{cfg:?}"
        );
    }
}

/// The published Qwen3-VL-2B/4B/8B-Instruct configs (tests/data/configs) count the parameters
/// their checkpoints hold (2.13 B, 4.44 B, 8.77 B), through `pearl inspect params`.
#[test]
fn published_configs_have_the_published_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/configs");
    for (file, billions, tied) in [
        ("qwen3_vl_2b_instruct.json", 2.13, true),
        ("qwen3_vl_4b_instruct.json", 4.44, true),
        ("qwen3_vl_8b_instruct.json", 8.77, false),
        ("qwen2_5_vl_3b_instruct.json", 3.75, true),
        ("qwen2_5_vl_7b_instruct.json", 8.29, false),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pearl"))
            .args(["inspect", "params", "--json", "--config"])
            .arg(dir.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let total = v["total"].as_u64().unwrap();
        assert_eq!(
            total,
            v["vision"].as_u64().unwrap() + v["text"].as_u64().unwrap()
        );
        let b = total as f64 / 1e9;
        assert!((b - billions).abs() < 0.005, "{file}: {b} B parameters");
        let family = if file.starts_with("qwen3") {
            "Qwen3Vl"
        } else {
            "Qwen2_5Vl"
        };
        assert_eq!(v["family"], family, "{file}");
        if file.starts_with("qwen3") {
            let cfg = Qwen3VlConfig::from_file(&dir.join(file)).unwrap();
            assert_eq!(cfg.text.tie_word_embeddings, tied, "{file}");
            assert_eq!(cfg.num_params(), total, "{file}");
        }
    }
}

/// transformers 4.57's `hidden_states` differ from transformers 5's exactly where they should:
/// after a layer that receives a DeepStack feature, by that feature at the image tokens (other
/// tokens and other layers unchanged), and at the end, where 4.57 keeps the last layer's output
/// before the final norm (which the final norm turns into 5's last entry).
#[test]
fn transformers_4_57_hidden_states_include_deepstack_and_end_before_the_norm() {
    use pearl::model::decoder::HiddenStates;
    let model = Qwen3Vl::from_dir(&model_dir(), &Device::flex()).unwrap();
    let batch = fixture_batch_in(&qwen3_fixture_dir(), "forward_single");
    let run = |convention| {
        let images = model
            .image_features(&batch.pixel_values, &batch.image_grid_thw)
            .unwrap();
        let x = model.embed(&batch, Some(images.embeds.clone())).unwrap();
        let d = model
            .decode_recording(x, &batch, &images.deepstack, Some(convention), None)
            .unwrap();
        (d, images.deepstack)
    };
    let (v5, deepstack) = run(HiddenStates::Transformers5);
    let (v457, _) = run(HiddenStates::Transformers4_57);
    let layers = model.cfg.text.num_hidden_layers;
    assert_eq!(v5.hidden_states.len(), layers + 1);
    assert_eq!(v457.hidden_states.len(), layers + 1);
    let image_rows: Vec<usize> = batch
        .input_ids
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == model.vision_tokens().image_token_id)
        .map(|(i, _)| i)
        .collect();
    let d = model.cfg.text.hidden_size;
    let rows = |t: &burn::tensor::Tensor<3>| -> Vec<Vec<f32>> {
        tensor_vec(t.clone())
            .chunks(d)
            .map(<[f32]>::to_vec)
            .collect()
    };
    for l in 0..layers {
        let (a, b) = (rows(&v5.hidden_states[l]), rows(&v457.hidden_states[l]));
        // Entry l is layer l-1's output (l = 0: the embeddings); 4.57 adds feature l-1 if any.
        let feature = l
            .checked_sub(1)
            .and_then(|k| deepstack.get(k))
            .map(|f| rows(&f.clone().unsqueeze_dim::<3>(0)));
        for (i, (ra, rb)) in a.iter().zip(&b).enumerate() {
            let k = image_rows.iter().position(|&p| p == i);
            let want: Vec<f32> = match (&feature, k) {
                (Some(f), Some(k)) => ra.iter().zip(&f[k]).map(|(x, y)| x + y).collect(),
                _ => ra.clone(),
            };
            let diff = max_abs_diff(rb, &want, |_| true);
            assert!(diff < 1e-5, "entry {l}, row {i}: off by {diff}");
        }
        if l >= 1 && l - 1 < deepstack.len() {
            assert!(
                max_abs_diff(&a.concat(), &b.concat(), |_| true) > 1e-4,
                "entry {l}"
            );
        }
    }
    // The last entries: 4.57's is the pre-norm state, 5's the normed one; the head reads 5's.
    let last457 = v457.hidden_states[layers].clone();
    assert_eq!(
        tensor_vec(last457.clone()),
        tensor_vec(v457.pre_norm.clone())
    );
    assert_eq!(
        tensor_vec(v5.hidden_states[layers].clone()),
        tensor_vec(v457.last_hidden.clone())
    );
    let normed = pearl::kernels::rms_norm::rms_norm(&model.model.norm, last457);
    let diff = max_abs_diff(&tensor_vec(normed), &tensor_vec(v5.last_hidden), |_| true);
    assert!(
        diff < 1e-5,
        "final norm of 4.57's last entry is off by {diff}"
    );
}
