//! The tool-calling protocol: the one description of how a tool-calling model talks to its tools,
//! shared by the training rendering (`Trajectory::render_for_tool_agent`, what `pearl train
//! --toolcall` learns) and the agent that runs such a model (`eval::agent`). Both take from here
//! the system prompt, the call syntax and the user turn that returns a crop, so the calls a
//! trained model writes are exactly the calls the agent executes.
//!
//! - system prompt: [`SYSTEM_PROMPT`], which describes the crop tool;
//! - a call: `<tool_call>{"name": .., "arguments": {..}}</tool_call>` at the end of an assistant
//!   turn (PixelReasoner / DeepEyes style, [`call_markup`]); the crop tool is [`CROP_TOOL`] with
//!   `{"bbox_2d": [x1, y1, x2, y2], "target_image": N}`, `N` 1-based over every image so far;
//! - a crop's return: a user turn holding the crop, then [`crop_result_text`] (the text of the
//!   published LVR / Visual-CoT trajectories, which the synthetic expert writes too).

use crate::data::chat::{Message, Part, Role};
use crate::data::pyrepr::python_float_repr;
use regex::Regex;
use std::sync::LazyLock;

/// The system prompt of a tool-calling model, in training and at inference.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant. You can zoom in on an image to see details. \
To do so, write exactly one tool call and stop:\n\
<tool_call>{\"name\": \"crop_image_normalized\", \"arguments\": {\"bbox_2d\": [x1, y1, x2, y2], \"target_image\": N}}</tool_call>\n\
The box is normalized to [0, 1] (x to the right, y down) and N is the 1-based index of the image to crop \
among all images so far. The cropped image will be given to you. When you are sure, answer with the option's letter.";

/// The crop tool's name in calls (PixelReasoner's).
pub const CROP_TOOL: &str = "crop_image_normalized";

/// Names under which trajectories record a normalized crop: pearl's synthetic expert (`crop`),
/// PixelReasoner's data (`crop_image`) and the protocol's own. Rendered as [`CROP_TOOL`].
pub fn is_crop(name: &str) -> bool {
    matches!(name, "crop" | "crop_image" | CROP_TOOL)
}

/// A call as the model writes it: `<tool_call>{"arguments":{..},"name":..}</tool_call>`.
pub fn call_markup(name: &str, arguments: &serde_json::Map<String, serde_json::Value>) -> String {
    format!("<tool_call>{}</tool_call>", call_json(name, arguments))
}

/// The JSON body of a call, as [`call_markup`] writes it between the tags.
pub fn call_json(name: &str, arguments: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::json!({"name": name, "arguments": arguments}).to_string()
}

/// Text of the user turn that returns a crop of `bbox` (the box as the call gave it).
pub fn crop_result_text(bbox: [f64; 4]) -> String {
    format!(
        "Here is the relevant cropped part of the image within the normalized bounding boxes: {}.",
        format_bbox(bbox)
    )
}

/// The user turn that returns a crop: the image, then [`crop_result_text`].
pub fn crop_result_turn(image: String, bbox: [f64; 4]) -> Message {
    Message::new(
        Role::User,
        vec![
            Part::Image { image },
            Part::Text {
                text: crop_result_text(bbox),
            },
        ],
    )
}

/// Formats a bbox the way the published datasets (Python lists of floats) print it:
/// `[0.38, 0.46, 0.72, 0.66]`, integral values as `1.0`.
pub fn format_bbox(b: [f64; 4]) -> String {
    format!("[{}]", b.map(python_float_repr).join(", "))
}

/// A `<tool_call>` found in a turn: its JSON (or why there is none) and the byte where the call
/// ends (what a model writes after its call is not grounded and is dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCall {
    pub body: Result<String, String>,
    pub end: usize,
}

static TOOL_CALL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<tool_call>(.*?)</tool_call>").expect("static regex"));

/// The first tool call of `text`, if the turn makes one. An opening tag without its closing tag
/// (the turn ran out of tokens) is a malformed call.
pub fn find_tool_call(text: &str) -> Option<FoundCall> {
    if let Some(c) = TOOL_CALL.captures(text) {
        let whole = c.get(0)?;
        return Some(FoundCall {
            body: Ok(c[1].trim().to_string()),
            end: whole.end(),
        });
    }
    text.contains("<tool_call>").then(|| FoundCall {
        body: Err("<tool_call> is not closed by </tool_call>".into()),
        end: text.len(),
    })
}

/// A validated crop request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropCall {
    /// Normalized when all four values lie in [0, 1], else pixels of the target image.
    pub bbox: [f64; 4],
    /// 1-based.
    pub target_image: usize,
}

/// Reads a call's JSON. Understood: the crop tool under any name of [`is_crop`], and DeepEyes'
/// `image_zoom_in_tool` (pixel boxes of the original image); `arguments` may be a JSON string.
pub fn parse_call(json: &str) -> Result<CropCall, String> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("tool call is not valid JSON ({e}): {}", clip(json)))?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or("tool call has no \"name\"")?;
    if !is_crop(name) && name != "image_zoom_in_tool" {
        return Err(format!(
            "unknown tool {name:?}; available: {CROP_TOOL}, image_zoom_in_tool"
        ));
    }
    let args = match v.get("arguments") {
        Some(serde_json::Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| format!("\"arguments\" is a string but not JSON ({e})"))?,
        Some(a) => a.clone(),
        None => return Err("tool call has no \"arguments\"".into()),
    };
    let raw_box = args
        .get("bbox_2d")
        .and_then(|b| b.as_array())
        .ok_or("\"bbox_2d\" must be a list of 4 numbers")?;
    let nums: Vec<f64> = raw_box.iter().filter_map(|x| x.as_f64()).collect();
    let bbox: [f64; 4] = nums
        .try_into()
        .ok()
        .filter(|_| raw_box.len() == 4)
        .ok_or_else(|| {
            format!(
                "\"bbox_2d\" must be a list of 4 numbers, got {}",
                serde_json::Value::Array(raw_box.clone())
            )
        })?;
    let target_image = match args.get("target_image") {
        None | Some(serde_json::Value::Null) => 1,
        Some(t) => t
            .as_u64()
            .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("\"target_image\" must be a positive integer, got {t}"))?
            as usize,
    };
    Ok(CropCall { bbox, target_image })
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_crop_call_parses_back() {
        let mut args = serde_json::Map::new();
        args.insert(
            "bbox_2d".into(),
            serde_json::json!([0.61, 0.222, 0.68, 0.291]),
        );
        args.insert("target_image".into(), serde_json::json!(2));
        let text = format!("Now I will look.\n{}", call_markup(CROP_TOOL, &args));
        let found = find_tool_call(&text).unwrap();
        assert_eq!(found.end, text.len());
        let call = parse_call(&found.body.unwrap()).unwrap();
        assert_eq!(
            call,
            CropCall {
                bbox: [0.61, 0.222, 0.68, 0.291],
                target_image: 2
            }
        );
    }

    #[test]
    fn bbox_text_matches_python_list_printing() {
        assert_eq!(
            format_bbox([0.38, 0.46, 0.72, 0.66]),
            "[0.38, 0.46, 0.72, 0.66]"
        );
        assert_eq!(format_bbox([0.0, 0.5, 1.0, 0.25]), "[0.0, 0.5, 1.0, 0.25]");
        assert!(crop_result_text([0.0, 0.5, 1.0, 0.25]).ends_with("[0.0, 0.5, 1.0, 0.25]."));
    }
}
