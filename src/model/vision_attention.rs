//! Attention of the Qwen-VL vision towers: fused qkv projection, 2-D rotary, attention run
//! independently inside variable-length segments (attention windows, or whole images), output
//! projection. Both families use it: Qwen2.5-VL with windows, Qwen3-VL with one segment per image.

use crate::kernels::attention::{Mask, attention};
use crate::kernels::rope_apply::apply_rope;
use crate::kernels::tensor::index_tensor;
use crate::model::nn::Proj;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

#[derive(Module, Debug)]
pub struct VisionAttention {
    pub qkv: Proj,
    pub proj: Proj,
    pub num_heads: usize,
}

impl VisionAttention {
    /// `x: [n, d]` with each segment's patches contiguous; attention runs inside each segment.
    /// `cos`/`sin`: `[n, head_dim]` 2-D rotary angles.
    pub fn forward(
        &self,
        x: Tensor<2>,
        cos: Tensor<2>,
        sin: Tensor<2>,
        segs: &Segments,
    ) -> Tensor<2> {
        let [n, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let qkv = self.qkv.forward(x).reshape([n, 3, h, hd]);
        let (cos, sin) = (cos.unsqueeze_dim(1), sin.unsqueeze_dim(1)); // broadcast over heads
        let rope = |t: Tensor<3>| apply_rope(t, cos.clone(), sin.clone());
        let q = rope(qkv.clone().narrow(1, 0, 1).reshape([n, h, hd]));
        let k = rope(qkv.clone().narrow(1, 1, 1).reshape([n, h, hd]));
        let v = qkv.narrow(1, 2, 1).reshape([n, h, hd]);
        // Gather each segment into a padded batch [segments, heads, max_len, hd]. Rows are
        // gathered as 2-D `[n, d]` tensors: burn-flex's gather and its backward (a scatter-add)
        // have a fast row-copy path for 2-D tensors only.
        let (s, l) = (segs.count, segs.max_len);
        let pad = |t: Tensor<3>| {
            let t = t.reshape([n, d]);
            let t = match &segs.gather {
                Some(gather) => t.select(0, gather.clone()),
                None => t,
            };
            t.reshape([s, l, h, hd]).swap_dims(1, 2)
        };
        let out = attention(pad(q), pad(k), pad(v), &segs.mask); // [s, h, l, hd]
        let out = out.swap_dims(1, 2).reshape([s * l, d]);
        let out = match &segs.scatter {
            Some(scatter) => out.select(0, scatter.clone()),
            None => out,
        };
        self.proj.forward(out)
    }
}

/// Variable-length segments of a sequence, laid out as a padded batch so attention over all of them
/// is one batched matmul instead of a loop.
pub struct Segments {
    count: usize,
    max_len: usize,
    /// `[count * max_len]`: sequence index for each padded slot (padding repeats a real index);
    /// `None` when every segment is full, so that the padded batch is the sequence itself (e.g.
    /// images whose sides are multiples of the window).
    gather: Option<Tensor<1, Int>>,
    /// `[n]`: padded slot of each sequence position (`None` with `gather`).
    scatter: Option<Tensor<1, Int>>,
    /// Each segment's keys are its own; the padding after them is masked.
    mask: Mask,
}

impl Segments {
    pub fn new(segments: &[(usize, usize)], device: &Device) -> Self {
        let count = segments.len();
        let max_len = segments.iter().map(|s| s.1).max().unwrap_or(1);
        let n: usize = segments.iter().map(|s| s.1).sum();
        let mut gather = Vec::with_capacity(count * max_len);
        let mut scatter = vec![0usize; n];
        for (si, &(start, len)) in segments.iter().enumerate() {
            for j in 0..max_len {
                gather.push(start + j.min(len - 1));
                if j < len {
                    scatter[start + j] = si * max_len + j;
                }
            }
        }
        let identity = gather.iter().enumerate().all(|(slot, &i)| slot == i) && gather.len() == n;
        Self {
            count,
            max_len,
            gather: (!identity).then(|| index_tensor(&gather, device)),
            scatter: (!identity).then(|| index_tensor(&scatter, device)),
            mask: Mask::key_lengths(&segments.iter().map(|s| s.1).collect::<Vec<_>>(), max_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_segments_need_no_gather_and_cut_ones_do() {
        let device = Device::default();
        let full = Segments::new(&[(0, 4), (4, 4)], &device);
        assert!(full.gather.is_none() && full.scatter.is_none());
        let cut = Segments::new(&[(0, 4), (4, 2)], &device);
        let gather = cut.gather.expect("a padded segment needs a gather");
        let idx: Vec<i64> = gather
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .expect("ints");
        assert_eq!(idx, vec![0, 1, 2, 3, 4, 5, 5, 5]);
        let scatter = cut.scatter.expect("scatter").into_data().convert::<i64>();
        let scatter: Vec<i64> = scatter.try_to_vec().expect("ints");
        assert_eq!(scatter, vec![0, 1, 2, 3, 4, 5]);
    }
}
