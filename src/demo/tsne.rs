//! The t-SNE figure (the paper's Figure 4): one panel per model (SFT, Pearl), each point a
//! held-out trajectory's input-view (circle) or trajectory-view (cross) embedding, coloured by
//! category. t-SNE is `linfa-tsne` (exact); drawing is `plotters`.

use super::embeddings::ViewEmbeddings;
use anyhow::{Context, Result, anyhow};
use linfa::ParamGuard;
use linfa::traits::Transformer;
use linfa_tsne::TSneParams;
use ndarray::Array2;
use plotters::prelude::*;
use std::path::Path;

/// 2-D t-SNE coordinates of the predicted rows followed by the target rows.
pub fn tsne_2d(e: &ViewEmbeddings) -> Result<Vec<(f64, f64)>> {
    let rows: Vec<&Vec<f32>> = e.predicted.iter().chain(&e.target).collect();
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| f64::from(x)))
        .collect();
    let data = Array2::from_shape_vec((n, d), flat).context("ragged embeddings")?;
    // Perplexity must stay below (n - 1) / 3; 5 is linfa's default.
    let perplexity = 5.0f64.min((n as f64 - 1.0) / 3.0 - 0.01);
    // Exact t-SNE (threshold 0): the figure has ~100 points, and Barnes-Hut's space-partitioning
    // tree recurses without end on coincident points, which a barely trained model can produce.
    let y = TSneParams::embedding_size(2)
        .perplexity(perplexity)
        .approx_threshold(0.0)
        .max_iter(1000)
        .check()
        .map_err(|e| anyhow!("t-SNE settings: {e}"))?
        .transform(data)
        .map_err(|e| anyhow!("t-SNE failed: {e}"))?;
    Ok(y.outer_iter().map(|r| (r[0], r[1])).collect())
}

/// One panel: title, the embeddings, and their t-SNE coordinates.
pub type Panel<'a> = (&'a str, &'a ViewEmbeddings, Vec<(f64, f64)>);

/// Draws the panels side by side into `path`.
pub fn plot_panels(panels: &[Panel<'_>], path: &Path) -> Result<()> {
    crate::plot::with_fallback(path, |text| draw(panels, path, text))
}

fn draw(panels: &[Panel<'_>], path: &Path, text: bool) -> crate::plot::DrawResult {
    let root = BitMapBackend::new(path, (600 * panels.len() as u32, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut categories: Vec<&String> = panels.iter().flat_map(|p| &p.1.categories).collect();
    categories.sort();
    categories.dedup();
    let colour = |c: &String| {
        let i = categories.iter().position(|x| *x == c).unwrap_or(0);
        Palette99::pick(i).to_rgba()
    };
    for (area, (title, e, xy)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let (x0, x1) = bounds(xy.iter().map(|p| p.0));
        let (y0, y1) = bounds(xy.iter().map(|p| p.1));
        let mut b = ChartBuilder::on(area);
        b.margin(15);
        if text {
            b.caption(*title, ("sans-serif", 22))
                .x_label_area_size(25)
                .y_label_area_size(35);
        }
        let mut chart = b.build_cartesian_2d(x0..x1, y0..y1)?;
        if text {
            chart.configure_mesh().disable_mesh().draw()?;
        }
        let n = e.predicted.len();
        let inputs = xy[..n].iter().zip(&e.categories);
        let targets = xy[n..].iter().zip(&e.categories);
        let s = chart
            .draw_series(inputs.map(|(&(x, y), c)| Circle::new((x, y), 5, colour(c).filled())))?;
        if text {
            s.label("input view <I0, Q> (prediction)")
                .legend(|(x, y)| Circle::new((x, y), 5, BLACK.filled()));
        }
        let s = chart.draw_series(
            targets.map(|(&(x, y), c)| Cross::new((x, y), 6, colour(c).stroke_width(2))),
        )?;
        if text {
            s.label("trajectory view R (target)")
                .legend(|(x, y)| Cross::new((x, y), 6, BLACK.stroke_width(2)));
            for c in &categories {
                let col = colour(c);
                chart
                    .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                    .label(c.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], col.filled())
                    });
            }
            crate::plot::draw_legend(&mut chart)?;
        }
    }
    root.present()?;
    Ok(())
}

/// A range covering the values with a 5 % margin (never empty).
fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}
