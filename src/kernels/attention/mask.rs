//! Which keys each query attends to, described by its structure (causal order, real keys) rather
//! than materialised as a `[q_len, k_len]` bias: blockwise attention builds only the bias of the
//! block it works on, so its memory stays linear in the sequence length.

use super::MASKED;
use burn::tensor::{Device, Tensor, TensorData};
use std::sync::{Arc, OnceLock};

/// An attention mask: a key is seen when it is real and (for a causal mask) not after the query.
/// One mask serves every head of every layer.
#[derive(Debug, Clone, Default)]
pub struct Mask {
    /// `Some(past)`: causal, query `i` (absolute position `past + i`, after `past` cached keys)
    /// sees keys `j <= past + i`. `None`: every query may see every key.
    pub causal: Option<usize>,
    /// `[batch * k_len]`, row-major: whether each key is a real token (`None`: all are).
    pub real_keys: Option<Arc<[bool]>>,
    /// The dense bias, built once for all the layers that take the fused CPU kernel.
    dense: Arc<OnceLock<Tensor<4>>>,
}

impl Mask {
    /// Every query sees every key.
    pub fn full() -> Self {
        Self::default()
    }

    /// Causal attention after `past` cached keys, over keys `key_mask: [batch, past + new]`
    /// (1 = a real token, 0 = padding or a key this query may not see).
    pub fn causal(past: usize, key_mask: &[i64]) -> Self {
        Self {
            causal: Some(past),
            real_keys: Self::keys(key_mask.iter().map(|&m| m != 0)),
            dense: Arc::default(),
        }
    }

    /// Sequences of a padded batch: sequence `s` has `lens[s]` real keys, then padding up to
    /// `k_len` (the vision tower's windows and images laid out as a batch).
    pub fn key_lengths(lens: &[usize], k_len: usize) -> Self {
        Self {
            causal: None,
            real_keys: Self::keys(lens.iter().flat_map(|&n| (0..k_len).map(move |j| j < n))),
            dense: Arc::default(),
        }
    }

    /// `None` when every key is real: the blocks then need no padding bias at all.
    fn keys(real: impl Iterator<Item = bool>) -> Option<Arc<[bool]>> {
        let real: Arc<[bool]> = real.collect();
        real.iter().any(|&r| !r).then_some(real)
    }

    /// The dense additive bias `[batch, 1, q_len, k_len]` (0 or [`MASKED`]), for the fused CPU
    /// kernel and as the reference of the tests.
    pub fn bias(&self, batch: usize, q_len: usize, k_len: usize, device: &Device) -> Tensor<4> {
        let mut bias = vec![0f32; batch * q_len * k_len];
        for (bi, rows) in bias.chunks_mut(q_len * k_len).enumerate() {
            for (i, row) in rows.chunks_mut(k_len).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    if !self.sees(bi, i, j, k_len) {
                        *x = MASKED;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(bias, [batch, 1, q_len, k_len]), device)
    }

    /// [`Mask::bias`], built on the first call and shared by the later ones (every layer asks).
    pub(super) fn dense_bias(
        &self,
        batch: usize,
        q_len: usize,
        k_len: usize,
        device: &Device,
    ) -> Tensor<4> {
        let cached = self
            .dense
            .get_or_init(|| self.bias(batch, q_len, k_len, device));
        match cached.dims() == [batch, 1, q_len, k_len] {
            true => cached.clone(),
            false => self.bias(batch, q_len, k_len, device),
        }
    }

    /// Whether query `i` of sequence `bi` sees key `j` (of `k_len`).
    fn sees(&self, bi: usize, i: usize, j: usize, k_len: usize) -> bool {
        let real = self.real_keys.as_ref().is_none_or(|r| r[bi * k_len + j]);
        real && self.causal.is_none_or(|past| j <= past + i)
    }

    /// Checks the mask against the attention's sizes (a mismatch is a bug of the caller).
    pub(super) fn check(&self, batch: usize, k_len: usize) {
        if let Some(r) = &self.real_keys {
            assert_eq!(
                r.len(),
                batch * k_len,
                "attention mask: {} key flags for {batch} sequences of {k_len} keys",
                r.len()
            );
        }
    }

    /// The additive padding bias `[batch, 1, 1, k_len]` on `device`, if any key is padding.
    pub(super) fn padding_bias(
        &self,
        batch: usize,
        k_len: usize,
        device: &Device,
    ) -> Option<Tensor<4>> {
        let real = self.real_keys.as_ref()?;
        let bias: Vec<f32> = real.iter().map(|&r| if r { 0.0 } else { MASKED }).collect();
        Some(Tensor::from_data(
            TensorData::new(bias, [batch, 1, 1, k_len]),
            device,
        ))
    }

    /// The causal bias of query rows `rows` against keys `keys`, repeated for `groups` query
    /// heads stacked as rows: `[1, 1, groups * rows, keys]`; `None` when no key is after a query.
    pub(super) fn causal_bias(
        &self,
        rows: std::ops::Range<usize>,
        keys: std::ops::Range<usize>,
        groups: usize,
        device: &Device,
    ) -> Option<Tensor<4>> {
        let past = self.causal?;
        if keys.end <= past + rows.start + 1 {
            return None;
        }
        let block: Vec<f32> = rows
            .clone()
            .flat_map(|i| {
                keys.clone()
                    .map(move |j| if j <= past + i { 0.0 } else { MASKED })
            })
            .collect();
        let n = rows.len() * keys.len();
        let data: Vec<f32> = block.iter().copied().cycle().take(groups * n).collect();
        let shape = [1, 1, groups * rows.len(), keys.len()];
        Some(Tensor::from_data(TensorData::new(data, shape), device))
    }

    /// For each block of `block` query rows (of `q_len`): the rows, and how many keys (of
    /// `k_len`) the block must visit. A causal block needs the keys up to its last row's; a block
    /// holding a row that sees no key at all needs every key (such a row's softmax is uniform over
    /// all keys, as in the dense form).
    pub(super) fn query_blocks(
        &self,
        batch: usize,
        q_len: usize,
        k_len: usize,
        block: usize,
    ) -> Vec<(std::ops::Range<usize>, usize)> {
        // Per sequence, the first real key (`k_len` if none).
        let first_real: Vec<usize> = (0..batch)
            .map(|bi| match &self.real_keys {
                None => 0,
                Some(r) => r[bi * k_len..(bi + 1) * k_len]
                    .iter()
                    .position(|&x| x)
                    .unwrap_or(k_len),
            })
            .collect();
        (0..q_len)
            .step_by(block)
            .map(|r0| {
                let rows = r0..(r0 + block).min(q_len);
                let keys = match self.causal {
                    None => k_len,
                    // The block's first row sees the fewest keys: blind if none of them is real.
                    Some(past) if first_real.iter().any(|&f| f > past + r0) => k_len,
                    Some(past) => (past + rows.end).min(k_len),
                };
                (rows, keys)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(mask: &Mask, b: usize, sq: usize, sk: usize) -> Vec<Vec<bool>> {
        let bias = mask.bias(b, sq, sk, &Device::default()).into_data();
        let v = bias.try_to_vec::<f32>().expect("f32");
        v.chunks(sk)
            .map(|row| row.iter().map(|&x| x == 0.0).collect())
            .collect()
    }

    #[test]
    fn causal_after_a_cache_with_padding() {
        // One sequence: 2 cached keys, 2 new; the second key is padding.
        let m = Mask::causal(2, &[1, 0, 1, 1]);
        let want = vec![
            vec![true, false, true, false],
            vec![true, false, true, true],
        ];
        assert_eq!(dense(&m, 1, 2, 4), want);
        // Built once and kept for the later layers; other sizes are built anew, not the cached.
        let d = Device::default();
        assert!(m.dense.get().is_none());
        assert_eq!(m.dense_bias(1, 2, 4, &d).dims(), [1, 1, 2, 4]);
        assert!(m.dense.get().is_some());
        assert_eq!(m.dense_bias(1, 1, 4, &d).dims(), [1, 1, 1, 4]);
        // All keys real: no padding flags at all.
        assert_eq!(Mask::causal(0, &[1, 1, 1]).real_keys, None);
    }

    #[test]
    fn key_lengths_mask_the_padding_of_each_sequence() {
        let m = Mask::key_lengths(&[3, 1], 3);
        let rows = dense(&m, 2, 3, 3);
        assert!(rows[..3].iter().all(|r| r == &[true, true, true]));
        assert!(rows[3..].iter().all(|r| r == &[true, false, false]));
    }

    #[test]
    fn query_blocks_visit_the_causal_keys_or_all_for_a_blind_row() {
        let m = Mask::causal(0, &[1; 10]);
        let blocks = m.query_blocks(1, 10, 10, 4);
        assert_eq!(blocks, vec![(0..4, 4), (4..8, 8), (8..10, 10)]);
        // Left padding of 5: rows 0..5 see no key, so the first two blocks need every key.
        let keys: Vec<i64> = (0..10).map(|j| i64::from(j >= 5)).collect();
        let blocks = Mask::causal(0, &keys).query_blocks(1, 10, 10, 4);
        assert_eq!(blocks, vec![(0..4, 10), (4..8, 10), (8..10, 10)]);
        // Decoding one token after 6 cached keys: all 7 keys.
        assert_eq!(
            Mask::causal(6, &[1; 7]).query_blocks(1, 1, 7, 4),
            vec![(0..1, 7)]
        );
        // The causal bias of a block is only built where some key is after some query.
        let d = Device::default();
        assert!(m.causal_bias(4..8, 0..4, 2, &d).is_none());
        let c = m.causal_bias(4..6, 4..8, 2, &d).expect("a diagonal block");
        assert_eq!(c.dims(), [1, 1, 4, 4]);
        let v = c.into_data().try_to_vec::<f32>().expect("f32");
        // Row 4 sees key 4 only, row 5 keys 4..=5; repeated for the second group head.
        let seen: Vec<bool> = v.iter().map(|&x| x == 0.0).collect();
        let rows = [true, false, false, false, true, true, false, false];
        assert_eq!(seen, [rows, rows].concat());
    }
}
