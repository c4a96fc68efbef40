//! The processor against the reference tensors transformers computed for the tiny Qwen2.5-VL and
//! Qwen3-VL fixtures: rendered text (each model's own chat template), token ids, masks, image
//! grids and pixel values (Qwen3-VL: 16-pixel patches, a total-pixel budget from `size`, mean and
//! std 0.5), and the ids the Pearl tokens receive.

use anyhow::{Context, Result};
use pearl::data::chat::Message;
use pearl::processor::Processor;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny")
}

fn qwen3_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen3_vl_tiny")
}

#[derive(Deserialize)]
struct ForwardCase {
    conversations: Vec<Vec<Message>>,
    add_generation_prompt: Vec<bool>,
    rendered_text: Vec<String>,
}

struct Tensor {
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn tensor(st: &SafeTensors, name: &str) -> Result<Tensor> {
    let view = st
        .tensor(name)
        .with_context(|| format!("missing tensor {name}"))?;
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        other => anyhow::bail!("{name}: unexpected dtype {other:?}"),
    };
    Ok(Tensor {
        shape: view.shape().to_vec(),
        values,
    })
}

/// Runs one `expected/forward_*` case and compares everything the processor produces.
fn check_case(processor: &Processor, name: &str) -> Result<()> {
    check_case_in(&fixture(), processor, name)
}

/// [`check_case`] for the fixture in `fixture`.
fn check_case_in(fixture: &Path, processor: &Processor, name: &str) -> Result<()> {
    let dir = fixture.join("expected");
    let case: ForwardCase =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json")))?)?;
    for (i, conv) in case.conversations.iter().enumerate() {
        let rendered = processor.render(conv, case.add_generation_prompt[i])?;
        assert_eq!(
            rendered, case.rendered_text[i],
            "{name}: rendered text of conversation {i}"
        );
    }

    let batch = processor.encode(&case.conversations, &case.add_generation_prompt, &dir)?;
    let bytes = std::fs::read(dir.join(format!("{name}.safetensors")))?;
    let st = SafeTensors::deserialize(&bytes)?;

    let ids = tensor(&st, "input_ids")?;
    assert_eq!(
        ids.shape,
        [batch.batch, batch.seq_len],
        "{name}: input_ids shape"
    );
    let ours: Vec<f64> = batch.input_ids.iter().map(|&v| v as f64).collect();
    assert_eq!(ours, ids.values, "{name}: input_ids");
    let mask = tensor(&st, "attention_mask")?;
    let ours: Vec<f64> = batch.attention_mask.iter().map(|&v| v as f64).collect();
    assert_eq!(ours, mask.values, "{name}: attention_mask");
    let lengths: Vec<usize> = mask
        .values
        .chunks(batch.seq_len)
        .map(|r| r.iter().sum::<f64>() as usize)
        .collect();
    assert_eq!(batch.lengths, lengths, "{name}: lengths");

    if st.names().contains(&"pixel_values") {
        let grid = tensor(&st, "image_grid_thw")?;
        let ours: Vec<f64> = batch
            .image_grid_thw
            .iter()
            .flatten()
            .map(|&v| v as f64)
            .collect();
        assert_eq!(ours, grid.values, "{name}: image_grid_thw");

        let pixels = tensor(&st, "pixel_values")?;
        assert_eq!(
            pixels.shape,
            [batch.num_patches(), batch.patch_dim],
            "{name}: pixel_values shape"
        );
        let max_diff = batch
            .pixel_values
            .iter()
            .zip(&pixels.values)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        let n_diff = batch
            .pixel_values
            .iter()
            .zip(&pixels.values)
            .filter(|(a, b)| (f64::from(**a) - **b).abs() > 1e-5)
            .count();
        println!(
            "{name}: pixel_values max |diff| = {max_diff:e}, {n_diff} of {} differ",
            pixels.values.len()
        );
        assert!(
            max_diff < 1e-5,
            "{name}: pixel_values max |diff| = {max_diff}"
        );
    } else {
        assert!(
            batch.pixel_values.is_empty() && batch.image_grid_thw.is_empty(),
            "{name}: no images expected"
        );
    }
    Ok(())
}

#[test]
fn forward_single_matches_transformers() -> Result<()> {
    check_case(
        &Processor::from_dir(&fixture().join("model"))?,
        "forward_single",
    )
}

#[test]
fn forward_batch_matches_transformers() -> Result<()> {
    check_case(
        &Processor::from_dir(&fixture().join("model"))?,
        "forward_batch",
    )
}

#[test]
fn forward_text_only_matches_transformers() -> Result<()> {
    check_case(
        &Processor::from_dir(&fixture().join("model"))?,
        "forward_text_only",
    )
}

#[test]
fn pearl_tokens_get_the_reference_ids() -> Result<()> {
    check_pearl_tokens(&fixture())
}

#[test]
fn qwen3_pearl_tokens_get_the_reference_ids() -> Result<()> {
    // After Qwen3's four extra added tokens: `<|predictor_1|>` is 592 there.
    check_pearl_tokens(&qwen3_fixture())
}

#[test]
fn qwen3_forward_single_matches_transformers() -> Result<()> {
    let dir = qwen3_fixture();
    check_case_in(
        &dir,
        &Processor::from_dir(&dir.join("model"))?,
        "forward_single",
    )
}

#[test]
fn qwen3_forward_batch_matches_transformers() -> Result<()> {
    let dir = qwen3_fixture();
    check_case_in(
        &dir,
        &Processor::from_dir(&dir.join("model"))?,
        "forward_batch",
    )
}

#[test]
fn qwen3_forward_text_only_matches_transformers() -> Result<()> {
    let dir = qwen3_fixture();
    check_case_in(
        &dir,
        &Processor::from_dir(&dir.join("model"))?,
        "forward_text_only",
    )
}

/// The 14 Pearl tokens get the ids transformers gave them in the fixture in `fixture`.
fn check_pearl_tokens(fixture: &Path) -> Result<()> {
    let mut processor = Processor::from_dir(&fixture.join("model"))?;
    let loss: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        fixture.join("expected/pearl_loss.json"),
    )?)?;
    let expected = &loss["predictor_tokens"];
    let before = processor.tokenizer.vocab_size();
    let ids = processor.tokenizer.add_pearl_tokens();
    assert_eq!(ids.len(), 14);
    assert_eq!(processor.tokenizer.vocab_size(), before + 14);
    let tokens = pearl::processor::tokenizer::pearl_tokens();
    assert_eq!(expected.as_object().map(|o| o.len()), Some(tokens.len()));
    for (tok, id) in tokens.iter().zip(&ids) {
        let want = expected
            .get(tok)
            .and_then(|v| v.as_u64())
            .with_context(|| format!("{tok} not in fixture"))?;
        assert_eq!(u64::from(*id), want, "id of {tok}");
    }
    // Adding again changes nothing.
    assert_eq!(processor.tokenizer.add_pearl_tokens(), ids);
    assert_eq!(processor.tokenizer.vocab_size(), before + 14);
    // The added tokens are single special tokens when they appear in text.
    let text = format!("a{}{}b", "<|predictor_2|>", "<|perception|>");
    let enc = processor.tokenizer.encode(&text)?;
    assert!(enc.contains(&ids[1]) && enc.contains(&ids[13]), "{enc:?}");
    Ok(())
}
