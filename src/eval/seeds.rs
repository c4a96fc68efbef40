//! Several runs of one recipe (different training seeds) summarised as mean ± spread, overall and
//! per category. Used by `pearl compare` and by reports that tabulate recipes.

use super::record::ItemRecord;
use super::stats::{MeanStd, mean_std};
use std::collections::{BTreeMap, BTreeSet};

/// Name of the all-items group in per-category maps.
pub const OVERALL: &str = "overall";

/// Accuracy of one run per category (plus `OVERALL`), over the items whose id is in `keep`
/// (all items when `keep` is `None`).
pub fn accuracy_by_category(
    run: &[ItemRecord],
    keep: Option<&BTreeSet<String>>,
) -> BTreeMap<String, f64> {
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in run
        .iter()
        .filter(|r| keep.is_none_or(|k| k.contains(&r.id)))
    {
        for key in [OVERALL, r.category.as_str()] {
            let t = tally.entry(key.to_string()).or_default();
            t.0 += r.correct as usize;
            t.1 += 1;
        }
    }
    tally
        .into_iter()
        .map(|(k, (right, n))| (k, right as f64 / n as f64))
        .collect()
}

/// Mean ± std over runs of each category's accuracy. A category missing from some runs is
/// aggregated over the runs that have it (`MeanStd::n` says how many).
pub fn aggregate(
    runs: &[Vec<ItemRecord>],
    keep: Option<&BTreeSet<String>>,
) -> BTreeMap<String, MeanStd> {
    let mut per_cat: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for (cat, acc) in accuracy_by_category(run, keep) {
            per_cat.entry(cat).or_default().push(acc);
        }
    }
    per_cat
        .into_iter()
        .filter_map(|(k, v)| Some((k, mean_std(&v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, cat: &str, correct: bool) -> ItemRecord {
        crate::eval::record::graded(id, cat, None, correct)
    }

    #[test]
    fn mean_and_std_over_seeds() {
        // Seed 1: x 1/2, y 1/1; seed 2: x 2/2, y 0/1.
        let s1 = vec![
            rec("1", "x", true),
            rec("2", "x", false),
            rec("3", "y", true),
        ];
        let s2 = vec![
            rec("1", "x", true),
            rec("2", "x", true),
            rec("3", "y", false),
        ];
        let agg = aggregate(&[s1.clone(), s2], None);
        assert_eq!(agg["x"].mean, 0.75);
        // Sample std of {0.5, 1.0}: |0.5 - 1.0| / sqrt(2).
        assert!((agg["x"].std - 0.5 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!((agg["y"].mean, agg["y"].n), (0.5, 2));
        assert!((agg[OVERALL].mean - 2.0 / 3.0).abs() < 1e-12);

        let keep: BTreeSet<String> = ["3".to_string()].into();
        let only = accuracy_by_category(&s1, Some(&keep));
        assert_eq!(only.len(), 2, "{only:?}");
        assert_eq!(only["y"], 1.0);
    }
}
