//! The Pearl objective against the fixtures' reference (PyTorch, following the authors' trainer),
//! for Qwen2.5-VL and Qwen3-VL: the three views' tokens, the five losses, and every gradient of
//! the LoRA factors (Qwen3-VL's DeepStack mergers included) and the dynamics head.

mod common;

use common::{Tensors, fixture_dir, pearl_fixture, qwen3_fixture_dir};
use pearl::objective::ObjectiveConfig;
use std::path::Path;

/// Unpadded rows of a `[batch, seq]` tensor.
fn rows(ids: &[i64], mask: &[i64], batch: usize) -> Vec<Vec<i64>> {
    let s = ids.len() / batch;
    (0..batch)
        .map(|b| {
            (0..s)
                .filter(|&t| mask[b * s + t] != 0)
                .map(|t| ids[b * s + t])
                .collect()
        })
        .collect()
}

#[test]
fn views_match_the_reference_tokens() {
    check_views(&fixture_dir());
}

#[test]
fn qwen3_views_match_the_reference_tokens() {
    check_views(&qwen3_fixture_dir());
}

fn check_views(dir: &Path) {
    let batch = pearl_fixture::batch_in(dir, &ObjectiveConfig::pearl());
    let v = Tensors::read(&dir.join("expected/pearl_views.safetensors"));
    let b = batch.full.batch;
    let full_mask = v.i64("full_attention_mask");
    assert_eq!(
        rows(&batch.full.input_ids, &batch.full.attention_mask, b),
        rows(&v.i64("full_input_ids"), &full_mask, b)
    );
    assert_eq!(
        rows(&batch.labels, &batch.full.attention_mask, b),
        rows(&v.i64("labels"), &full_mask, b)
    );
    for (view, name) in [
        (batch.input.as_ref().unwrap(), "input_view"),
        (batch.trajectory.as_ref().unwrap(), "trajectory_view"),
    ] {
        assert_eq!(
            rows(&view.tokens.input_ids, &view.tokens.attention_mask, b),
            rows(
                &v.i64(&format!("{name}_input_ids")),
                &v.i64(&format!("{name}_attention_mask")),
                b
            ),
            "{name}"
        );
    }
}

#[test]
fn losses_embeddings_and_gradients_match_the_reference() {
    pearl_fixture::check_against_reference();
}

#[test]
fn qwen3_losses_embeddings_and_gradients_match_the_reference() {
    pearl_fixture::check_against_reference_in(&qwen3_fixture_dir());
}
