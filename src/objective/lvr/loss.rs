//! The LVR objective on one batch: `L = L_text + latent_weight * L_latent`.
//!
//! Teacher forcing (LVR's convention, which makes training match latent decoding): with region
//! tokens `z_1..z_N` (rows of I0's image embeddings, in the merger's row-major order) the
//! assistant turn is `<|lvr_start|> s_1 .. s_N <|lvr_end|> answer`, and
//! - the input embedding at slot `s_i` is `z_i` itself (in place of the placeholder token's);
//! - the final hidden state at the position before `s_i` (`<|lvr_start|>` for `s_1`, else
//!   `s_{i-1}`) regresses `sg[z_i]` with MSE (mean over slots and features, all slots of the batch
//!   pooled, as LVR's `MSELoss` over the selected rows);
//! - the hidden state at `s_N` regresses nothing.
//!
//! So each hidden state learns to be the next region embedding, which is exactly what decoding
//! feeds back: the hidden state at `<|lvr_start|>` becomes the first latent input, and so on.
//! The inputs `z_i` keep their gradient (they are the same image embeddings the prompt's image
//! tokens carry); only the targets are detached.

use super::LvrConfig;
use super::batch::LvrBatch;
use crate::kernels::tensor::index_tensor;
use crate::model::Vlm;
use crate::model::precision::in_f32;
use crate::objective::sft::{next_tokens, rows, vlm_loss};
use anyhow::{Result, bail, ensure};
use burn::nn::loss::{MseLoss, Reduction};
use burn::tensor::Tensor;

pub struct LvrLosses {
    /// The scalar to differentiate.
    pub total: Tensor<1>,
    /// Cross-entropy on the answer tokens.
    pub text: f64,
    /// MSE of the latent predictions against the region embeddings.
    pub latent: f64,
    /// Latent slots in the batch.
    pub latents: usize,
}

fn value(t: &Tensor<1>) -> f64 {
    f64::from(t.clone().into_scalar::<f32>())
}

pub fn lvr_losses(model: &Vlm, batch: &LvrBatch, cfg: &LvrConfig) -> Result<LvrLosses> {
    cfg.validate()?;
    let tokens = &batch.tokens;
    let vocab = model.vocab_size() as i64;
    if let Some(&bad) = tokens.input_ids.iter().find(|&&t| t < 0 || t >= vocab) {
        bail!(
            "token id {bad} is outside the model's vocabulary ({vocab} rows): grow the embeddings for LVR's tokens first"
        );
    }
    ensure!(
        !tokens.image_grid_thw.is_empty(),
        "the batch has no images to reconstruct"
    );
    ensure!(
        !batch.latent_positions.is_empty()
            && batch.latent_positions.len() == batch.latent_rows.len(),
        "the batch has {} latent slots for {} region rows",
        batch.latent_positions.len(),
        batch.latent_rows.len()
    );
    let device = model.device();
    let images = model.encode_images(&tokens.pixel_values, &tokens.image_grid_thw)?;
    let region = images
        .embeds
        .clone()
        .select(0, index_tensor(&batch.latent_rows, &device));
    let x = model.embed(tokens, Some(&images))?;
    let x = place_rows(x, &batch.latent_positions, region.clone());
    let hidden = model.decode(x, tokens, Some(&images), false)?.last_hidden;

    let next = next_tokens(&batch.labels, tokens.batch, tokens.seq_len);
    ensure!(
        !next.positions.is_empty(),
        "the batch has no supervised tokens"
    );
    let text = vlm_loss(model, &hidden, &next);
    let before: Vec<usize> = batch.latent_positions.iter().map(|&p| p - 1).collect();
    let predicted = rows(&hidden, &before);
    let latent =
        MseLoss::new().forward(in_f32(predicted), in_f32(region.detach()), Reduction::Mean);
    let total = text.clone() + latent.clone().mul_scalar(cfg.latent_weight);
    Ok(LvrLosses {
        total,
        text: value(&text),
        latent: value(&latent),
        latents: batch.latent_positions.len(),
    })
}

/// `x: [batch, seq, d]` with the rows at flat positions `at` replaced by `values: [at.len(), d]`
/// (one gather over [x; values], so gradients reach both).
pub fn place_rows(x: Tensor<3>, at: &[usize], values: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let mut index: Vec<usize> = (0..b * s).collect();
    for (k, &p) in at.iter().enumerate() {
        index[p] = b * s + k;
    }
    let device = x.device();
    Tensor::cat(vec![x.reshape([b * s, d]), values], 0)
        .select(0, index_tensor(&index, &device))
        .reshape([b, s, d])
}
