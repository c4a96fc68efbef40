//! What each latent step feeds back as the next input embedding. LVR's decoding feeds its own last
//! hidden state ([`LatentFeed::Own`]); the other variants are the mediation test of the paper's
//! claim 3 (reconstruction-based latents learn embeddings, not image edits): if the answers do not
//! change when the latents are replaced, the answer does not depend on what they hold.
//!
//! - [`LatentFeed::Zeros`]: a zero vector at every step;
//! - [`LatentFeed::Noise`]: Gaussian noise rescaled, per row, to the norm of the hidden state it
//!   replaces;
//! - [`LatentFeed::CropTarget`]: what LVR's training teaches the latents to be: the merged image
//!   embeddings of I0 inside the expert's crop box (`objective::lvr::region`, the rows the latent
//!   slots regress in training, in the merger's row-major order), pooled to as many vectors as
//!   latent steps by averaging contiguous runs of those rows ([`pool_runs`]; with as many rows as
//!   steps, the rows themselves, exactly the teacher-forced inputs of training).

use crate::kernels::tensor::{cast, index_tensor};
use crate::model::nn::tensor2;
use crate::objective::lvr::region::region_tokens;
use anyhow::{Context, Result, ensure};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub enum LatentFeed {
    /// LVR's decoding: the last hidden state.
    #[default]
    Own,
    Zeros,
    /// Noise of the replaced hidden state's norm, from this seed.
    Noise {
        seed: u64,
    },
    /// The expert crop's region embeddings of I0; the normalized box per prompt, keyed by the
    /// prompt's first image reference (as the chat names it).
    CropTarget {
        boxes: BTreeMap<String, [f64; 4]>,
    },
}

impl LatentFeed {
    /// Name in tables.
    pub fn label(&self) -> &'static str {
        match self {
            LatentFeed::Own => "own latents",
            LatentFeed::Zeros => "zeros",
            LatentFeed::Noise { .. } => "noise of the same norm",
            LatentFeed::CropTarget { .. } => "true crop's target",
        }
    }
}

/// Where one prompt's I0 is among the batch's image embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstImage {
    /// Its reference in the chat.
    pub reference: String,
    /// Index of its first row in the batch's image embeddings.
    pub first_row: usize,
    pub grid_thw: [usize; 3],
}

/// `rows` split into `k` contiguous runs in order, as even as possible (run `j` is
/// `rows[j n / k .. max((j + 1) n / k, j n / k + 1)]`); with fewer rows than runs, rows repeat.
pub fn pool_runs(rows: &[usize], k: usize) -> Vec<Vec<usize>> {
    let n = rows.len();
    (0..k)
        .map(|j| {
            let a = (j * n / k).min(n.saturating_sub(1));
            let b = ((j + 1) * n / k).max(a + 1).min(n);
            rows[a..b].to_vec()
        })
        .collect()
}

/// The input embeddings of the latent steps of one batch.
pub struct LatentInputs {
    feed: LatentFeed,
    rng: ChaCha8Rng,
    /// For [`LatentFeed::CropTarget`]: per step, `[batch, d]`.
    targets: Vec<Tensor<2>>,
}

impl LatentInputs {
    /// Prepares `steps` latent inputs. `image_embeds` (`[rows, d]`, the batch's image embeddings)
    /// and `first_images` (one per prompt) are read by [`LatentFeed::CropTarget`] only.
    pub fn new(
        feed: &LatentFeed,
        steps: usize,
        image_embeds: Option<&Tensor<2>>,
        first_images: &[FirstImage],
        merge: usize,
        patch: usize,
    ) -> Result<Self> {
        let mut targets = Vec::new();
        if let LatentFeed::CropTarget { boxes } = feed {
            let embeds = image_embeds.context("the crop target needs the prompts' images")?;
            let device = embeds.device();
            let mut per_row: Vec<Vec<Vec<usize>>> = Vec::with_capacity(first_images.len());
            for img in first_images {
                let bbox = boxes.get(&img.reference).with_context(|| {
                    format!("no expert crop box for the image {}", img.reference)
                })?;
                let region = region_tokens(img.grid_thw, merge, patch, *bbox)
                    .with_context(|| format!("the crop box of {}", img.reference))?;
                let rows: Vec<usize> = region.iter().map(|r| img.first_row + r).collect();
                per_row.push(pool_runs(&rows, steps));
            }
            for step in 0..steps {
                let pooled: Vec<Tensor<2>> = per_row
                    .iter()
                    .map(|runs| {
                        embeds
                            .clone()
                            .select(0, index_tensor(&runs[step], &device))
                            .mean_dim(0)
                    })
                    .collect();
                targets.push(Tensor::cat(pooled, 0));
            }
        }
        let seed = match feed {
            LatentFeed::Noise { seed } => *seed,
            _ => 0,
        };
        Ok(Self {
            feed: feed.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            targets,
        })
    }

    /// The input of latent step `step` (0-based), `[batch, d]`, given the last hidden state.
    pub fn input(&mut self, step: usize, last_hidden: &Tensor<2>) -> Result<Tensor<2>> {
        Ok(match &self.feed {
            LatentFeed::Own => last_hidden.clone(),
            LatentFeed::Zeros => last_hidden.zeros_like(),
            LatentFeed::Noise { .. } => {
                let [b, d] = last_hidden.dims();
                let values: Vec<f32> = (0..b * d)
                    .map(|_| StandardNormal.sample(&mut self.rng))
                    .collect();
                let noise = tensor2(values, [b, d], &last_hidden.device());
                let norm = |t: Tensor<2>| t.powi_scalar(2).sum_dim(1).sqrt();
                let hidden = cast(last_hidden.clone(), burn::tensor::DType::F32);
                let scaled = noise.clone() * (norm(hidden) / norm(noise).clamp_min(1e-12));
                cast(scaled, last_hidden.dtype())
            }
            LatentFeed::CropTarget { .. } => {
                ensure!(
                    step < self.targets.len(),
                    "latent step {step} of {} prepared",
                    self.targets.len()
                );
                cast(self.targets[step].clone(), last_hidden.dtype())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_rows_in_order() {
        assert_eq!(pool_runs(&[4, 5, 6, 7], 4), [[4], [5], [6], [7]]);
        assert_eq!(
            pool_runs(&[1, 2, 3, 4, 5, 6], 4),
            vec![vec![1], vec![2, 3], vec![4], vec![5, 6]]
        );
        assert_eq!(pool_runs(&[9, 8], 4), [[9], [9], [8], [8]]);
        let runs = pool_runs(&(0..16).collect::<Vec<_>>(), 4);
        assert_eq!(runs.concat(), (0..16).collect::<Vec<_>>());
    }
}
