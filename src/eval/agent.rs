//! The tool-using baseline (what Pearl removes at inference): the model may ask for a crop with a
//! `<tool_call>{json}</tool_call>`; the harness runs the project's crop tool, appends the crop as a
//! new user turn, and lets the model continue, up to a call limit. The last assistant turn without
//! a tool call is the answer, read with the protocol's letter extraction. System prompt, call
//! syntax and the crop's user turn are `data::tool_protocol`'s, the same the tool-calling
//! training rendering uses (`pearl train --toolcall`).
//!
//! Tools understood (the two conventions of the trajectories Pearl learns from):
//! - PixelReasoner `crop_image_normalized`: `{"bbox_2d": [x1, y1, x2, y2], "target_image": N}`,
//!   box normalized to [0, 1], `N` the 1-based index over every image in the conversation so far
//!   (originals first, then crops in the order they were returned). Cropped with
//!   `tools::crop::crop_normalized`, exactly as the training trajectories were rendered.
//! - DeepEyes `image_zoom_in_tool`: `{"bbox_2d": [x1, y1, x2, y2], "label": ".."}` in absolute
//!   pixels of the original image (DeepEyes' environment crops `images[0]`, clamps the box to the
//!   image and grows boxes thinner than 28 px to 28 px around their centre; we do the same).
//!
//! Coordinates are read by value, whatever the tool's name: a box whose four numbers all lie in
//! [0, 1] is normalized, any other box is in pixels of the target image. `target_image` is honoured
//! by both tools (default 1). Anything malformed (not JSON, unknown tool, missing or bad box, bad
//! image index, unreadable image, too many calls) is answered with an `Error: ...` user turn and
//! counted; it never aborts the run.
//!
//! Each episode counts its calls, the valid ones (executed), and, when the item knows where its
//! answer lies (`meta.focus_bbox`, normalized to the first image, as the synthetic world writes),
//! the valid calls whose crop contains that box.

use super::answerer::{ChatModel, generate_checked};
use super::ids::file_stem;
use crate::data::chat::{ImageSource, Message, Role};
use crate::data::mcq::McqItem;
use crate::data::tool_protocol::{self, CropCall, find_tool_call, parse_call};
use crate::eval::protocol;
use anyhow::Context;
use image::DynamicImage;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// DeepEyes grows boxes thinner than this many pixels (Qwen2.5-VL merges 28×28 pixel areas).
pub const MIN_PIXEL_SIDE: u32 = 28;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Tool calls allowed per item; one more turn is granted after the limit to answer.
    pub max_calls: usize,
    /// Token budget of each assistant turn (reasoning models need far more than the protocol's 4).
    pub max_new_tokens: usize,
    /// Where crops are saved (PNG); created if missing.
    pub crop_dir: PathBuf,
    pub system_prompt: Option<String>,
}

impl AgentConfig {
    pub fn new(crop_dir: impl Into<PathBuf>) -> Self {
        Self {
            max_calls: 4,
            max_new_tokens: 512,
            crop_dir: crop_dir.into(),
            system_prompt: Some(tool_protocol::SYSTEM_PROMPT.into()),
        }
    }
}

/// One item's episode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    /// The final assistant text (the one the letter is read from); empty when the episode ended
    /// by exceeding the call limit.
    pub final_text: String,
    /// Every assistant turn, in order.
    pub turns: Vec<String>,
    pub calls: usize,
    /// Calls that were executed (the others were answered with an error turn).
    pub valid_calls: usize,
    /// Valid calls whose crop contains the item's target box; `None` when the item has none.
    pub on_target: Option<usize>,
    pub errors: Vec<String>,
    /// Summed over turns.
    pub new_tokens: usize,
    /// Of the last generation call (the longest context).
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    /// Model time of every turn plus the time spent running tools.
    pub seconds: f64,
}

/// Runs one episode per item, stepping all unfinished episodes together as one batch per turn.
pub fn run_episodes(
    model: &mut dyn ChatModel,
    items: &[McqItem],
    cfg: &AgentConfig,
) -> anyhow::Result<Vec<Episode>> {
    std::fs::create_dir_all(&cfg.crop_dir)
        .with_context(|| format!("cannot create crop directory {}", cfg.crop_dir.display()))?;
    let crop_dir = std::path::absolute(&cfg.crop_dir)
        .with_context(|| format!("cannot make {} absolute", cfg.crop_dir.display()))?;

    let mut states: Vec<State> = items.iter().map(|it| State::new(it, cfg)).collect();
    loop {
        let active: Vec<usize> = (0..states.len()).filter(|&i| !states[i].done).collect();
        if active.is_empty() {
            break;
        }
        let chats: Vec<Vec<Message>> = active.iter().map(|&i| states[i].chat.clone()).collect();
        let gens = generate_checked(model, &chats, cfg.max_new_tokens)?;
        for (&i, g) in active.iter().zip(gens) {
            let st = &mut states[i];
            let ep = &mut st.episode;
            ep.new_tokens += g.new_tokens;
            ep.prompt_tokens = g.prompt_tokens;
            ep.image_tokens = g.image_tokens;
            ep.seconds += g.seconds;
            let started = Instant::now();
            st.step(&g.text, cfg.max_calls, &crop_dir, &items[i].id);
            st.episode.seconds += started.elapsed().as_secs_f64();
        }
    }
    Ok(states.into_iter().map(|s| s.episode).collect())
}

struct State {
    chat: Vec<Message>,
    /// Every image reference in the conversation, in order (`target_image` indexes this, 1-based).
    images: Vec<String>,
    /// Per image: the original image (0-based) it shows and, for a crop, the region of it in that
    /// image's pixels (`None` for the original itself). Crops are saved unscaled.
    frames: Vec<(usize, Option<[f64; 4]>)>,
    /// The item's target box, normalized to the first image.
    target: Option<[f64; 4]>,
    episode: Episode,
    done: bool,
}

impl State {
    fn new(item: &McqItem, cfg: &AgentConfig) -> Self {
        let mut chat = vec![];
        if let Some(sys) = &cfg.system_prompt {
            chat.push(Message::text(Role::System, sys.clone()));
        }
        chat.extend(protocol::chat_for(item));
        let target = target_box(item);
        Self {
            chat,
            images: item.images.clone(),
            frames: (0..item.images.len()).map(|i| (i, None)).collect(),
            target,
            episode: Episode {
                on_target: target.map(|_| 0),
                ..Episode::default()
            },
            done: false,
        }
    }

    /// Takes one assistant turn: either the final answer, or a tool call answered with a crop or
    /// an error turn.
    fn step(&mut self, text: &str, max_calls: usize, crop_dir: &Path, item_id: &str) {
        let Some(call) = find_tool_call(text) else {
            self.finish(text);
            return;
        };
        self.episode.calls += 1;
        // Keep the turn only up to its tool call: what a model writes after it is not grounded.
        let kept = &text[..call.end];
        self.episode.turns.push(kept.to_string());
        self.chat.push(Message::text(Role::Assistant, kept));
        if self.episode.calls > max_calls {
            // The model was told the limit before and ignored it: the item ends unanswered (the
            // turn stays in `turns`; no letter is read out of a tool call).
            self.episode
                .errors
                .push(format!("tool call limit of {max_calls} exceeded"));
            self.episode.final_text = String::new();
            self.done = true;
            return;
        }
        let result = call
            .body
            .and_then(|json| parse_call(&json))
            .and_then(|c| self.execute(&c, crop_dir, item_id));
        match result {
            Ok(crop) => {
                self.episode.valid_calls += 1;
                if let (Some(n), Some(t)) = (self.episode.on_target.as_mut(), self.target)
                    && crop.source == 0
                    && contains(crop.region, scale(t, crop.source_size))
                {
                    *n += 1;
                }
                self.images.push(crop.path.clone());
                self.frames.push((crop.source, Some(crop.region)));
                self.chat
                    .push(tool_protocol::crop_result_turn(crop.path, crop.bbox));
            }
            Err(e) => {
                self.episode.errors.push(e.clone());
                self.chat
                    .push(Message::text(Role::User, format!("Error: {e}")));
            }
        }
        if self.episode.calls == max_calls {
            self.chat.push(Message::text(
                Role::User,
                "No more tool calls are allowed. Answer now with the option's letter.".to_string(),
            ));
        }
    }

    fn finish(&mut self, text: &str) {
        self.episode.turns.push(text.to_string());
        self.episode.final_text = text.to_string();
        self.done = true;
    }

    /// Runs a crop and saves it.
    fn execute(&self, call: &CropCall, crop_dir: &Path, item_id: &str) -> Result<Crop, String> {
        let n = self.images.len();
        let reference = call
            .target_image
            .checked_sub(1)
            .and_then(|i| self.images.get(i))
            .ok_or_else(|| {
                format!(
                    "target_image {} does not exist (there are {n} images, numbered from 1)",
                    call.target_image
                )
            })?;
        let img = load_image(reference).map_err(|e| format!("{e:#}"))?;
        let (x, y, w, h) = crop_box(&img, call.bbox)?;
        let path = crop_dir.join(format!(
            "{}_crop{}.png",
            file_stem(item_id),
            self.episode.calls
        ));
        img.crop_imm(x, y, w, h)
            .save(&path)
            .map_err(|e| format!("cannot save crop to {}: {e}", path.display()))?;
        let (source, frame) = self.frames[call.target_image - 1];
        let [fx, fy] = frame.map_or([0.0, 0.0], |f| [f[0], f[1]]);
        let (x, y) = (fx + f64::from(x), fy + f64::from(y));
        let source_size = match frame {
            None => (img.width(), img.height()),
            Some(_) => image_size(&self.images[source])?,
        };
        Ok(Crop {
            path: path.display().to_string(),
            bbox: call.bbox,
            source,
            source_size,
            region: [x, y, x + f64::from(w), y + f64::from(h)],
        })
    }
}

/// An executed crop.
struct Crop {
    /// Absolute path of the saved crop.
    path: String,
    /// The box as the call gave it.
    bbox: [f64; 4],
    /// The original image (0-based) the crop shows part of, its size, and the region in its pixels.
    source: usize,
    source_size: (u32, u32),
    region: [f64; 4],
}

/// `meta.focus_bbox` of an item: where its answer lies, normalized to the first image.
fn target_box(item: &McqItem) -> Option<[f64; 4]> {
    serde_json::from_value(item.meta.get("focus_bbox")?.clone()).ok()
}

fn scale(b: [f64; 4], (w, h): (u32, u32)) -> [f64; 4] {
    let (w, h) = (f64::from(w), f64::from(h));
    [b[0] * w, b[1] * h, b[2] * w, b[3] * h]
}

/// Whether `outer` contains `inner` (pixels), up to the one pixel that flooring a box may lose.
fn contains(outer: [f64; 4], inner: [f64; 4]) -> bool {
    outer[0] <= inner[0] + 1.0
        && outer[1] <= inner[1] + 1.0
        && outer[2] >= inner[2] - 1.0
        && outer[3] >= inner[3] - 1.0
}

fn image_size(reference: &str) -> Result<(u32, u32), String> {
    let img = load_image(reference).map_err(|e| format!("{e:#}"))?;
    Ok((img.width(), img.height()))
}

/// The pixel box `(x, y, w, h)` of `bbox` in `img`: normalized when all four values are in
/// [0, 1] (`tools::crop::pixel_box`, as the training crops were made), else in pixels.
fn crop_box(img: &DynamicImage, bbox: [f64; 4]) -> Result<(u32, u32, u32, u32), String> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(format!("bbox {bbox:?} has a non-finite value"));
    }
    if bbox.iter().all(|v| (0.0..=1.0).contains(v)) {
        return crate::tools::crop::pixel_box(bbox, img.width(), img.height())
            .map_err(|e| e.to_string());
    }
    pixel_box_clamped(bbox, img.width(), img.height())
}

/// DeepEyes' handling of a pixel box: clamp to the image, reject empty boxes and aspect ratios
/// over 100, grow a side under `MIN_PIXEL_SIDE` around the centre (then keep it inside the image).
fn pixel_box_clamped(
    bbox: [f64; 4],
    width: u32,
    height: u32,
) -> Result<(u32, u32, u32, u32), String> {
    let (wf, hf) = (width as f64, height as f64);
    let [x1, y1, x2, y2] = [
        bbox[0].max(0.0),
        bbox[1].max(0.0),
        bbox[2].min(wf),
        bbox[3].min(hf),
    ];
    if x2 <= x1 || y2 <= y1 {
        return Err(format!(
            "bbox {bbox:?} is empty inside the {width}x{height} image (need x1 < x2 and y1 < y2)"
        ));
    }
    let (bw, bh) = (x2 - x1, y2 - y1);
    if bw.max(bh) / bw.min(bh) > 100.0 {
        return Err(format!("bbox {bbox:?} has an aspect ratio over 100"));
    }
    let grow = |lo: f64, hi: f64, size: u32| -> (u32, u32) {
        let min = MIN_PIXEL_SIDE.min(size) as f64;
        let (lo, hi) = if hi - lo < min {
            let c = (lo + hi) / 2.0;
            let lo = (c - min / 2.0).clamp(0.0, size as f64 - min);
            (lo, lo + min)
        } else {
            (lo, hi)
        };
        let (l, r) = (lo.floor() as u32, (hi.ceil() as u32).min(size));
        (l, r.max(l + 1) - l)
    };
    let (x, w) = grow(x1, x2, width);
    let (y, h) = grow(y1, y2, height);
    Ok((x, y, w, h))
}

fn load_image(reference: &str) -> anyhow::Result<DynamicImage> {
    match ImageSource::resolve(reference, Path::new("/"))? {
        ImageSource::Path(p) => {
            image::open(&p).with_context(|| format!("cannot read image {}", p.display()))
        }
        ImageSource::Inline(bytes) => {
            image::load_from_memory(&bytes).context("cannot decode inline image")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::answerer::testing::ScriptedModel;
    use super::*;
    use crate::data::chat::Part;

    fn setup(dir: &Path) -> McqItem {
        // Left half red, right half blue: a crop's colour shows which box was used.
        let img = image::RgbImage::from_fn(100, 60, |x, _| {
            if x < 50 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let path = dir.join("scene.png");
        img.save(&path).unwrap();
        McqItem {
            id: "toy/1".into(),
            images: vec![path.display().to_string()],
            question: "What colour is the right side?".into(),
            options: vec!["red".into(), "blue".into()],
            answer: "B".into(),
            category: "color".into(),
            meta: serde_json::Value::Null,
        }
    }

    fn cfg(dir: &Path) -> AgentConfig {
        AgentConfig {
            max_calls: 2,
            ..AgentConfig::new(dir.join("crops"))
        }
    }

    fn image_of_last_user_turn(chat: &[Message]) -> image::RgbImage {
        let path = chat.last().unwrap().images().next().unwrap().to_string();
        image::open(path).unwrap().to_rgb8()
    }

    #[test]
    fn crop_then_answer() {
        let dir = tempfile::tempdir().unwrap();
        let item = setup(dir.path());
        let call = r#"Let me look. <tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.5, 0.0, 1.0, 0.5], "target_image": 1}}</tool_call> trailing hallucination"#;
        let mut model = ScriptedModel::new("?").script("right side", &[call, "<answer>B</answer>"]);
        let eps = run_episodes(&mut model, std::slice::from_ref(&item), &cfg(dir.path())).unwrap();
        let ep = &eps[0];
        assert_eq!(ep.calls, 1);
        assert!(ep.errors.is_empty(), "{:?}", ep.errors);
        assert_eq!(ep.final_text, "<answer>B</answer>");
        assert_eq!(
            protocol::extract_letter(&ep.final_text, &item.options),
            Some('B')
        );
        assert_eq!(ep.turns.len(), 2);
        assert!(
            ep.turns[0].ends_with("</tool_call>"),
            "text after the call is dropped"
        );

        // Second call saw: system, user, assistant (call), user (text + crop).
        let second = &model.seen[1];
        assert_eq!(
            second.iter().map(|m| m.role).collect::<Vec<_>>(),
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(
            second[3].joined_text(),
            tool_protocol::crop_result_text([0.5, 0.0, 1.0, 0.5])
        );
        let crop = image_of_last_user_turn(second);
        assert_eq!(crop.dimensions(), (50, 30));
        assert!(
            crop.pixels().all(|p| p.0 == [0, 0, 255]),
            "crop is of the blue half"
        );
        assert_eq!(ep.new_tokens, model_tokens(call) + 1);
        assert_eq!(ep.image_tokens, 32, "two images in the last context");
        assert!(ep.seconds >= 0.02);
    }

    fn model_tokens(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn deepeyes_pixel_boxes_are_clamped_and_grown() {
        let dir = tempfile::tempdir().unwrap();
        let item = setup(dir.path());
        // Pixels, partly outside the image, 10 px tall: clamped to x 60..100, grown to 28 px tall.
        let call = r#"<tool_call>{"name":"image_zoom_in_tool","arguments":{"bbox_2d":[60,20,130,30],"label":"side"}}</tool_call>"#;
        let mut model = ScriptedModel::new("?").script("right side", &[call, "B"]);
        let eps = run_episodes(&mut model, &[item], &cfg(dir.path())).unwrap();
        assert!(eps[0].errors.is_empty(), "{:?}", eps[0].errors);
        let crop = image_of_last_user_turn(&model.seen[1]);
        assert_eq!(crop.dimensions(), (40, 28));
        assert!(crop.pixels().all(|p| p.0 == [0, 0, 255]));
    }

    #[test]
    fn crops_can_be_cropped_again() {
        let dir = tempfile::tempdir().unwrap();
        let item = setup(dir.path());
        let first = r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.0, 0.0, 0.6, 1.0], "target_image": 1}}</tool_call>"#;
        // Image 2 is the first crop (60x60, red up to x=50): its right sixth is blue.
        let second = r#"<tool_call>{"name": "crop_image_normalized", "arguments": "{\"bbox_2d\": [0.9, 0.0, 1.0, 1.0], \"target_image\": 2}"}</tool_call>"#;
        let mut model = ScriptedModel::new("?").script("right side", &[first, second, "B"]);
        let eps = run_episodes(&mut model, &[item], &cfg(dir.path())).unwrap();
        assert!(eps[0].errors.is_empty(), "{:?}", eps[0].errors);
        assert_eq!(eps[0].calls, 2);
        // Third call: system, user, call, crop 1, call, crop 2 (index 5), then the limit notice.
        let crop = image_of_last_user_turn(&model.seen[2][..6]);
        assert_eq!(crop.dimensions(), (6, 60));
        assert!(crop.pixels().all(|p| p.0 == [0, 0, 255]));
        // The limit (2) is reached: the model is told to answer.
        assert!(
            model.seen[2]
                .last()
                .unwrap()
                .joined_text()
                .contains("No more tool calls")
        );
    }

    #[test]
    fn malformed_calls_get_error_turns_not_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let item = setup(dir.path());
        let bad = [
            ("<tool_call>{not json</tool_call>", "not valid JSON"),
            (
                r#"<tool_call>{"name": "rotate", "arguments": {}}</tool_call>"#,
                "unknown tool",
            ),
            (
                r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2]}}</tool_call>"#,
                "4 numbers",
            ),
            (
                r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.6, 0.2, 0.4, 0.9]}}</tool_call>"#,
                "empty",
            ),
            (
                r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "target_image": 3}}</tool_call>"#,
                "target_image 3 does not exist",
            ),
            (
                r#"<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [200, 100, 300, 200]}}</tool_call>"#,
                "empty inside the 100x60 image",
            ),
            (
                r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0, 0, 1, 1]"#,
                "not closed",
            ),
        ];
        for (reply, want) in bad {
            let mut model = ScriptedModel::new("?").script("right side", &[reply, "A"]);
            let eps =
                run_episodes(&mut model, std::slice::from_ref(&item), &cfg(dir.path())).unwrap();
            let ep = &eps[0];
            assert_eq!((ep.calls, ep.errors.len()), (1, 1), "{reply}");
            assert!(ep.errors[0].contains(want), "{reply}: {}", ep.errors[0]);
            let err_turn = model.seen[1].last().unwrap();
            assert_eq!(err_turn.role, Role::User);
            assert!(err_turn.joined_text().starts_with("Error: "));
            assert_eq!(ep.final_text, "A");
        }
    }

    #[test]
    fn call_limit_ends_the_episode_and_batches_mix() {
        let dir = tempfile::tempdir().unwrap();
        let item = setup(dir.path());
        let other = McqItem {
            id: "toy/2".into(),
            question: "Plain question?".into(),
            ..item.clone()
        };
        let call = r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5]}}</tool_call>"#;
        let mut model = ScriptedModel::new("garbage")
            .script("right side", &[call, call, call, call])
            .script("Plain", &["B"]);
        let eps = run_episodes(&mut model, &[item, other], &cfg(dir.path())).unwrap();
        assert_eq!(eps[0].calls, 3);
        assert_eq!(eps[0].errors, ["tool call limit of 2 exceeded"]);
        assert_eq!(eps[0].turns.len(), 3);
        assert_eq!(eps[0].final_text, "");
        // The other item answered at once, in the first batch of two.
        assert_eq!((eps[1].calls, eps[1].final_text.as_str()), (0, "B"));
        assert_eq!(model.seen.len(), 4);
    }
    /// Every image part replaced by its size and a digest of its pixels, so that chats built from
    /// different files of the same crops compare equal.
    fn by_pixels(chat: &[Message], base: &Path) -> Vec<Message> {
        use std::hash::{Hash, Hasher};
        chat.iter()
            .map(|m| {
                let content = m
                    .content
                    .iter()
                    .map(|p| match p {
                        Part::Image { image } => {
                            let img = image::open(base.join(image)).unwrap().to_rgb8();
                            let mut h = std::collections::hash_map::DefaultHasher::new();
                            img.as_raw().hash(&mut h);
                            Part::Image {
                                image: format!("{:?} {:x}", img.dimensions(), h.finish()),
                            }
                        }
                        other => other.clone(),
                    })
                    .collect();
                Message::new(m.role, content)
            })
            .collect()
    }

    #[test]
    fn the_tool_calling_rendering_round_trips_through_the_agent() {
        use crate::data::synth::{SynthConfig, Task, generate};
        let dir = tempfile::tempdir().unwrap();
        let mut checked = 0;
        for task in [Task::Attribute, Task::Chain] {
            let out = dir.path().join(task.name());
            let mut c = SynthConfig::new(task, 5, 0);
            (c.train, c.val, c.test, c.threads) = (4, 1, 1, 1);
            (c.scene.width, c.scene.height, c.scene.clutter) = (224, 224, 4);
            c.scene.object_size = 16.0;
            generate(&c, &out).unwrap();
            let file = crate::data::trajectory::load_jsonl(&out.join("train.jsonl")).unwrap();
            let items = crate::eval::bench::jsonl::load(&out.join("train_mcq.jsonl")).unwrap();
            for n in &file.items {
                let t = &n.trajectory;
                assert_eq!(t.unsupported_tool(), None);
                let rendered = t.render_for_tool_agent();
                let item = items.iter().find(|i| i.id == t.id).unwrap();
                // A model that learned the rendering writes its assistant turns verbatim.
                let turns: Vec<String> = rendered
                    .iter()
                    .filter(|m| m.role == Role::Assistant)
                    .map(Message::joined_text)
                    .collect();
                let replies: Vec<&str> = turns.iter().map(String::as_str).collect();
                let mut model = ScriptedModel::new("?").script("", &replies);
                let cfg = AgentConfig {
                    max_calls: 4,
                    ..AgentConfig::new(dir.path().join("crops"))
                };
                let ep = &run_episodes(&mut model, std::slice::from_ref(item), &cfg).unwrap()[0];
                // The agent executed exactly the expert's calls, all valid and all on the target.
                assert!(ep.errors.is_empty(), "{}: {:?}", t.id, ep.errors);
                assert_eq!(ep.calls, t.meta.tool_calls.len(), "{}", t.id);
                assert!(ep.calls >= 1);
                assert_eq!(ep.valid_calls, ep.calls);
                assert_eq!(ep.on_target, Some(ep.calls), "{}", t.id);
                assert_eq!(ep.final_text, *turns.last().unwrap());
                // What the model saw before answering is the rendering, crops pixel for pixel.
                let seen = model.seen.last().unwrap();
                assert_eq!(
                    by_pixels(seen, Path::new("/")),
                    by_pixels(&rendered[..rendered.len() - 1], &file.base_dir),
                    "{}",
                    t.id
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 8);
    }
}
