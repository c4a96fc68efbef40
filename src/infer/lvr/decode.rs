//! Latent decoding, step by step: prefill the prompt (which ends with `<|lvr_start|>`), feed the
//! last hidden state back as the next input embedding a fixed number of times, then feed
//! `<|lvr_end|>`; what follows is ordinary token decoding.
//!
//! Every fed item, latent or token, takes one sequence position: its M-RoPE position is the
//! previous one + 1 on all three streams (as for any text token after the prompt), exactly the
//! positions the latent slots have in training. Rows of a batch are right-padded: their prompts
//! end at different indices, so each row keeps its own next position and its padding stays
//! masked in `key_mask`.

use crate::kernels::tensor::index_tensor;
use crate::model::decoder::KvCache;
use crate::model::{VlBatch, Vlm};
use anyhow::{Result, ensure};
use burn::tensor::{Int, Tensor, TensorData};

/// The most latent steps decoding accepts (the paper's Figure 3 goes up to 128).
pub const MAX_LATENT_STEPS: usize = 128;

/// The state of a batch being decoded.
pub struct LatentDecoder<'a> {
    model: &'a Vlm,
    cache: KvCache,
    /// Per row: which cached keys are real tokens (prompt padding is 0).
    key_mask: Vec<Vec<i64>>,
    /// Per row: the M-RoPE position of the next fed item.
    next_position: Vec<i64>,
    /// Final hidden state of the last fed item of each row, `[batch, d]`.
    last_hidden: Tensor<2>,
    /// Latent steps fed so far.
    latent_steps: usize,
    /// The prompt batch's image embeddings `[rows, d]` (none without images).
    image_embeds: Option<Tensor<2>>,
}

impl<'a> LatentDecoder<'a> {
    /// Runs the prompt batch (images included) through the model, keeping its keys and values.
    pub fn prefill(model: &'a Vlm, prompt: &VlBatch) -> Result<Self> {
        let (b, s) = (prompt.batch, prompt.seq_len);
        let lengths = prompt.lengths();
        ensure!(
            lengths.iter().all(|&l| l > 0),
            "every prompt needs at least one token"
        );
        let images = if prompt.image_grid_thw.is_empty() {
            None
        } else {
            Some(model.encode_images(&prompt.pixel_values, &prompt.image_grid_thw)?)
        };
        let x = model.embed(prompt, images.as_ref())?;
        let mut cache = KvCache::new(model.num_layers());
        let decoded = model.decode_cached(x, prompt, images.as_ref(), false, Some(&mut cache))?;
        let (hidden, deltas) = (decoded.last_hidden, decoded.rope_deltas);
        let last: Vec<usize> = (0..b).map(|i| i * s + lengths[i] - 1).collect();
        let d = hidden.dims()[2];
        let last_hidden = hidden
            .reshape([b * s, d])
            .select(0, index_tensor(&last, &model.device()));
        Ok(Self {
            model,
            cache,
            key_mask: prompt
                .attention_mask
                .chunks(s.max(1))
                .map(<[i64]>::to_vec)
                .collect(),
            // `get_rope_index`'s delta: the next position is the unpadded length + delta.
            next_position: (0..b).map(|i| lengths[i] as i64 + deltas[i]).collect(),
            last_hidden,
            latent_steps: 0,
            image_embeds: images.map(|f| f.embeds),
        })
    }

    pub fn batch(&self) -> usize {
        self.key_mask.len()
    }

    /// Final hidden states `[batch, d]` of the last fed item.
    pub fn last_hidden(&self) -> &Tensor<2> {
        &self.last_hidden
    }

    /// Per row, the M-RoPE position the next fed item takes.
    pub fn next_positions(&self) -> &[i64] {
        &self.next_position
    }

    /// Latent steps fed so far.
    pub fn latent_steps(&self) -> usize {
        self.latent_steps
    }

    /// Feeds one input embedding per row, `[batch, d]`, at each row's next position.
    pub fn feed(&mut self, x: Tensor<2>) {
        let b = self.batch();
        let [_, d] = x.dims();
        let positions: Vec<i64> = (0..3).flat_map(|_| self.next_position.clone()).collect();
        for row in &mut self.key_mask {
            row.push(1);
        }
        let mask: Vec<i64> = self.key_mask.concat();
        let h = self
            .model
            .decode_step(x.reshape([b, 1, d]), &positions, &mask, &mut self.cache);
        self.last_hidden = h.reshape([b, d]);
        for p in &mut self.next_position {
            *p += 1;
        }
    }

    /// The prompt batch's image embeddings `[rows, d]`, in the order of its images.
    pub fn image_embeds(&self) -> Option<&Tensor<2>> {
        self.image_embeds.as_ref()
    }

    /// One latent step: the last hidden state becomes the next input embedding.
    pub fn latent_step(&mut self) {
        self.latent_step_with(self.last_hidden.clone());
    }

    /// One latent step that feeds `x` `[batch, d]` instead (the mediation test, `feed`).
    pub fn latent_step_with(&mut self, x: Tensor<2>) {
        self.feed(x);
        self.latent_steps += 1;
    }

    /// Feeds one token per row.
    pub fn feed_tokens(&mut self, ids: &[i64]) -> Result<()> {
        let b = self.batch();
        ensure!(ids.len() == b, "{} tokens for {b} rows", ids.len());
        let device = self.model.device();
        let t = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [b, 1]), &device);
        let x = self.model.embed_ids(t);
        let d = x.dims()[2];
        self.feed(x.reshape([b, d]));
        Ok(())
    }

    /// Logits `[batch, vocab]` of the token after the last fed item.
    pub fn logits(&self) -> Tensor<2> {
        self.model.logits(self.last_hidden.clone())
    }

    /// The greedy next token of each row.
    pub fn greedy(&self) -> Result<Vec<i64>> {
        let ids = self.logits().argmax(1).reshape([self.batch()]);
        ids.try_into_vec_as::<i64>()
            .map_err(|e| anyhow::anyhow!("cannot read the argmax: {e:?}"))
    }
}
