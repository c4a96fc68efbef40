//! A batch as the models take it (right-padded token ids with their images, as host data) and the
//! placement of image features at the image-token positions.

use crate::kernels::tensor::index_tensor;
use burn::tensor::Tensor;

/// A right-padded batch of token sequences with their images, as plain host data.
#[derive(Debug, Clone, Default)]
pub struct VlBatch {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
    /// `[patches, C*T*P*P]` row-major, all images of the batch in order of appearance.
    pub pixel_values: Vec<f32>,
    pub image_grid_thw: Vec<[usize; 3]>,
}

impl VlBatch {
    pub fn lengths(&self) -> Vec<usize> {
        (0..self.batch)
            .map(|b| {
                self.attention_mask[b * self.seq_len..(b + 1) * self.seq_len]
                    .iter()
                    .filter(|&&m| m != 0)
                    .count()
            })
            .collect()
    }
}

/// What the decoder returns for a batch.
#[derive(Debug)]
pub struct Decoded {
    /// Final-norm hidden states `[batch, seq, d]` (what the head reads).
    pub last_hidden: Tensor<3>,
    /// The last layer's output `[batch, seq, d]` before the final norm (see
    /// [`crate::model::decoder::HiddenStates`]).
    pub pre_norm: Tensor<3>,
    /// transformers 5's `hidden_states` (only when asked for).
    pub hidden_states: Vec<Tensor<3>>,
    /// `[3, batch, seq]` M-RoPE positions and the per-sequence decoding offsets.
    pub position_ids: Vec<i64>,
    pub rope_deltas: Vec<i64>,
}

pub struct VlOutput {
    /// Final-norm hidden states `[batch, seq, d]`.
    pub last_hidden: Tensor<3>,
    /// transformers' `hidden_states` (only when asked for): embeddings, each layer's output, final norm.
    pub hidden_states: Vec<Tensor<3>>,
    pub image_embeds: Option<Tensor<2>>,
    /// Qwen3-VL's DeepStack features `[image tokens, d]`, one per decoder layer that adds one
    /// (empty for families without DeepStack or batches without images).
    pub deepstack_features: Vec<Tensor<2>>,
    /// `[3, batch, seq]` M-RoPE positions and the per-sequence decoding offsets.
    pub position_ids: Vec<i64>,
    pub rope_deltas: Vec<i64>,
}

/// Positions (flat `batch * seq` indices) of the real (unpadded) tokens equal to `token_id`.
pub fn token_positions(input_ids: &[i64], attention_mask: &[i64], token_id: i64) -> Vec<usize> {
    (0..input_ids.len())
        .filter(|&i| input_ids[i] == token_id && attention_mask[i] != 0)
        .collect()
}

/// Token embeddings `x: [batch, seq, d]` with `features: [image tokens, d]` placed at the
/// image-token positions, in order (one gather over `[x; features]`, so gradients reach both).
/// A count mismatch, or image tokens without features, is an error.
pub fn place_image_features(
    x: Tensor<3>,
    input_ids: &[i64],
    attention_mask: &[i64],
    image_token_id: i64,
    features: Option<Tensor<2>>,
) -> anyhow::Result<Tensor<3>> {
    let [b, s, d] = x.dims();
    let image_pos = token_positions(input_ids, attention_mask, image_token_id);
    let Some(img) = features else {
        if !image_pos.is_empty() {
            anyhow::bail!(
                "the batch has {} image tokens but no images",
                image_pos.len()
            );
        }
        return Ok(x);
    };
    let n_img = img.dims()[0];
    if n_img != image_pos.len() {
        anyhow::bail!(
            "image features and image tokens do not match: {n_img} features, {} tokens",
            image_pos.len()
        );
    }
    let mut index: Vec<usize> = (0..b * s).collect();
    for (k, &p) in image_pos.iter().enumerate() {
        index[p] = b * s + k;
    }
    let img = crate::model::precision::cast(img, x.dtype());
    let device = x.device();
    let all = Tensor::cat(vec![x.reshape([b * s, d]), img], 0);
    Ok(all
        .select(0, index_tensor(&index, &device))
        .reshape([b, s, d]))
}
