//! The expert's tool plan for a question: which tool, on which image, with which box. Boxes are
//! chosen in scene pixels around the question's focus and written normalized to the image the call
//! applies to (for a chained zoom, the previous crop), exactly as the trajectory text states them.

use crate::data::synth::question::{Kind, Question};
use crate::data::synth::scene::normalize_outward;
use crate::tools::crop::pixel_box;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Crop,
    Highlight,
    Depth,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Crop => "crop",
            Tool::Highlight => "highlight",
            Tool::Depth => "depth",
        }
    }

    /// What the expert says when calling the tool, and what the tool's output turn says; the crop
    /// texts are those of the published LVR / Visual-CoT trajectories (the crop's output text is the
    /// tool-calling protocol's, `data::tool_protocol`).
    pub fn texts(self, bbox: Option<[f64; 4]>) -> (String, String) {
        let b = bbox
            .map(crate::data::trajectory::format_bbox)
            .unwrap_or_default();
        match self {
            Tool::Crop => (
                format!(
                    "Now I will focus on the relevant part of the image within the normalized bounding boxes: {b}."
                ),
                // What the agent says when it returns a crop (the one protocol).
                bbox.map(crate::data::tool_protocol::crop_result_text)
                    .unwrap_or_default(),
            ),
            Tool::Highlight => (
                format!(
                    "Now I will highlight the relevant part of the image within the normalized bounding boxes: {b}."
                ),
                format!(
                    "Here is the image with the relevant part highlighted within the normalized bounding boxes: {b}."
                ),
            ),
            Tool::Depth => (
                "Now I will estimate the depth of the image.".to_string(),
                "Here is the depth map of the image; brighter is closer.".to_string(),
            ),
        }
    }
}

/// One call: `target` is the 1-based index of the image it applies to (1 = the scene).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub tool: Tool,
    pub target: usize,
    pub bbox: Option<[f64; 4]>,
}

/// Tracks the images a plan produces, so a call can name the right one and box it correctly.
struct Planner {
    width: f64,
    height: f64,
    steps: Vec<Step>,
    /// Pixel rectangle (in scene pixels) shown by each image so far; image 1 is the whole scene.
    frames: Vec<[f64; 4]>,
}

impl Planner {
    fn new(q: &Question) -> Self {
        let (w, h) = (q.scene.width as f64, q.scene.height as f64);
        Self {
            width: w,
            height: h,
            steps: Vec::new(),
            frames: vec![[0.0, 0.0, w, h]],
        }
    }

    /// A call of `tool` on image `target` about the scene pixel box `px`.
    fn call(&mut self, tool: Tool, target: usize, px: Option<[f64; 4]>) {
        let frame = self.frames[target - 1];
        let bbox = px.map(|px| normalize_outward(px, frame));
        let output = match (tool, bbox) {
            (Tool::Crop, Some(b)) => {
                // The crop the tool will actually make (floor convention), in scene pixels.
                let (fw, fh) = (frame[2] - frame[0], frame[3] - frame[1]);
                match pixel_box(b, fw.round() as u32, fh.round() as u32) {
                    Ok((x, y, w, h)) => {
                        let (x, y) = (frame[0] + x as f64, frame[1] + y as f64);
                        [x, y, x + w as f64, y + h as f64]
                    }
                    Err(_) => frame,
                }
            }
            _ => frame,
        };
        self.steps.push(Step { tool, target, bbox });
        self.frames.push(output);
    }

    fn last_image(&self) -> usize {
        self.frames.len()
    }

    /// The focus grown by a random margin of 1.5 to 3.5 object sizes per side, kept on the canvas:
    /// the crop shows context and the object is not always centered.
    fn context(&self, focus: [f64; 4], object: f64, rng: &mut ChaCha8Rng) -> [f64; 4] {
        let mut m = || object * rng.random_range(1.5..3.5);
        [
            (focus[0] - m()).max(0.0),
            (focus[1] - m()).max(0.0),
            (focus[2] + m()).min(self.width),
            (focus[3] + m()).min(self.height),
        ]
    }

    /// A square region of `side` pixels that contains `inner`, at a random position, on the canvas.
    fn around(&self, inner: [f64; 4], side: f64, rng: &mut ChaCha8Rng) -> [f64; 4] {
        let side = side.max(inner[2] - inner[0]).max(inner[3] - inner[1]);
        let mut pick = |lo_inner: f64, hi_inner: f64, limit: f64| {
            let lo = (hi_inner - side).max(0.0);
            let hi = lo_inner.min(limit - side).max(lo);
            let start = if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            };
            [start, (start + side).min(limit)]
        };
        let [x1, x2] = pick(inner[0], inner[2], self.width);
        let [y1, y2] = pick(inner[1], inner[3], self.height);
        [x1, y1, x2, y2]
    }
}

/// One call of `tool` about the question's focus (single-call tasks). With `grid`, a crop is one
/// of the nine [`grid_window`]s instead of a box fitted to the focus.
pub fn single(
    q: &Question,
    tool: Tool,
    object: f64,
    grid: bool,
    rng: &mut ChaCha8Rng,
) -> Vec<Step> {
    let mut p = Planner::new(q);
    let mut ctx = p.context(q.focus_union(), object, rng);
    if grid && tool == Tool::Crop {
        ctx = grid_window(q.focus_union(), p.width, p.height).unwrap_or(ctx);
    }
    match tool {
        Tool::Depth => p.call(Tool::Depth, 1, None),
        t => p.call(t, 1, Some(ctx)),
    }
    p.steps
}

/// The discrete crop vocabulary: a window of half the image's width and height starting at 0, 1/4
/// or 1/2 of each side (nine boxes, such as `[0.5, 0.0, 1.0, 0.5]`), chosen per axis as the half
/// of the image that contains the focus, else the centered half; so an object inside a quarter of
/// the image gets exactly that quarter, and a model picks a crop among a few boxes instead of
/// writing coordinates. `None` when no window contains the focus (objects larger than a quarter
/// of the image).
pub fn grid_window(focus: [f64; 4], width: f64, height: f64) -> Option<[f64; 4]> {
    let axis = |lo: f64, hi: f64, side: f64| {
        let half = side / 2.0;
        let start = [0.0, half, side / 4.0]
            .into_iter()
            .find(|&s| s <= lo && hi <= s + half)?;
        Some([start, start + half])
    };
    let [x1, x2] = axis(focus[0], focus[2], width)?;
    let [y1, y2] = axis(focus[1], focus[3], height)?;
    Some([x1, y1, x2, y2])
}

/// `levels` nested zooms, each on the previous crop (the PixelReasoner regime): from a region of
/// about half the scene down to the focus with context.
pub fn chain(q: &Question, levels: usize, object: f64, rng: &mut ChaCha8Rng) -> Vec<Step> {
    let mut p = Planner::new(q);
    let finest = p.context(q.focus_union(), object, rng);
    let first_side = p.width.min(p.height) * rng.random_range(0.4..0.55);
    let finest_side = (finest[2] - finest[0]).max(finest[3] - finest[1]);
    // Region sides grow geometrically from the finest region (built first, each containing the
    // previous one) to the first; the zooms then run in the reverse order.
    let mut regions = vec![finest];
    for k in 1..levels {
        let t = k as f64 / (levels - 1) as f64;
        let side = finest_side * (first_side / finest_side).max(1.0).powf(t);
        let inner = *regions.last().unwrap_or(&finest);
        regions.push(p.around(inner, side, rng));
    }
    regions.reverse();
    for r in regions {
        let target = p.last_image();
        p.call(Tool::Crop, target, Some(r));
    }
    p.steps
}

/// Several calls of several tool types (the regime the paper lacked data for). Plans by question
/// kind, restricted to `tools`; `max_calls` of 3 allows the longer plans.
pub fn multicall(
    q: &Question,
    tools: &[Tool],
    max_calls: usize,
    object: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Step> {
    let has = |t| tools.contains(&t);
    let mut p = Planner::new(q);
    let whole = p.context(q.focus_union(), object, rng);
    match q.kind {
        Kind::Depth if has(Tool::Depth) => {
            if has(Tool::Highlight) && max_calls >= 3 {
                p.call(Tool::Highlight, 1, Some(whole));
            }
            p.call(Tool::Crop, 1, Some(whole));
            p.call(Tool::Depth, 1, None);
        }
        Kind::Horizontal | Kind::Vertical if q.focus.len() == 2 && max_calls >= 3 => {
            if has(Tool::Highlight) {
                p.call(Tool::Highlight, 1, Some(whole));
            }
            for f in &q.focus {
                let c = p.context(*f, object, rng);
                p.call(Tool::Crop, 1, Some(c));
            }
        }
        _ => {
            // Highlight the region, then zoom in; with a third call, zoom again inside the crop.
            let plan = if max_calls >= 3 && rng.random_bool(0.5) {
                3
            } else {
                2
            };
            if has(Tool::Highlight) {
                if plan == 3 {
                    let wide = p.around(
                        whole,
                        (whole[2] - whole[0]).max(whole[3] - whole[1]) * 2.0,
                        rng,
                    );
                    p.call(Tool::Highlight, 1, Some(wide));
                    p.call(Tool::Crop, 1, Some(wide));
                    let target = p.last_image();
                    p.call(Tool::Crop, target, Some(whole));
                } else {
                    p.call(Tool::Highlight, 1, Some(whole));
                    p.call(Tool::Crop, 1, Some(whole));
                }
            } else {
                let wide = p.around(
                    whole,
                    (whole[2] - whole[0]).max(whole[3] - whole[1]) * 2.5,
                    rng,
                );
                p.call(Tool::Crop, 1, Some(wide));
                let target = p.last_image();
                p.call(Tool::Crop, target, Some(whole));
            }
        }
    }
    p.steps
}

/// Tool for a single-call example of the multi-tool regime, and the question kinds it answers.
pub fn kinds_for(tool: Tool) -> &'static [Kind] {
    match tool {
        Tool::Crop => &[
            Kind::Color,
            Kind::ShapeOf,
            Kind::Horizontal,
            Kind::Vertical,
            Kind::Counting,
        ],
        Tool::Highlight => &[Kind::Color, Kind::ShapeOf, Kind::Counting],
        Tool::Depth => &[Kind::Depth],
    }
}

/// Picks a kind for a multi-call example given the enabled tools.
pub fn multicall_kind(tools: &[Tool], rng: &mut ChaCha8Rng) -> Kind {
    let mut kinds = vec![
        Kind::Color,
        Kind::ShapeOf,
        Kind::Horizontal,
        Kind::Vertical,
        Kind::Counting,
    ];
    if tools.contains(&Tool::Depth) {
        kinds.push(Kind::Depth);
    }
    *kinds.choose(rng).unwrap_or(&Kind::Color)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object of a 224-pixel scene gets a window that contains it, one of exactly nine of half
    /// the image per side; an object inside a quarter gets that quarter.
    #[test]
    fn grid_windows_are_nine_and_contain_the_focus() {
        let (side, half) = (224.0, 12.5);
        let mut seen = std::collections::BTreeSet::new();
        for cx in (13..=211).step_by(3) {
            for cy in (13..=211).step_by(7) {
                let (cx, cy) = (f64::from(cx), f64::from(cy));
                let focus = [cx - half, cy - half, cx + half, cy + half];
                let w = grid_window(focus, side, side).expect("a window");
                assert!(
                    w[0] <= focus[0] && focus[2] <= w[2] && w[1] <= focus[1] && focus[3] <= w[3]
                );
                assert_eq!((w[2] - w[0], w[3] - w[1]), (112.0, 112.0));
                for start in [w[0], w[1]] {
                    assert!([0.0, 56.0, 112.0].contains(&start), "{w:?}");
                }
                if focus[2] <= 112.0 && focus[3] <= 112.0 {
                    assert_eq!(w, [0.0, 0.0, 112.0, 112.0]);
                }
                if focus[0] >= 112.0 && focus[3] <= 112.0 {
                    assert_eq!(w, [112.0, 0.0, 224.0, 112.0]);
                }
                seen.insert(w.map(|v| v as u32));
            }
        }
        assert_eq!(seen.len(), 9);
        // An object wider than half the image has none.
        assert_eq!(grid_window([0.0, 0.0, 150.0, 20.0], side, side), None);
    }
}
