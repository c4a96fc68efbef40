//! A model directory ready to chat: weights (with an optional PEFT adapter merged in), processor
//! and stop tokens. It is the real model behind `pearl eval`, `pearl generate` and `pearl serve`.

use super::generate::{GenerateOptions, generate_streaming};
use super::sampling::Sampling;
use super::stop::stop_tokens;
use crate::data::chat::Message;
use crate::eval::answerer::{ChatModel, Generation};
use crate::model::Vlm;
use crate::model::precision::Precision;
use crate::peft::lora::{load_peft_adapter, merge_lora};
use crate::processor::{EncodedBatch, Processor};
use anyhow::Context;
use burn::tensor::Device;
use std::path::Path;
use std::time::Instant;

pub struct LocalModel {
    pub model: Vlm,
    pub processor: Processor,
    pub stop_tokens: Vec<u32>,
    /// How [`ChatModel::generate`] chooses tokens (greedy unless set otherwise).
    pub sampling: Sampling,
}

/// The weights of a hub-layout model directory, with the PEFT adapter (if any) merged in, stored
/// in `precision`: what every command that runs a model (eval, generate, serve, inspect forward)
/// computes with.
pub fn load_for_inference(
    model_dir: &Path,
    adapter: Option<&Path>,
    device: &Device,
    precision: Precision,
) -> anyhow::Result<Vlm> {
    let mut model = Vlm::from_dir_in(model_dir, device, precision)?;
    if let Some(dir) = adapter {
        model = merge_lora(load_peft_adapter(model, dir)?).for_inference(precision)?;
    }
    Ok(model)
}

impl LocalModel {
    /// Loads a hub-layout model directory and, if given, a PEFT LoRA adapter, which is merged
    /// into the weights: inference then costs what the base model costs. Weights are stored in
    /// `precision` as they are read (a merged weight is summed in f32, then stored so too).
    pub fn load(
        model_dir: &Path,
        adapter: Option<&Path>,
        device: &Device,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        let processor = Processor::from_dir(model_dir)
            .with_context(|| format!("cannot load the processor of {}", model_dir.display()))?;
        let model = load_for_inference(model_dir, adapter, device, precision)?;
        let stops = stop_tokens(model_dir, &processor.tokenizer)?;
        Ok(Self::new(model, processor, stops))
    }

    pub fn new(model: Vlm, processor: Processor, stop_tokens: Vec<u32>) -> Self {
        Self {
            model,
            processor,
            stop_tokens,
            sampling: Sampling::greedy(),
        }
    }

    /// Tokenizes chats (generation prompt added) and preprocesses their images. Image references
    /// must be absolute paths or `data:` URIs (the `ChatModel` contract).
    pub fn encode(&self, chats: &[Vec<Message>]) -> anyhow::Result<EncodedBatch> {
        self.processor
            .encode(chats, &vec![true; chats.len()], Path::new("/"))
    }

    /// Completes an encoded batch; `on_token(prompt, token)` sees each token as it is chosen and
    /// may end that prompt by returning `false`.
    pub fn complete(
        &self,
        enc: &EncodedBatch,
        max_new_tokens: usize,
        sampling: Sampling,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> anyhow::Result<Vec<Generation>> {
        let started = Instant::now();
        let opts = GenerateOptions {
            max_new_tokens,
            sampling,
            stop_tokens: self.stop_tokens.clone(),
        };
        let out = generate_streaming(&self.model, &enc.to_vl(), &opts, on_token)?;
        let seconds = started.elapsed().as_secs_f64();
        let image_pad = i64::from(self.processor.tokenizer.special().image_pad);
        out.sequences
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let row = &enc.input_ids[i * enc.seq_len..i * enc.seq_len + enc.lengths[i]];
                Ok(Generation {
                    text: self.decode_answer(&g.tokens)?,
                    new_tokens: g.tokens.len(),
                    prompt_tokens: enc.lengths[i],
                    image_tokens: row.iter().filter(|&&t| t == image_pad).count(),
                    seconds,
                })
            })
            .collect()
    }

    /// The text of generated tokens: a final stop token dropped, special tokens skipped.
    pub fn decode_answer(&self, tokens: &[u32]) -> anyhow::Result<String> {
        let body = match tokens.split_last() {
            Some((last, rest)) if self.stop_tokens.contains(last) => rest,
            _ => tokens,
        };
        self.processor.tokenizer.decode(body, true)
    }
}

impl ChatModel for LocalModel {
    fn generate(
        &mut self,
        chats: &[Vec<Message>],
        max_new_tokens: usize,
    ) -> anyhow::Result<Vec<Generation>> {
        let started = Instant::now();
        let enc = self.encode(chats)?;
        let encode_seconds = started.elapsed().as_secs_f64();
        let mut gens = self.complete(&enc, max_new_tokens, self.sampling, &mut |_, _| true)?;
        // What the user of this batch waited for includes tokenizing and image preprocessing.
        for g in &mut gens {
            g.seconds += encode_seconds;
        }
        Ok(gens)
    }
}
