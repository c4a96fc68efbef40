//! Interleaved M-RoPE of Qwen3-VL: the `head_dim / 2` frequencies cycle through the streams
//! T H W T H W ..., each of H and W stopping after its `mrope_section` share (the rest is T), where
//! Qwen2.5-VL gave each stream one contiguous block. Positions and the vision rotary are shared
//! ([`crate::model::rope`]).

/// Stream of each frequency `i`: H if `i % 3 == 1 && i < 3 * section[1]`, W if `i % 3 == 2 &&
/// i < 3 * section[2]`, else T (transformers' `apply_interleaved_mrope`).
pub fn mrope_streams(mrope_section: &[usize]) -> Vec<usize> {
    let half: usize = mrope_section.iter().sum();
    (0..half)
        .map(|i| match i % 3 {
            1 if i < 3 * mrope_section[1] => 1,
            2 if i < 3 * mrope_section[2] => 2,
            _ => 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_interleave_until_each_section_is_used() {
        // The fixture's [6, 5, 5]: T H W repeated five times, then the sixth T.
        let s = mrope_streams(&[6, 5, 5]);
        assert_eq!(s, vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
        // Published [24, 20, 20]: H and W stop at 60 and the last four frequencies are T.
        let s = mrope_streams(&[24, 20, 20]);
        assert_eq!(s.len(), 64);
        assert_eq!(&s[57..], &[0, 1, 2, 0, 0, 0, 0]);
        for stream in 0..3 {
            let n = s.iter().filter(|&&x| x == stream).count();
            assert_eq!(n, [24, 20, 20][stream]);
        }
    }
}
