//! Paired comparison of evaluation runs on the same items (`pearl compare`).
//!
//! Items are paired by id; only ids present in every run of both sides are compared (the counts
//! left out are reported). Per category and overall: accuracy of each side, the difference
//! B − A with a paired bootstrap 95% interval (items resampled, pairs kept), and McNemar's exact
//! test on the discordant items. With several runs per side (seeds of one recipe) each side's
//! accuracy is mean ± std over its runs, the difference and its interval use each item's
//! correctness averaged over the side's runs, and McNemar (defined for one pair of 0/1 outcomes
//! per item) is left out.

use super::record::{ItemRecord, read_run};
use super::seeds;
use super::stats::{
    Bootstrap, Interval, MeanStd, mcnemar_chi2, mcnemar_exact, paired_bootstrap_diff,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: Vec<String>,
    pub b: Vec<String>,
    /// Items present in every run of both sides (the ones compared).
    pub n_common: usize,
    /// Distinct ids seen in some run but not in all of them (left out).
    pub n_left_out: usize,
    pub bootstrap: Bootstrap,
    /// Overall first, then categories in name order.
    pub rows: Vec<CompareRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub category: String,
    pub n: usize,
    pub acc_a: MeanStd,
    pub acc_b: MeanStd,
    /// Accuracy of B minus accuracy of A (fraction, not percent).
    pub diff: f64,
    pub diff_ci95: Interval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcnemar: Option<McNemar>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Items only A got right.
    pub only_a: u64,
    /// Items only B got right.
    pub only_b: u64,
    pub p_exact: f64,
    pub chi2: f64,
    pub p_chi2: f64,
}

/// A run: where it came from and its records.
pub struct Run {
    pub name: String,
    pub records: Vec<ItemRecord>,
}

impl Run {
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Run> {
        Ok(Run {
            name: dir.display().to_string(),
            records: read_run(dir)?,
        })
    }
}

pub fn compare_dirs(a: &[PathBuf], b: &[PathBuf], boot: &Bootstrap) -> anyhow::Result<Comparison> {
    let load = |dirs: &[PathBuf]| {
        dirs.iter()
            .map(|d| Run::load(d))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    compare(&load(a)?, &load(b)?, boot)
}

pub fn compare(a: &[Run], b: &[Run], boot: &Bootstrap) -> anyhow::Result<Comparison> {
    anyhow::ensure!(
        !a.is_empty() && !b.is_empty(),
        "each side needs at least one run"
    );
    let ia: Vec<_> = a.iter().map(index_by_id).collect::<anyhow::Result<_>>()?;
    let ib: Vec<_> = b.iter().map(index_by_id).collect::<anyhow::Result<_>>()?;
    let all = ia.iter().chain(&ib);

    let every_id: BTreeSet<&str> = all.clone().flat_map(|m| m.keys().copied()).collect();
    let common: BTreeSet<&str> = every_id
        .iter()
        .copied()
        .filter(|id| ia.iter().chain(&ib).all(|m| m.contains_key(id)))
        .collect();
    anyhow::ensure!(
        !common.is_empty(),
        "the runs share no item ids; were they made on the same benchmark?"
    );
    // The same id must be the same question: compare the gold answers.
    for id in &common {
        let first = ia[0][id];
        for (m, run) in all.clone().zip(a.iter().chain(b)) {
            anyhow::ensure!(
                m[id].answer == first.answer,
                "item {id:?} has answer {} in {} but {} in {}: not the same items",
                first.answer,
                a[0].name,
                m[id].answer,
                run.name
            );
        }
    }

    // Items by category (as the first A run names them), overall first.
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for id in &common {
        groups
            .entry(ia[0][id].category.clone())
            .or_default()
            .push(id);
    }
    let overall: Vec<&str> = common.iter().copied().collect();
    let mut rows = vec![row(seeds::OVERALL, &overall, &ia, &ib, boot)?];
    for (cat, ids) in &groups {
        rows.push(row(cat, ids, &ia, &ib, boot)?);
    }
    Ok(Comparison {
        a: a.iter().map(|r| r.name.clone()).collect(),
        b: b.iter().map(|r| r.name.clone()).collect(),
        n_common: common.len(),
        n_left_out: every_id.len() - common.len(),
        bootstrap: *boot,
        rows,
    })
}

fn index_by_id(run: &Run) -> anyhow::Result<HashMap<&str, &ItemRecord>> {
    let mut m = HashMap::new();
    for r in &run.records {
        anyhow::ensure!(
            m.insert(r.id.as_str(), r).is_none(),
            "{}: item id {:?} appears twice",
            run.name,
            r.id
        );
    }
    Ok(m)
}

fn row(
    category: &str,
    ids: &[&str],
    ia: &[HashMap<&str, &ItemRecord>],
    ib: &[HashMap<&str, &ItemRecord>],
    boot: &Bootstrap,
) -> anyhow::Result<CompareRow> {
    // Per item: fraction of the side's runs that got it right.
    let score = |side: &[HashMap<&str, &ItemRecord>], id: &str| {
        side.iter().filter(|m| m[id].correct).count() as f64 / side.len() as f64
    };
    let sa: Vec<f64> = ids.iter().map(|id| score(ia, id)).collect();
    let sb: Vec<f64> = ids.iter().map(|id| score(ib, id)).collect();
    let per_run = |side: &[HashMap<&str, &ItemRecord>]| -> Vec<f64> {
        side.iter()
            .map(|m| ids.iter().filter(|id| m[**id].correct).count() as f64 / ids.len() as f64)
            .collect()
    };
    let (diff, diff_ci95) = paired_bootstrap_diff(&sa, &sb, boot)?
        .ok_or_else(|| anyhow::anyhow!("category {category:?} has no items"))?;
    let mcnemar = (ia.len() == 1 && ib.len() == 1).then(|| {
        let only_a = sa.iter().zip(&sb).filter(|(x, y)| **x > **y).count() as u64;
        let only_b = sa.iter().zip(&sb).filter(|(x, y)| **x < **y).count() as u64;
        let (chi2, p_chi2) = mcnemar_chi2(only_a, only_b);
        McNemar {
            only_a,
            only_b,
            p_exact: mcnemar_exact(only_a, only_b),
            chi2,
            p_chi2,
        }
    });
    let ms = |v: Vec<f64>| super::stats::mean_std(&v).expect("a side has at least one run");
    Ok(CompareRow {
        category: category.into(),
        n: ids.len(),
        acc_a: ms(per_run(ia)),
        acc_b: ms(per_run(ib)),
        diff,
        diff_ci95,
        mcnemar,
    })
}

fn acc(m: &MeanStd) -> String {
    if m.n > 1 {
        format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.std)
    } else {
        format!("{:.1}", 100.0 * m.mean)
    }
}

impl Comparison {
    /// Markdown table; accuracies in percent, differences in percentage points.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "A: {}\nB: {}\n{} paired items{}.\n\n| category | n | A (%) | B (%) | B − A (pp) | 95% CI | McNemar p |\n|---|---:|---:|---:|---:|---|---:|\n",
            self.a.join(", "),
            self.b.join(", "),
            self.n_common,
            if self.n_left_out > 0 {
                format!(" ({} ids not in every run left out)", self.n_left_out)
            } else {
                String::new()
            },
        );
        for r in &self.rows {
            let p = r
                .mcnemar
                .as_ref()
                .map_or("–".to_string(), |m| format!("{:.3}", m.p_exact));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:+.1} | [{:+.1}, {:+.1}] | {} |\n",
                r.category,
                r.n,
                acc(&r.acc_a),
                acc(&r.acc_b),
                100.0 * r.diff,
                100.0 * r.diff_ci95.lo,
                100.0 * r.diff_ci95.hi,
                p
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, cat: &str, correct: bool) -> ItemRecord {
        crate::eval::record::graded(id, cat, None, correct)
    }

    fn run(name: &str, outcomes: &[(&str, &str, bool)]) -> Run {
        Run {
            name: name.into(),
            records: outcomes.iter().map(|(i, c, k)| rec(i, c, *k)).collect(),
        }
    }

    #[test]
    fn single_runs_get_mcnemar() {
        // 12 items in "x": A right on 0..2, B right on 0..2 plus 9 more (1 only-A, 9 only-B).
        let mut ra = vec![];
        let mut rb = vec![];
        for i in 0..12 {
            let id = format!("{i}");
            ra.push((id.clone(), i < 2 || i == 11));
            rb.push((id, i < 11));
        }
        let a = Run {
            name: "A".into(),
            records: ra.iter().map(|(i, k)| rec(i, "x", *k)).collect(),
        };
        let mut b = Run {
            name: "B".into(),
            records: rb.iter().map(|(i, k)| rec(i, "x", *k)).collect(),
        };
        // An extra item only B has is left out.
        b.records.push(rec("extra", "x", true));
        let c = compare(&[a], &[b], &Bootstrap::default()).unwrap();
        assert_eq!((c.n_common, c.n_left_out), (12, 1));
        assert_eq!(c.rows.len(), 2);
        let o = &c.rows[0];
        assert_eq!(o.category, "overall");
        assert!(
            (o.acc_a.mean - 3.0 / 12.0).abs() < 1e-12 && (o.acc_b.mean - 11.0 / 12.0).abs() < 1e-12
        );
        assert!((o.diff - 8.0 / 12.0).abs() < 1e-12);
        assert!(o.diff_ci95.lo > 0.0 && o.diff_ci95.hi <= 1.0);
        let m = o.mcnemar.as_ref().unwrap();
        assert_eq!((m.only_a, m.only_b), (1, 9));
        assert!((m.p_exact - 0.021484375).abs() < 1e-12);
        let md = c.to_markdown();
        assert!(
            md.contains("| overall | 12 | 25.0 | 91.7 | +66.7 |"),
            "{md}"
        );
        assert!(md.contains("| 0.021 |"), "{md}");
    }

    #[test]
    fn seeds_aggregate_without_mcnemar() {
        let a1 = run(
            "a1",
            &[("1", "x", true), ("2", "x", false), ("3", "y", false)],
        );
        let a2 = run(
            "a2",
            &[("1", "x", true), ("2", "x", true), ("3", "y", false)],
        );
        let b1 = run(
            "b1",
            &[("1", "x", true), ("2", "x", true), ("3", "y", true)],
        );
        let b2 = run(
            "b2",
            &[("1", "x", true), ("2", "x", true), ("3", "y", true)],
        );
        let c = compare(&[a1, a2], &[b1, b2], &Bootstrap::default()).unwrap();
        let x = c.rows.iter().find(|r| r.category == "x").unwrap();
        assert_eq!((x.acc_a.mean, x.acc_a.n), (0.75, 2));
        assert!((x.acc_a.std - 0.5 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(x.acc_b.mean, 1.0);
        assert!((x.diff - 0.25).abs() < 1e-12);
        assert!(x.mcnemar.is_none());
        assert!(
            c.to_markdown().contains("75.0 ± 35.4"),
            "{}",
            c.to_markdown()
        );
    }

    #[test]
    fn mismatched_runs_are_errors() {
        let a = run("a", &[("1", "x", true)]);
        let b = run("b", &[("2", "x", true)]);
        assert!(
            compare(&[a], &[b], &Bootstrap::default())
                .unwrap_err()
                .to_string()
                .contains("share no item ids")
        );
        let a = run("a", &[("1", "x", true), ("1", "x", false)]);
        let b = run("b", &[("1", "x", true)]);
        assert!(
            compare(&[a], &[b], &Bootstrap::default())
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let a = run("a", &[("1", "x", true)]);
        let mut b = run("b", &[("1", "x", true)]);
        b.records[0].answer = "C".into();
        assert!(
            compare(&[a], &[b], &Bootstrap::default())
                .unwrap_err()
                .to_string()
                .contains("not the same items")
        );
    }
}
