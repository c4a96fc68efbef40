//! The canonical trajectory: one expert example per JSONL line,
//! `{"id":..,"messages":[..chat..],"task":..,"meta":{"tool_calls":[..],..}}`.
//!
//! Messages hold the text as Pearl trains on it (no tool-call markup); the calls themselves live in
//! `meta.tool_calls` as structured data, so the same example renders for Pearl (calls stripped, tool
//! outputs kept) or for a tool-calling model (`<tool_call>{json}</tool_call>` appended to the turn).

use crate::data::chat::{Message, Part, Role};
pub use crate::data::pyrepr::python_repr;
use crate::data::tool_protocol;
pub use crate::data::tool_protocol::format_bbox;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub id: String,
    pub messages: Vec<Message>,
    /// Which task family the example belongs to (`attribute`, `lvr`, `pixelreasoner`, ...).
    #[serde(default)]
    pub task: String,
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Per-category reporting (e.g. `attribute/color`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Anything else the source carried (source ids, answers, scene descriptions).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Meta {
    pub fn is_empty(&self) -> bool {
        self.tool_calls.is_empty() && self.category.is_none() && self.extra.is_empty()
    }
}

/// One tool call of the expert. `turn` is the index in `messages` of the assistant turn that made
/// it; its output image(s) are in the message that follows. Arguments are kept as the source wrote
/// them; the ones pearl's own tools use are `bbox_2d` (normalized `[x1,y1,x2,y2]`) and
/// `target_image` (1-based index over all images of the chat in order, the PixelReasoner convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub turn: usize,
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

impl ToolCall {
    /// A call of one of pearl's bbox tools (`crop`, `highlight`) on image `target_image` (1-based).
    pub fn with_bbox(turn: usize, name: &str, bbox: [f64; 4], target_image: usize) -> Self {
        let mut arguments = serde_json::Map::new();
        arguments.insert("bbox_2d".into(), serde_json::json!(bbox));
        arguments.insert("target_image".into(), serde_json::json!(target_image));
        Self {
            turn,
            name: name.to_string(),
            arguments,
        }
    }

    /// A call without a bbox (`depth`) on image `target_image` (1-based).
    pub fn on_image(turn: usize, name: &str, target_image: usize) -> Self {
        let mut arguments = serde_json::Map::new();
        arguments.insert("target_image".into(), serde_json::json!(target_image));
        Self {
            turn,
            name: name.to_string(),
            arguments,
        }
    }

    /// `bbox_2d`, if present: `Some(Err)` when it is not four numbers.
    pub fn bbox(&self) -> Option<anyhow::Result<[f64; 4]>> {
        let v = self.arguments.get("bbox_2d")?;
        Some(
            serde_json::from_value::<[f64; 4]>(v.clone())
                .map_err(|_| anyhow::anyhow!("bbox_2d must be four numbers, got {v}")),
        )
    }

    /// `target_image`, if present: `Some(Err)` when it is not a positive integer.
    pub fn target_image(&self) -> Option<anyhow::Result<usize>> {
        let v = self.arguments.get("target_image")?;
        Some(match v.as_u64() {
            Some(i) if i >= 1 => Ok(i as usize),
            _ => Err(anyhow::anyhow!(
                "target_image must be a 1-based image index, got {v}"
            )),
        })
    }
}

impl Trajectory {
    /// The first user turn (the one holding the question image and the question).
    pub fn first_user_turn(&self) -> Option<(usize, &Message)> {
        self.messages
            .iter()
            .enumerate()
            .find(|(_, m)| m.role == Role::User)
    }

    /// All image references in order of appearance (tool call `target_image` counts over these).
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.messages.iter().flat_map(|m| m.images())
    }

    pub fn image_count(&self) -> usize {
        self.images().count()
    }

    /// Number of images in `messages[..turn]`: the images a call made at `turn` can name.
    pub fn images_before(&self, turn: usize) -> usize {
        self.messages
            .iter()
            .take(turn)
            .map(|m| m.images().count())
            .sum()
    }

    /// The chat Pearl trains on: tool-call text stripped, tool outputs kept. Canonical messages are
    /// already free of call markup; stray `<tool_call>` text (hand-edited files) is cut here too,
    /// as the authors cut it: in every turn after the first user turn.
    pub fn render_for_pearl(&self) -> Vec<Message> {
        let first_user = self.messages.iter().position(|m| m.role == Role::User);
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| match first_user {
                Some(u) if i > u => Message::new(
                    m.role,
                    m.content
                        .iter()
                        .map(|p| match p {
                            Part::Text { text } => Part::Text {
                                text: strip_tool_call_text(text).to_string(),
                            },
                            other => other.clone(),
                        })
                        .collect(),
                ),
                _ => m.clone(),
            })
            .collect()
    }

    /// The chat a tool-calling model trains on, in the agent's protocol (`data::tool_protocol`):
    /// its system prompt; each call appended to its assistant turn as
    /// `<tool_call>{json}</tool_call>` (crops under the protocol's tool name); the turn that
    /// returns a crop rewritten as the agent writes it (the crop, then `crop_result_text`).
    /// Other tools' calls keep their name and output turns: the agent cannot run them
    /// ([`Trajectory::unsupported_tool`]).
    pub fn render_for_tool_agent(&self) -> Vec<Message> {
        let mut out = self.messages.clone();
        for call in &self.meta.tool_calls {
            let crop = tool_protocol::is_crop(&call.name);
            let name = if crop {
                tool_protocol::CROP_TOOL
            } else {
                call.name.as_str()
            };
            let Some(msg) = out.get_mut(call.turn) else {
                continue;
            };
            let markup = tool_protocol::call_markup(name, &call.arguments);
            match msg.content.iter_mut().rev().find_map(|p| match p {
                Part::Text { text } => Some(text),
                _ => None,
            }) {
                Some(text) => {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&markup);
                }
                None => msg.content.push(Part::Text { text: markup }),
            }
            let (Some(Ok(bbox)), Some(output)) =
                (call.bbox().filter(|_| crop), out.get_mut(call.turn + 1))
            else {
                continue;
            };
            let images: Vec<&str> = output.images().collect();
            if let [image] = images[..] {
                *output = tool_protocol::crop_result_turn(image.to_string(), bbox);
            }
        }
        let system = Message::text(Role::System, tool_protocol::SYSTEM_PROMPT);
        match out.first_mut() {
            Some(m) if m.role == Role::System => *m = system,
            _ => out.insert(0, system),
        }
        out
    }

    /// The first tool the agent cannot execute (it runs crops only), if any call names one.
    pub fn unsupported_tool(&self) -> Option<&str> {
        self.meta
            .tool_calls
            .iter()
            .find(|c| !tool_protocol::is_crop(&c.name))
            .map(|c| c.name.as_str())
    }
}

/// Text before the first `<tool_call>` (trimmed at the end), the way Pearl cuts PixelReasoner turns.
pub fn strip_tool_call_text(text: &str) -> &str {
    match text.find("<tool_call>") {
        Some(i) => text[..i].trim_end(),
        None => text,
    }
}

/// A trajectory with the line it came from, for messages that point at the file.
#[derive(Debug, Clone)]
pub struct Numbered {
    pub line: usize,
    pub trajectory: Trajectory,
}

/// A JSONL file of trajectories; image references resolve against `base_dir`.
#[derive(Debug, Clone)]
pub struct TrajectoryFile {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub items: Vec<Numbered>,
}

/// Base directory against which a file's relative image paths resolve.
pub fn base_dir_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Loads every line strictly: the first malformed line is an error naming file and line.
/// (Use `validate::load_validated` to collect every problem instead.)
pub fn load_jsonl(path: &Path) -> anyhow::Result<TrajectoryFile> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: cannot read line", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let trajectory: Trajectory = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a valid trajectory", path.display(), i + 1))?;
        items.push(Numbered {
            line: i + 1,
            trajectory,
        });
    }
    Ok(TrajectoryFile {
        path: path.to_path_buf(),
        base_dir: base_dir_of(path),
        items,
    })
}

/// Writes one JSON value per line (trajectories, MCQ items).
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut w, item)?;
        w.write_all(b"\n")?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Trajectory {
        let line = r#"{"id":"x1","task":"attribute","messages":[
          {"role":"system","content":[{"type":"text","text":"You are a helpful assistant."}]},
          {"role":"user","content":[{"type":"image","image":"a.png"},{"type":"text","text":"Q?"}]},
          {"role":"assistant","content":[{"type":"text","text":"Now I will focus on it."}]},
          {"role":"user","content":[{"type":"image","image":"a_crop.png"},{"type":"text","text":"Here it is."}]},
          {"role":"assistant","content":[{"type":"text","text":"(B) blue"}]}],
          "meta":{"tool_calls":[{"turn":2,"name":"crop","arguments":{"bbox_2d":[0.1,0.2,0.3,0.4],"target_image":1}}],
                  "category":"attribute/color","source":"test"}}"#;
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn parses_and_roundtrips_with_unknown_meta_kept() {
        let t = example();
        assert_eq!(t.meta.tool_calls.len(), 1);
        assert_eq!(t.meta.extra["source"], "test");
        let back: Trajectory = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn helpers_count_images_and_find_first_user_turn() {
        let t = example();
        assert_eq!(t.first_user_turn().unwrap().0, 1);
        assert_eq!(t.image_count(), 2);
        assert_eq!(t.images_before(2), 1);
        assert_eq!(t.images_before(4), 2);
        let call = &t.meta.tool_calls[0];
        assert_eq!(call.bbox().unwrap().unwrap(), [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(call.target_image().unwrap().unwrap(), 1);
    }

    #[test]
    fn the_tool_agent_rendering_speaks_the_agents_protocol() {
        let t = example();
        let pearl = t.render_for_pearl();
        assert_eq!(pearl, t.messages);
        let agent = t.render_for_tool_agent();
        assert_eq!(agent.len(), t.messages.len());
        assert_eq!(agent[0].joined_text(), tool_protocol::SYSTEM_PROMPT);
        let text = agent[2].joined_text();
        assert!(
            text.starts_with("Now I will focus on it.\n<tool_call>"),
            "{text}"
        );
        let json = text
            .split("<tool_call>")
            .nth(1)
            .unwrap()
            .trim_end_matches("</tool_call>");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["name"], tool_protocol::CROP_TOOL);
        assert_eq!(v["arguments"]["target_image"], 1);
        // The crop comes back as the agent returns it: the image, then the protocol's text.
        assert_eq!(
            agent[3],
            tool_protocol::crop_result_turn("a_crop.png".into(), [0.1, 0.2, 0.3, 0.4])
        );
        // Rendering for Pearl strips the calls again; the answer turn is untouched.
        let mut round = t.clone();
        round.messages = agent;
        let back = round.render_for_pearl();
        assert_eq!(back[2], t.messages[2]);
        assert_eq!(back[4], t.messages[4]);
        assert_eq!(t.unsupported_tool(), None);
        let mut depth = t.clone();
        depth.meta.tool_calls[0].name = "depth".into();
        assert_eq!(depth.unsupported_tool(), Some("depth"));
    }
}
