//! From a canonical trajectory to what LVR trains on: the prompt (system + first user turn with I0
//! and the question), the box of the expert's first crop of I0, and the final answer. The tool
//! turns in between are dropped: LVR replaces them by latent steps that reconstruct the crop.
//!
//! A trajectory without a crop/zoom call on I0 has nothing for the latents to reconstruct; it is
//! skipped, and every skip is returned with its reason. A trajectory that is malformed for LVR
//! (no image in the first user turn, no final answer, a broken box) is an error.

use crate::data::chat::{Message, Part, Role};
use crate::data::trajectory::{ToolCall, Trajectory, TrajectoryFile};
use crate::processor::tokenizer::{LVR_END, LVR_LATENT, LVR_START, lvr_tokens};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};

/// One LVR training example.
#[derive(Debug, Clone, PartialEq)]
pub struct LvrExample {
    pub id: String,
    /// System turn(s) if any, then the first user turn (I0 first, then the question).
    pub prompt: Vec<Message>,
    /// The crop of I0 the latents reconstruct, normalized `[x1, y1, x2, y2]`.
    pub bbox: [f64; 4],
    /// Text of the trajectory's final assistant turn.
    pub answer: String,
    /// Directory relative image paths resolve against.
    pub base_dir: PathBuf,
}

/// A trajectory left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// The examples built from a set of trajectories and the ones skipped (never dropped silently).
#[derive(Debug, Clone, Default)]
pub struct LvrExamples {
    pub examples: Vec<LvrExample>,
    pub skipped: Vec<Skipped>,
}

/// Whether a call is a crop or zoom (`crop`, PixelReasoner's `crop_image_normalized`, a `zoom`).
fn is_crop(call: &ToolCall) -> bool {
    let name = call.name.to_ascii_lowercase();
    name.contains("crop") || name.contains("zoom")
}

impl LvrExample {
    /// The example of one trajectory: `Ok(None)` when it has no crop/zoom call on image 1.
    /// `target_image` is 1-based over the chat's images; a call that does not name its image is
    /// not assumed to act on I0.
    pub fn from_trajectory(t: &Trajectory, base_dir: &Path) -> Result<Option<LvrExample>> {
        let ctx = || format!("trajectory {:?}", t.id);
        let mut bbox = None;
        for call in t.meta.tool_calls.iter().filter(|c| is_crop(c)) {
            let target = match call.target_image() {
                Some(r) => r.with_context(ctx)?,
                None => continue,
            };
            if target != 1 {
                continue;
            }
            let b = call
                .bbox()
                .with_context(|| format!("{} call at turn {} has no bbox_2d", call.name, call.turn))
                .with_context(ctx)?
                .with_context(ctx)?;
            // The crop tool's own check (inside [0, 1], not empty); the size does not matter.
            crate::tools::crop::pixel_box(b, 1000, 1000)
                .with_context(|| format!("{} call at turn {}", call.name, call.turn))
                .with_context(ctx)?;
            bbox = Some(b);
            break;
        }
        let Some(bbox) = bbox else {
            return Ok(None);
        };

        let (u, user) = t
            .first_user_turn()
            .context("it has no user turn")
            .with_context(ctx)?;
        ensure!(
            t.images_before(u) == 0 && user.images().next().is_some(),
            "{}: the first user turn must hold the question image I0 (LVR crops it)",
            ctx()
        );
        let last = t
            .messages
            .last()
            .filter(|m| m.role == Role::Assistant && u < t.messages.len() - 1)
            .with_context(|| format!("{}: it does not end with an assistant answer turn", ctx()))?;
        if last.images().next().is_some() {
            bail!("{}: the final answer turn holds an image", ctx());
        }
        let answer = last.joined_text();
        ensure!(
            !answer.trim().is_empty(),
            "{}: the final answer turn is empty",
            ctx()
        );
        for token in lvr_tokens() {
            ensure!(
                !t.messages.iter().any(|m| m.joined_text().contains(token)),
                "{}: its text contains LVR's reserved token {token}",
                ctx()
            );
        }
        let mut prompt: Vec<Message> = t.messages[..u]
            .iter()
            .filter(|m| m.role == Role::System)
            .cloned()
            .collect();
        prompt.push(user.clone());
        Ok(Some(LvrExample {
            id: t.id.clone(),
            prompt,
            bbox,
            answer,
            base_dir: base_dir.to_path_buf(),
        }))
    }

    /// The chat LVR trains on, with `latents` latent slots:
    /// prompt, then one assistant turn `<|lvr_start|>` `<|lvr_latent|>` x latents `<|lvr_end|>` answer.
    pub fn chat(&self, latents: usize) -> Vec<Message> {
        let mut chat = self.prompt.clone();
        let text = format!(
            "{LVR_START}{}{LVR_END}{}",
            LVR_LATENT.repeat(latents),
            self.answer
        );
        chat.push(Message::new(Role::Assistant, vec![Part::Text { text }]));
        chat
    }

    /// The first image's reference (I0).
    pub fn image(&self) -> Result<&str> {
        self.prompt
            .iter()
            .flat_map(Message::images)
            .next()
            .with_context(|| format!("example {:?} has no image", self.id))
    }
}

impl LvrExamples {
    /// The examples of a loaded trajectory file.
    pub fn from_file(file: &TrajectoryFile) -> Result<Self> {
        Self::from_trajectories(file.items.iter().map(|n| &n.trajectory), &file.base_dir)
            .with_context(|| format!("{}", file.path.display()))
    }

    /// Builds the examples of `trajectories` (image paths relative to `base_dir`); the first
    /// malformed trajectory is an error.
    pub fn from_trajectories<'a>(
        trajectories: impl IntoIterator<Item = &'a Trajectory>,
        base_dir: &Path,
    ) -> Result<Self> {
        let mut out = Self::default();
        for t in trajectories {
            match LvrExample::from_trajectory(t, base_dir)? {
                Some(e) => out.examples.push(e),
                None => out.skipped.push(Skipped {
                    id: t.id.clone(),
                    reason: "no crop/zoom call on the first image".into(),
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traj(calls: Vec<ToolCall>, last: Option<Message>) -> Trajectory {
        let mut messages = vec![
            Message::text(Role::System, "sys"),
            Message::new(
                Role::User,
                vec![
                    Part::Image {
                        image: "a.png".into(),
                    },
                    Part::Text { text: "Q?".into() },
                ],
            ),
            Message::text(Role::Assistant, "Now I will focus on it."),
            Message::new(
                Role::User,
                vec![Part::Image {
                    image: "a_crop.png".into(),
                }],
            ),
        ];
        messages.extend(last);
        let mut t = Trajectory {
            id: "t1".into(),
            messages,
            task: "attribute".into(),
            meta: Default::default(),
        };
        t.meta.tool_calls = calls;
        t
    }

    fn answer() -> Option<Message> {
        Some(Message::text(Role::Assistant, "(B) blue"))
    }

    #[test]
    fn the_first_crop_of_image_one_gives_the_box_and_the_answer_ends_the_chat() {
        let calls = vec![
            ToolCall::on_image(2, "depth", 1),
            ToolCall::with_bbox(2, "crop", [0.5, 0.5, 0.7, 0.7], 2),
            ToolCall::with_bbox(2, "crop_image_normalized", [0.1, 0.2, 0.3, 0.4], 1),
            ToolCall::with_bbox(2, "crop", [0.0, 0.0, 0.9, 0.9], 1),
        ];
        let e = LvrExample::from_trajectory(&traj(calls, answer()), Path::new("/d"))
            .unwrap()
            .unwrap();
        assert_eq!(e.bbox, [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(e.answer, "(B) blue");
        assert_eq!(e.prompt.len(), 2);
        assert_eq!(e.image().unwrap(), "a.png");
        let chat = e.chat(3);
        assert_eq!(chat.len(), 3);
        assert_eq!(
            chat[2].joined_text(),
            "<|lvr_start|><|lvr_latent|><|lvr_latent|><|lvr_latent|><|lvr_end|>(B) blue"
        );
    }

    #[test]
    fn trajectories_without_a_crop_of_image_one_are_skipped_and_counted() {
        let with = traj(
            vec![ToolCall::with_bbox(2, "zoom", [0.1, 0.1, 0.2, 0.2], 1)],
            answer(),
        );
        let highlight = traj(
            vec![ToolCall::with_bbox(2, "highlight", [0.1, 0.1, 0.2, 0.2], 1)],
            answer(),
        );
        let none = traj(vec![], answer());
        let all = [with, highlight, none];
        let out = LvrExamples::from_trajectories(&all, Path::new(".")).unwrap();
        assert_eq!(out.examples.len(), 1);
        assert_eq!(out.skipped.len(), 2);
        assert!(out.skipped[0].reason.contains("crop/zoom"));
    }

    #[test]
    fn malformed_trajectories_are_clear_errors() {
        let crop = || vec![ToolCall::with_bbox(2, "crop", [0.1, 0.1, 0.2, 0.2], 1)];
        let err = |t: Trajectory| {
            format!(
                "{:#}",
                LvrExample::from_trajectory(&t, Path::new(".")).unwrap_err()
            )
        };
        // No final answer turn.
        let e = err(traj(crop(), None));
        assert!(e.contains("t1") && e.contains("answer turn"), "{e}");
        // No image in the first user turn.
        let mut t = traj(crop(), answer());
        t.messages[1].content.remove(0);
        let e = err(t);
        assert!(e.contains("question image"), "{e}");
        // A box that is not a box.
        let e = err(traj(
            vec![ToolCall::with_bbox(2, "crop", [0.5, 0.1, 0.4, 0.9], 1)],
            answer(),
        ));
        assert!(e.contains("empty"), "{e}");
        let mut bad = ToolCall::on_image(2, "crop", 1);
        bad.arguments
            .insert("bbox_2d".into(), serde_json::json!([1, 2]));
        let e = err(traj(vec![bad], answer()));
        assert!(e.contains("four numbers"), "{e}");
        // The reserved tokens cannot appear in the data.
        let e = err(traj(
            crop(),
            Some(Message::text(Role::Assistant, "<|lvr_end|>(A)")),
        ));
        assert!(e.contains("reserved"), "{e}");
    }
}
