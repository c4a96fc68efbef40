//! Writes a synthetic dataset: per split and index, a seeded example (scene, question, expert
//! plan), its rendered images, the trajectory and the MCQ item. Every example has its own seed
//! derived from (seed, split, index), so files are byte-for-byte reproducible whatever the thread
//! count, and no two examples (hence no two splits) share a scene.

use crate::data::chat::{Message, Part, Role};
use crate::data::mcq::{McqItem, option_letter};
use crate::data::synth::expert::{self, Step, Tool};
use crate::data::synth::question::{self, Kind, Layout, Question};
use crate::data::synth::render;
use crate::data::synth::scene::SceneParams;
use crate::data::tool_protocol;
use crate::data::trajectory::{Meta, ToolCall, Trajectory, write_jsonl};
use anyhow::Context;
use image::DynamicImage;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Attribute,
    Position,
    Counting,
    Chain,
    Multitool,
    Multicall,
    Mixed,
    Pretrain,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Attribute => "attribute",
            Task::Position => "position",
            Task::Counting => "counting",
            Task::Chain => "chain",
            Task::Multitool => "multitool",
            Task::Multicall => "multicall",
            Task::Mixed => "mixed",
            Task::Pretrain => "pretrain",
        }
    }
}

/// What the expert says before a crop with `short_call_text`.
pub const SHORT_CROP_TEXT: &str = "Let me zoom in.";

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub task: Task,
    pub seed: u64,
    /// Examples per split: train and val get trajectories (and MCQ items), test only MCQ items.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub scene: SceneParams,
    /// Tool types of the multitool / multicall / mixed tasks.
    pub tools: Vec<Tool>,
    /// Calls per trajectory in chains and multi-call plans (2 or 3).
    pub max_calls: usize,
    /// Outline width of the highlight tool, pixels.
    pub highlight_width: u32,
    /// Distractor objects per scene (min, max).
    pub distractors: (usize, usize),
    /// Options in a fixed order per question kind (`question::Layout::canonical_options`).
    pub canonical_options: bool,
    /// Objects told apart by color alone (`question::Layout::unique_colors`).
    pub unique_colors: bool,
    /// Question kinds to draw; empty = every kind the task has.
    pub kinds: Vec<Kind>,
    /// The expert's crop turns say [`SHORT_CROP_TEXT`] instead of the published text, which
    /// repeats the box in prose: a model that writes its own calls then writes each box once.
    pub short_call_text: bool,
    /// Single crops are one of nine fixed windows (`expert::grid_window`), a discrete crop
    /// vocabulary, instead of boxes fitted to the focus.
    pub crop_grid: bool,
    /// Half of pretraining's quadrant-box questions are asked as instructions the crop tool's
    /// call answers (`Plan::Call`), in training and validation.
    pub pretrain_calls: bool,
    /// Worker threads (output does not depend on it).
    pub threads: usize,
}

impl SynthConfig {
    /// Defaults of the V*-like world: 896x896 scenes, 12 px objects, 40 clutter blobs.
    pub fn new(task: Task, seed: u64, n: usize) -> Self {
        let val = (n / 10).max(1);
        Self {
            task,
            seed,
            train: n.saturating_sub(2 * val),
            val,
            test: val,
            scene: SceneParams {
                width: 896,
                height: 896,
                object_size: 12.0,
                clutter: 40,
                noise: 8,
                plain: false,
                lit: false,
            },
            tools: vec![Tool::Crop, Tool::Highlight, Tool::Depth],
            max_calls: 3,
            highlight_width: 2,
            // Pretraining scenes are small views with a few plainly visible objects.
            distractors: if task == Task::Pretrain {
                (1, 3)
            } else {
                (6, 14)
            },
            canonical_options: false,
            unique_colors: false,
            kinds: Vec::new(),
            crop_grid: false,
            short_call_text: false,
            pretrain_calls: false,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4),
        }
    }

    /// Rejects knobs that cannot produce a dataset, before any file is written.
    pub fn check(&self) -> anyhow::Result<()> {
        let s = &self.scene;
        anyhow::ensure!(
            s.object_size >= 3.0,
            "object size {} px is too small to draw (at least 3)",
            s.object_size
        );
        // Pretraining views are close-ups with a few objects; tool-use scenes need room to search.
        // A quadrant question only needs each quarter to hold one object.
        let quadrants_only = !self.kinds.is_empty()
            && self.kinds.iter().all(|k| {
                matches!(
                    k,
                    Kind::QuadrantColor | Kind::QuadrantShape | Kind::QuadrantWhere
                )
            });
        let sizes = if self.task == Task::Pretrain || quadrants_only {
            4.0
        } else {
            10.0
        };
        anyhow::ensure!(
            s.width as f64 >= s.object_size * sizes && s.height as f64 >= s.object_size * sizes,
            "scene {}x{} is too small for {} px objects (need at least {sizes} object sizes per side)",
            s.width,
            s.height,
            s.object_size
        );
        anyhow::ensure!(
            s.width <= 8192 && s.height <= 8192,
            "scene {}x{} is larger than 8192 per side",
            s.width,
            s.height
        );
        anyhow::ensure!(
            (2..=3).contains(&self.max_calls),
            "calls per trajectory must be 2 or 3, got {}",
            self.max_calls
        );
        anyhow::ensure!(!self.tools.is_empty(), "no tool types enabled");
        if matches!(self.task, Task::Multicall) {
            anyhow::ensure!(
                self.tools.contains(&Tool::Crop) && self.tools.len() >= 2,
                "the multicall task needs crop and at least one other tool type"
            );
        }
        anyhow::ensure!(
            self.train + self.val + self.test > 0,
            "nothing to generate (all split sizes are 0)"
        );
        anyhow::ensure!(
            self.distractors.0 <= self.distractors.1,
            "distractor range is reversed"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// What was written, for the command's summary.
#[derive(Debug, Default)]
pub struct SynthSummary {
    pub counts: BTreeMap<String, usize>,
    pub by_category: BTreeMap<String, usize>,
    pub by_calls: BTreeMap<usize, usize>,
}

/// Generates the dataset into `out`: `train.jsonl`, `val.jsonl` (trajectories), `val_mcq.jsonl`,
/// `test_mcq.jsonl` (MCQ items), images under `images/<split>/`.
pub fn generate(cfg: &SynthConfig, out: &Path) -> anyhow::Result<SynthSummary> {
    cfg.check()?;
    let mut summary = SynthSummary::default();
    let mut fingerprints = HashSet::new();
    for (split, n) in [
        (Split::Train, cfg.train),
        (Split::Val, cfg.val),
        (Split::Test, cfg.test),
    ] {
        let dir = out.join("images").join(split.name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let examples = run_parallel(cfg, split, n, out)?;
        let (mut trajectories, mut items) = (Vec::new(), Vec::new());
        for ex in examples {
            // Independent seeds make a repeated scene practically impossible; checked anyway.
            anyhow::ensure!(
                fingerprints.insert(ex.fingerprint),
                "scene of {} repeats an earlier scene",
                ex.item.id
            );
            *summary
                .by_category
                .entry(format!("{}: {}", split.name(), ex.item.category))
                .or_default() += 1;
            if let Some(t) = ex.trajectory {
                *summary.by_calls.entry(t.meta.tool_calls.len()).or_default() += 1;
                trajectories.push(t);
            }
            items.push(ex.item);
        }
        match split {
            Split::Test => write_jsonl(&out.join("test_mcq.jsonl"), &items)?,
            _ => {
                write_jsonl(&out.join(format!("{}.jsonl", split.name())), &trajectories)?;
                write_jsonl(&out.join(format!("{}_mcq.jsonl", split.name())), &items)?;
            }
        }
        summary.counts.insert(split.name().to_string(), items.len());
    }
    Ok(summary)
}

struct Example {
    trajectory: Option<Trajectory>,
    item: McqItem,
    fingerprint: u64,
}

/// Examples `0..n` of `split`, in order, made by `cfg.threads` workers on interleaved indices.
fn run_parallel(
    cfg: &SynthConfig,
    split: Split,
    n: usize,
    out: &Path,
) -> anyhow::Result<Vec<Example>> {
    let threads = cfg.threads.clamp(1, n.max(1));
    let results: Vec<anyhow::Result<Vec<(usize, Example)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| Ok((i, example(cfg, split, i, out)?)))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, e)| e).collect())
}

/// SplitMix64 finalizer: decorrelates the per-example seeds derived from consecutive indices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one example asks and how the expert answers it.
enum Plan {
    Tools {
        task: Task,
        steps: Vec<Step>,
    },
    /// Pretraining: a direct answer, no tools.
    Direct,
    /// Pretraining: a caption listing the objects.
    Caption,
    /// Pretraining: "Write, as JSON, the call of the crop tool that zooms in on the top right
    /// quarter of the image." answered with the call's JSON (the syntax an instruct model knows
    /// from its tuning), on a pretraining scene; no tool result, no answer follows. Only JSON: a
    /// `<tool_call>` in a message is a tool use, which training data records in `meta`.
    Call,
}

fn example(cfg: &SynthConfig, split: Split, index: usize, out: &Path) -> anyhow::Result<Example> {
    let split_id = split as u64 + 1;
    let mut rng =
        ChaCha8Rng::seed_from_u64(mix(mix(cfg.seed) ^ mix(split_id << 40 | index as u64)));
    let id = format!("{}-{}-{index:06}", cfg.task.name(), split.name());
    let (q, plan) = plan_example(cfg, split, &mut rng)?;

    let image = DynamicImage::ImageRgb8(render::render(&q.scene));
    let rel = |name: String| format!("images/{}/{name}", split.name());
    let scene_ref = rel(format!("{id}.png"));
    save(&image, &out.join(&scene_ref))?;

    let task_name = match &plan {
        Plan::Tools { task, .. } => task.name(),
        Plan::Direct | Plan::Caption | Plan::Call => Task::Pretrain.name(),
    };
    let category = match plan {
        Plan::Caption => "caption".to_string(),
        _ => q.kind.category().to_string(),
    };
    let item = McqItem {
        id: id.clone(),
        images: vec![scene_ref.clone()],
        question: q.question.clone(),
        options: q.options.clone(),
        answer: option_letter(q.answer).to_string(),
        category: category.clone(),
        meta: serde_json::json!({
            "task": task_name,
            "focus_bbox": q.scene.normalized(q.focus_union(), 0.0),
            // Lets the tool-using baseline compute depth maps of test scenes.
            "scene": q.scene,
            // The expert's first crop of the scene (test items too): the region LVR's latents
            // reconstruct, for the mediation test.
            "expert_crop": first_crop(&plan),
        }),
    };
    let fingerprint = q.scene.fingerprint();
    if split == Split::Test {
        return Ok(Example {
            trajectory: None,
            item,
            fingerprint,
        });
    }

    let mut messages = vec![
        Message::text(Role::System, "You are a helpful assistant."),
        Message::new(
            Role::User,
            vec![
                Part::Image { image: scene_ref },
                Part::Text {
                    text: item.prompt(),
                },
            ],
        ),
    ];
    let mut calls = Vec::new();
    let final_answer = match &plan {
        Plan::Caption => caption(&q),
        Plan::Call => {
            let box_ = question::QUADRANT_BOXES[q.answer];
            let call = ToolCall::with_bbox(2, tool_protocol::CROP_TOOL, box_, 1);
            messages[1].content[1] = Part::Text {
                text: format!(
                    "Write, as JSON, the call of the crop tool that zooms in on the {} quarter of the image.",
                    question::QUADRANTS[q.answer]
                ),
            };
            tool_protocol::call_json(&call.name, &call.arguments)
        }
        _ => format!("({}) {}", item.answer, q.options[q.answer]),
    };
    if let Plan::Caption = plan {
        messages[1].content[1] = Part::Text {
            text: "Describe the objects in the image.".into(),
        };
    }
    if let Plan::Tools { steps, .. } = &plan {
        let mut images = vec![image];
        for (k, step) in steps.iter().enumerate() {
            let output = apply(step, &images, &q, cfg)?;
            let name = rel(format!("{id}_{}.png", k + 1));
            save(&output, &out.join(&name))?;
            images.push(output);
            let (mut say, shown) = step.tool.texts(step.bbox);
            if cfg.short_call_text && step.tool == Tool::Crop {
                say = SHORT_CROP_TEXT.to_string();
            }
            let turn = messages.len();
            calls.push(match step.bbox {
                Some(b) => ToolCall::with_bbox(turn, step.tool.name(), b, step.target),
                None => ToolCall::on_image(turn, step.tool.name(), step.target),
            });
            messages.push(Message::text(Role::Assistant, say));
            messages.push(Message::new(
                Role::User,
                vec![Part::Image { image: name }, Part::Text { text: shown }],
            ));
        }
    }
    messages.push(Message::text(Role::Assistant, final_answer));
    let mut extra = serde_json::Map::new();
    extra.insert("answer".into(), serde_json::json!(item.answer));
    extra.insert("source".into(), serde_json::json!("synth"));
    let trajectory = Trajectory {
        id,
        messages,
        task: task_name.to_string(),
        meta: Meta {
            tool_calls: calls,
            category: Some(category),
            extra,
        },
    };
    Ok(Example {
        trajectory: Some(trajectory),
        item,
        fingerprint,
    })
}

/// Draws the concrete task (for `mixed`), the question kind and the tool. With `cfg.kinds` set,
/// draws again until the kind is allowed (rejection keeps the other choices' proportions).
fn draw_task(cfg: &SynthConfig, rng: &mut ChaCha8Rng) -> anyhow::Result<(Task, Kind, Tool)> {
    for _ in 0..1000 {
        let task = match cfg.task {
            Task::Mixed => *[
                Task::Attribute,
                Task::Position,
                Task::Counting,
                Task::Chain,
                Task::Multitool,
                Task::Multicall,
            ]
            .choose(rng)
            .unwrap_or(&Task::Attribute),
            t => t,
        };
        let tools = &cfg.tools;
        let (kind, tool) = match task {
            Task::Attribute | Task::Chain => (
                *[
                    Kind::Color,
                    Kind::ShapeOf,
                    Kind::Region,
                    Kind::QuadrantColor,
                    Kind::QuadrantShape,
                ]
                .choose(rng)
                .unwrap_or(&Kind::Color),
                Tool::Crop,
            ),
            Task::Position => (
                *[Kind::Horizontal, Kind::Vertical]
                    .choose(rng)
                    .unwrap_or(&Kind::Horizontal),
                Tool::Crop,
            ),
            Task::Counting => (Kind::Counting, Tool::Crop),
            Task::Multitool => {
                let tool = *tools.choose(rng).unwrap_or(&Tool::Crop);
                (
                    *expert::kinds_for(tool).choose(rng).unwrap_or(&Kind::Color),
                    tool,
                )
            }
            Task::Multicall => (expert::multicall_kind(tools, rng), Tool::Crop),
            Task::Pretrain | Task::Mixed => {
                (*Kind::ALL.choose(rng).unwrap_or(&Kind::Color), Tool::Crop)
            }
        };
        if cfg.kinds.is_empty() || cfg.kinds.contains(&kind) {
            return Ok((task, kind, tool));
        }
    }
    anyhow::bail!(
        "task {:?} with tools {:?} asks no question of the allowed kinds {:?}",
        cfg.task,
        cfg.tools,
        cfg.kinds
    )
}

/// Chooses the concrete task (for `mixed`), the question and the expert's plan.
fn plan_example(
    cfg: &SynthConfig,
    split: Split,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<(Question, Plan)> {
    let layout = Layout {
        near: true,
        distractors: cfg.distractors,
        canonical_options: cfg.canonical_options,
        unique_colors: cfg.unique_colors,
    };
    let obj = cfg.scene.object_size;
    let (task, kind, tool) = draw_task(cfg, rng)?;
    let tools = &cfg.tools;
    if task == Task::Pretrain {
        // Small, zoomed-in views: the objects are plainly visible, the answer needs no tool.
        let q = question::generate(
            kind,
            &cfg.scene,
            Layout {
                near: false,
                distractors: cfg.distractors,
                canonical_options: cfg.canonical_options,
                unique_colors: cfg.unique_colors,
            },
            rng,
        )?;
        let plan = if split != Split::Test && rng.random_bool(0.25) {
            Plan::Caption
        } else if split != Split::Test
            && kind == Kind::QuadrantBox
            && cfg.pretrain_calls
            && rng.random_bool(0.5)
        {
            Plan::Call
        } else {
            Plan::Direct
        };
        return Ok((q, plan));
    }
    let q = question::generate(kind, &cfg.scene, layout, rng)?;
    let steps = match task {
        Task::Chain => expert::chain(&q, rng.random_range(2..=cfg.max_calls), obj, rng),
        Task::Multicall => expert::multicall(&q, tools, cfg.max_calls, obj, rng),
        _ => expert::single(&q, tool, obj, cfg.crop_grid, rng),
    };
    Ok((q, Plan::Tools { task, steps }))
}

/// The normalized box of the plan's first crop of the scene (image 1), if it makes one.
fn first_crop(plan: &Plan) -> Option<[f64; 4]> {
    match plan {
        Plan::Tools { steps, .. } => steps
            .iter()
            .find(|s| s.tool == Tool::Crop && s.target == 1)
            .and_then(|s| s.bbox),
        Plan::Direct | Plan::Caption | Plan::Call => None,
    }
}

/// Runs one expert step with the shared tool implementations.
fn apply(
    step: &Step,
    images: &[DynamicImage],
    q: &Question,
    cfg: &SynthConfig,
) -> anyhow::Result<DynamicImage> {
    let target = images
        .get(step.target - 1)
        .context("tool call names an image that does not exist")?;
    let bbox = || step.bbox.context("tool call without a bbox");
    Ok(match step.tool {
        Tool::Crop => crate::tools::crop::crop_normalized(target, bbox()?)?,
        Tool::Highlight => crate::tools::highlight::highlight(
            target,
            bbox()?,
            cfg.highlight_width,
            crate::tools::highlight::RED,
        )?,
        Tool::Depth => DynamicImage::ImageLuma8(render::depth_map(&q.scene).to_image()),
    })
}

/// "There are 3 objects, from left to right: a red circle, a blue square and a green triangle."
fn caption(q: &Question) -> String {
    let mut objs: Vec<_> = q.scene.objects.iter().collect();
    objs.sort_by(|a, b| a.cx.total_cmp(&b.cx));
    let names: Vec<String> = objs.iter().map(|o| format!("a {}", o.describe())).collect();
    let list = match names.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    };
    match objs.len() {
        1 => format!("There is 1 object: {list}."),
        n => format!("There are {n} objects, from left to right: {list}."),
    }
}

/// PNG at zlib's default level: several times smaller than the fast level on noisy scenes, and
/// deterministic for a given encoder version.
fn save(img: &DynamicImage, path: &Path) -> anyhow::Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let enc = PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        CompressionType::Default,
        FilterType::Adaptive,
    );
    img.write_with_encoder(enc)
        .with_context(|| format!("cannot write {}", path.display()))
}
