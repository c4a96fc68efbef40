//! The Rust Qwen2.5-VL reproduces transformers on the tiny fixture: image embeddings, M-RoPE
//! positions, every hidden state and the logits, for one image, a padded batch with three images
//! (a tool-use trajectory), and text only. Inputs are the fixture's own token ids and pixel values,
//! so this isolates the model from the processor (tested in processor_fixture.rs).

mod common;
use common::*;

#[test]
fn forward_single_matches_transformers() {
    check_forward("forward_single");
}

#[test]
fn forward_batch_matches_transformers() {
    check_forward("forward_batch");
}

#[test]
fn forward_text_only_matches_transformers() {
    check_forward("forward_text_only");
}
