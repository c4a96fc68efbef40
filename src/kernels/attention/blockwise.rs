//! Memory-efficient attention for every backend (the FlashAttention-2 algorithm, written in burn's
//! tensor ops): queries in blocks of rows, and for each, keys and values in blocks with an online
//! softmax, so that no `[q_len, k_len]` tensor ever exists, only `[block, block]` ones.
//!
//! The backward pass is by hand: the forward pass keeps `q`, `k`, `v`, the output and each row's
//! softmax statistics (its maximum `m` and `ln l`, `l` the normaliser: the log-sum-exp split in
//! two, which keeps a row that sees no key exact), and the backward pass recomputes each block's
//! probabilities `p = exp(s - m - ln l)` from them. With `D = rowsum(dO * O)`:
//! `dV += p^T dO`, `dS = p * (dO V^T - D)`, `dQ += dS K * scale`, `dK += dS^T Q * scale`.
//!
//! Products run in the inputs' dtype, the softmax and the accumulators in f32 (as the dense
//! composed form). Grouped-query attention stacks a group's query heads as rows of one product.

use super::MASKED;
use super::mask::Mask;
use crate::kernels::dispatch::Portable;
use crate::kernels::tensor::{cast, in_f32};
use burn::tensor::Tensor;

/// Query rows and keys per block: large enough that a GPU's products stay efficient, small enough
/// that a block's scores (`[batch, heads, block, block]` in f32) stay small.
pub const BLOCK: usize = 256;

/// Blockwise attention under `mask`, `block` rows and keys at a time.
#[derive(Debug, Clone)]
pub struct Blockwise {
    pub mask: Mask,
    pub block: usize,
}

/// What the backward pass keeps: the inputs `q: [b, h, sq, hd]`, `k, v: [b, kvh, sk, hd]`, the
/// output `[b, h, sq, hd]` and each row's softmax statistics `max`, `log_sum: [b, h, sq, 1]`.
#[derive(Debug, Clone)]
pub struct Saved {
    pub q: Tensor<4>,
    pub k: Tensor<4>,
    pub v: Tensor<4>,
    pub out: Tensor<4>,
    pub max: Tensor<4>,
    pub log_sum: Tensor<4>,
}

/// `[b, h, n, x]` as `[b, kvh, g * n, x]`: a group's query heads stacked as rows.
fn grouped(t: Tensor<4>, kvh: usize) -> Tensor<4> {
    let [b, h, n, x] = t.dims();
    t.reshape([b, kvh, h / kvh * n, x])
}

/// `[b, kvh, g * n, x]` back to `[b, h, n, x]`.
fn ungrouped(t: Tensor<4>, h: usize) -> Tensor<4> {
    let [b, kvh, rows, x] = t.dims();
    t.reshape([b, h, rows * kvh / h, x])
}

impl Blockwise {
    /// The biased scores `[b, kvh, g*n, bk]` in f32 of scaled grouped queries `qg` (rows `rows`)
    /// against keys `kb` (keys `keys`).
    fn scores(
        &self,
        qg: &Tensor<4>,
        kb: Tensor<4>,
        rows: std::ops::Range<usize>,
        keys: std::ops::Range<usize>,
        padding: Option<&Tensor<4>>,
    ) -> Tensor<4> {
        let g = qg.dims()[2] / rows.len();
        let s = in_f32(qg.clone().matmul(kb.swap_dims(2, 3)));
        let device = s.device();
        let causal = self.mask.causal_bias(rows, keys.clone(), g, &device);
        let padding = padding.map(|p| p.clone().narrow(3, keys.start, keys.len()));
        match (causal, padding) {
            (None, None) => s,
            (Some(c), None) => s + c,
            (None, Some(p)) => s + p,
            // Masked twice is masked once: a row that sees no key stays uniform, as in the dense form.
            (Some(c), Some(p)) => s + (c + p).clamp_min(MASKED),
        }
    }

    fn key_blocks(&self, keys: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..keys)
            .step_by(self.block)
            .map(move |c0| c0..(c0 + self.block).min(keys))
    }
}

impl Portable<3, 4, 4> for Blockwise {
    type Saved = Saved;

    fn forward(&self, [q, k, v]: [Tensor<4>; 3], track: bool) -> (Tensor<4>, Option<Saved>) {
        let [b, h, sq, hd] = q.dims();
        let [_, kvh, sk, _] = k.dims();
        self.mask.check(b, sk);
        let dtype = q.dtype();
        let scale = 1.0 / (hd as f64).sqrt();
        let padding = self.mask.padding_bias(b, sk, &q.device());
        let (mut outs, mut maxes, mut log_sums) = (vec![], vec![], vec![]);
        for (rows, keys) in self.mask.query_blocks(b, sq, sk, self.block) {
            let qg = grouped(q.clone().narrow(2, rows.start, rows.len()), kvh).mul_scalar(scale);
            // Running row maximum `m`, normaliser `l` and unnormalised output `acc` (f32).
            let mut state: Option<(Tensor<4>, Tensor<4>, Tensor<4>)> = None;
            for kb in self.key_blocks(keys) {
                let s = self.scores(
                    &qg,
                    k.clone().narrow(2, kb.start, kb.len()),
                    rows.clone(),
                    kb.clone(),
                    padding.as_ref(),
                );
                let vb = v.clone().narrow(2, kb.start, kb.len());
                let m_blk = s.clone().max_dim(3);
                let m = match &state {
                    None => m_blk,
                    Some((m, _, _)) => m.clone().max_pair(m_blk),
                };
                let p = (s - m.clone()).exp();
                let l_blk = p.clone().sum_dim(3);
                let pv = in_f32(cast(p, dtype).matmul(vb));
                state = Some(match state {
                    None => (m, l_blk, pv),
                    Some((m_old, l, acc)) => {
                        // Rescale what was summed under the old maximum.
                        let alpha = (m_old - m.clone()).exp();
                        (m, l * alpha.clone() + l_blk, acc * alpha + pv)
                    }
                });
            }
            let (m, l, acc) = state.expect("every query block visits at least one key");
            outs.push(ungrouped(acc / l.clone(), h));
            maxes.push(ungrouped(m, h));
            log_sums.push(ungrouped(l.log(), h));
        }
        let out = cast(Tensor::cat(outs, 2), dtype);
        let saved = track.then(|| Saved {
            q,
            k,
            v,
            out: out.clone(),
            max: Tensor::cat(maxes, 2),
            log_sum: Tensor::cat(log_sums, 2),
        });
        (out, saved)
    }

    fn backward(self, s: Saved, d_out: Tensor<4>, wanted: [bool; 3]) -> [Option<Tensor<4>>; 3] {
        let [b, h, sq, hd] = s.q.dims();
        let [_, kvh, sk, _] = s.k.dims();
        let dtype = s.q.dtype();
        let scale = 1.0 / (hd as f64).sqrt();
        let padding = self.mask.padding_bias(b, sk, &s.q.device());
        let d_out = cast(d_out, dtype);
        // rowsum(dP * p) = rowsum(dO * O), per query row.
        let corr = (in_f32(d_out.clone()) * in_f32(s.out)).sum_dim(3);
        let n_kb = sk.div_ceil(self.block);
        let (mut dk, mut dv): (Vec<Option<Tensor<4>>>, Vec<Option<Tensor<4>>>) =
            (vec![None; n_kb], vec![None; n_kb]);
        let mut dq = vec![];
        let add = |acc: &mut Option<Tensor<4>>, x: Tensor<4>| {
            *acc = Some(match acc.take() {
                None => x,
                Some(a) => a + x,
            })
        };
        let rows_of = |t: &Tensor<4>, rows: &std::ops::Range<usize>| {
            grouped(t.clone().narrow(2, rows.start, rows.len()), kvh)
        };
        for (rows, keys) in self.mask.query_blocks(b, sq, sk, self.block) {
            let qg = rows_of(&s.q, &rows).mul_scalar(scale);
            let dog = rows_of(&d_out, &rows);
            let (m, ls, cg) = (
                rows_of(&s.max, &rows),
                rows_of(&s.log_sum, &rows),
                rows_of(&corr, &rows),
            );
            let mut dq_rows: Option<Tensor<4>> = None;
            for (j, kb) in self.key_blocks(keys).enumerate() {
                let kblk = s.k.clone().narrow(2, kb.start, kb.len());
                let vblk = s.v.clone().narrow(2, kb.start, kb.len());
                let sc = self.scores(
                    &qg,
                    kblk.clone(),
                    rows.clone(),
                    kb.clone(),
                    padding.as_ref(),
                );
                // (s - m) first: exactly 0 for a row that sees no key.
                let p = (sc - m.clone() - ls.clone()).exp();
                if wanted[2] {
                    let dvb = cast(p.clone(), dtype).swap_dims(2, 3).matmul(dog.clone());
                    add(&mut dv[j], in_f32(dvb));
                }
                if !wanted[0] && !wanted[1] {
                    continue;
                }
                let dp = in_f32(dog.clone().matmul(vblk.swap_dims(2, 3)));
                let ds = cast(p * (dp - cg.clone()), dtype);
                if wanted[0] {
                    add(&mut dq_rows, in_f32(ds.clone().matmul(kblk)));
                }
                if wanted[1] {
                    // qg holds the scale already.
                    add(&mut dk[j], in_f32(ds.swap_dims(2, 3).matmul(qg.clone())));
                }
            }
            if let Some(d) = dq_rows {
                dq.push(ungrouped(d.mul_scalar(scale), h));
            }
        }
        let device = s.q.device();
        let joined = |blocks: Vec<Option<Tensor<4>>>| {
            let parts = blocks
                .into_iter()
                .enumerate()
                .map(|(j, d)| {
                    let len = self.block.min(sk - j * self.block);
                    d.unwrap_or_else(|| Tensor::zeros([b, kvh, len, hd], &device))
                })
                .collect();
            cast(Tensor::cat(parts, 2), dtype)
        };
        let dq = wanted[0].then(|| cast(Tensor::cat(dq, 2), dtype));
        let dk = wanted[1].then(|| joined(dk));
        let dv = wanted[2].then(|| joined(dv));
        [dq, dk, dv]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::composed;
    use crate::kernels::dispatch::portable;
    use burn::tensor::{Device, Distribution, TensorData, Tolerance};

    /// One case: `b` sequences, `h` query heads over `kvh` key/value heads, `sq` queries over
    /// `sk` keys of width `hd`, under `mask`, `block` rows and keys at a time.
    struct Case {
        b: usize,
        h: usize,
        kvh: usize,
        sq: usize,
        sk: usize,
        hd: usize,
        mask: Mask,
        block: usize,
    }

    fn cases() -> Vec<Case> {
        // Left padding: the second sequence's first 3 keys are padding, so with a causal mask its
        // first 3 queries see no key at all.
        let left_pad = |b: usize, s: usize| -> Vec<i64> {
            (0..b * s)
                .map(|i| i64::from(i / s == 0 || i % s >= 3))
                .collect()
        };
        let right_pad = |b: usize, s: usize| -> Vec<i64> {
            (0..b * s)
                .map(|i| i64::from(i / s == 0 || i % s < s - 4))
                .collect()
        };
        vec![
            // Causal + left padding, GQA (2 query heads per key/value head), 11 rows in blocks of 4.
            Case {
                b: 2,
                h: 4,
                kvh: 2,
                sq: 11,
                sk: 11,
                hd: 8,
                mask: Mask::causal(0, &left_pad(2, 11)),
                block: 4,
            },
            // Causal + right padding, MHA, blocks of 3 over 10.
            Case {
                b: 2,
                h: 2,
                kvh: 2,
                sq: 10,
                sk: 10,
                hd: 4,
                mask: Mask::causal(0, &right_pad(2, 10)),
                block: 3,
            },
            // Decoding after a cache: 3 new queries after 9 cached keys, GQA 3:1.
            Case {
                b: 2,
                h: 3,
                kvh: 1,
                sq: 3,
                sk: 12,
                hd: 8,
                mask: Mask::causal(9, &right_pad(2, 12)),
                block: 5,
            },
            // Vision windows as a padded batch: segments of 7, 4 and 2 patches, padded to 7.
            Case {
                b: 3,
                h: 2,
                kvh: 2,
                sq: 7,
                sk: 7,
                hd: 8,
                mask: Mask::key_lengths(&[7, 4, 2], 7),
                block: 3,
            },
            // Full attention, one block larger than the sequence.
            Case {
                b: 1,
                h: 2,
                kvh: 1,
                sq: 5,
                sk: 5,
                hd: 8,
                mask: Mask::full(),
                block: 16,
            },
        ]
    }

    /// Random `q, k, v` and loss weights `w` for `case`.
    fn inputs(case: &Case) -> [TensorData; 4] {
        let Case {
            b,
            h,
            kvh,
            sq,
            sk,
            hd,
            ..
        } = *case;
        let n = Distribution::Normal(0.0, 1.0);
        let shapes = [
            [b, h, sq, hd],
            [b, kvh, sk, hd],
            [b, kvh, sk, hd],
            [b, h, sq, hd],
        ];
        shapes.map(|s| Tensor::<4>::random(s, n, &Device::default()).into_data())
    }

    /// Output and `[dq, dk, dv]` of `f` on `data` under a loss that weights every output
    /// element differently.
    fn run(
        data: &[TensorData; 4],
        device: &Device,
        f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    ) -> (Tensor<4>, [Tensor<4>; 3]) {
        let [q, k, v, w] = data.clone().map(|d| Tensor::<4>::from_data(d, device));
        let [q, k, v] = [q, k, v].map(|t| t.require_grad());
        let out = f(q.clone(), k.clone(), v.clone());
        let grads = (out.clone() * w).sum().backward();
        let g = [q.grad(&grads), k.grad(&grads), v.grad(&grads)];
        (out, g.map(|g| g.expect("gradient")))
    }

    #[test]
    fn values_and_gradients_match_the_dense_composed_form() {
        let device = Device::default().autodiff();
        for (i, case) in cases().iter().enumerate() {
            let op = Blockwise {
                mask: case.mask.clone(),
                block: case.block,
            };
            let data = inputs(case);
            let (out, grads) = run(&data, &device, &|q, k, v| {
                portable(op.clone(), [q, k, v]).expect("the CPU backend's autodiff rung")
            });
            let bias = case.mask.bias(case.b, case.sq, case.sk, &device);
            let (want, want_grads) =
                run(&data, &device, &|q, k, v| composed(q, k, v, bias.clone()));
            let tol = Tolerance::absolute(2e-5);
            out.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), tol);
            for (name, (g, r)) in ["dq", "dk", "dv"]
                .iter()
                .zip(grads.into_iter().zip(want_grads))
            {
                let (g, r) = (g.into_data(), r.into_data());
                assert_eq!(g.shape(), r.shape(), "case {i}: {name}");
                g.assert_approx_eq::<f32>(&r, tol);
            }
        }
    }

    /// Plain tensors (inference) take the forward pass alone, and the rows that see no key
    /// (the first case has three) are uniform over every key, as in the dense form.
    #[test]
    fn plain_tensors_run_the_forward_pass_alone() {
        let device = Device::default();
        let case = &cases()[0];
        let op = Blockwise {
            mask: case.mask.clone(),
            block: case.block,
        };
        let [q, k, v, _] = inputs(case).map(|d| Tensor::<4>::from_data(d, &device));
        let out: Tensor<4> =
            portable(op, [q.clone(), k.clone(), v.clone()]).expect("plain tensors");
        assert!(!out.is_autodiff());
        let bias = case.mask.bias(case.b, case.sq, case.sk, &device);
        out.into_data().assert_approx_eq::<f32>(
            &composed(q, k, v, bias).into_data(),
            Tolerance::absolute(2e-5),
        );
    }

    /// Memory linear in the sequence: what the backward pass keeps is the inputs, the output and
    /// two numbers per query row, never a `[q_len, k_len]` tensor.
    #[test]
    fn the_backward_pass_keeps_no_query_by_key_tensor() {
        let device = Device::default();
        let (b, h, kvh, s, hd) = (1, 4, 2, 37, 8);
        let n = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([b, h, s, hd], n, &device);
        let k = Tensor::<4>::random([b, kvh, s, hd], n, &device);
        let v = Tensor::<4>::random([b, kvh, s, hd], n, &device);
        let op = Blockwise {
            mask: Mask::causal(0, &[1; 37]),
            block: 8,
        };
        let (out, saved) = op.forward([q, k, v], true);
        let saved = saved.expect("tracked");
        assert_eq!(out.dims(), [b, h, s, hd]);
        let Saved {
            q,
            k,
            v,
            out,
            max,
            log_sum,
        } = saved;
        assert_eq!(q.dims(), [b, h, s, hd]);
        assert_eq!(k.dims(), [b, kvh, s, hd]);
        assert_eq!(v.dims(), [b, kvh, s, hd]);
        assert_eq!(out.dims(), [b, h, s, hd]);
        assert_eq!(max.dims(), [b, h, s, 1]);
        assert_eq!(log_sum.dims(), [b, h, s, 1]);
    }
}
