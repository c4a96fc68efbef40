//! Rotary position embeddings of Qwen2.5-VL: M-RoPE with contiguous `mrope_section` blocks of
//! frequencies (T | H | W); positions and the vision rotary are shared ([`crate::model::rope`]).

use super::config::TextConfig;
use burn::tensor::{Device, Tensor};

pub use crate::model::rope::{
    VisionTokens, mrope_position_ids, vision_cos_sin, vision_patch_coords,
};

/// Stream of each of the `head_dim / 2` frequencies: `mrope_section[0]` temporal, then
/// `mrope_section[1]` height, then `mrope_section[2]` width.
pub fn mrope_streams(cfg: &TextConfig) -> Vec<usize> {
    cfg.mrope_section
        .iter()
        .enumerate()
        .flat_map(|(stream, &len)| std::iter::repeat_n(stream, len))
        .collect()
}

/// cos/sin `[batch, 1, seq, head_dim]` of M-RoPE for position ids `[3, batch, seq]`.
pub fn mrope_cos_sin(
    position_ids: &[i64],
    batch: usize,
    seq: usize,
    cfg: &TextConfig,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let streams = mrope_streams(cfg);
    crate::model::rope::mrope_cos_sin(position_ids, batch, seq, cfg.rope_theta, &streams, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_contiguous_blocks() {
        let mut cfg: TextConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 16, "intermediate_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 1, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "tie_word_embeddings": false,
            "hidden_act": "silu"
        }))
        .unwrap();
        assert_eq!(mrope_streams(&cfg), vec![0, 0, 1, 1, 1, 2, 2, 2]);
        cfg.mrope_section = vec![4, 2, 2];
        assert_eq!(mrope_streams(&cfg), vec![0, 0, 0, 0, 1, 1, 2, 2]);
    }
}
