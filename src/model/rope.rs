//! Rotary position embeddings shared by the Qwen-VL families: the multimodal position ids of
//! transformers' `get_rope_index` (3 streams: temporal, height, width), M-RoPE angles for a given
//! assignment of frequencies to streams (each family has its own: contiguous sections in
//! Qwen2.5-VL, interleaved in Qwen3-VL), and the vision towers' 2-D rotary embedding.
//! Angles are computed on the host from integer positions (cheap: positions x head_dim) in f32, as
//! transformers does, then uploaded.

use burn::tensor::{Device, Tensor, TensorData};

/// `1 / theta^(2i/dim)` for `i < dim/2`, in f32 like transformers.
fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// The ids needed to locate images in a token sequence.
#[derive(Debug, Clone, Copy)]
pub struct VisionTokens {
    pub image_token_id: i64,
    pub vision_start_token_id: i64,
    pub spatial_merge_size: usize,
}

/// M-RoPE position ids `[3, batch, seq]` and `rope_deltas` (`max position + 1 - unpadded length`,
/// what decoding adds to the next token's index), following `get_rope_index`: text tokens advance
/// all three streams together; an image's tokens take (t, h, w) grid coordinates offset by the text
/// before it; text after an image resumes at the image's max position + 1. Padded positions hold 1.
/// `image_grid_thw` lists the batch's images in order of appearance.
pub fn mrope_position_ids(
    input_ids: &[i64],
    attention_mask: &[i64],
    batch: usize,
    seq: usize,
    image_grid_thw: &[[usize; 3]],
    vt: VisionTokens,
) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
    let mut pos = vec![1i64; 3 * batch * seq];
    let mut deltas = Vec::with_capacity(batch);
    let mut images = image_grid_thw.iter();
    let m = vt.spatial_merge_size;
    for b in 0..batch {
        let row = &input_ids[b * seq..(b + 1) * seq];
        let mask = &attention_mask[b * seq..(b + 1) * seq];
        let valid: Vec<usize> = (0..seq).filter(|&i| mask[i] != 0).collect();
        let ids: Vec<i64> = valid.iter().map(|&i| row[i]).collect();
        let mut streams: [Vec<i64>; 3] = [
            Vec::with_capacity(ids.len()),
            Vec::with_capacity(ids.len()),
            Vec::with_capacity(ids.len()),
        ];
        let mut next = 0i64; // first position of the next segment
        let mut i = 0;
        while i < ids.len() {
            let is_image_start =
                ids[i] == vt.image_token_id && i > 0 && ids[i - 1] == vt.vision_start_token_id;
            if !is_image_start {
                for s in streams.iter_mut() {
                    s.push(next);
                }
                next += 1;
                i += 1;
                continue;
            }
            let [t, h, w] = *images.next().ok_or_else(|| {
                anyhow::anyhow!("sequence {b} has more images than image_grid_thw lists")
            })?;
            let (gh, gw) = (h / m, w / m);
            let n = t * gh * gw;
            if i + n > ids.len()
                || ids[i..i + n].iter().any(|&x| x != vt.image_token_id)
                || ids.get(i + n) == Some(&vt.image_token_id)
            {
                anyhow::bail!(
                    "sequence {b}: image at token {i} should span {n} image tokens (grid {t}x{h}x{w})"
                );
            }
            // Images are still frames: their temporal index is 0 for every frame (second_per_grid_t = 0).
            for _ti in 0..t {
                for hi in 0..gh {
                    for wi in 0..gw {
                        streams[0].push(next);
                        streams[1].push(next + hi as i64);
                        streams[2].push(next + wi as i64);
                    }
                }
            }
            next += gh.max(gw) as i64;
            i += n;
        }
        let max = streams
            .iter()
            .flat_map(|s| s.iter().copied())
            .max()
            .unwrap_or(-1);
        for (c, s) in streams.iter().enumerate() {
            for (k, &vi) in valid.iter().enumerate() {
                pos[(c * batch + b) * seq + vi] = s[k];
            }
        }
        deltas.push(max + 1 - ids.len() as i64);
    }
    if images.next().is_some() {
        anyhow::bail!("image_grid_thw lists more images than the token sequences contain");
    }
    Ok((pos, deltas))
}

/// cos/sin `[batch, 1, seq, hd]` of M-RoPE for position ids `[3, batch, seq]`: frequency `i`
/// (of `hd / 2`, inverse powers of `theta`) rotates by the position of stream `stream_of[i]`, and
/// dimension `d` uses frequency `d % (hd / 2)` (cos/sin duplicated for `rotate_half`).
pub fn mrope_cos_sin(
    position_ids: &[i64],
    batch: usize,
    seq: usize,
    theta: f64,
    stream_of: &[usize],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let half = stream_of.len();
    let hd = 2 * half;
    let freqs = inv_freq(hd, theta);
    let mut cos = vec![0f32; batch * seq * hd];
    let mut sin = vec![0f32; batch * seq * hd];
    for b in 0..batch {
        for s in 0..seq {
            let o = (b * seq + s) * hd;
            for (i, (&stream, &f)) in stream_of.iter().zip(&freqs).enumerate() {
                let a = position_ids[(stream * batch + b) * seq + s] as f32 * f;
                let (c, si) = (a.cos(), a.sin());
                cos[o + i] = c;
                cos[o + half + i] = c;
                sin[o + i] = si;
                sin[o + half + i] = si;
            }
        }
    }
    let shape = [batch, 1, seq, hd];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// Grid coordinates (h, w) of every patch of every image, in the processor's patch order
/// (per frame: merge-window rows, merge-window columns, then the merge x merge patches inside).
pub fn vision_patch_coords(grid_thw: &[[usize; 3]], merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &[t, h, w] in grid_thw {
        for _ in 0..t {
            for hb in 0..h / merge {
                for wb in 0..w / merge {
                    for mh in 0..merge {
                        for mw in 0..merge {
                            out.push((hb * merge + mh, wb * merge + mw));
                        }
                    }
                }
            }
        }
    }
    out
}

/// cos/sin `[patches, hd]` of a vision tower's 2-D rotary embedding for patches at `coords`:
/// the first half of the rotary dims encodes the row, the second the column (theta 10000).
pub fn vision_cos_sin(
    coords: &[(usize, usize)],
    hd: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let freqs = inv_freq(hd / 2, 10_000.0); // hd/4 frequencies per axis
    let q = freqs.len();
    let mut cos = vec![0f32; coords.len() * hd];
    let mut sin = vec![0f32; coords.len() * hd];
    for (i, &(h, w)) in coords.iter().enumerate() {
        for d in 0..hd {
            let j = d % (hd / 2);
            let a = if j < q {
                h as f32 * freqs[j]
            } else {
                w as f32 * freqs[j - q]
            };
            cos[i * hd + d] = a.cos();
            sin[i * hd + d] = a.sin();
        }
    }
    let shape = [coords.len(), hd];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_only_positions_are_a_range_and_padding_holds_one() {
        let vt = VisionTokens {
            image_token_id: 9,
            vision_start_token_id: 8,
            spatial_merge_size: 2,
        };
        let ids = [1, 2, 3, 0, 4, 5, 0, 0];
        let mask = [1, 1, 1, 1, 1, 1, 0, 0];
        let (pos, deltas) = mrope_position_ids(&ids, &mask, 2, 4, &[], vt).unwrap();
        for c in 0..3 {
            assert_eq!(&pos[c * 8..c * 8 + 8], &[0, 1, 2, 3, 0, 1, 1, 1]);
        }
        assert_eq!(deltas, vec![0, 0]);
    }

    #[test]
    fn image_positions_follow_the_grid() {
        let vt = VisionTokens {
            image_token_id: 9,
            vision_start_token_id: 8,
            spatial_merge_size: 2,
        };
        // text, <vision_start>, 2x3 merged grid (grid_thw 1x4x6), <vision_end>, text
        let mut ids = vec![1, 8];
        ids.extend([9; 6]);
        ids.extend([7, 5]);
        let mask = vec![1; ids.len()];
        let (pos, deltas) =
            mrope_position_ids(&ids, &mask, 1, ids.len(), &[[1, 4, 6]], vt).unwrap();
        let n = ids.len();
        assert_eq!(&pos[0..n], &[0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(&pos[n..2 * n], &[0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(&pos[2 * n..3 * n], &[0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(deltas, vec![7 - n as i64]);
        // A grid that does not match the token count is an error, not a silent misalignment.
        assert!(mrope_position_ids(&ids, &mask, 1, ids.len(), &[[1, 4, 4]], vt).is_err());
        assert!(mrope_position_ids(&ids, &mask, 1, ids.len(), &[], vt).is_err());
    }
}
