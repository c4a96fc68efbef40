//! Choosing the next token from a row of logits: greedy (argmax) or sampled with temperature,
//! top-k and top-p (nucleus), reproducible for a seed. Runs on the host: one row per sequence
//! per step is small next to the forward pass, and it keeps the random stream independent of
//! the tensor backend.

use anyhow::ensure;
use rand::SeedableRng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How tokens are chosen. `temperature == 0` is greedy decoding; `top_k`/`top_p` then do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature must be a finite number >= 0, got {}",
            self.temperature
        );
        if let Some(k) = self.top_k {
            ensure!(k >= 1, "top_k must be at least 1");
        }
        if let Some(p) = self.top_p {
            ensure!(p > 0.0 && p <= 1.0, "top_p must lie in (0, 1], got {p}");
        }
        Ok(())
    }
}

/// One random stream per sequence of a batch (seeded `seed + row`), so what a prompt samples does
/// not depend on when the other prompts of its batch finish.
pub struct Sampler {
    cfg: Sampling,
    rngs: Vec<ChaCha8Rng>,
}

impl Sampler {
    pub fn new(cfg: Sampling, batch: usize) -> anyhow::Result<Self> {
        cfg.validate()?;
        let rngs = (0..batch as u64)
            .map(|i| ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(i)))
            .collect();
        Ok(Self { cfg, rngs })
    }

    /// The next token of sequence `row` of the batch.
    pub fn pick(&mut self, row: usize, logits: &[f32]) -> u32 {
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        sample(&self.cfg, logits, &mut self.rngs[row])
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

fn sample(cfg: &Sampling, logits: &[f32], rng: &mut ChaCha8Rng) -> u32 {
    // Candidates by decreasing logit (ties by index, for determinism); top-k keeps the first k.
    let mut order: Vec<usize> = (0..logits.len()).filter(|&i| !logits[i].is_nan()).collect();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if let Some(k) = cfg.top_k.filter(|&k| k < order.len()) {
        order.select_nth_unstable_by(k - 1, by_logit);
        order.truncate(k);
    }
    order.sort_unstable_by(by_logit);
    let Some(&top) = order.first() else {
        return 0;
    };
    // Softmax of logits / T in f64, shifted by the maximum so exp cannot overflow.
    let t = f64::from(cfg.temperature);
    let max = f64::from(logits[top]);
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - max) / t).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    // Nucleus: the shortest prefix whose mass reaches top_p (never empty).
    if let Some(p) = cfg.top_p {
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                mass += q;
                mass >= f64::from(p)
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    // The top candidate has probability 1 before normalisation, so the weights are valid.
    match WeightedIndex::new(&probs) {
        Ok(dist) => order[dist.sample(rng)] as u32,
        Err(_) => top as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(t: f32, k: Option<usize>, p: Option<f32>, seed: u64) -> Sampling {
        Sampling {
            temperature: t,
            top_k: k,
            top_p: p,
            seed,
        }
    }

    fn draws(cfg: Sampling, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(cfg, 1).unwrap();
        (0..n).map(|_| s.pick(0, logits)).collect()
    }

    #[test]
    fn argmax_takes_first_maximum_and_ignores_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 2.0]), 2);
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = draws(sampling(1.0, None, None, 42), &logits, 64);
        assert_eq!(a, draws(sampling(1.0, None, None, 42), &logits, 64));
        assert_ne!(a, draws(sampling(1.0, None, None, 43), &logits, 64));
    }

    #[test]
    fn tiny_temperature_is_greedy() {
        let logits = [0.1, 2.0, 1.99, -3.0];
        assert!(
            draws(sampling(1e-4, None, None, 1), &logits, 200)
                .iter()
                .all(|&t| t == 1)
        );
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [3.0, 2.9, 2.8, 0.0, -1.0];
        let k2 = draws(sampling(5.0, Some(2), None, 3), &logits, 300);
        assert!(k2.iter().all(|&t| t < 2));
        assert!(k2.contains(&0) && k2.contains(&1));
        // Probabilities at T=1: ~0.36, 0.33, 0.30, 0.016, 0.006: top_p 0.5 keeps the first two.
        let p = draws(sampling(1.0, None, Some(0.5), 3), &logits, 300);
        assert!(p.iter().all(|&t| t < 2));
        assert!(p.contains(&1));
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Sampler::new(sampling(-1.0, None, None, 0), 1).is_err());
        assert!(Sampler::new(sampling(f32::NAN, None, None, 0), 1).is_err());
        assert!(Sampler::new(sampling(1.0, Some(0), None, 0), 1).is_err());
        assert!(Sampler::new(sampling(1.0, None, Some(1.5), 0), 1).is_err());
    }
}
