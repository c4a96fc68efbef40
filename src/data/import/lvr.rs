//! LVR / Visual-CoT SFT rows (LLaVA-style JSON list): the row's box becomes a crop tool call: the
//! assistant names the box, a user turn shows the crop, then the answer. As the authors render
//! it (`pearl/data.py`): only `bboxes[0]` is used (one crop, one call; [`Boxes::All`] keeps every
//! box instead), boxes are dropped as their `_valid_bbox` drops them (side ratio of the crop or
//! the image above 200, empty after `floor(box * size)`), and the box is printed as Python
//! prints the list (`[0.25, 0.3, 1, 0.7]`: numbers as written in the file).
//!
//! `{"dataset":..,"split":..,"question_id":..,"image":["rel/path.jpg"],
//!   "conversations":[{"from":"human","value":"<image>\n.."},{"from":"gpt","value":"<lvr>\n<answer> .. </answer>"}],
//!   "bboxes":[[x1,y1,x2,y2]]}` (normalized).

use crate::data::chat::{Message, Part, Role};
use crate::data::import::{
    ImportPaths, ImportReport, SYSTEM_PROMPT, Skip, check_image, run_rows, safe_name, save_png,
    skip,
};
use crate::data::trajectory::{Meta, ToolCall, Trajectory, format_bbox, python_repr};
use crate::tools::crop::crop_normalized;
use serde::Deserialize;

/// Degenerate-box filters, each counted separately in the report. The defaults are the authors':
/// a crop at least one pixel on each side, long/short side ratio (of crop and image) at most 200.
#[derive(Debug, Clone, Copy)]
pub struct LvrFilters {
    /// Smallest crop side in pixels (after `floor(box * size)`).
    pub min_side_px: u32,
    /// Smallest crop area in pixels.
    pub min_area_px: u32,
    /// Largest ratio of the long to the short crop side.
    pub max_aspect: f64,
}

impl Default for LvrFilters {
    fn default() -> Self {
        Self {
            min_side_px: 1,
            min_area_px: 1,
            max_aspect: 200.0,
        }
    }
}

/// Which of a row's boxes become crop calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Boxes {
    /// `bboxes[0]` only, as the authors train (one crop, one call).
    #[default]
    First,
    /// Every box: one crop each in the crop turn, and one call each.
    All,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    question_id: Option<serde_json::Value>,
    #[serde(deserialize_with = "one_or_many")]
    image: Vec<String>,
    conversations: Vec<Turn>,
    bboxes: Vec<Vec<serde_json::Number>>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

/// Imports the authors' way: `bboxes[0]` of each row.
pub fn import(paths: &ImportPaths, filters: LvrFilters) -> anyhow::Result<ImportReport> {
    import_with(paths, filters, Boxes::First)
}

pub fn import_with(
    paths: &ImportPaths,
    filters: LvrFilters,
    boxes: Boxes,
) -> anyhow::Result<ImportReport> {
    let rows = crate::data::import::read_json_rows(&paths.input)?;
    let img_dir = paths.image_dir();
    std::fs::create_dir_all(&img_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", img_dir.display()))?;
    run_rows(paths, rows, |i, v| convert(i, v, paths, filters, boxes))
}

fn convert(
    i: usize,
    v: serde_json::Value,
    paths: &ImportPaths,
    filters: LvrFilters,
    which: Boxes,
) -> Result<Trajectory, Skip> {
    let row: Row = serde_json::from_value(v).map_err(|e| skip("malformed row", e))?;
    let image_rel = row
        .image
        .first()
        .ok_or_else(|| skip("malformed row", "no image"))?;
    let question = row
        .conversations
        .iter()
        .find(|t| t.from == "human")
        .ok_or_else(|| skip("malformed row", "no human turn"))?;
    let answer = row
        .conversations
        .iter()
        .rev()
        .find(|t| t.from == "gpt")
        .ok_or_else(|| skip("malformed row", "no gpt turn"))?;
    let question = question.value.replace("<image>", "").trim().to_string();
    let answer = strip_tags(&answer.value);
    if question.is_empty() || answer.is_empty() {
        return Err(skip(
            "empty question or answer",
            format!("question {question:?}, answer {answer:?}"),
        ));
    }
    if row.bboxes.is_empty() {
        return Err(skip("no bbox", "bboxes is empty"));
    }
    let image_path = paths.images.join(image_rel);
    let (w, h) = check_image(&image_path)?;
    let used = match which {
        Boxes::First => &row.bboxes[..1],
        Boxes::All => &row.bboxes[..],
    };
    let mut boxes = Vec::new();
    let mut texts = Vec::new();
    for b in used {
        let values: Vec<f64> = b.iter().filter_map(serde_json::Number::as_f64).collect();
        let b4: [f64; 4] = values
            .as_slice()
            .try_into()
            .map_err(|_| skip("malformed bbox", format!("{b:?} is not 4 numbers")))?;
        check_box(b4, w, h, filters)?;
        boxes.push(b4);
        texts.push(format!(
            "[{}]",
            b.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ));
    }
    let img = image::open(&image_path).map_err(|e| {
        skip(
            "undecodable image",
            format!("{}: {e}", image_path.display()),
        )
    })?;
    let id = match (&row.dataset, &row.question_id) {
        (Some(d), Some(q)) => format!(
            "{d}-{}",
            q.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string())
        ),
        _ => format!("lvr-{i}"),
    };
    let mut crop_refs = Vec::new();
    for (k, b) in boxes.iter().enumerate() {
        let crop =
            crop_normalized(&img, *b).map_err(|e| skip("bbox outside [0, 1] or empty", e))?;
        let path = paths
            .image_dir()
            .join(format!("{}_crop{k}.png", safe_name(&id)));
        save_png(&crop, &path)?;
        crop_refs.push(paths.reference(&path));
    }
    let listed = texts.join(", ");
    let mut user2: Vec<Part> = crop_refs
        .into_iter()
        .map(|image| Part::Image { image })
        .collect();
    user2.push(Part::Text { text: format!("Here is the relevant cropped part of the image within the normalized bounding boxes: {listed}.") });
    let messages = vec![
        Message::text(Role::System, SYSTEM_PROMPT),
        Message::new(
            Role::User,
            vec![
                Part::Image {
                    image: paths.reference(&image_path),
                },
                Part::Text { text: question },
            ],
        ),
        Message::text(
            Role::Assistant,
            format!(
                "Now I will focus on the relevant part of the image within the normalized bounding boxes: {listed}."
            ),
        ),
        Message::new(Role::User, user2),
        Message::text(Role::Assistant, answer),
    ];
    let mut extra = serde_json::Map::new();
    extra.insert("source".into(), "lvr".into());
    if let Some(d) = row.dataset {
        extra.insert("dataset".into(), d.into());
    }
    if let Some(q) = row.question_id {
        extra.insert("question_id".into(), q);
    }
    Ok(Trajectory {
        id,
        messages,
        task: "lvr".into(),
        meta: Meta {
            tool_calls: boxes
                .iter()
                .map(|b| ToolCall::with_bbox(2, "crop", *b, 1))
                .collect(),
            category: None,
            extra,
        },
    })
}

/// Applies the filters to one box on a `w`x`h` image.
pub fn check_box(b: [f64; 4], w: u32, h: u32, f: LvrFilters) -> Result<(), Skip> {
    if b.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1.0) {
        return Err(skip("bbox outside [0, 1]", format_bbox(b)));
    }
    if b[2] <= b[0] || b[3] <= b[1] {
        return Err(skip("empty bbox", format_bbox(b)));
    }
    if w.min(h) == 0 || w.max(h) as f64 / w.min(h) as f64 > f.max_aspect {
        return Err(skip("extreme image aspect ratio", format!("{w}x{h} px")));
    }
    // The crop's corners at floor(box * size), as the authors compute them: a box thinner than a
    // pixel is empty.
    let px = |v: f64, size: u32| (v * size as f64).floor() as u32;
    let (cw, ch) = (
        px(b[2], w).saturating_sub(px(b[0], w)),
        px(b[3], h).saturating_sub(px(b[1], h)),
    );
    if cw == 0 || ch == 0 {
        return Err(skip(
            "empty crop",
            format!("{} on {w}x{h} px", format_bbox(b)),
        ));
    }
    if cw.min(ch) < f.min_side_px {
        return Err(skip("crop side below the minimum", format!("{cw}x{ch} px")));
    }
    if cw * ch < f.min_area_px {
        return Err(skip("crop area below the minimum", format!("{cw}x{ch} px")));
    }
    if cw.max(ch) as f64 / cw.min(ch) as f64 > f.max_aspect {
        return Err(skip("extreme aspect ratio", format!("{cw}x{ch} px")));
    }
    Ok(())
}

/// `<lvr>\n<answer> Paris </answer>` -> `Paris`.
fn strip_tags(s: &str) -> String {
    ["<lvr>", "<answer>", "</answer>"]
        .iter()
        .fold(s.to_string(), |acc, t| acc.replace(t, ""))
        .trim()
        .to_string()
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_each_degenerate_kind() {
        // The authors' defaults: only empty crops and side ratios above 200 go.
        let f = LvrFilters::default();
        let reason = |b| check_box(b, 1000, 500, f).err().map(|s| s.reason);
        assert_eq!(reason([0.1, 0.1, 0.5, 0.5]), None);
        assert_eq!(reason([0.1, 0.1, 1.5, 0.5]), Some("bbox outside [0, 1]"));
        assert_eq!(reason([0.5, 0.1, 0.5, 0.5]), Some("empty bbox"));
        assert_eq!(reason([0.1, 0.1, 0.1005, 0.5]), Some("empty crop")); // floor: 100..100
        assert_eq!(reason([0.1, 0.1, 0.102, 0.11]), None); // 2x5 px
        assert_eq!(reason([0.0, 0.1, 1.0, 0.118]), None); // 1000x9 px: ratio 111
        assert_eq!(reason([0.0, 0.1, 1.0, 0.104]), Some("extreme aspect ratio")); // 1000x2
        let image = check_box([0.1, 0.1, 0.5, 0.5], 1000, 4, f)
            .err()
            .map(|s| s.reason);
        assert_eq!(image, Some("extreme image aspect ratio"));
        // Stricter thresholds, as options.
        let strict = LvrFilters {
            min_side_px: 4,
            min_area_px: 64,
            max_aspect: 100.0,
        };
        let reason = |b| check_box(b, 1000, 500, strict).err().map(|s| s.reason);
        assert_eq!(
            reason([0.1, 0.1, 0.102, 0.5]),
            Some("crop side below the minimum")
        ); // 2 px wide
        assert_eq!(
            reason([0.1, 0.1, 0.106, 0.11]),
            Some("crop area below the minimum")
        ); // 6x5 px
        assert_eq!(reason([0.0, 0.1, 1.0, 0.118]), Some("extreme aspect ratio"));
        assert_eq!(strip_tags("<lvr>\n<answer> Paris </answer>"), "Paris");
    }
}
