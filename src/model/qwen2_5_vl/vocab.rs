//! Growing the vocabulary for added tokens (Pearl's predictor tokens). Released Qwen2.5-VL
//! checkpoints already have spare rows (the matrix has 151936 rows for ~151665 tokens), so this
//! only runs when a model truly lacks rows. New rows start at the mean of the existing ones, as
//! transformers' `resize_token_embeddings(mean_resizing=True)` centres them, so the new tokens do
//! not start as outliers.

use super::model::Qwen2_5Vl;
use crate::model::decoder::grow_vocab;

impl Qwen2_5Vl {
    /// Makes sure the embedding (and an untied lm_head) has at least `rows` rows.
    /// Returns how many rows were added.
    pub fn ensure_vocab(&mut self, rows: usize) -> usize {
        let added = grow_vocab(
            &mut self.model.embed_tokens,
            self.model.lm_head.as_mut(),
            rows,
        );
        self.cfg.text.vocab_size += added;
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Qwen2_5VlConfig;
    use burn::tensor::Device;

    #[test]
    fn grows_only_when_rows_are_missing_and_keeps_old_rows() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/qwen2_5_vl_tiny/model/config.json");
        let cfg = Qwen2_5VlConfig::from_file(&dir).unwrap();
        let mut m = Qwen2_5Vl::random(&cfg, 1, &Device::default()).unwrap();
        let v = cfg.text.vocab_size;
        assert_eq!(m.ensure_vocab(v - 3), 0);
        let before = m.model.embed_tokens.weight.val();
        assert_eq!(m.ensure_vocab(v + 5), 5);
        let after = m.model.embed_tokens.weight.val();
        assert_eq!(after.dims()[0], v + 5);
        assert_eq!(m.cfg.text.vocab_size, v + 5);
        let old = after.clone().slice(0..v);
        assert_eq!(old.into_data(), before.clone().into_data());
        let new_row: Vec<f32> = after.slice(v..v + 1).try_into_vec_as().unwrap();
        let mean: Vec<f32> = before.mean_dim(0).try_into_vec_as().unwrap();
        assert_eq!(new_row, mean);
        if let Some(h) = &m.model.lm_head {
            assert_eq!(h.base.weight.dims()[1], v + 5);
        }
    }
}
