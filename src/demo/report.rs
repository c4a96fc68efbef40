//! Stage 5: the report directory. `table.json` holds every number (the Table-1-shaped table, the
//! paired comparisons, LVR per latent-step count, latency, view alignment, timings); `report.md`
//! presents the same numbers with the figures and says plainly whether Pearl beat SFT here.

use super::config::DemoConfig;
use super::embeddings::Alignment;
use super::table::{LvrPoint, MediationRow, Table};
use crate::eval::compare::Comparison;
use crate::eval::stats::Interval;
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Everything the report states.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub config: DemoConfig,
    /// Parameters of the demo model.
    pub model_parameters: usize,
    pub table: Table,
    /// The base model on held-out items of its pretraining world: accuracy, interval, items, and
    /// the chance level there.
    pub base_on_pretraining_world: BaseCheck,
    /// Pearl, Pearl w/o NextLat and LVR, each against SFT.
    pub comparisons: Vec<NamedComparison>,
    pub verdict: Verdict,
    pub lvr_steps: Vec<LvrPoint>,
    /// LVR's mediation test (empty without an LVR run).
    pub mediation: Vec<MediationRow>,
    /// View alignment of the t-SNE figure's embeddings, per model.
    pub alignment: Vec<(String, Alignment)>,
    /// LVR training examples (trajectories with a crop call) out of all training trajectories.
    pub lvr_examples: Option<(usize, usize)>,
    /// `(stage, seconds)` in order, and the total.
    pub stages: Vec<(String, f64)>,
    pub wall_seconds: f64,
    /// Figure paths relative to the report directory.
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseCheck {
    pub n: usize,
    pub accuracy: f64,
    pub ci95: Interval,
    pub chance: f64,
    /// `(category, items, accuracy)` of each question kind of the pretraining world.
    pub categories: Vec<(String, usize, f64)>,
    /// Where the base came from, in words (shipped and verified, pretrained here, given).
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamedComparison {
    pub a: String,
    pub b: String,
    pub comparison: Comparison,
}

/// Pearl vs SFT overall, in words and numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub pearl_accuracy: f64,
    pub sft_accuracy: f64,
    pub diff: f64,
    pub diff_ci95: Interval,
    pub mcnemar_p: Option<f64>,
    pub statement: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub loss_curves: String,
    pub per_run_loss: Vec<String>,
    pub tsne: String,
    pub lvr_steps: String,
    pub latency: String,
}

impl Verdict {
    pub fn from_comparison(c: &Comparison) -> Result<Self> {
        let row = c.rows.first().context("the comparison has no rows")?;
        let (lo, hi) = (row.diff_ci95.lo, row.diff_ci95.hi);
        let p = row.mcnemar.as_ref().map(|m| m.p_exact);
        let pts = |x: f64| format!("{:+.1} points", 100.0 * x);
        let statement = if lo > 0.0 {
            format!(
                "Pearl beat SFT here: {} overall, 95 % interval [{}, {}] excludes zero.",
                pts(row.diff),
                pts(lo),
                pts(hi)
            )
        } else if hi < 0.0 {
            format!(
                "Pearl did not beat SFT here: SFT was better by {} overall, 95 % interval [{}, {}] excludes zero.",
                pts(-row.diff),
                pts(-hi),
                pts(-lo)
            )
        } else {
            format!(
                "Pearl did not beat SFT here: the difference is {} overall and its 95 % interval [{}, {}] includes zero, so this run cannot tell them apart.",
                pts(row.diff),
                pts(lo),
                pts(hi)
            )
        };
        let statement = match p {
            Some(p) => format!("{statement} Exact McNemar test: p {}.", p_value(p)),
            None => statement,
        };
        Ok(Self {
            pearl_accuracy: row.acc_b.mean,
            sft_accuracy: row.acc_a.mean,
            diff: row.diff,
            diff_ci95: row.diff_ci95,
            mcnemar_p: p,
            statement,
        })
    }
}

/// Writes `table.json` and `report.md` into `dir`.
pub fn write(dir: &Path, data: &ReportData) -> Result<()> {
    let json = dir.join("table.json");
    std::fs::write(&json, serde_json::to_string_pretty(data)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(data))
        .with_context(|| format!("cannot write {}", md.display()))?;
    Ok(())
}

/// `= 0.146`, or `< 0.001` rather than a p-value printed as zero.
fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("= {p:.3}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn interval(i: &Interval) -> String {
    format!("[{}, {}]", pct(i.lo), pct(i.hi))
}

/// The table as markdown: accuracy (%) and its 95 % interval per category.
pub fn table_markdown(t: &Table) -> String {
    let mut s = String::from("| system |");
    for c in &t.columns {
        let _ = write!(s, " {c} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(t.columns.len()));
    s.push('\n');
    for row in &t.rows {
        let _ = write!(s, "| {} |", row.system);
        for c in &t.columns {
            let cell = &row.cells[c];
            let spread = cell
                .over_seeds
                .map(|m| format!(" (seeds {} ± {})", pct(m.mean), pct(m.std)))
                .unwrap_or_default();
            let _ = write!(
                s,
                " {} {}{spread} |",
                pct(cell.accuracy),
                interval(&cell.ci95)
            );
        }
        s.push('\n');
    }
    let _ = write!(s, "| chance (uniform guess) |");
    for c in &t.columns {
        let _ = write!(s, " {} |", pct(t.chance.get(c).copied().unwrap_or(0.0)));
    }
    s.push('\n');
    let n: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let n = t.rows.first().map_or(0, |r| r.cells[c].n);
            format!("{c} {n}")
        })
        .collect();
    let _ = writeln!(s, "\nItems per column: {}.", n.join(", "));
    s
}

/// The LVR mediation test (claim 3) with what it shows.
fn mediation_markdown(rows: &[MediationRow]) -> String {
    let mut s = format!(
        "## LVR mediation test (claim 3)\n\n\
         LVR at {} latent steps, with the vectors its latent steps feed back replaced: by zeros, by \
         Gaussian noise rescaled per item to the norm of the hidden state it replaces, and by the true \
         crop's target (the merged image embeddings of the expert crop's region of the scene, the rows \
         LVR's latents regress in training, in row-major order, averaged in contiguous runs down to one \
         vector per latent step). \"Changed\" is the share of answers whose letter differs from the \
         answer with LVR's own latents.\n\n\
         | latents fed | accuracy % | 95 % interval | changed % |\n|---|---|---|---|\n",
        super::config::LVR_STEPS
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.feed,
            pct(r.accuracy),
            interval(&r.ci95),
            pct(r.changed)
        );
    }
    let max_changed = rows.iter().map(|r| r.changed).fold(0.0, f64::max);
    let own = rows.first().map_or(0.0, |r| r.accuracy);
    let spread = rows
        .iter()
        .map(|r| (r.accuracy - own).abs())
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n{}\n",
        if max_changed < 0.02 {
            "The answers do not depend on what the latents hold: replacing them changes under 2 % of the answers."
                .to_string()
        } else {
            format!(
                "Replacing the latents changes up to {} % of the answers and moves accuracy by up to {} points.",
                pct(max_changed),
                pct(spread)
            )
        }
    );
    s
}

fn markdown(d: &ReportData) -> String {
    let c = &d.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Pearl demo: the paper's comparison on a synthetic visual-search world\n"
    );
    let _ = writeln!(
        s,
        "Produced by `pearl demo` in {:.1} minutes. Every number below is computed by this run from \
         the evaluation records in `eval/`; `table.json` holds the same numbers.\n",
        d.wall_seconds / 60.0
    );
    let _ = writeln!(s, "## Verdict\n\n{}\n", d.verdict.statement);
    let _ = writeln!(
        s,
        "Pearl {} % vs SFT {} % on {} held-out items ({} fine-tuning seed{}, same data, steps, learning rate, LoRA rank and seed for every method).\n",
        pct(d.verdict.pearl_accuracy),
        pct(d.verdict.sft_accuracy),
        d.table.n_items,
        c.seeds,
        if c.seeds == 1 { "" } else { "s" }
    );

    let _ = writeln!(s, "## Table 1 (this run)\n");
    let _ = writeln!(
        s,
        "Accuracy (%) on the held-out multiple-choice items, with 95 % percentile-bootstrap intervals over items{}. \
         Answers follow the fixed protocol (one turn, greedy, at most 4 new tokens), except the fine-tuned tool-calling \
         agent, which may call the crop tool up to {} times with {} tokens per turn; its latency includes running the tool.\n",
        if c.seeds > 1 {
            " (cells pool the seeds per item; the spread over seeds is in parentheses)"
        } else {
            ""
        },
        c.eval.agent_max_calls,
        c.eval.agent_max_new_tokens
    );
    s.push_str(&table_markdown(&d.table));
    s.push('\n');
    for row in &d.table.rows {
        if let Some(calls) = row.mean_tool_calls {
            let share = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{} %", pct(v)));
            let _ = writeln!(
                s,
                "{}: {:.2} tool calls per item on average; {} of the calls were valid, {} valid with a crop containing the target.\n",
                row.system,
                calls,
                share(row.valid_call_share),
                share(row.on_target_share)
            );
        }
    }

    let b = &d.base_on_pretraining_world;
    let _ = writeln!(
        s,
        "Sanity check of the base model: on {} held-out items of its pretraining world (small scenes, objects \
         plainly visible) it answers {} % {} (chance {} %); by category: {}. The base: {}.\n",
        b.n,
        pct(b.accuracy),
        interval(&b.ci95),
        pct(b.chance),
        b.categories
            .iter()
            .map(|(c, n, a)| format!("{c} {} % ({n} items)", pct(*a)))
            .collect::<Vec<_>>()
            .join(", "),
        b.source
    );
    if b.ci95.lo <= b.chance {
        let _ = writeln!(
            s,
            "**Caveat:** that interval includes chance, so this base model has not learned to answer even \
             where the objects are plainly visible; the fine-tuned rows then measure little beyond answer \
             format and letter bias. A larger model or longer pretraining (`DemoConfig`) is the remedy.\n"
        );
    }
    let _ = writeln!(s, "## Paired comparisons against SFT\n");
    let _ = writeln!(
        s,
        "Same items, paired: the difference (B − A, points) with its 95 % interval, {}, \
         and the exact McNemar p-value (one seed per side) from `eval::compare`.\n",
        if c.seeds > 1 {
            "a two-level bootstrap that resamples the fine-tuning seeds (pairing the two methods' \
             runs of the same seed) and then the items, so it holds the variance over seeds as well \
             as over items"
        } else {
            "a paired bootstrap over items (one fine-tuning seed: no variance over seeds is measured)"
        }
    );
    s.push_str("| A | B | category | n | A % | B % | B − A | 95 % interval | McNemar p |\n|---|---|---|---|---|---|---|---|---|\n");
    for nc in &d.comparisons {
        for r in &nc.comparison.rows {
            let p = r
                .mcnemar
                .as_ref()
                .map_or("n/a (several seeds)".to_string(), |m| {
                    p_value(m.p_exact).trim_start_matches("= ").to_string()
                });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:+.1} | {} | {} |",
                nc.a,
                nc.b,
                r.category,
                r.n,
                pct(r.acc_a.mean),
                pct(r.acc_b.mean),
                100.0 * r.diff,
                interval(&r.diff_ci95),
                p
            );
        }
    }
    s.push('\n');

    let f = &d.figures;
    let _ = writeln!(s, "## Loss curves\n\n![loss curves]({})\n", f.loss_curves);
    let _ = writeln!(
        s,
        "Left: pretraining of the base model (full fine-tuning, captions and direct questions, no tools). \
         Right: the next-token (vlm) validation loss of the four fine-tunings; LVR's is on the answer only, \
         so its level is not comparable with the others'. Every term of each run: {}.\n",
        f.per_run_loss
            .iter()
            .map(|p| format!("[{p}]({p})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((used, all)) = d.lvr_examples {
        let _ = writeln!(
            s,
            "LVR trains on the {used} of {all} training trajectories that crop (its target is the crop's region); \
             the other methods use all {all}.\n"
        );
    }

    let _ = writeln!(
        s,
        "## Input- and trajectory-view embeddings (Figure 4)\n\n![t-SNE]({})\n",
        f.tsne
    );
    let _ = writeln!(
        s,
        "t-SNE of the last-token embeddings of held-out trajectories: the input view <I0, Q> with the \
         predictor tokens (circles, JEPA's prediction) and the trajectory view (crosses, JEPA's target), \
         coloured by category. Mean cosine of each prediction with its own target vs with other \
         trajectories' targets:\n"
    );
    s.push_str("| model | matched | mismatched |\n|---|---|---|\n");
    for (name, a) in &d.alignment {
        let _ = writeln!(
            s,
            "| {name} | {:.3} | {:.3} |",
            a.matched_cosine, a.mismatched_cosine
        );
    }
    s.push('\n');

    let _ = writeln!(
        s,
        "## LVR: accuracy vs latent steps (Figure 3)\n\n![LVR steps]({})\n",
        f.lvr_steps
    );
    s.push_str("| latent steps | accuracy % | 95 % interval |\n|---|---|---|\n");
    for p in &d.lvr_steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            p.latent_steps,
            pct(p.accuracy),
            interval(&p.ci95)
        );
    }
    s.push('\n');
    if !d.mediation.is_empty() {
        s.push_str(&mediation_markdown(&d.mediation));
    }

    let _ = writeln!(
        s,
        "## Accuracy vs answer latency\n\n![latency]({})\n\n\
         Each system of Table 1 is a point: its median seconds per answer on the held-out items (log scale; \
         for the tool-calling agent every turn and every crop it ran) against its accuracy, with 95 % \
         percentile-bootstrap intervals on both (over answers for the median, over items for accuracy).\n",
        f.latency
    );
    for row in &d.table.rows {
        let _ = writeln!(
            s,
            "- {}: median {:.4} s [{:.4}, {:.4}]",
            row.system,
            row.median_latency_s,
            row.median_latency_ci95.lo,
            row.median_latency_ci95.hi
        );
    }
    s.push('\n');
    let _ = writeln!(s, "## Setting\n");
    let _ = writeln!(
        s,
        "- Model: a Qwen2.5-VL-shaped model with {:.2} M parameters (`assets/demo-model/config.json`), \
         images at most {} pixels, pretrained from random weights for {} steps.\n\
         - Data: {} training and {} validation trajectories (one crop each{}), {} held-out test items on \
         {}-pixel {} scenes with {}-pixel objects; questions: {}, options in one fixed order \
         (a model this small, trained from scratch, does not learn to look a letter up in a shuffled list \
         within the budget); {} pretraining examples on {}-pixel {} scenes ({}){}.\n\
         - Fine-tuning: {} steps, micro-batch {}, learning rate {}, LoRA rank {} (alpha {}), best checkpoint by \
         validation loss every {} steps; Pearl: K = 4 predictor tokens, lambda = 0.2.\n\
         - Seeds: data {}, fine-tuning {:?}.\n",
        d.model_parameters as f64 / 1e6,
        c.max_pixels,
        c.pretrain.steps,
        c.data.train,
        c.data.val,
        if c.data.crop_grid {
            ", from a vocabulary of nine half-size windows"
        } else {
            ""
        },
        c.data.test,
        c.data.scene_side,
        if c.data.tools_plain {
            "plain"
        } else {
            "noisy, cluttered"
        },
        c.data.object_size,
        c.data
            .kinds
            .iter()
            .map(|k| k.category())
            .collect::<Vec<_>>()
            .join(", "),
        c.data.pretrain_train,
        c.data.pretrain_side,
        if c.data.pretrain_plain {
            "plain"
        } else {
            "noisy, cluttered"
        },
        c.data
            .pretrain_kinds
            .iter()
            .map(|k| k.category())
            .chain(["captions"])
            .collect::<Vec<_>>()
            .join(", "),
        if c.data.pretrain_scene_kinds.is_empty() {
            String::new()
        } else {
            format!(
                " and {} on {}-pixel scenes laid out as the test items' ({})",
                c.data.pretrain_scene_train,
                c.data.scene_side,
                c.data
                    .pretrain_scene_kinds
                    .iter()
                    .map(|k| k.category())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        c.finetune.steps,
        c.finetune.micro_batch,
        c.finetune.lr,
        c.lora_rank,
        2 * c.lora_rank,
        c.finetune.eval_every,
        c.seed,
        c.seed_list()
    );
    let _ = writeln!(s, "## Time per stage\n");
    s.push_str("| stage | seconds |\n|---|---|\n");
    for (name, secs) in &d.stages {
        let _ = writeln!(s, "| {name} | {secs:.1} |");
    }
    let _ = writeln!(s, "| total | {:.1} |", d.wall_seconds);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compare::{CompareRow, McNemar};
    use crate::eval::stats::{Bootstrap, MeanStd};

    fn comparison(diff: f64, lo: f64, hi: f64) -> Comparison {
        let ms = |mean| MeanStd {
            mean,
            std: 0.0,
            n: 1,
        };
        Comparison {
            a: vec!["SFT".into()],
            b: vec!["Pearl".into()],
            n_common: 100,
            n_left_out: 0,
            bootstrap: Bootstrap::default(),
            rows: vec![CompareRow {
                category: "overall".into(),
                n: 100,
                acc_a: ms(0.5),
                acc_b: ms(0.5 + diff),
                diff,
                diff_ci95: Interval { lo, hi },
                mcnemar: Some(McNemar {
                    only_a: 3,
                    only_b: 9,
                    p_exact: 0.146,
                    chi2: 2.08,
                    p_chi2: 0.149,
                }),
            }],
        }
    }

    #[test]
    fn the_verdict_follows_the_interval_of_the_paired_difference() {
        let won = Verdict::from_comparison(&comparison(0.06, 0.01, 0.11)).unwrap();
        assert!(
            won.statement.starts_with("Pearl beat SFT"),
            "{}",
            won.statement
        );
        assert!(won.statement.contains("p = 0.146"), "{}", won.statement);
        let tie = Verdict::from_comparison(&comparison(0.06, -0.01, 0.13)).unwrap();
        assert!(
            tie.statement.contains("cannot tell them apart"),
            "{}",
            tie.statement
        );
        let lost = Verdict::from_comparison(&comparison(-0.06, -0.11, -0.01)).unwrap();
        assert!(
            lost.statement.contains("SFT was better by +6.0 points"),
            "{}",
            lost.statement
        );
        assert!((lost.pearl_accuracy - 0.44).abs() < 1e-12);
    }
}
