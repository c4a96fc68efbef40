//! Metrics of a run: one JSON line per training step and per validation, and the loss curve (PNG)
//! drawn from them at the end. Non-finite numbers are written as `null` (JSON has no NaN).

use crate::objective::LossValues;
use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `train` or `val`.
    pub split: String,
    pub step: usize,
    pub vlm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jepa: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nextlat_state: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nextlat_token: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<f64>,
    pub total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Seconds the step (or the validation pass) took.
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Examples of this step's micro-batches skipped for exceeding `max_tokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub too_long: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Row {
    pub fn new(split: &str, step: usize, v: &LossValues, seconds: f64) -> Self {
        Self {
            split: split.into(),
            step,
            vlm: finite(v.vlm),
            jepa: v.jepa.and_then(finite),
            nextlat_state: v.nextlat_state.and_then(finite),
            nextlat_token: v.nextlat_token.and_then(finite),
            latent: v.latent.and_then(finite),
            total: finite(v.total),
            lr: None,
            grad_norm: None,
            tokens_per_s: None,
            seconds,
            skipped: false,
            too_long: 0,
        }
    }

    /// `(term name, value)` of each loss term present.
    pub fn terms(&self) -> Vec<(&'static str, f64)> {
        [
            ("vlm", self.vlm),
            ("jepa", self.jepa),
            ("nextlat_state", self.nextlat_state),
            ("nextlat_token", self.nextlat_token),
            ("latent", self.latent),
            ("total", self.total),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// The metrics file of a run: rows are appended and flushed as they come, so a killed run keeps
/// every row up to its last step; `reset` rewinds it to a checkpoint's copy on resume.
pub struct MetricsLog {
    path: std::path::PathBuf,
    pub rows: Vec<Row>,
}

impl MetricsLog {
    /// Starts the log with `previous` (the checkpoint's rows when resuming), rewriting the file.
    pub fn reset(path: &Path, previous: &[u8]) -> Result<Self> {
        let rows = parse_rows(previous).context("cannot read the saved metrics")?;
        std::fs::write(path, previous)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }

    pub fn push(&mut self, row: Row) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        writeln!(f, "{}", serde_json::to_string(&row)?)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.rows.push(row);
        Ok(())
    }

    /// The file's bytes (what a checkpoint stores).
    pub fn bytes(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))
    }
}

pub fn parse_rows(bytes: &[u8]) -> Result<Vec<Row>> {
    let text = std::str::from_utf8(bytes).context("metrics are not UTF-8")?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("metrics line {}", i + 1)))
        .collect()
}

/// Draws every loss term against the step, training as lines and validation as lines with
/// markers, in one chart. Falls back to a chart without text when no font can be loaded.
pub fn plot_loss_curve(rows: &[Row], path: &Path) -> Result<()> {
    if rows.iter().all(|r| r.terms().is_empty()) {
        anyhow::bail!("no finite losses to plot");
    }
    crate::plot::with_fallback(path, |text| draw(rows, path, text))
}

const TERMS: [&str; 6] = [
    "vlm",
    "jepa",
    "nextlat_state",
    "nextlat_token",
    "latent",
    "total",
];

fn draw(rows: &[Row], path: &Path, text: bool) -> crate::plot::DrawResult {
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_step = rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    // Log scale: the terms differ by orders of magnitude (a cosine distance near 0.01 next to
    // a cross-entropy near 6).
    let (min_loss, max_loss) = crate::plot::log_range(
        rows.iter()
            .flat_map(|r| r.terms().into_iter().map(|(_, v)| v)),
        1.2,
    );
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption("loss", ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0.0..max_step, (min_loss..max_loss).log_scale())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("step").y_desc("loss (log scale)");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    for (i, term) in TERMS.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for split in ["train", "val"] {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.split == split)
                .filter_map(|r| {
                    r.terms()
                        .into_iter()
                        .find(|(k, _)| k == term)
                        .filter(|(_, v)| *v > 0.0)
                        .map(|(_, v)| (r.step as f64, v))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let width = if split == "val" { 3 } else { 1 };
            let series =
                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?;
            if text {
                series
                    .label(format!("{split} {term}"))
                    .legend(crate::plot::line_sample(color, width));
            }
            if split == "val" {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
    }
    if text {
        crate::plot::draw_legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::reset(&path, b"").unwrap();
        for step in 1..=5 {
            let v = LossValues {
                vlm: 3.0 / step as f64,
                jepa: Some(0.5),
                nextlat_state: Some(0.1),
                nextlat_token: Some(f64::NAN),
                latent: None,
                total: 3.5 / step as f64,
            };
            let mut r = Row::new("train", step, &v, 0.1);
            r.lr = Some(1e-4);
            log.push(r).unwrap();
        }
        log.push(Row::new(
            "val",
            5,
            &LossValues {
                vlm: 1.0,
                jepa: None,
                nextlat_state: None,
                nextlat_token: None,
                latent: None,
                total: 1.0,
            },
            0.2,
        ))
        .unwrap();
        let rows = parse_rows(&log.bytes().unwrap()).unwrap();
        assert_eq!(rows, log.rows);
        assert_eq!(rows[0].nextlat_token, None, "NaN is written as null");
        // Resuming from the first three rows rewinds the file.
        let first3: String = String::from_utf8(log.bytes().unwrap())
            .unwrap()
            .lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect();
        let log = MetricsLog::reset(&path, first3.as_bytes()).unwrap();
        assert_eq!(parse_rows(&std::fs::read(&path).unwrap()).unwrap().len(), 3);
        let png = dir.path().join("loss.png");
        plot_loss_curve(&rows, &png).unwrap();
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (1000, 600));
        assert_eq!(log.rows.len(), 3);
    }
}
