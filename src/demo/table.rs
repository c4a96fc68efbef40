//! The numbers of the report, computed from the evaluation records: a table shaped like the
//! paper's Table 1 (one row per system, one column per category, accuracy with a 95 % bootstrap
//! interval over items), paired comparisons against SFT (`eval::compare`: paired bootstrap of the
//! difference, McNemar's test with one seed), mean ± std over fine-tuning seeds
//! (`eval::seeds`), and LVR's accuracy per latent-step count. Everything here is plain data;
//! `report` writes it out.

use super::evaluate::{Evaluated, Mediation, System};
use super::finetune::Method;
use crate::eval::compare::{Comparison, Run, compare};
use crate::eval::seeds::{self, OVERALL};
use crate::eval::stats::{
    Bootstrap, Interval, MeanStd, bootstrap_mean_ci, bootstrap_seeds_items_ci,
};
use crate::infer::lvr::LatentFeed;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub n_items: usize,
    /// `overall` first, then the categories in name order.
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
    /// Expected accuracy of a uniform guess among each item's options, per column.
    pub chance: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableRow {
    pub system: String,
    /// The paper's blocks: no fine-tuning / tool use at inference / fine-tuned.
    pub block: String,
    pub seeds: usize,
    /// Column name -> cell.
    pub cells: BTreeMap<String, Cell>,
    /// Mean seconds per answer (the harness's latency field, averaged over items and seeds).
    pub mean_latency_s: f64,
    /// Median seconds per answer over items and seeds (tool execution included for the agent),
    /// with its percentile-bootstrap interval over those answers.
    pub median_latency_s: f64,
    pub median_latency_ci95: Interval,
    /// Mean tool calls per item (tool-using rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_tool_calls: Option<f64>,
    /// Share of the calls that were executed, and of those executed whose crop contains the
    /// item's target box (tool-using rows only; `eval::summary::Cost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_call_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_target_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub n: usize,
    /// Per item, the fraction of seeds that got it right, averaged over items.
    pub accuracy: f64,
    /// Percentile bootstrap over items.
    pub ci95: Interval,
    /// Accuracy per seed, mean ± sample std (with several seeds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_seeds: Option<MeanStd>,
}

/// LVR's accuracy at one latent-step count (the paper's Figure 3).
#[derive(Debug, Clone, Serialize)]
pub struct LvrPoint {
    pub latent_steps: usize,
    pub accuracy: f64,
    pub ci95: Interval,
}

/// The evaluations of one system over its seeds.
fn runs_of<'a>(evals: &'a [Evaluated], system: &System) -> Vec<&'a Evaluated> {
    evals.iter().filter(|e| &e.system == system).collect()
}

/// Systems in table order.
pub fn table_systems(lvr: bool) -> Vec<System> {
    let mut v = vec![
        System::Base,
        System::Finetuned(Method::ToolCall),
        System::Finetuned(Method::Sft),
        System::Finetuned(Method::PearlNoNextLat),
        System::Finetuned(Method::Pearl),
    ];
    if lvr {
        v.insert(3, System::Finetuned(Method::Lvr));
    }
    v
}

fn block(system: &System) -> &'static str {
    match system {
        System::Base => "no fine-tuning",
        System::Finetuned(Method::ToolCall) => {
            "fine-tuned on the same trajectories with tool calls, tools at inference"
        }
        _ => "fine-tuned on the same trajectories (LoRA, same steps and seed)",
    }
}

/// A per-run share of tool calls pooled over seeds, weighted by each run's calls.
fn pooled_share(
    runs: &[&Evaluated],
    share: impl Fn(&crate::eval::summary::Cost) -> Option<f64>,
) -> Option<f64> {
    let (mut hits, mut calls) = (0.0, 0.0);
    for e in runs {
        let c = &e.summary.cost;
        let (Some(s), Some(per_item)) = (share(c), c.tool_calls) else {
            continue;
        };
        let n = per_item * e.records.len() as f64;
        (hits, calls) = (hits + s * n, calls + n);
    }
    (calls > 0.0).then(|| hits / calls)
}

pub fn build_table(evals: &[Evaluated], boot: &Bootstrap) -> Result<Table> {
    let mut categories: BTreeSet<String> = BTreeSet::new();
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for e in evals {
        for r in &e.records {
            categories.insert(r.category.clone());
            ids.insert(&r.id);
        }
    }
    let mut columns = vec![OVERALL.to_string()];
    columns.extend(categories);
    let mut rows = Vec::new();
    let has_lvr = evals
        .iter()
        .any(|e| e.system == System::Finetuned(Method::Lvr));
    for system in table_systems(has_lvr) {
        let runs = runs_of(evals, &system);
        if runs.is_empty() {
            continue;
        }
        let mut cells = BTreeMap::new();
        for col in &columns {
            cells.insert(col.clone(), cell(&runs, col, boot)?);
        }
        let all: Vec<_> = runs.iter().flat_map(|e| &e.records).collect();
        let latencies: Vec<f64> = all.iter().map(|r| r.latency_s).collect();
        let mean_latency_s = crate::eval::stats::mean(&latencies);
        let median_latency_ci95 = crate::eval::stats::bootstrap_median_ci(&latencies, boot)
            .context("a row without answers has no latency")?;
        let calls: Vec<f64> = all
            .iter()
            .filter_map(|r| r.tools.as_ref().map(|t| t.calls as f64))
            .collect();
        rows.push(TableRow {
            system: system.label(),
            block: block(&system).into(),
            seeds: runs.len(),
            cells,
            mean_latency_s,
            median_latency_s: crate::eval::stats::median(&latencies),
            median_latency_ci95,
            mean_tool_calls: (!calls.is_empty())
                .then(|| calls.iter().sum::<f64>() / calls.len() as f64),
            valid_call_share: pooled_share(&runs, |c| c.valid_call_share),
            on_target_share: pooled_share(&runs, |c| c.on_target_share),
        });
    }
    let chance = columns
        .iter()
        .map(|c| (c.clone(), chance_of(evals, c)))
        .collect();
    Ok(Table {
        n_items: ids.len(),
        columns,
        rows,
        chance,
    })
}

/// Mean of 1 / (number of options) over the column's items (read from the first run's prompts,
/// whose options are the lines starting with a letter in parentheses).
fn chance_of(evals: &[Evaluated], column: &str) -> f64 {
    let Some(first) = evals.first() else {
        return 0.0;
    };
    let odds: Vec<f64> = first
        .records
        .iter()
        .filter(|r| column == OVERALL || r.category == column)
        .map(|r| {
            let options = r
                .prompt
                .lines()
                .filter(|l| {
                    let b = l.as_bytes();
                    b.len() >= 3 && b[0] == b'(' && b[1].is_ascii_uppercase() && b[2] == b')'
                })
                .count();
            1.0 / options.max(1) as f64
        })
        .collect();
    odds.iter().sum::<f64>() / odds.len().max(1) as f64
}

/// The cell of `column` over the system's runs (one per seed).
fn cell(runs: &[&Evaluated], column: &str, boot: &Bootstrap) -> Result<Cell> {
    let in_column = |category: &str| column == OVERALL || column == category;
    // Per item id: right answers over seeds.
    let mut per_item: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in runs {
        for r in e.records.iter().filter(|r| in_column(&r.category)) {
            let t = per_item.entry(&r.id).or_default();
            t.0 += r.correct as usize;
            t.1 += 1;
        }
    }
    let scores: Vec<f64> = per_item
        .values()
        .map(|&(right, n)| right as f64 / n as f64)
        .collect();
    let ci95 =
        bootstrap_mean_ci(&scores, boot).with_context(|| format!("no items in column {column}"))?;
    let records: Vec<_> = runs.iter().map(|e| e.records.clone()).collect();
    let over_seeds = (runs.len() > 1)
        .then(|| seeds::aggregate(&records, None).get(column).copied())
        .flatten();
    Ok(Cell {
        n: scores.len(),
        accuracy: scores.iter().sum::<f64>() / scores.len() as f64,
        ci95,
        over_seeds,
    })
}

/// `method` against SFT on the same items (all seeds of each side).
pub fn compare_with_sft(
    evals: &[Evaluated],
    method: Method,
    boot: &Bootstrap,
) -> Result<Comparison> {
    let side = |m: Method| -> Vec<Run> {
        runs_of(evals, &System::Finetuned(m))
            .into_iter()
            .map(|e| Run {
                name: format!(
                    "{} (seed {})",
                    m.label(),
                    e.seed.map_or("-".into(), |s| s.to_string())
                ),
                records: e.records.clone(),
            })
            .collect()
    };
    let mut c = compare(&side(Method::Sft), &side(method), boot)
        .with_context(|| format!("comparing {} with SFT", method.label()))?;
    let (sft, other) = (
        runs_of(evals, &System::Finetuned(Method::Sft)),
        runs_of(evals, &System::Finetuned(method)),
    );
    if sft.len() > 1 {
        // The item bootstrap of per-item averages leaves out the spread over seeds.
        for row in &mut c.rows {
            row.diff_ci95 = seed_item_interval(&sft, &other, &row.category, boot)?;
        }
    }
    Ok(c)
}

/// The interval of B − A over seeds and items (`stats::bootstrap_seeds_items_ci`): per
/// fine-tuning seed, the per-item difference of the two methods' runs with that seed.
fn seed_item_interval(
    a: &[&Evaluated],
    b: &[&Evaluated],
    column: &str,
    boot: &Bootstrap,
) -> Result<Interval> {
    let in_column = |category: &str| column == OVERALL || column == category;
    let mut diffs = Vec::new();
    for ea in a {
        let eb = b
            .iter()
            .find(|e| e.seed == ea.seed)
            .with_context(|| format!("no run of the other method with seed {:?}", ea.seed))?;
        let right: BTreeMap<&str, bool> = eb
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.correct))
            .collect();
        let mut d = Vec::new();
        for r in ea.records.iter().filter(|r| in_column(&r.category)) {
            let other = right
                .get(r.id.as_str())
                .with_context(|| format!("item {} is missing from a run", r.id))?;
            d.push(f64::from(u8::from(*other)) - f64::from(u8::from(r.correct)));
        }
        diffs.push(d);
    }
    bootstrap_seeds_items_ci(&diffs, boot)
        .with_context(|| format!("no items in column {column} to compare"))
}

/// One row of the LVR mediation test: LVR at its published step count with its latents fed as
/// `feed` says (its own first).
#[derive(Debug, Clone, Serialize)]
pub struct MediationRow {
    pub feed: String,
    pub accuracy: f64,
    pub ci95: Interval,
    /// Share of answers (item and seed) whose letter differs from the answer with LVR's own
    /// latents: zero when the answer does not depend on what the latents hold.
    pub changed: f64,
}

/// The mediation rows: own latents, then each replacement (none without an LVR run).
pub fn mediation_rows(evals: &[Evaluated], boot: &Bootstrap) -> Result<Vec<MediationRow>> {
    let own = runs_of(evals, &System::Finetuned(Method::Lvr));
    if own.is_empty() {
        return Ok(Vec::new());
    }
    let own_answer: BTreeMap<(Option<u64>, &str), &Option<String>> = own
        .iter()
        .flat_map(|e| {
            e.records
                .iter()
                .map(move |r| ((e.seed, r.id.as_str()), &r.parsed))
        })
        .collect();
    let row = |feed: String, runs: &[&Evaluated]| -> Result<MediationRow> {
        let c = cell(runs, OVERALL, boot)?;
        let (mut changed, mut n) = (0usize, 0usize);
        for e in runs {
            for r in &e.records {
                let before = own_answer.get(&(e.seed, r.id.as_str())).with_context(|| {
                    format!("item {} has no answer with LVR's own latents", r.id)
                })?;
                changed += usize::from(**before != r.parsed);
                n += 1;
            }
        }
        Ok(MediationRow {
            feed,
            accuracy: c.accuracy,
            ci95: c.ci95,
            changed: changed as f64 / n.max(1) as f64,
        })
    };
    let mut rows = vec![row(LatentFeed::Own.label().into(), &own)?];
    for m in Mediation::ALL {
        let runs = runs_of(evals, &System::LvrMediation(m));
        if !runs.is_empty() {
            rows.push(row(m.label().into(), &runs)?);
        }
    }
    Ok(rows)
}

/// LVR's accuracy per latent-step count (all seeds pooled per item), in step order.
pub fn lvr_points(evals: &[Evaluated], boot: &Bootstrap) -> Result<Vec<LvrPoint>> {
    let mut steps: Vec<usize> = evals
        .iter()
        .filter_map(|e| match e.system {
            System::LvrSteps(s) => Some(s),
            _ => None,
        })
        .collect();
    steps.sort_unstable();
    steps.dedup();
    steps
        .into_iter()
        .map(|s| {
            let c = cell(&runs_of(evals, &System::LvrSteps(s)), OVERALL, boot)?;
            Ok(LvrPoint {
                latent_steps: s,
                accuracy: c.accuracy,
                ci95: c.ci95,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::record::ItemRecord;
    use crate::eval::summary::summarize;
    use std::path::PathBuf;

    fn rec(id: &str, cat: &str, correct: bool) -> ItemRecord {
        crate::eval::record::graded(id, cat, None, correct)
    }

    fn eval(system: System, seed: Option<u64>, correct: &[bool]) -> Evaluated {
        let records: Vec<ItemRecord> = correct
            .iter()
            .enumerate()
            .map(|(i, &c)| rec(&format!("q{i}"), if i % 2 == 0 { "x" } else { "y" }, c))
            .collect();
        Evaluated {
            system,
            seed,
            dir: PathBuf::new(),
            summary: summarize(&records, "t", "direct", 4, 1, &Bootstrap::default()).unwrap(),
            records,
        }
    }

    #[test]
    fn cells_pool_seeds_per_item_and_comparisons_pair_items() {
        let boot = Bootstrap::default();
        let sft = System::Finetuned(Method::Sft);
        let pearl = System::Finetuned(Method::Pearl);
        let evals = vec![
            eval(System::Base, None, &[false, false, true, false]),
            eval(sft.clone(), Some(0), &[true, false, false, false]),
            eval(sft, Some(1), &[true, true, false, false]),
            eval(pearl.clone(), Some(0), &[true, true, true, false]),
            eval(pearl, Some(1), &[true, true, true, true]),
        ];
        let t = build_table(&evals, &boot).unwrap();
        assert_eq!(t.columns, vec!["overall", "x", "y"]);
        assert_eq!(t.n_items, 4);
        let row = |name: &str| t.rows.iter().find(|r| r.system == name).unwrap();
        // SFT: items right in 2/2, 1/2, 0/2, 0/2 seeds -> (1 + 0.5) / 4.
        let sft_overall = &row("SFT").cells["overall"];
        assert!((sft_overall.accuracy - 0.375).abs() < 1e-12);
        assert_eq!(sft_overall.over_seeds.unwrap().n, 2);
        // Column y holds q1 and q3: Pearl right on q1 twice, q3 once.
        assert!((row("Pearl").cells["y"].accuracy - 0.75).abs() < 1e-12);
        assert!(
            row("Base (no fine-tuning)").cells["overall"]
                .over_seeds
                .is_none()
        );
        let c = compare_with_sft(&evals, Method::Pearl, &boot).unwrap();
        assert_eq!(c.rows[0].category, OVERALL);
        assert!((c.rows[0].diff - (0.875 - 0.375)).abs() < 1e-12);
        // Two seeds: the interval is the seeds-and-items bootstrap's, around the difference.
        let i = c.rows[0].diff_ci95;
        assert!(i.lo <= c.rows[0].diff && c.rows[0].diff <= i.hi, "{i:?}");
        let pairs: Vec<Vec<f64>> = vec![vec![0.0, 1.0, 1.0, 0.0], vec![0.0, 0.0, 1.0, 1.0]];
        assert_eq!(Some(i), bootstrap_seeds_items_ci(&pairs, &boot));
    }
}
