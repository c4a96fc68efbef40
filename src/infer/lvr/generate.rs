//! Answering with an LVR model: the prompt gets `<|lvr_start|>` after the assistant header, a
//! fixed number of latent steps are decoded (the flag the paper's accuracy-vs-steps analysis
//! varies), `<|lvr_end|>` is fed, and the answer is decoded greedily as text.
//!
//! `Generation::new_tokens` counts the answer's tokens only (latent steps are not tokens, and the
//! two delimiters are written by the decoder, not generated); `prompt_tokens` includes the
//! appended `<|lvr_start|>`; `seconds` covers everything from preprocessing to the last answer
//! token, latent steps included (the batch's wall time, as the harness's contract says).

use super::decode::{LatentDecoder, MAX_LATENT_STEPS};
use super::feed::{FirstImage, LatentFeed, LatentInputs};
use crate::data::chat::{Message, Role};
use crate::eval::answerer::{ChatModel, Generation};
use crate::model::{VlBatch, Vlm};
use crate::processor::tokenizer::{LVR_END, LVR_START};
use crate::processor::{ProcessedImage, Processor, pad_right};
use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::time::Instant;

/// A batch of prompts ending with `<|lvr_start|>`.
#[derive(Debug, Clone)]
pub struct LvrPrompts {
    pub tokens: VlBatch,
    /// Per prompt: how many of its tokens are image tokens.
    pub image_tokens: Vec<usize>,
    /// Per prompt: its first image among the batch's image embeddings.
    pub first_images: Vec<FirstImage>,
}

/// Renders each chat (system / user turns, ending with a user turn that asks) with the generation
/// prompt and `<|lvr_start|>`, and loads its images. Image references must be absolute paths or
/// `data:` URIs (the evaluation harness's contract).
pub fn encode_prompts(processor: &Processor, chats: &[Vec<Message>]) -> Result<LvrPrompts> {
    ensure!(!chats.is_empty(), "no chats to answer");
    processor.tokenizer.token_id(LVR_START).with_context(|| {
        format!("the tokenizer has no {LVR_START}: add LVR's tokens before decoding")
    })?;
    let mut sequences = Vec::with_capacity(chats.len());
    let mut image_tokens: Vec<usize> = Vec::with_capacity(chats.len());
    let mut first_images = Vec::with_capacity(chats.len());
    let mut pixel_values = Vec::new();
    let mut grids = Vec::new();
    for (i, chat) in chats.iter().enumerate() {
        let ctx = || format!("chat {i}");
        match chat.last() {
            Some(m) if m.role == Role::User => {}
            Some(m) => bail!(
                "{}: it ends with a {} turn; LVR decoding answers a user turn",
                ctx(),
                m.role.as_str()
            ),
            None => bail!("{}: it is empty", ctx()),
        }
        let images: Vec<ProcessedImage> = chat
            .iter()
            .flat_map(Message::images)
            .map(|r| processor.load_image(r, Path::new("/")))
            .collect::<Result<_>>()
            .with_context(ctx)?;
        ensure!(
            !images.is_empty(),
            "{}: it has no image, and LVR's latent steps reconstruct a region of one",
            ctx()
        );
        let text = processor.render(chat, true).with_context(ctx)? + LVR_START;
        let ids = processor
            .encode_text_with_images(&text, &images)
            .with_context(ctx)?;
        first_images.push(FirstImage {
            reference: chat
                .iter()
                .flat_map(Message::images)
                .next()
                .unwrap_or_default()
                .to_string(),
            first_row: image_tokens.iter().sum(),
            grid_thw: images[0].grid_thw,
        });
        image_tokens.push(
            images
                .iter()
                .map(|img| processor.image.num_image_tokens(img.grid_thw))
                .sum(),
        );
        sequences.push(ids);
        for img in images {
            pixel_values.extend_from_slice(&img.pixel_values);
            grids.push(img.grid_thw);
        }
    }
    let enc = pad_right(
        &sequences,
        processor.tokenizer.pad_id(),
        pixel_values,
        processor.image.patch_dim(),
        grids,
    );
    Ok(LvrPrompts {
        tokens: VlBatch::from(enc),
        image_tokens,
        first_images,
    })
}

/// Greedy LVR answers to `chats`: `latent_steps` latent steps (0..=128), then at most
/// `max_new_tokens` answer tokens, stopping at `<|im_end|>` or `<|endoftext|>`.
pub fn lvr_generate(
    model: &Vlm,
    processor: &Processor,
    chats: &[Vec<Message>],
    latent_steps: usize,
    max_new_tokens: usize,
) -> Result<Vec<Generation>> {
    lvr_generate_with(
        model,
        processor,
        chats,
        latent_steps,
        max_new_tokens,
        &LatentFeed::Own,
    )
}

/// [`lvr_generate`] with the latent steps fed by `feed` (the mediation test).
pub fn lvr_generate_with(
    model: &Vlm,
    processor: &Processor,
    chats: &[Vec<Message>],
    latent_steps: usize,
    max_new_tokens: usize,
    feed: &LatentFeed,
) -> Result<Vec<Generation>> {
    ensure!(
        latent_steps <= MAX_LATENT_STEPS,
        "latent steps must be at most {MAX_LATENT_STEPS}, got {latent_steps}"
    );
    let started = Instant::now();
    let tok = &processor.tokenizer;
    let end = i64::from(tok.token_id(LVR_END).with_context(|| {
        format!("the tokenizer has no {LVR_END}: add LVR's tokens before decoding")
    })?);
    let special = tok.special();
    let stops = [i64::from(special.im_end), i64::from(special.end_of_text)];
    let prompts = encode_prompts(processor, chats)?;
    let vocab = model.vocab_size() as i64;
    if let Some(&bad) = prompts.tokens.input_ids.iter().find(|&&t| t >= vocab) {
        bail!(
            "token id {bad} is outside the model's vocabulary ({vocab} rows): grow the embeddings for LVR's tokens first"
        );
    }

    let b = chats.len();
    let mut dec = LatentDecoder::prefill(model, &prompts.tokens)?;
    let mut inputs = LatentInputs::new(
        feed,
        latent_steps,
        dec.image_embeds(),
        &prompts.first_images,
        processor.image.merge_size,
        processor.image.patch_size,
    )?;
    for step in 0..latent_steps {
        let x = inputs.input(step, dec.last_hidden())?;
        dec.latent_step_with(x);
    }
    dec.feed_tokens(&vec![end; b])?;
    let mut answers: Vec<Vec<i64>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for step in 0..max_new_tokens {
        let next = dec.greedy()?;
        for (r, &t) in next.iter().enumerate() {
            if !done[r] {
                answers[r].push(t);
                done[r] = stops.contains(&t);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new_tokens {
            break;
        }
        // Finished rows keep decoding; their tokens are ignored and only they attend to them.
        dec.feed_tokens(&next)?;
    }

    let seconds = started.elapsed().as_secs_f64();
    let lengths = prompts.tokens.lengths();
    answers
        .into_iter()
        .enumerate()
        .map(|(r, ids)| {
            let ids: Vec<u32> = ids
                .iter()
                .map(|&t| u32::try_from(t).context("negative token id"))
                .collect::<Result<_>>()?;
            Ok(Generation {
                text: tok.decode(&ids, true)?,
                new_tokens: ids.len(),
                prompt_tokens: lengths[r],
                image_tokens: prompts.image_tokens[r],
                seconds,
            })
        })
        .collect()
}

/// An LVR model for the evaluation harness.
pub struct LvrChatModel {
    pub model: Vlm,
    /// Holds LVR's tokens.
    pub processor: Processor,
    pub latent_steps: usize,
    /// What the latent steps feed back (LVR's own hidden states unless testing mediation).
    pub feed: LatentFeed,
}

impl LvrChatModel {
    /// A model directory (plus an LVR-trained adapter, merged in) ready for latent decoding: the
    /// tokenizer gets Pearl's then LVR's tokens, as in training, and the embeddings grow the same
    /// way when the checkpoint has no rows for them.
    pub fn load(
        model_dir: &std::path::Path,
        adapter: Option<&std::path::Path>,
        latent_steps: usize,
        device: &burn::tensor::Device,
        precision: crate::model::precision::Precision,
    ) -> Result<Self> {
        anyhow::ensure!(
            latent_steps <= super::MAX_LATENT_STEPS,
            "at most {} latent steps, got {latent_steps}",
            super::MAX_LATENT_STEPS
        );
        let mut processor = Processor::from_dir(model_dir)?;
        crate::objective::prepare_tokenizer(
            &mut processor.tokenizer,
            crate::objective::Method::Lvr(&crate::objective::lvr::LvrConfig::default()),
        );
        let mut model = Vlm::from_dir_in(model_dir, device, precision)?;
        model.ensure_vocab(processor.tokenizer.vocab_size());
        if let Some(dir) = adapter {
            model =
                crate::peft::lora::merge_lora(crate::peft::lora::load_peft_adapter(model, dir)?)
                    .for_inference(precision)?;
        }
        Ok(Self {
            model,
            processor,
            latent_steps,
            feed: LatentFeed::Own,
        })
    }
}

impl ChatModel for LvrChatModel {
    fn generate(
        &mut self,
        chats: &[Vec<Message>],
        max_new_tokens: usize,
    ) -> Result<Vec<Generation>> {
        lvr_generate_with(
            &self.model,
            &self.processor,
            chats,
            self.latent_steps,
            max_new_tokens,
            &self.feed,
        )
    }
}
