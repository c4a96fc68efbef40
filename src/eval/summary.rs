//! A run's `summary.json` and `summary.md`: accuracy overall and per category with bootstrap
//! intervals, pair accuracy where items come in pairs (MMVP), and the cost per item.

use super::record::{ItemRecord, ToolUse};
use super::stats::{Bootstrap, Interval, bootstrap_mean_ci};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub bench: String,
    /// "direct" (the fixed protocol) or "tools" (the tool-using agent).
    pub mode: String,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub bootstrap: Bootstrap,
    pub overall: GroupStats,
    pub categories: BTreeMap<String, GroupStats>,
    pub cost: Cost,
}

/// Accuracy of a group of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ci95: Interval,
    /// Items whose output no extraction rule could read (counted wrong).
    pub unparsed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<PairStats>,
}

/// Pair accuracy, computed when every item of the group has a pair id (`meta.pair`, set by the
/// MMVP loader): a pair counts as right only when every item of it is right. Pairs with a
/// single item in the group (e.g. cut by `--limit`) are left out and counted in `incomplete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    pub n_pairs: usize,
    pub correct_pairs: usize,
    pub accuracy: f64,
    pub ci95: Interval,
    pub incomplete: usize,
}

/// Mean cost per item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub latency_s: f64,
    pub new_tokens: f64,
    pub prompt_tokens: f64,
    pub image_tokens: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_errors: Option<f64>,
    /// Share of all tool calls that were executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_call_share: Option<f64>,
    /// Share of all tool calls that were executed and whose crop contains the item's target box
    /// (over the items that name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_target_share: Option<f64>,
    pub total_seconds: f64,
}

/// Statistics of `records`, which must not be empty (a run without items has nothing to say).
pub fn group_stats(records: &[&ItemRecord], boot: &Bootstrap) -> GroupStats {
    let scores: Vec<f64> = records.iter().map(|r| r.correct as u8 as f64).collect();
    let correct = records.iter().filter(|r| r.correct).count();
    let n = records.len();
    GroupStats {
        n,
        correct,
        accuracy: correct as f64 / n.max(1) as f64,
        ci95: bootstrap_mean_ci(&scores, boot).unwrap_or(Interval { lo: 0.0, hi: 0.0 }),
        unparsed: records.iter().filter(|r| r.parsed.is_none()).count(),
        pairs: pair_stats(records, boot),
    }
}

fn pair_stats(records: &[&ItemRecord], boot: &Bootstrap) -> Option<PairStats> {
    let mut pairs: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    for r in records {
        pairs.entry(r.pair.as_deref()?).or_default().push(r.correct);
    }
    let complete: Vec<f64> = pairs
        .values()
        .filter(|v| v.len() >= 2)
        .map(|v| v.iter().all(|&c| c) as u8 as f64)
        .collect();
    let correct_pairs = complete.iter().filter(|&&c| c > 0.0).count();
    Some(PairStats {
        n_pairs: complete.len(),
        correct_pairs,
        accuracy: correct_pairs as f64 / complete.len().max(1) as f64,
        ci95: bootstrap_mean_ci(&complete, boot).unwrap_or(Interval { lo: 0.0, hi: 0.0 }),
        incomplete: pairs.len() - complete.len(),
    })
}

pub fn summarize(
    records: &[ItemRecord],
    bench: &str,
    mode: &str,
    max_new_tokens: usize,
    batch_size: usize,
    boot: &Bootstrap,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        !records.is_empty(),
        "no items were evaluated, nothing to summarize"
    );
    let all: Vec<&ItemRecord> = records.iter().collect();
    let mut by_cat: BTreeMap<String, Vec<&ItemRecord>> = BTreeMap::new();
    for r in records {
        by_cat.entry(r.category.clone()).or_default().push(r);
    }
    let n = records.len() as f64;
    let avg = |f: &dyn Fn(&ItemRecord) -> f64| records.iter().map(f).sum::<f64>() / n;
    let tools = records.iter().any(|r| r.tools.is_some());
    let cost = Cost {
        latency_s: avg(&|r| r.latency_s),
        new_tokens: avg(&|r| r.new_tokens as f64),
        prompt_tokens: avg(&|r| r.prompt_tokens as f64),
        image_tokens: avg(&|r| r.image_tokens as f64),
        tool_calls: tools.then(|| avg(&|r| r.tools.as_ref().map_or(0.0, |t| t.calls as f64))),
        tool_errors: tools
            .then(|| avg(&|r| r.tools.as_ref().map_or(0.0, |t| t.errors.len() as f64))),
        valid_call_share: share(records.iter().filter_map(|r| r.tools.as_ref()), |t| {
            Some(t.valid_calls)
        }),
        on_target_share: share(records.iter().filter_map(|r| r.tools.as_ref()), |t| {
            t.on_target
        }),
        total_seconds: records.iter().map(|r| r.latency_s).sum(),
    };
    Ok(Summary {
        bench: bench.into(),
        mode: mode.into(),
        max_new_tokens,
        batch_size,
        bootstrap: *boot,
        overall: group_stats(&all, boot),
        categories: by_cat
            .into_iter()
            .map(|(k, v)| (k, group_stats(&v, boot)))
            .collect(),
        cost,
    })
}

/// `sum(count) / sum(calls)` over the tool uses where `count` is known; `None` without calls.
fn share<'a>(
    uses: impl Iterator<Item = &'a ToolUse>,
    count: impl Fn(&ToolUse) -> Option<usize>,
) -> Option<f64> {
    let (hits, calls) = uses
        .filter_map(|t| count(t).map(|c| (c, t.calls)))
        .fold((0, 0), |(h, n), (c, k)| (h + c, n + k));
    (calls > 0).then(|| hits as f64 / calls as f64)
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn ci(i: &Interval) -> String {
    format!("[{}, {}]", pct(i.lo), pct(i.hi))
}

impl Summary {
    /// Markdown: one row per category, then the overall row; accuracies in percent.
    pub fn to_markdown(&self) -> String {
        let has_pairs = self.overall.pairs.is_some();
        let mut s = format!(
            "# {} ({}, max {} new tokens)\n\n| category | n | accuracy (%) | 95% CI | unparsed |",
            self.bench, self.mode, self.max_new_tokens
        );
        s.push_str(if has_pairs {
            " pairs | pair accuracy (%) | 95% CI |\n"
        } else {
            "\n"
        });
        s.push_str(if has_pairs {
            "|---|---:|---:|---|---:|---:|---:|---|\n"
        } else {
            "|---|---:|---:|---|---:|\n"
        });
        let row = |name: &str, g: &GroupStats| {
            let mut r = format!(
                "| {name} | {} | {} | {} | {} |",
                g.n,
                pct(g.accuracy),
                ci(&g.ci95),
                g.unparsed
            );
            if has_pairs {
                match &g.pairs {
                    Some(p) => r.push_str(&format!(
                        " {} | {} | {} |",
                        p.n_pairs,
                        pct(p.accuracy),
                        ci(&p.ci95)
                    )),
                    None => r.push_str(" | | |"),
                }
            }
            r + "\n"
        };
        for (name, g) in &self.categories {
            s.push_str(&row(name, g));
        }
        s.push_str(&row("**overall**", &self.overall));
        let c = &self.cost;
        s.push_str(&format!(
            "\nPer item: {:.3} s, {:.1} generated tokens, {:.0} prompt tokens ({:.0} image)",
            c.latency_s, c.new_tokens, c.prompt_tokens, c.image_tokens
        ));
        if let (Some(calls), Some(errors)) = (c.tool_calls, c.tool_errors) {
            s.push_str(&format!(", {calls:.2} tool calls ({errors:.2} failed)"));
            if let Some(t) = c.on_target_share {
                s.push_str(&format!(", {} % of calls valid and on target", pct(t)));
            }
        }
        s.push_str(&format!(". Total {:.1} s.\n", c.total_seconds));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::eval::record::graded as rec;

    #[test]
    fn per_category_and_pairs() {
        let recs = vec![
            rec("1", "x", Some("0"), true),
            rec("2", "x", Some("0"), true),
            rec("3", "x", Some("1"), true),
            rec("4", "x", Some("1"), false),
            rec("5", "y", Some("2"), false),
        ];
        let s = summarize(&recs, "mmvp", "direct", 4, 1, &Bootstrap::default()).unwrap();
        assert_eq!((s.overall.n, s.overall.correct), (5, 3));
        assert!((s.overall.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(s.overall.unparsed, 2);
        let p = s.overall.pairs.as_ref().unwrap();
        // Pair 0 right, pair 1 half right, pair 2 has one item only.
        assert_eq!((p.n_pairs, p.correct_pairs, p.incomplete), (2, 1, 1));
        assert_eq!(s.categories["x"].n, 4);
        assert_eq!(s.categories["y"].correct, 0);
        assert!(s.overall.ci95.lo <= 0.6 && s.overall.ci95.hi >= 0.6);
        assert_eq!(s.cost.total_seconds, 5.0);
        let md = s.to_markdown();
        assert!(md.contains("| x | 4 | 75.0 |"), "{md}");
        assert!(md.contains("| **overall** | 5 | 60.0 |"), "{md}");
        assert!(md.contains("pair accuracy"), "{md}");
        assert!(summarize(&[], "b", "direct", 4, 1, &Bootstrap::default()).is_err());
    }

    #[test]
    fn no_pairs_without_pair_ids() {
        let recs = vec![rec("1", "x", None, true), rec("2", "x", None, false)];
        let s = summarize(&recs, "b", "direct", 4, 1, &Bootstrap::default()).unwrap();
        assert!(s.overall.pairs.is_none());
        assert!(!s.to_markdown().contains("pair accuracy"));
    }
}
