//! What every PNG figure shares (`plotters`): drawing with a text-less fallback, log-scale
//! ranges, legend entries and the legend box. The figures themselves live with what they show
//! (`train::metrics`, `demo::figures`, `demo::tsne`).

use anyhow::{Context, Result, anyhow};
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use std::path::Path;

pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws with text, and again without when that fails: text needs a system font, and a figure
/// without labels is more use than none.
pub fn with_fallback(path: &Path, draw: impl Fn(bool) -> DrawResult) -> Result<()> {
    draw(true)
        .or_else(|_| draw(false))
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}

/// A log-scale axis range over the positive `values`, with `headroom` above the largest and at
/// least a decade below it (so one flat curve still gets an axis).
pub fn log_range(values: impl Iterator<Item = f64> + Clone, headroom: f64) -> (f64, f64) {
    let positive = values.filter(|v| *v > 0.0);
    let hi = positive.clone().fold(1e-6, f64::max) * headroom;
    let lo = positive.fold(f64::INFINITY, f64::min).min(hi / 10.0) * 0.8;
    (lo, hi)
}

/// The legend's sample of a line series: a short stroke in its colour and width.
pub fn line_sample(
    colour: RGBAColor,
    width: u32,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
}

/// The legend box, on a translucent white ground.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_range_spans_a_decade_and_ignores_non_positive_values() {
        let (lo, hi) = log_range([0.0, -1.0, 2.0, 4.0].into_iter(), 1.5);
        assert_eq!(hi, 6.0);
        assert!((lo - 0.48).abs() < 1e-12, "{lo}");
        let (lo, hi) = log_range([0.5, 50.0].into_iter(), 1.0);
        assert_eq!(hi, 50.0);
        assert!((lo - 0.4).abs() < 1e-12, "{lo}");
    }

    #[test]
    fn a_failing_text_pass_falls_back_to_no_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let tries = std::cell::RefCell::new(Vec::new());
        with_fallback(&path, |text| {
            tries.borrow_mut().push(text);
            if text { Err("no font".into()) } else { Ok(()) }
        })
        .unwrap();
        assert_eq!(*tries.borrow(), [true, false]);
        let e = with_fallback(&path, |_| Err("broken".into())).unwrap_err();
        assert!(format!("{e:#}").contains("cannot draw"), "{e:#}");
    }
}
