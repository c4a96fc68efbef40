//! Autoregressive generation with the KV cache: one prefill pass over the prompt batch fills the
//! cache, then each step feeds only the newly chosen tokens.
//!
//! Batches come right-padded from the processor and stay that way: a new token is appended after
//! the padding, and what makes that exact is that attention ignores where a key sits in the
//! cache: only its M-RoPE position (set explicitly: unpadded length + `rope_deltas` + step) and
//! the key mask (padding masked out) matter. So a sequence decodes the same alone or in a batch.
//! Sequences that finish are dropped from the cache, so the batch shrinks instead of carrying
//! dead rows.

use super::sampling::{Sampler, Sampling};
use crate::kernels::tensor::index_tensor;
use crate::model::decoder::KvCache;
use crate::model::{VlBatch, Vlm};
use anyhow::{anyhow, ensure};
use burn::tensor::{Int, Tensor, TensorData};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// A sequence ends when it produces one of these (the stop token is kept in its tokens).
    pub stop_tokens: Vec<u32>,
}

/// The tokens one prompt produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    /// Ended by a stop token (rather than the budget or the caller).
    pub stopped: bool,
}

/// Wall times of one `generate` call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    /// Time to first token: vision tower, prefill, and choosing the first tokens.
    pub first_token_seconds: f64,
    /// Each later step (one forward over the new tokens plus choosing), in order.
    pub step_seconds: Vec<f64>,
}

impl Timing {
    pub fn total_seconds(&self) -> f64 {
        self.first_token_seconds + self.step_seconds.iter().sum::<f64>()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateOutput {
    /// One per prompt of the batch, in order.
    pub sequences: Vec<Generated>,
    pub timing: Timing,
}

/// Generates for every prompt of `batch`.
pub fn generate(
    model: &Vlm,
    batch: &VlBatch,
    opts: &GenerateOptions,
) -> anyhow::Result<GenerateOutput> {
    generate_streaming(model, batch, opts, &mut |_, _| true)
}

/// Like [`generate`], calling `on_token(prompt, token)` as each token is chosen; returning `false`
/// ends that prompt's generation (a streaming client that went away).
pub fn generate_streaming(
    model: &Vlm,
    batch: &VlBatch,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> anyhow::Result<GenerateOutput> {
    let started = Instant::now();
    let (b, s) = (batch.batch, batch.seq_len);
    ensure!(b > 0, "cannot generate for an empty batch");
    ensure!(
        batch.input_ids.len() == b * s && batch.attention_mask.len() == b * s,
        "batch of {b} x {s} tokens has {} ids and {} mask values",
        batch.input_ids.len(),
        batch.attention_mask.len()
    );
    let mut sampler = Sampler::new(opts.sampling, b)?;
    let mut out: Vec<Generated> = vec![Generated::default(); b];
    if opts.max_new_tokens == 0 {
        return Ok(GenerateOutput {
            sequences: out,
            timing: Timing::default(),
        });
    }
    // The last real token of each row: its logits choose the first new token.
    let last: Vec<usize> = (0..b)
        .map(|r| {
            (0..s)
                .rev()
                .find(|&i| batch.attention_mask[r * s + i] != 0)
                .map(|i| r * s + i)
                .ok_or_else(|| anyhow!("prompt {r} of the batch is empty"))
        })
        .collect::<anyhow::Result<_>>()?;

    // Prefill: the whole prompt through the decoder, filling the cache.
    let device = model.device();
    let images = match batch.image_grid_thw.is_empty() {
        true => None,
        false => Some(model.encode_images(&batch.pixel_values, &batch.image_grid_thw)?),
    };
    let x = model.embed(batch, images.as_ref())?;
    let d = x.dims()[2];
    let mut cache = KvCache::new(model.num_layers());
    let decoded = model.decode_cached(x, batch, images.as_ref(), false, Some(&mut cache))?;
    let (hidden, deltas) = (decoded.last_hidden, decoded.rope_deltas);
    let hidden = hidden
        .reshape([b * s, d])
        .select(0, index_tensor(&last, &device));
    let mut logits = host_rows(model.logits(hidden))?;

    // Per prompt: its key mask (grows by one per step) and the M-RoPE position of its next token.
    let mut key_mask: Vec<Vec<i64>> = batch
        .attention_mask
        .chunks(s)
        .map(<[i64]>::to_vec)
        .collect();
    let mut next_pos: Vec<i64> = batch
        .lengths()
        .iter()
        .zip(&deltas)
        .map(|(&len, &delta)| len as i64 + delta)
        .collect();
    // Prompts still generating, in the order of the cache's rows.
    let mut active: Vec<usize> = (0..b).collect();
    let mut timing = Timing::default();
    let mut step_started = started;
    let mut first_step = true;
    loop {
        let mut chosen = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (r, &p) in active.iter().enumerate() {
            let token = sampler.pick(p, &logits[r]);
            let seq = &mut out[p];
            seq.tokens.push(token);
            seq.stopped = opts.stop_tokens.contains(&token);
            let wanted = on_token(p, token);
            if wanted && !seq.stopped && seq.tokens.len() < opts.max_new_tokens {
                keep.push(r);
                chosen.push(token);
            }
        }
        let elapsed = step_started.elapsed().as_secs_f64();
        if first_step {
            timing.first_token_seconds = elapsed;
            first_step = false;
        } else {
            timing.step_seconds.push(elapsed);
        }
        step_started = Instant::now();
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache = keep_rows(cache, &keep, &device);
            active = keep.iter().map(|&r| active[r]).collect();
        }

        // One step: the chosen tokens at their positions, attending to the cache and themselves.
        let n = active.len();
        let ids: Vec<i64> = chosen.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &device);
        let x = model.embed_ids(ids);
        let mut step_pos = vec![0i64; 3 * n];
        for (r, &p) in active.iter().enumerate() {
            for c in 0..3 {
                step_pos[c * n + r] = next_pos[p];
            }
            next_pos[p] += 1;
            key_mask[p].push(1);
        }
        let mask: Vec<i64> = active.iter().flat_map(|&p| key_mask[p].clone()).collect();
        let hidden = model.decode_step(x, &step_pos, &mask, &mut cache);
        logits = host_rows(model.logits(hidden.reshape([n, d])))?;
    }
    Ok(GenerateOutput {
        sequences: out,
        timing,
    })
}

/// The cache restricted to the given batch rows.
fn keep_rows(cache: KvCache, rows: &[usize], device: &burn::tensor::Device) -> KvCache {
    let idx = index_tensor(rows, device);
    KvCache {
        layers: cache
            .layers
            .into_iter()
            .map(|l| l.map(|(k, v)| (k.select(0, idx.clone()), v.select(0, idx.clone()))))
            .collect(),
    }
}

/// `[rows, vocab]` logits as one host vector per row.
fn host_rows(logits: Tensor<2>) -> anyhow::Result<Vec<Vec<f32>>> {
    let [_, v] = logits.dims();
    let flat = logits
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow!("cannot read logits back: {e:?}"))?;
    Ok(flat.chunks(v).map(<[f32]>::to_vec).collect())
}
