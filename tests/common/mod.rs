//! Helpers shared by the integration tests: fixture paths and safetensors reading.
#![allow(dead_code)]

pub mod pearl_fixture;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny")
}

/// The tiny Qwen3-VL fixture (same layout as the Qwen2.5-VL one, plus DeepStack tensors).
pub fn qwen3_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen3_vl_tiny")
}

pub struct Tensors {
    pub map: HashMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)>,
}

impl Tensors {
    pub fn read(path: &Path) -> Tensors {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let map = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec(), v.dtype())))
            .collect();
        Tensors { map }
    }
    pub fn shape(&self, k: &str) -> Vec<usize> {
        self.map
            .get(k)
            .unwrap_or_else(|| panic!("no tensor {k}"))
            .0
            .clone()
    }
    pub fn f32(&self, k: &str) -> Vec<f32> {
        let (_, d, t) = self.map.get(k).unwrap_or_else(|| panic!("no tensor {k}"));
        assert_eq!(*t, safetensors::Dtype::F32, "{k}");
        d.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn i64(&self, k: &str) -> Vec<i64> {
        let (_, d, t) = self.map.get(k).unwrap_or_else(|| panic!("no tensor {k}"));
        assert_eq!(*t, safetensors::Dtype::I64, "{k}");
        d.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }
}

/// Max |a - b| over the positions where `keep(i)` holds.
pub fn max_abs_diff(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (x, y))| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn tensor_vec<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// The model inputs stored in a fixture `expected/NAME.safetensors` file.
pub fn fixture_batch(name: &str) -> pearl::model::VlBatch {
    fixture_batch_in(&fixture_dir(), name)
}

/// [`fixture_batch`] of the fixture in `dir`.
pub fn fixture_batch_in(dir: &Path, name: &str) -> pearl::model::VlBatch {
    let t = Tensors::read(&dir.join(format!("expected/{name}.safetensors")));
    let shape = t.shape("input_ids");
    pearl::model::VlBatch {
        input_ids: t.i64("input_ids"),
        attention_mask: t.i64("attention_mask"),
        batch: shape[0],
        seq_len: shape[1],
        pixel_values: if t.has("pixel_values") {
            t.f32("pixel_values")
        } else {
            vec![]
        },
        image_grid_thw: if t.has("image_grid_thw") {
            t.i64("image_grid_thw")
                .chunks(3)
                .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
                .collect()
        } else {
            vec![]
        },
    }
}

/// Another member of the family than the fixture: deeper, GQA 8/4, tied embeddings, other M-RoPE
/// sections, other windows and full-attention blocks (same tokenizer and patch geometry).
pub fn other_config() -> pearl::model::Qwen2_5VlConfig {
    let mut cfg =
        pearl::model::Qwen2_5VlConfig::from_file(&fixture_dir().join("model/config.json")).unwrap();
    cfg.text.num_hidden_layers = 3;
    cfg.text.num_attention_heads = 8;
    cfg.text.num_key_value_heads = 4;
    cfg.text.mrope_section = vec![1, 1, 2];
    cfg.text.tie_word_embeddings = true;
    cfg.vision.depth = 3;
    cfg.vision.num_heads = 3;
    cfg.vision.window_size = 112;
    cfg.vision.fullatt_block_indexes = vec![2];
    cfg
}

/// Runs the fixture model over `expected/NAME` and compares image embeddings, M-RoPE positions,
/// every hidden state and the logits with transformers' (max |diff| <= 1e-3 at non-pad positions).
pub fn check_forward(name: &str) {
    check_forward_in(&fixture_dir(), name)
}

/// [`check_forward`] for the fixture in `dir` (either family, chosen by its `model_type`); a
/// family with DeepStack also compares `deepstack_features.{j}`.
pub fn check_forward_in(dir: &Path, name: &str) {
    check_forward_on(&burn::tensor::Device::flex(), dir, name)
}

/// [`check_forward_in`] with the model on `device`.
pub fn check_forward_on(device: &burn::tensor::Device, dir: &Path, name: &str) {
    let device = device.clone();
    let model = pearl::model::Vlm::from_dir(&dir.join("model"), &device).unwrap();
    let t = Tensors::read(&dir.join(format!("expected/{name}.safetensors")));
    let layers = model.num_layers();
    // What each case must hold: every case its tokens, hidden states and logits; cases with
    // images also the image embeddings, DeepStack features and M-RoPE positions (a fixture
    // lacking them fails, it does not pass).
    let with_images = name != "forward_text_only";
    let mut required: Vec<String> = ["input_ids", "attention_mask", "logits"]
        .map(String::from)
        .to_vec();
    required.extend((0..=layers).map(|l| format!("hidden_states.{l}")));
    let batch = fixture_batch_in(dir, name);
    let out = model.forward(&batch, true).unwrap();
    if with_images {
        required.extend(
            [
                "pixel_values",
                "image_grid_thw",
                "image_embeds",
                "position_ids",
                "rope_deltas",
            ]
            .map(String::from),
        );
        required
            .extend((0..out.deepstack_features.len()).map(|j| format!("deepstack_features.{j}")));
    }
    for k in &required {
        assert!(t.has(k), "{name}: the fixture lacks `{k}`");
    }
    assert_eq!(
        out.image_embeds.is_some(),
        with_images,
        "{name}: image embeddings"
    );
    // Every DeepStack feature the fixture has, the model computed (none for Qwen2.5-VL).
    assert!(!t.has(&format!(
        "deepstack_features.{}",
        out.deepstack_features.len()
    )));
    let mask = batch.attention_mask.clone();
    let d = model.hidden_size();
    let v = model.vocab_size();

    if with_images {
        let got = tensor_vec(out.image_embeds.clone().unwrap());
        let diff = max_abs_diff(&got, &t.f32("image_embeds"), |_| true);
        assert!(diff <= 1e-3, "{name}: image_embeds max diff {diff}");
        for (j, f) in out.deepstack_features.iter().enumerate() {
            let key = format!("deepstack_features.{j}");
            assert_eq!(f.dims().to_vec(), t.shape(&key), "{name}: {key} shape");
            let diff = max_abs_diff(&tensor_vec(f.clone()), &t.f32(&key), |_| true);
            assert!(diff <= 1e-3, "{name}: {key} max diff {diff}");
        }
        let (b, s) = (batch.batch, batch.seq_len);
        let want = t.i64("position_ids");
        for i in 0..3 * b * s {
            if mask[i % (b * s)] != 0 {
                assert_eq!(out.position_ids[i], want[i], "{name}: position id {i}");
            }
        }
        assert_eq!(out.rope_deltas, t.i64("rope_deltas"), "{name}: rope_deltas");
    } else {
        assert!(out.deepstack_features.is_empty());
    }
    assert_eq!(out.hidden_states.len(), layers + 1);
    for (l, h) in out.hidden_states.iter().enumerate() {
        let got = tensor_vec(h.clone());
        let diff = max_abs_diff(&got, &t.f32(&format!("hidden_states.{l}")), |i| {
            mask[i / d] != 0
        });
        assert!(diff <= 1e-3, "{name}: hidden_states.{l} max diff {diff}");
    }
    let logits = tensor_vec(model.logits(out.last_hidden));
    let diff = max_abs_diff(&logits, &t.f32("logits"), |i| mask[i / v] != 0);
    assert!(diff <= 1e-3, "{name}: logits max diff {diff}");
    eprintln!("{name}: logits max diff {diff:e}");
}

/// One backward pass of a loss over the logits and the last hidden state of the fixture model in
/// `dir` (either family) over its `forward_batch` reaches every parameter; returns the model's
/// parameter paths.
pub fn check_every_parameter_gets_a_gradient(dir: &Path) -> Vec<String> {
    let device = burn::tensor::Device::flex().autodiff();
    let model = pearl::model::Vlm::from_dir(&dir.join("model"), &device).unwrap();
    let batch = fixture_batch_in(dir, "forward_batch");
    let out = model.forward(&batch, false).unwrap();
    let loss = model.logits(out.last_hidden.clone()).square().mean()
        + out.last_hidden.powf_scalar(3.0).mean();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    let missing = params_without_gradient(&model, &grads);
    assert!(
        missing.is_empty(),
        "parameters without gradient: {missing:?}"
    );
    pearl::model::names::named_params(&model)
        .into_iter()
        .map(|p| p.path)
        .collect()
}

/// Module paths of `model`'s parameters that received no (or an all-zero) gradient in `grads`.
pub fn params_without_gradient<M: burn::module::Module>(
    model: &M,
    grads: &burn::optim::GradientsParams,
) -> Vec<String> {
    let mut missing = vec![];
    for p in pearl::model::names::named_params(model) {
        let g: Option<burn::tensor::Tensor<1>> = match p.dims.len() {
            1 => grads.get::<1>(p.id),
            2 => grads.get::<2>(p.id).map(|g| g.reshape([-1])),
            n => panic!("unexpected rank {n} for {}", p.path),
        };
        match g {
            Some(g) if g.clone().abs().sum().into_scalar::<f32>() > 0.0 => {}
            _ => missing.push(p.path.clone()),
        }
    }
    missing
}
