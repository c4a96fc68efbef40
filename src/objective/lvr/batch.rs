//! Tokens, labels and latent slots of a batch of LVR examples.
//!
//! Per example: I0 is loaded and preprocessed once, its grid gives the region's merged tokens
//! (`region`), and the chat gets exactly that many `<|lvr_latent|>` slots, as in LVR's training,
//! where the number of latent tokens equals the crop's number of image tokens.
//!
//! Labels: the answer and the `<|im_end|>\n` that closes the turn. `<|lvr_start|>`, the latent
//! slots and `<|lvr_end|>` are not supervised by cross-entropy: at inference the decoder writes
//! them itself (it appends `<|lvr_start|>` to the prompt, decodes a fixed number of latent steps,
//! then appends `<|lvr_end|>`), so the model never has to predict them.

use super::example::LvrExample;
use super::region::region_tokens;
use crate::model::qwen2_5_vl::VlBatch;
use crate::objective::Supervise;
use crate::objective::views::{TurnTokens, assistant_labels};
use crate::processor::tokenizer::{LVR_END, LVR_LATENT, LVR_START};
use crate::processor::{ProcessedImage, Processor, pad_right};
use anyhow::{Context, Result, ensure};

#[derive(Debug, Clone)]
pub struct LvrBatch {
    pub ids: Vec<String>,
    /// Right-padded chats with the pixels of their images.
    pub tokens: VlBatch,
    /// `[batch * seq_len]` next-token targets, `-100` where not supervised (HF convention:
    /// `labels[t]` is the token at `t`, predicted from position `t - 1`).
    pub labels: Vec<i64>,
    /// Flat positions `b * seq_len + t` of every latent slot, example by example, in order.
    pub latent_positions: Vec<usize>,
    /// For each latent slot, the row of the batch's image embeddings (all images, in order)
    /// that is its region token: the slot's teacher-forced input and its predecessor's target.
    pub latent_rows: Vec<usize>,
    /// Latent slots of each example (= the number of its region tokens).
    pub latents: Vec<usize>,
}

impl LvrBatch {
    /// Builds the batch. The tokenizer must hold LVR's tokens (`add_lvr_tokens`).
    pub fn build(processor: &Processor, examples: &[LvrExample]) -> Result<Self> {
        ensure!(!examples.is_empty(), "cannot build an empty batch");
        let tok = &processor.tokenizer;
        let id_of = |t: &str| -> Result<i64> {
            Ok(i64::from(tok.token_id(t).with_context(|| {
                format!("the tokenizer has no {t}: add LVR's tokens before building batches")
            })?))
        };
        let (start, end, latent) = (id_of(LVR_START)?, id_of(LVR_END)?, id_of(LVR_LATENT)?);
        let turns = TurnTokens::of(tok)?;
        let merge = processor.image.merge_size;
        let patch = processor.image.patch_size;

        let mut sequences = Vec::with_capacity(examples.len());
        let mut regions = Vec::with_capacity(examples.len());
        let mut first_row = Vec::with_capacity(examples.len());
        let mut rows_so_far = 0;
        let mut pixel_values = Vec::new();
        let mut grids = Vec::new();
        for ex in examples {
            let ctx = || format!("example {:?}", ex.id);
            let images: Vec<ProcessedImage> = ex
                .prompt
                .iter()
                .flat_map(|m| m.images())
                .map(|r| processor.load_image(r, &ex.base_dir))
                .collect::<Result<_>>()
                .with_context(ctx)?;
            let i0 = images
                .first()
                .with_context(|| format!("{}: the prompt has no image", ctx()))?;
            let region = region_tokens(i0.grid_thw, merge, patch, ex.bbox).with_context(ctx)?;
            let text = processor.render(&ex.chat(region.len()), false)?;
            let ids = processor
                .encode_text_with_images(&text, &images)
                .with_context(ctx)?;
            let slots = ids.iter().filter(|&&t| i64::from(t) == latent).count();
            ensure!(
                slots == region.len(),
                "{}: {slots} latent slots in the tokens for {} region tokens",
                ctx(),
                region.len()
            );
            sequences.push(ids);
            regions.push(region);
            first_row.push(rows_so_far);
            for img in images {
                rows_so_far += processor.image.num_image_tokens(img.grid_thw);
                pixel_values.extend_from_slice(&img.pixel_values);
                grids.push(img.grid_thw);
            }
        }

        let enc = pad_right(
            &sequences,
            tok.pad_id(),
            pixel_values,
            processor.image.patch_dim(),
            grids,
        );
        let seq = enc.seq_len;
        let mut labels = Vec::with_capacity(enc.batch * seq);
        let mut latent_positions = Vec::new();
        let mut latent_rows = Vec::new();
        for (b, region) in regions.iter().enumerate() {
            let row = &enc.input_ids[b * seq..b * seq + enc.lengths[b]];
            let mut l = assistant_labels(row, &turns, Supervise::LastAssistant);
            for (label, &id) in l.iter_mut().zip(row) {
                if id == start || id == end || id == latent {
                    *label = -100;
                }
            }
            ensure!(
                l.iter().any(|&x| x != -100),
                "example {:?}: no answer tokens to supervise",
                examples[b].id
            );
            l.resize(seq, -100);
            labels.extend(l);
            let slots = (0..row.len()).filter(|&t| row[t] == latent);
            latent_positions.extend(slots.map(|t| b * seq + t));
            latent_rows.extend(region.iter().map(|&r| first_row[b] + r));
        }
        Ok(Self {
            ids: examples.iter().map(|e| e.id.clone()).collect(),
            tokens: VlBatch::from(enc),
            labels,
            latent_positions,
            latent_rows,
            latents: regions.iter().map(Vec::len).collect(),
        })
    }
}
