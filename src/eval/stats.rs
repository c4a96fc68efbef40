//! Statistics for accuracy comparisons: percentile bootstrap intervals (of a mean and of a paired
//! difference), McNemar's test (exact binomial and chi-square with continuity correction), and
//! mean ± spread over seeds. Written here rather than pulled from a statistics crate because each
//! is a few lines over `rand` and `libm::erfc`, and the exact conventions (fixed-seed resampling,
//! two-sided exact p capped at 1) are part of the protocol we document.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Settings of a percentile bootstrap. Fixed seed: the same inputs always give the same interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 2000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// A two-sided interval `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Percentile bootstrap interval of the mean of `values`; `None` for no values.
pub fn bootstrap_mean_ci(values: &[f64], cfg: &Bootstrap) -> Option<Interval> {
    bootstrap_ci(values, cfg, mean)
}

/// The median (mean of the two middle values for an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Percentile bootstrap interval of the median of `values`; `None` for no values.
pub fn bootstrap_median_ci(values: &[f64], cfg: &Bootstrap) -> Option<Interval> {
    bootstrap_ci(values, cfg, median)
}

/// Percentile bootstrap interval of `statistic` over resamples of `values` (with replacement,
/// same size, fixed seed).
fn bootstrap_ci(
    values: &[f64],
    cfg: &Bootstrap,
    statistic: impl Fn(&[f64]) -> f64,
) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = values.len();
    let mut resample = vec![0.0; n];
    let stats: Vec<f64> = (0..cfg.resamples.max(1))
        .map(|_| {
            for x in resample.iter_mut() {
                *x = values[rng.random_range(0..n)];
            }
            statistic(&resample)
        })
        .collect();
    Some(percentile_interval(stats, cfg.level))
}

/// The central `level` interval of bootstrap statistics.
fn percentile_interval(mut stats: Vec<f64>, level: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Interval {
        lo: quantile_sorted(&stats, tail),
        hi: quantile_sorted(&stats, 1.0 - tail),
    }
}

/// Percentile interval of the mean of `values[seed][item]` under a two-level bootstrap: each
/// resample draws seeds with replacement, then items with replacement (the same items for every
/// drawn seed, so item pairing is kept), and averages; the interval so holds the variance over
/// seeds as well as over items. With one seed it is the item bootstrap. `None` for no values.
pub fn bootstrap_seeds_items_ci(values: &[Vec<f64>], cfg: &Bootstrap) -> Option<Interval> {
    let (k, n) = (values.len(), values.first()?.len());
    if n == 0 || values.iter().any(|v| v.len() != n) {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let stats: Vec<f64> = (0..cfg.resamples.max(1))
        .map(|_| {
            let seeds: Vec<usize> = (0..k).map(|_| rng.random_range(0..k)).collect();
            let mut sum = 0.0;
            for _ in 0..n {
                let i = rng.random_range(0..n);
                sum += seeds.iter().map(|&s| values[s][i]).sum::<f64>();
            }
            sum / (n * k) as f64
        })
        .collect();
    Some(percentile_interval(stats, cfg.level))
}

/// Mean of the paired differences `b[i] - a[i]` and its percentile bootstrap interval
/// (items are resampled, so each resample keeps the pairs together). `None` for no pairs.
pub fn paired_bootstrap_diff(
    a: &[f64],
    b: &[f64],
    cfg: &Bootstrap,
) -> anyhow::Result<Option<(f64, Interval)>> {
    anyhow::ensure!(
        a.len() == b.len(),
        "paired bootstrap needs equal lengths, got {} and {}",
        a.len(),
        b.len()
    );
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    Ok(bootstrap_mean_ci(&diffs, cfg).map(|ci| (mean(&diffs), ci)))
}

/// Exact two-sided McNemar test: `b` = pairs only A got right, `c` = pairs only B got right.
/// Under H0 the discordant pairs split Binomial(b + c, 1/2); p = 2 · P(X <= min(b, c)), capped at 1.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // Binomial pmf in log space: 2^-n underflows f64 beyond n = 1074.
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for k in 0..=b.min(c) {
        tail += log_pmf.exp();
        log_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln();
    }
    (2.0 * tail).min(1.0)
}

/// McNemar's chi-square test with Edwards' continuity correction:
/// statistic = (|b - c| - 1)² / (b + c), p = P(χ²₁ > statistic) = erfc(√(statistic / 2)).
/// Returns `(statistic, p)`; with no discordant pairs `(0, 1)`.
pub fn mcnemar_chi2(b: u64, c: u64) -> (f64, f64) {
    let n = b + c;
    if n == 0 {
        return (0.0, 1.0);
    }
    let d = (b as f64 - c as f64).abs() - 1.0;
    let stat = d.max(0.0).powi(2) / n as f64;
    (stat, libm::erfc((stat / 2.0).sqrt()))
}

/// Mean and sample standard deviation (n − 1 denominator; 0 for a single value) of per-seed results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

pub fn mean_std(values: &[f64]) -> Option<MeanStd> {
    if values.is_empty() {
        return None;
    }
    let m = mean(values);
    let n = values.len();
    let var = if n > 1 {
        values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(MeanStd {
        mean: m,
        std: var.sqrt(),
        n,
    })
}

/// Linear interpolation between order statistics (numpy's default), `q` in [0, 1].
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds that disagree widen the interval beyond the item bootstrap of their average; with one
    /// seed the two bootstraps are the same resampling of items.
    #[test]
    fn the_two_level_interval_holds_the_seed_variance() {
        let cfg = Bootstrap::default();
        let items = 400;
        // Seed 0 right on every item, seed 1 on none: the per-item average is 0.5 everywhere, so
        // the item bootstrap of the averages has no width at all.
        let split = vec![vec![1.0; items], vec![0.0; items]];
        let averaged: Vec<f64> = (0..items).map(|_| 0.5).collect();
        let flat = bootstrap_mean_ci(&averaged, &cfg).unwrap();
        assert_eq!((flat.lo, flat.hi), (0.5, 0.5));
        let two = bootstrap_seeds_items_ci(&split, &cfg).unwrap();
        assert!(two.lo <= 0.0 + 1e-12 && two.hi >= 1.0 - 1e-12, "{two:?}");
        // One seed: an interval around the mean of the items, as wide as the item bootstrap's.
        let one: Vec<f64> = (0..items)
            .map(|i| f64::from(u8::from(i % 4 == 0)))
            .collect();
        let a = bootstrap_seeds_items_ci(std::slice::from_ref(&one), &cfg).unwrap();
        let b = bootstrap_mean_ci(&one, &cfg).unwrap();
        assert!(a.lo < 0.25 && a.hi > 0.25);
        assert!(((a.hi - a.lo) - (b.hi - b.lo)).abs() < 0.02, "{a:?} {b:?}");
        assert!(bootstrap_seeds_items_ci(&[vec![1.0], vec![]], &cfg).is_none());
    }

    #[test]
    fn mcnemar_exact_by_hand() {
        // 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024.
        let close = |p: f64, want: f64| (p - want).abs() < 1e-12 * want;
        assert!(close(mcnemar_exact(1, 9), 0.021484375));
        assert!(close(mcnemar_exact(9, 1), 0.021484375));
        // 2 * C(3,0) / 2^3.
        assert!(close(mcnemar_exact(0, 3), 0.25));
        // 2 * (1 + 4 + 6) / 16 > 1: capped.
        assert_eq!(mcnemar_exact(2, 2), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large n must not underflow to 0 or NaN: b = c gives p = 1.
        assert!((mcnemar_exact(1500, 1500) - 1.0).abs() < 1e-9);
        let p = mcnemar_exact(1400, 1600);
        assert!(p > 0.0 && p < 0.001, "{p}");
    }

    #[test]
    fn mcnemar_chi2_by_hand() {
        // (|1 - 9| - 1)^2 / 10 = 4.9; P(chi2_1 > 4.9) = 0.026857 (chi-square table).
        let (stat, p) = mcnemar_chi2(1, 9);
        assert!((stat - 4.9).abs() < 1e-12);
        assert!((p - 0.026857).abs() < 1e-5, "{p}");
        // |b - c| = 1: the correction makes the statistic 0 and p = 1.
        assert_eq!(mcnemar_chi2(3, 4), (0.0, 1.0));
        assert_eq!(mcnemar_chi2(0, 0), (0.0, 1.0));
        // (|0 - 20| - 1)^2 / 20 = 18.05; p = 2.15e-5 (chi-square table).
        let (stat, p) = mcnemar_chi2(0, 20);
        assert!((stat - 18.05).abs() < 1e-12);
        assert!((p - 2.151e-5).abs() < 1e-7, "{p}");
    }

    #[test]
    fn mean_std_by_hand() {
        // Mean 5, squared deviations sum to 32, sample variance 32/7.
        let ms = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(ms.mean, 5.0);
        assert!((ms.std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(ms.n, 8);
        assert_eq!(
            mean_std(&[0.7]).unwrap(),
            MeanStd {
                mean: 0.7,
                std: 0.0,
                n: 1
            }
        );
        assert!(mean_std(&[]).is_none());
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 4.0);
        // pos = 0.5 * 3 = 1.5: halfway between 2 and 3.
        assert_eq!(quantile_sorted(&v, 0.5), 2.5);
    }

    #[test]
    fn bootstrap_interval_of_a_proportion() {
        let cfg = Bootstrap::default();
        // 200 ones and 200 zeros: normal approximation 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049.
        let v: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let ci = bootstrap_mean_ci(&v, &cfg).unwrap();
        assert!(
            (ci.lo - 0.451).abs() < 0.012 && (ci.hi - 0.549).abs() < 0.012,
            "{ci:?}"
        );
        // Fixed seed: identical again; another seed: (almost surely) different.
        assert_eq!(bootstrap_mean_ci(&v, &cfg).unwrap(), ci);
        assert_ne!(
            bootstrap_mean_ci(&v, &Bootstrap { seed: 7, ..cfg }).unwrap(),
            ci
        );
        // No spread, no width.
        assert_eq!(
            bootstrap_mean_ci(&[1.0; 10], &cfg).unwrap(),
            Interval { lo: 1.0, hi: 1.0 }
        );
        assert!(bootstrap_mean_ci(&[], &cfg).is_none());
    }

    #[test]
    fn paired_bootstrap_keeps_pairs_together() {
        let cfg = Bootstrap::default();
        // A constant per-item difference gives a zero-width interval, however much the items vary.
        let a: Vec<f64> = (0..50).map(|i| (i % 3 == 0) as u8 as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 1.0).collect();
        let (d, ci) = paired_bootstrap_diff(&a, &b, &cfg).unwrap().unwrap();
        assert_eq!((d, ci), (1.0, Interval { lo: 1.0, hi: 1.0 }));
        assert!(paired_bootstrap_diff(&a, &b[..49], &cfg).is_err());
        // A real improvement: B fixes 10 of A's 50 errors on 100 items.
        let a: Vec<f64> = (0..100).map(|i| (i >= 50) as u8 as f64).collect();
        let b: Vec<f64> = (0..100).map(|i| (i >= 40) as u8 as f64).collect();
        let (d, ci) = paired_bootstrap_diff(&a, &b, &cfg).unwrap().unwrap();
        assert!((d - 0.1).abs() < 1e-12);
        assert!(
            ci.lo > 0.03 && ci.lo < 0.1 && ci.hi > 0.1 && ci.hi < 0.17,
            "{ci:?}"
        );
    }

    #[test]
    fn median_and_its_interval() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (0..101).map(f64::from).collect();
        let ci = bootstrap_median_ci(&v, &Bootstrap::default()).unwrap();
        assert!(
            ci.lo < 50.0 && 50.0 < ci.hi && ci.hi - ci.lo < 40.0,
            "{ci:?}"
        );
        // One huge outlier moves the mean's interval, not the median's.
        let mut w = v.clone();
        w[0] = 1e6;
        let m = bootstrap_median_ci(&w, &Bootstrap::default()).unwrap();
        assert!(m.hi < 70.0, "{m:?}");
        assert!(bootstrap_mean_ci(&w, &Bootstrap::default()).unwrap().hi > 1000.0);
        assert!(bootstrap_median_ci(&[], &Bootstrap::default()).is_none());
    }
}
