//! Rotary position embeddings of Qwen2.5-VL: M-RoPE with contiguous `mrope_section` blocks of
//! frequencies (T | H | W); positions and the vision rotary are shared ([`crate::model::rope`]).

pub use crate::model::rope::{
    VisionTokens, mrope_position_ids, vision_cos_sin, vision_patch_coords,
};

/// Stream of each of the `head_dim / 2` frequencies: `mrope_section[0]` temporal, then
/// `mrope_section[1]` height, then `mrope_section[2]` width.
pub fn mrope_streams(mrope_section: &[usize]) -> Vec<usize> {
    mrope_section
        .iter()
        .enumerate()
        .flat_map(|(stream, &len)| std::iter::repeat_n(stream, len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_contiguous_blocks() {
        assert_eq!(mrope_streams(&[2, 3, 3]), vec![0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(mrope_streams(&[4, 2, 2]), vec![0, 0, 0, 0, 1, 1, 2, 2]);
    }
}
