//! The Rust Qwen2.5-VL reproduces transformers on the tiny fixture: image embeddings, M-RoPE
//! positions, every hidden state and the logits, for one image, a padded batch with three images
//! (a tool-use trajectory), and text only. Inputs are the fixture's own token ids and pixel values,
//! so this isolates the model from the processor (tested in processor_fixture.rs).

mod common;
use common::*;
use pearl::model::Qwen2_5Vl;

fn check(name: &str) {
    let device = burn::tensor::Device::flex();
    let model = Qwen2_5Vl::from_dir(&fixture_dir().join("model"), &device).unwrap();
    let t = Tensors::read(&fixture_dir().join(format!("expected/{name}.safetensors")));
    let batch = fixture_batch(name);
    let out = model.forward(&batch, true).unwrap();
    let mask = batch.attention_mask.clone();
    let d = model.cfg.text.hidden_size;
    let v = model.cfg.text.vocab_size;

    if t.has("image_embeds") {
        let got = tensor_vec(out.image_embeds.clone().unwrap());
        let diff = max_abs_diff(&got, &t.f32("image_embeds"), |_| true);
        assert!(diff <= 1e-3, "{name}: image_embeds max diff {diff}");
    }
    if t.has("position_ids") {
        let (b, s) = (batch.batch, batch.seq_len);
        let want = t.i64("position_ids");
        for i in 0..3 * b * s {
            if mask[i % (b * s)] != 0 {
                assert_eq!(out.position_ids[i], want[i], "{name}: position id {i}");
            }
        }
        assert_eq!(out.rope_deltas, t.i64("rope_deltas"), "{name}: rope_deltas");
    }
    assert_eq!(
        out.hidden_states.len(),
        model.cfg.text.num_hidden_layers + 1
    );
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
fn forward_single_matches_transformers() {
    check("forward_single");
}

#[test]
fn forward_batch_matches_transformers() {
    check("forward_batch");
}

#[test]
fn forward_text_only_matches_transformers() {
    check("forward_text_only");
}
