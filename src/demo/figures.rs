//! The report's line and bar figures (`plotters`): the fine-tuning loss curves of the four methods
//! side by side, LVR's accuracy against the number of latent steps (the paper's Figure 3, with
//! Pearl and SFT as horizontal references), and answer latency Pearl vs tool use. Text needs a
//! system font; without one each figure is drawn without labels rather than not at all.

use crate::eval::stats::Interval;
use crate::plot::{draw_legend, line_sample, log_range, with_fallback};
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

/// One line: label and `(step, loss)` points.
pub type Curve = (String, Vec<(f64, f64)>);

/// Loss curves, one panel per `(title, curves)`, log-scale y.
pub fn plot_loss_panels(panels: &[(String, Vec<Curve>)], path: &Path) -> Result<()> {
    with_fallback(path, |text| {
        let root = BitMapBackend::new(path, (620 * panels.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, (title, curves)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            let pts = || curves.iter().flat_map(|c| &c.1).filter(|p| p.1 > 0.0);
            let max_x = pts().map(|p| p.0).fold(1.0, f64::max);
            let (lo, hi) = log_range(pts().map(|p| p.1), 1.3);
            let mut b = ChartBuilder::on(area);
            b.margin(15);
            if text {
                b.caption(title.as_str(), ("sans-serif", 20))
                    .x_label_area_size(35)
                    .y_label_area_size(50);
            }
            let mut chart = b.build_cartesian_2d(0.0..max_x, (lo..hi).log_scale())?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc("step")
                    .y_desc("loss")
                    .draw()?;
            }
            for (i, (label, points)) in curves.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                let points: Vec<_> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
                let s =
                    chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
                if text {
                    s.label(label.as_str()).legend(line_sample(colour, 2));
                }
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
            }
            if text {
                draw_legend(&mut chart)?;
            }
        }
        root.present()?;
        Ok(())
    })
}

/// LVR accuracy (with 95 % intervals) against latent steps on a log2 axis, and horizontal
/// references `(label, accuracy)`.
pub fn plot_lvr_steps(
    points: &[(usize, f64, Interval)],
    references: &[(String, f64)],
    path: &Path,
) -> Result<()> {
    with_fallback(path, |text| {
        let root = BitMapBackend::new(path, (800, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs: Vec<f64> = points.iter().map(|p| (p.0.max(1) as f64).log2()).collect();
        let x0 = xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0) - 0.3;
        let x1 = xs
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .max(1.0)
            + 0.3;
        let mut b = ChartBuilder::on(&root);
        b.margin(20);
        if text {
            b.caption(
                "LVR: accuracy vs latent steps at inference",
                ("sans-serif", 22),
            )
            .x_label_area_size(40)
            .y_label_area_size(55);
        }
        let mut chart = b.build_cartesian_2d(x0..x1, 0.0..100.0)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("latent steps (log2)")
                .y_desc("accuracy (%)")
                // Ticks only at whole powers of two: the axis is log2 of a step count.
                .x_label_formatter(&|x| {
                    if (x - x.round()).abs() < 1e-6 {
                        format!("{:.0}", 2f64.powf(x.round()))
                    } else {
                        String::new()
                    }
                })
                .draw()?;
        }
        let pct = |v: f64| 100.0 * v;
        let line: Vec<(f64, f64)> = xs.iter().zip(points).map(|(&x, p)| (x, pct(p.1))).collect();
        let s = chart.draw_series(LineSeries::new(line.clone(), BLUE.stroke_width(2)))?;
        if text {
            s.label("LVR").legend(line_sample(BLUE.to_rgba(), 2));
        }
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
        chart.draw_series(xs.iter().zip(points).map(|(&x, p)| {
            PathElement::new(
                vec![(x, pct(p.2.lo)), (x, pct(p.2.hi))],
                BLUE.stroke_width(1),
            )
        }))?;
        for (i, (label, acc)) in references.iter().enumerate() {
            let colour = [RED, GREEN, MAGENTA, BLACK][i % 4];
            let s = chart.draw_series(LineSeries::new(
                vec![(x0, pct(*acc)), (x1, pct(*acc))],
                colour.stroke_width(2),
            ))?;
            if text {
                s.label(label.as_str())
                    .legend(line_sample(colour.to_rgba(), 2));
            }
        }
        if text {
            draw_legend(&mut chart)?;
        }
        root.present()?;
        Ok(())
    })
}

/// One system of the accuracy-vs-latency figure.
pub struct LatencyPoint {
    pub label: String,
    /// Median seconds per answer and its interval.
    pub latency_s: f64,
    pub latency_ci95: Interval,
    pub accuracy: f64,
    pub accuracy_ci95: Interval,
}

/// Each system a point: median answer latency (log scale) vs accuracy, 95 % intervals on both
/// axes, chance as a line.
pub fn plot_accuracy_vs_latency(points: &[LatencyPoint], chance: f64, path: &Path) -> Result<()> {
    with_fallback(path, |text| {
        let root = BitMapBackend::new(path, (800, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let lat = |s: f64| s.max(1e-6).log10();
        let (x0, x1) = points
            .iter()
            .flat_map(|p| [lat(p.latency_ci95.lo), lat(p.latency_ci95.hi)])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
        let (x0, x1) = if x0.is_finite() {
            (x0 - 0.2, x1 + 0.2)
        } else {
            (-3.0, 1.0)
        };
        let mut b = ChartBuilder::on(&root);
        b.margin(20);
        if text {
            b.caption("accuracy vs answer latency", ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(55);
        }
        let mut chart = b.build_cartesian_2d(x0..x1, 0.0..100.0)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("median seconds per answer (log10)")
                .y_desc("accuracy (%)")
                .x_label_formatter(&|x| format!("{:.3}", 10f64.powf(*x)))
                .draw()?;
        }
        let pct = |v: f64| 100.0 * v;
        let s = chart.draw_series(LineSeries::new(
            vec![(x0, pct(chance)), (x1, pct(chance))],
            BLACK.stroke_width(1),
        ))?;
        if text {
            s.label("chance").legend(line_sample(BLACK.to_rgba(), 1));
        }
        for (i, p) in points.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let (x, y) = (lat(p.latency_s), pct(p.accuracy));
            let s = chart.draw_series([Circle::new((x, y), 5, colour.filled())])?;
            if text {
                s.label(p.label.as_str()).legend(line_sample(colour, 3));
            }
            chart.draw_series([
                PathElement::new(
                    vec![(x, pct(p.accuracy_ci95.lo)), (x, pct(p.accuracy_ci95.hi))],
                    colour.stroke_width(1),
                ),
                PathElement::new(
                    vec![(lat(p.latency_ci95.lo), y), (lat(p.latency_ci95.hi), y)],
                    colour.stroke_width(1),
                ),
            ])?;
        }
        if text {
            draw_legend(&mut chart)?;
        }
        root.present()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_ok(path: &Path) {
        let img = image::open(path).unwrap();
        assert!(img.width() > 100 && img.height() > 100);
    }

    #[test]
    fn each_figure_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        let curve = ("SFT".to_string(), vec![(0.0, 3.0), (10.0, 1.0)]);
        plot_loss_panels(&[("val".into(), vec![curve])], &p).unwrap();
        png_ok(&p);
        let p = dir.path().join("lvr.png");
        let ci = Interval { lo: 0.2, hi: 0.5 };
        plot_lvr_steps(&[(1, 0.3, ci), (4, 0.35, ci)], &[("Pearl".into(), 0.4)], &p).unwrap();
        png_ok(&p);
        let p = dir.path().join("lat.png");
        let point = |label: &str, latency_s: f64, accuracy: f64| LatencyPoint {
            label: label.into(),
            latency_s,
            latency_ci95: Interval {
                lo: latency_s * 0.8,
                hi: latency_s * 1.3,
            },
            accuracy,
            accuracy_ci95: ci,
        };
        plot_accuracy_vs_latency(
            &[point("Pearl", 0.02, 0.4), point("agent", 0.9, 0.45)],
            0.25,
            &p,
        )
        .unwrap();
        png_ok(&p);
    }
}
