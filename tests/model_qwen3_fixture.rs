//! The Rust Qwen3-VL reproduces transformers 5 on the tiny fixture: image embeddings, DeepStack
//! features, M-RoPE positions, every hidden state (transformers 5's convention: layer outputs
//! before DeepStack, the last one after the final norm) and the logits, for one image, a padded
//! batch with three images (a tool-use trajectory) and text only. Inputs are the fixture's own
//! token ids and pixel values, so this isolates the model from the processor.

mod common;
use common::*;

fn check_qwen3_forward(name: &str) {
    check_forward_in(&qwen3_fixture_dir(), name);
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
