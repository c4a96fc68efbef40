//! The Rust Qwen3-VL reproduces transformers 5 on the tiny fixture: image embeddings, DeepStack
//! features, M-RoPE positions, every hidden state (transformers 5's convention: layer outputs
//! before DeepStack, the last one after the final norm) and the logits, for one image, a padded
//! batch with three images (a tool-use trajectory) and text only. Inputs are the fixture's own
//! token ids and pixel values, so this isolates the model from the processor.

mod common;
use common::*;
use pearl::model::Qwen3Vl;

fn check_qwen3_forward(name: &str) {
    let dir = qwen3_fixture_dir();
    let device = burn::tensor::Device::flex();
    let model = Qwen3Vl::from_dir(&dir.join("model"), &device).unwrap();
    let t = Tensors::read(&dir.join(format!("expected/{name}.safetensors")));
    let with_images = name != "forward_text_only";
    let layers = model.cfg.text.num_hidden_layers;
    let deepstack = model.cfg.vision.deepstack_visual_indexes.len();
    // What each case must hold (a fixture lacking a tensor fails, it does not pass).
    let mut required: Vec<String> = ["input_ids", "attention_mask", "logits"]
        .map(String::from)
        .to_vec();
    required.extend((0..=layers).map(|l| format!("hidden_states.{l}")));
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
        required.extend((0..deepstack).map(|j| format!("deepstack_features.{j}")));
    }
    for k in required {
        assert!(t.has(&k), "{name}: the fixture lacks `{k}`");
    }
    let batch = fixture_batch_in(&dir, name);
    let out = model.forward(&batch, true).unwrap();
    assert_eq!(out.image_embeds.is_some(), with_images, "{name}: images");
    let mask = batch.attention_mask.clone();
    let d = model.cfg.text.hidden_size;
    let v = model.cfg.text.vocab_size;

    if with_images {
        let got = tensor_vec(out.image_embeds.clone().unwrap());
        let diff = max_abs_diff(&got, &t.f32("image_embeds"), |_| true);
        assert!(diff <= 1e-3, "{name}: image_embeds max diff {diff}");
        assert_eq!(out.deepstack_features.len(), deepstack);
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

#[test]
fn qwen3_forward_single_matches_transformers() {
    check_qwen3_forward("forward_single");
}

#[test]
fn qwen3_forward_batch_matches_transformers() {
    check_qwen3_forward("forward_batch");
}

#[test]
fn qwen3_forward_text_only_matches_transformers() {
    check_qwen3_forward("forward_text_only");
}
