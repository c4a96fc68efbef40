//! `pearl demo`: the paper's comparison, end to end, on a CPU. The stages run in the order data
//! flows, one file each: `data` (the synthetic world), `pretrain` (the base model), `finetune`
//! (SFT, Pearl, Pearl w/o NextLat, LVR), `evaluate` (every system on the held-out items),
//! `embeddings` + `tsne` (Figure 4), `table` (the numbers),
//! `figures` and `report` (the report directory). `config` holds the knobs, `model_dir` the demo
//! model's files, `progress` the stage headers.
//!
//! The output directory holds `report.md`, `table.json` and `figures/` at its top, and the work
//! behind them: `model/` (config and processor files), `data/`, `pretrain/` (with the base model
//! in `pretrain/base`), `runs/` (one fine-tuning per method and seed), `eval/` (per-item records).

pub mod config;
pub mod data;
pub mod embeddings;
pub mod evaluate;
pub mod figures;
pub mod finetune;
pub mod method;
pub mod model_dir;
pub mod pretrain;
pub mod progress;
pub mod report;
pub mod shipped;
pub mod table;
pub mod tsne;

pub use config::{BaseSource, DemoConfig};

use crate::model::Qwen2_5VlConfig;
use crate::train::data::load_items;
use crate::train::metrics::Row;
use anyhow::{Context, Result};
use evaluate::{Evaluated, System};
use finetune::{Finetuned, Method};
use report::{BaseCheck, Figures, NamedComparison, ReportData, Verdict};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished demo leaves behind: the report (or, with `pretrain_only`, the base model
/// directory) and its data (none with `pretrain_only`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: PathBuf,
    pub data: Option<ReportData>,
}

/// Stage 2: the base model, shipped (verified), given, or pretrained here; with its pretraining
/// log. Writes `base.json` (the recipe and checksum) beside a base pretrained here.
fn base_model(
    cfg: &DemoConfig,
    model_files: &Path,
    data: &data::DemoData,
    out: &Path,
    differs: &[String],
    stages: &mut progress::Stages,
    progress: bool,
) -> Result<(PathBuf, Vec<Row>, String)> {
    let dir = out.join("pretrain");
    match &cfg.base {
        BaseSource::Dir(given) => {
            let (base, rows) = stages.run("2/6 the given base model", true, || {
                pretrain::given_base(given)
            })?;
            Ok((base, rows, format!("given ({})", given.display())))
        }
        BaseSource::Shipped if differs.is_empty() => {
            let (base, rows) = stages.run(
                "2/6 the shipped base model (checksum verified)",
                true,
                || shipped::install(&dir.join("base"), cfg.max_pixels),
            )?;
            let m = shipped::manifest()?;
            let source = format!(
                "the shipped one (`assets/demo-base/`, SHA-256 {} verified; pretrained for {} steps \
                 in {:.0} s, rebuilt by `{}`)",
                &m.sha256[..16],
                m.steps,
                m.seconds,
                m.command
            );
            Ok((base, rows, source))
        }
        _ => {
            if progress && !differs.is_empty() {
                eprintln!(
                    "the shipped base model was made with other settings ({}): pretraining one",
                    differs.join(", ")
                );
            }
            stages.run("2/6 pretrain the base model", false, || {
                let started = Instant::now();
                let (base, summary) = pretrain::pretrain(cfg, model_files, data, &dir, progress)?;
                let m =
                    shipped::write_manifest(&base, cfg, &summary, started.elapsed().as_secs_f64())?;
                let why = if differs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the shipped base was made with other settings ({})",
                        differs.join(", ")
                    )
                };
                Ok((
                    base,
                    summary.metrics,
                    format!(
                        "pretrained from random weights in this run ({} steps, SHA-256 {}){why}",
                        m.steps,
                        &m.sha256[..16]
                    ),
                ))
            })
        }
    }
}

/// Runs every stage into `out`. `progress` shows stage headers and progress bars on stderr.
pub fn run(cfg: &DemoConfig, out: &Path, progress: bool) -> Result<Outcome> {
    cfg.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = std::path::absolute(out)
        .with_context(|| format!("cannot make {} absolute", out.display()))?;
    let mut stages = progress::Stages::new(progress);
    let model_files = out.join("model");
    model_dir::write_model_files(&model_files, cfg.max_pixels)?;

    // The settings in which a run meant for the shipped base differs from its recipe (none: the
    // shipped base fits). Only a base pretrained here needs the pretraining world's training split.
    let differs = match cfg.base {
        BaseSource::Shipped => shipped::mismatch(cfg)?,
        _ => Vec::new(),
    };
    let pretraining = match cfg.base {
        BaseSource::Pretrain => true,
        BaseSource::Dir(_) => false,
        BaseSource::Shipped => !differs.is_empty(),
    };
    let data = stages.run("1/6 synthesize the data", true, || {
        data::synthesize(cfg, &out.join("data"), pretraining)
    })?;
    let (base, pretrain_metrics, base_source) = base_model(
        cfg,
        &model_files,
        &data,
        &out,
        &differs,
        &mut stages,
        progress,
    )?;
    if cfg.pretrain_only {
        return Ok(Outcome {
            report: base.clone(),
            data: None,
        });
    }
    let runs: Vec<Finetuned> = stages.run("3/6 fine-tune five ways", false, || {
        let mut runs = Vec::new();
        for seed in cfg.seed_list() {
            for &method in &cfg.methods {
                if progress {
                    eprintln!("--- {} (seed {seed})", method.label());
                }
                runs.push(finetune::finetune(
                    cfg,
                    &base,
                    &data,
                    method,
                    seed,
                    &out.join("runs"),
                    progress,
                )?);
            }
        }
        Ok(runs)
    })?;

    let items = crate::eval::bench::jsonl::load(&data.test_items())?;
    let eval_dir = out.join("eval");
    let mut base_check = None;
    let evals: Vec<Evaluated> = stages.run("4/6 evaluate on the held-out items", false, || {
        if progress {
            eprintln!("--- base model");
        }
        let mut pretrain_items = Vec::new();
        for file in data.pretrain_files("val_mcq.jsonl") {
            pretrain_items.extend(crate::eval::bench::jsonl::load(&file)?);
        }
        let check = evaluate::evaluate_base_on_pretraining_world(
            cfg,
            &base,
            &pretrain_items,
            &eval_dir,
            progress,
        )?;
        let chance = pretrain_items
            .iter()
            .map(|i| 1.0 / i.options.len().max(1) as f64)
            .sum::<f64>()
            / pretrain_items.len().max(1) as f64;
        base_check = Some(BaseCheck {
            n: check.overall.n,
            accuracy: check.overall.accuracy,
            ci95: check.overall.ci95,
            chance,
            categories: check
                .categories
                .iter()
                .map(|(c, g)| (c.clone(), g.n, g.accuracy))
                .collect(),
            source: base_source.clone(),
        });
        let mut evals = evaluate::evaluate_base(cfg, &base, &items, &eval_dir, progress)?;
        for run in &runs {
            if progress {
                eprintln!("--- {} (seed {})", run.method.label(), run.seed);
            }
            evals.extend(evaluate::evaluate_finetuned(
                cfg, &base, run, &items, &eval_dir, progress,
            )?);
        }
        Ok(evals)
    })?;

    let first = |m: Method| {
        runs.iter()
            .find(|r| r.method == m)
            .with_context(|| format!("no {} run", m.label()))
    };
    let (sft, pearl) = (first(Method::Sft)?, first(Method::Pearl)?);
    let figures_dir = out.join("figures");
    std::fs::create_dir_all(&figures_dir)
        .with_context(|| format!("cannot create {}", figures_dir.display()))?;
    let alignment = stages.run("5/6 embeddings (t-SNE)", true, || {
        let val = load_items(&[data.val()], false, "validation")?;
        let val = &val[..cfg.eval.tsne_points.min(val.len())];
        let mut panels = Vec::new();
        for run in [sft, pearl] {
            let e = embeddings::view_embeddings(
                &base,
                &run.adapter,
                val,
                cfg.finetune.micro_batch,
                &cfg.device()?,
            )?;
            let xy = tsne::tsne_2d(&e)?;
            panels.push((run.method.label(), e, xy));
        }
        let refs: Vec<_> = panels
            .iter()
            .map(|(t, e, xy)| (*t, e, xy.clone()))
            .collect();
        tsne::plot_panels(&refs, &figures_dir.join("tsne.png"))?;
        let alignment: Vec<_> = panels
            .iter()
            .map(|(t, e, _)| (t.to_string(), e.alignment()))
            .collect();
        Ok(alignment)
    })?;

    let data_out = stages.run("6/6 write the report", true, || {
        let boot = evaluate::bootstrap(cfg);
        let table = table::build_table(&evals, &boot)?;
        let comparisons = [Method::Pearl, Method::PearlNoNextLat, Method::Lvr]
            .into_iter()
            .filter(|m| cfg.methods.contains(m))
            .map(|m| {
                Ok(NamedComparison {
                    a: Method::Sft.label().into(),
                    b: m.label().into(),
                    comparison: table::compare_with_sft(&evals, m, &boot)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let verdict = Verdict::from_comparison(&comparisons[0].comparison)?;
        let lvr_steps = table::lvr_points(&evals, &boot)?;
        let figures = write_figures(
            &figures_dir,
            &pretrain_metrics,
            &runs,
            &evals,
            &lvr_steps,
            table
                .chance
                .get(crate::eval::seeds::OVERALL)
                .copied()
                .unwrap_or(0.0),
            &table,
        )?;
        let lvr_examples = lvr_example_count(&data.train())?;
        Ok(ReportData {
            config: cfg.clone(),
            model_parameters: Qwen2_5VlConfig::from_file(&model_files.join("config.json"))?
                .num_params() as usize,
            table,
            base_on_pretraining_world: base_check
                .clone()
                .context("the base model was not checked")?,
            comparisons,
            verdict,
            lvr_steps,
            mediation: table::mediation_rows(&evals, &boot)?,
            alignment,
            lvr_examples: Some(lvr_examples),
            stages: Vec::new(),
            wall_seconds: 0.0,
            figures,
        })
    })?;
    // The report's own stage is timed too: the files are written after it, with every timing.
    let data_out = ReportData {
        stages: stages.done.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        ..data_out
    };
    report::write(&out, &data_out)?;
    Ok(Outcome {
        report: out.join("report.md"),
        data: Some(data_out),
    })
}

/// Trajectories LVR can train on (those with a crop call), out of all training trajectories.
fn lvr_example_count(train: &Path) -> Result<(usize, usize)> {
    let file = crate::data::trajectory::load_jsonl(train)?;
    let ex = crate::objective::lvr::LvrExamples::from_file(&file)?;
    Ok((ex.examples.len(), file.items.len()))
}

/// Draws every figure into `dir`; returns their paths relative to the report directory.
fn write_figures(
    dir: &Path,
    pretrain: &[Row],
    runs: &[Finetuned],
    evals: &[Evaluated],
    lvr_steps: &[table::LvrPoint],
    chance: f64,
    table: &table::Table,
) -> Result<Figures> {
    let curve = |rows: &[Row], split: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.split == split)
            .filter_map(|r| r.vlm.map(|v| (r.step as f64, v)))
            .collect()
    };
    let seed0 = runs.first().map(|r| r.seed);
    let finetune_curves: Vec<_> = runs
        .iter()
        .filter(|r| Some(r.seed) == seed0)
        .map(|r| {
            (
                r.method.label().to_string(),
                curve(&r.summary.metrics, "val"),
            )
        })
        .collect();
    figures::plot_loss_panels(
        &[
            (
                "pretraining (base model)".into(),
                vec![
                    ("train".into(), curve(pretrain, "train")),
                    ("validation".into(), curve(pretrain, "val")),
                ],
            ),
            ("fine-tuning: validation vlm loss".into(), finetune_curves),
        ],
        &dir.join("loss_curves.png"),
    )?;
    let mut per_run_loss = Vec::new();
    for r in runs {
        let name = format!("loss_{}-seed{}.png", r.method.slug(), r.seed);
        let from = r.run_dir.join("loss.png");
        std::fs::copy(&from, dir.join(&name))
            .with_context(|| format!("cannot copy {}", from.display()))?;
        per_run_loss.push(format!("figures/{name}"));
    }

    let overall = |s: &System| -> Option<f64> {
        let runs: Vec<_> = evals.iter().filter(|e| &e.system == s).collect();
        (!runs.is_empty()).then(|| {
            runs.iter().map(|e| e.summary.overall.accuracy).sum::<f64>() / runs.len() as f64
        })
    };
    let references: Vec<(String, f64)> = [
        System::Finetuned(Method::Pearl),
        System::Finetuned(Method::Sft),
        System::Base,
    ]
    .iter()
    .filter_map(|s| overall(s).map(|a| (s.label(), a)))
    .chain(std::iter::once(("chance".to_string(), chance)))
    .collect();
    let points: Vec<_> = lvr_steps
        .iter()
        .map(|p| (p.latent_steps, p.accuracy, p.ci95))
        .collect();
    figures::plot_lvr_steps(&points, &references, &dir.join("lvr_steps.png"))?;
    let latency_points: Vec<figures::LatencyPoint> = table
        .rows
        .iter()
        .filter_map(|r| {
            let cell = r.cells.get(crate::eval::seeds::OVERALL)?;
            Some(figures::LatencyPoint {
                label: r.system.clone(),
                latency_s: r.median_latency_s,
                latency_ci95: r.median_latency_ci95,
                accuracy: cell.accuracy,
                accuracy_ci95: cell.ci95,
            })
        })
        .collect();
    figures::plot_accuracy_vs_latency(&latency_points, chance, &dir.join("latency.png"))?;
    Ok(Figures {
        loss_curves: "figures/loss_curves.png".into(),
        per_run_loss,
        tsne: "figures/tsne.png".into(),
        lvr_steps: "figures/lvr_steps.png".into(),
        latency: "figures/latency.png".into(),
    })
}
