//! Running a view as a continuation of the full view: the cheap way to get view embeddings.
//!
//! The input view (system + image + question + predictor tokens) and the trajectory view (system +
//! image + the rest of the chat) begin with tokens the full view already ran: same ids, same
//! images, same M-RoPE positions, and causal attention means same keys and values. So each view
//! runs only its own tokens after the longest prefix it shares with the full view, attending to
//! the full view's cached keys/values of that prefix. This is exactly the function the reference
//! computes by running each view from scratch (padded to the full length, in one big batch), at a
//! fraction of the cost: the input view costs its K predictor tokens plus `<|im_end|>\n`, and the
//! trajectory view skips the first image. Gradients reach the shared prefix through the cache.

use super::batch::ViewBatch;
use crate::kernels::attention::Mask;
use crate::kernels::tensor::index_tensor;
use crate::model::batch::token_positions;
use crate::model::decoder::{HiddenStates, KvCache};
use crate::model::rope::mrope_position_ids;
use crate::model::{ImageFeatures, VlBatch, Vlm};
use anyhow::{Result, ensure};
use burn::tensor::Tensor;

/// What the full view's forward pass leaves for its continuations.
pub struct FullContext<'a> {
    pub batch: &'a VlBatch,
    /// Every layer's keys/values of the full view, `[batch, kv_heads, seq_len, head_dim]`.
    pub cache: &'a KvCache,
    /// The full view's image features `[rows, d]` (all images of the batch, in order).
    pub images: Option<&'a ImageFeatures>,
}

impl FullContext<'_> {
    /// The same context detached from the autodiff graph, for a no-gradient continuation.
    pub fn without_autodiff(&self) -> (KvCache, Option<ImageFeatures>) {
        let cache = KvCache {
            layers: self
                .cache
                .layers
                .iter()
                .map(|l| {
                    l.as_ref()
                        .map(|(k, v)| (k.clone().without_autodiff(), v.clone().without_autodiff()))
                })
                .collect(),
        };
        let images = self.images.map(|f| ImageFeatures {
            embeds: f.embeds.clone().without_autodiff(),
            deepstack: f
                .deepstack
                .iter()
                .map(|t| t.clone().without_autodiff())
                .collect(),
        });
        (cache, images)
    }
}

/// Per example, the last-layer hidden state (`hidden_states[-1]` in `convention`) at index
/// `length - 2` of `view` (the `<|im_end|>` that closes it), `[batch, d]`.
pub fn view_embeddings(
    model: &Vlm,
    ctx: &FullContext<'_>,
    view: &ViewBatch,
    convention: HiddenStates,
) -> Result<Tensor<2>> {
    let (full, cache, images) = (ctx.batch, ctx.cache, ctx.images);
    let v = &view.tokens;
    let (b, sv, sf) = (v.batch, v.seq_len, full.seq_len);
    ensure!(b == full.batch, "view and full batch sizes differ");
    let len_v = v.lengths();
    let len_f = full.lengths();
    let image_id = model.image_token_id() as i64;

    // Shared prefix per example; the embedding position must be computed here, so stop before it.
    let shared: Vec<usize> = (0..b)
        .map(|i| {
            ensure!(len_v[i] >= 2, "view {i} has fewer than 2 tokens");
            let (rv, rf) = (&v.input_ids[i * sv..], &full.input_ids[i * sf..]);
            let common = (0..len_v[i].min(len_f[i]))
                .take_while(|&t| rv[t] == rf[t])
                .count();
            Ok(common.min(len_v[i] - 2))
        })
        .collect::<Result<_>>()?;
    let suffix: Vec<usize> = (0..b).map(|i| len_v[i] - shared[i]).collect();
    let l = suffix.iter().copied().max().unwrap_or(0);

    let (pos, _) = mrope_position_ids(
        &v.input_ids,
        &v.attention_mask,
        b,
        sv,
        &v.image_grid_thw,
        model.vision_tokens(),
    )?;
    let mut ids = vec![0i64; b * l];
    let mut mask = vec![0i64; b * l];
    let mut spos = vec![0i64; 3 * b * l];
    let mut rows = Vec::new();
    for i in 0..b {
        let row = &v.input_ids[i * sv..i * sv + len_v[i]];
        for t in 0..suffix[i] {
            ids[i * l + t] = row[shared[i] + t];
            mask[i * l + t] = 1;
            for c in 0..3 {
                spos[c * b * l + i * l + t] = pos[c * b * sv + i * sv + shared[i] + t];
            }
        }
        // Image tokens before the cut were consumed by the prefix; the rest fill the suffix.
        let used = row[..shared[i]].iter().filter(|&&t| t == image_id).count();
        let needed = row[shared[i]..].iter().filter(|&&t| t == image_id).count();
        ensure!(
            view.image_rows[i].len() == used + needed,
            "view {i}: {} image rows for {} image tokens",
            view.image_rows[i].len(),
            used + needed
        );
        rows.extend_from_slice(&view.image_rows[i][used..]);
    }
    let suffix_batch = VlBatch {
        input_ids: ids,
        attention_mask: mask.clone(),
        batch: b,
        seq_len: l,
        pixel_values: Vec::new(),
        image_grid_thw: Vec::new(),
    };
    let device = model.device();
    let img = match (rows.is_empty(), images) {
        (true, _) => None,
        (false, Some(f)) => Some(f.select(index_tensor(&rows, &device))),
        (false, None) => anyhow::bail!("the view has image tokens but the full view has no images"),
    };
    let x = model.embed(&suffix_batch, img.as_ref())?;
    let attn_mask = continuation_mask(&shared, &mask, b, l, sf);
    let mut cache = cache.clone();
    let image_pos = token_positions(&suffix_batch.input_ids, &mask, image_id);
    let images = img.as_ref().map(|f| (image_pos.as_slice(), f));
    let out = model.decode_continuation(x, &spos, &attn_mask, &mut cache, images);
    let hidden = model.last_hidden_state(out.last_hidden, out.pre_norm, convention);
    let d = hidden.dims()[2];
    let at: Vec<usize> = (0..b).map(|i| i * l + len_v[i] - 2 - shared[i]).collect();
    Ok(hidden
        .reshape([b * l, d])
        .select(0, index_tensor(&at, &device)))
}

/// Suffix query `t` of example `i` sees the full view's cached keys before `shared[i]`, and the
/// real suffix keys up to itself (`past` cached keys, `l` suffix keys per example).
fn continuation_mask(shared: &[usize], mask: &[i64], b: usize, l: usize, past: usize) -> Mask {
    let keys: Vec<i64> = (0..b)
        .flat_map(|i| {
            let cached = (0..past).map(move |j| i64::from(j < shared[i]));
            cached.chain(mask[i * l..(i + 1) * l].iter().copied())
        })
        .collect();
    Mask::causal(past, &keys)
}
