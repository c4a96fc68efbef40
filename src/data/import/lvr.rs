//! LVR / Visual-CoT SFT rows (LLaVA-style JSON list): the single bbox per row becomes a crop tool
//! call: the assistant names the box, a user turn shows the crop, then the answer.
//!
//! `{"dataset":..,"split":..,"question_id":..,"image":["rel/path.jpg"],
//!   "conversations":[{"from":"human","value":"<image>\n.."},{"from":"gpt","value":"<lvr>\n<answer> .. </answer>"}],
//!   "bboxes":[[x1,y1,x2,y2]]}` (normalized).

use crate::data::chat::{Message, Part, Role};
use crate::data::import::{
    ImportPaths, ImportReport, SYSTEM_PROMPT, Skip, check_image, run_rows, safe_name, save_png,
    skip,
};
use crate::data::trajectory::{Meta, ToolCall, Trajectory, format_bbox};
use crate::tools::crop::{crop_normalized, pixel_box};
use serde::Deserialize;

/// Degenerate-box filters. LVR drops invalid and extreme-aspect boxes; these are the thresholds
/// pearl applies, each counted separately in the report.
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
            min_side_px: 4,
            min_area_px: 64,
            max_aspect: 100.0,
        }
    }
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
    bboxes: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

pub fn import(paths: &ImportPaths, filters: LvrFilters) -> anyhow::Result<ImportReport> {
    let rows = crate::data::import::read_json_rows(&paths.input)?;
    let img_dir = paths.image_dir();
    std::fs::create_dir_all(&img_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", img_dir.display()))?;
    run_rows(paths, rows, |i, v| convert(i, v, paths, filters))
}

fn convert(
    i: usize,
    v: serde_json::Value,
    paths: &ImportPaths,
    filters: LvrFilters,
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
    let mut boxes = Vec::new();
    for b in &row.bboxes {
        let b: [f64; 4] = b
            .as_slice()
            .try_into()
            .map_err(|_| skip("malformed bbox", format!("{b:?} is not 4 numbers")))?;
        check_box(b, w, h, filters)?;
        boxes.push(b);
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
    let listed = boxes
        .iter()
        .map(|b| format_bbox(*b))
        .collect::<Vec<_>>()
        .join(", ");
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
    let (_, _, cw, ch) = pixel_box(b, w, h).map_err(|e| skip("empty bbox", e))?;
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
        let f = LvrFilters::default();
        let reason = |b| check_box(b, 1000, 500, f).err().map(|s| s.reason);
        assert_eq!(reason([0.1, 0.1, 0.5, 0.5]), None);
        assert_eq!(reason([0.1, 0.1, 1.5, 0.5]), Some("bbox outside [0, 1]"));
        assert_eq!(reason([0.5, 0.1, 0.5, 0.5]), Some("empty bbox"));
        assert_eq!(
            reason([0.1, 0.1, 0.102, 0.5]),
            Some("crop side below the minimum")
        ); // 2 px wide
        assert_eq!(
            reason([0.1, 0.1, 0.106, 0.11]),
            Some("crop area below the minimum")
        ); // 6x5 px
        assert_eq!(reason([0.0, 0.1, 1.0, 0.118]), Some("extreme aspect ratio")); // 1000x9 px
        assert_eq!(strip_tags("<lvr>\n<answer> Paris </answer>"), "Paris");
    }
}
