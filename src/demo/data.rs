//! Stage 1: the synthetic visual-search world (`data::synth`). Two datasets from one seed:
//! - `tools/`: one object on a large cluttered scene, found with one crop (from the discrete crop
//!   vocabulary, `expert::grid_window`, when `crop_grid` is set): fine-tuning trajectories,
//!   validation trajectories and the held-out test items;
//! - `pretrain/`: small plain scenes where the objects are plainly visible, answered directly or
//!   captioned, without tools: what the base model learns before it sees a tool.

use super::config::DemoConfig;
use crate::data::synth::{self, SynthConfig, Task, Tool};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the two datasets are.
#[derive(Debug, Clone)]
pub struct DemoData {
    pub tools: PathBuf,
    pub pretrain: PathBuf,
    /// Pretraining questions on tool-world-sized scenes (`DataConfig::pretrain_scene_kinds`).
    pub pretrain_scenes: Option<PathBuf>,
}

impl DemoData {
    pub fn train(&self) -> PathBuf {
        self.tools.join("train.jsonl")
    }
    pub fn val(&self) -> PathBuf {
        self.tools.join("val.jsonl")
    }
    pub fn test_items(&self) -> PathBuf {
        self.tools.join("test_mcq.jsonl")
    }
    /// The pretraining world's files named `name` (`train.jsonl`, `val.jsonl`, `val_mcq.jsonl`),
    /// the tool-world-sized scenes' after the small scenes'.
    pub fn pretrain_files(&self, name: &str) -> Vec<PathBuf> {
        std::iter::once(&self.pretrain)
            .chain(&self.pretrain_scenes)
            .map(|d| d.join(name))
            .collect()
    }
}

/// Writes both datasets under `dir`; the pretraining world's training split only when
/// `pretraining` (its validation items are the base model's check either way).
pub fn synthesize(cfg: &DemoConfig, dir: &Path, pretraining: bool) -> Result<DemoData> {
    let train_if = |n: usize| if pretraining { n } else { 0 };
    let d = &cfg.data;
    let tools = dir.join("tools");
    let mut c = world(cfg, Task::Attribute, cfg.seed, d.scene_side);
    (c.train, c.val, c.test) = (d.train, d.val, d.test);
    // One crop per trajectory: every method, the tool-calling one included, learns from the
    // same trajectories.
    c.tools = vec![Tool::Crop];
    c.crop_grid = d.crop_grid;
    c.short_call_text = d.short_call_text;
    c.distractors = d.distractors;
    if d.tools_plain {
        (c.scene.clutter, c.scene.noise, c.scene.plain) = (0, 0, true);
    }
    synth::generate(&c, &tools).context("cannot synthesize the tool-use data")?;

    // Pretraining: close-ups, the objects plainly visible; on one plain ground, or on the varied
    // grounds, clutter and noise of the tool world (the views its crops show).
    let pretrain = dir.join("pretrain");
    let mut c = world(cfg, Task::Pretrain, cfg.seed ^ 0x5eed, d.pretrain_side);
    c.kinds = d.pretrain_kinds.clone();
    c.pretrain_calls = d.pretrain_calls;
    (c.train, c.val, c.test) = (train_if(d.pretrain_train), d.pretrain_val, 0);
    c.distractors = d.distractors;
    if d.pretrain_plain {
        (c.scene.clutter, c.scene.noise, c.scene.plain) = (0, 0, true);
    }
    synth::generate(&c, &pretrain).context("cannot synthesize the pretraining data")?;

    // Grounding on scenes laid out as the tool world's (same side, objects, ground), with other
    // questions than the tool world's and from another seed.
    let pretrain_scenes = if d.pretrain_scene_kinds.is_empty() || d.pretrain_scene_train == 0 {
        None
    } else {
        let scenes = dir.join("pretrain_scenes");
        let mut c = world(cfg, Task::Pretrain, cfg.seed ^ 0x5ce4e5, d.scene_side);
        c.kinds = d.pretrain_scene_kinds.clone();
        let val = (d.pretrain_scene_train / 10).max(1);
        (c.train, c.val, c.test) = (train_if(d.pretrain_scene_train), val, 0);
        c.distractors = d.distractors;
        if d.tools_plain {
            (c.scene.clutter, c.scene.noise, c.scene.plain) = (0, 0, true);
        }
        synth::generate(&c, &scenes)
            .context("cannot synthesize the pretraining data on tool-world scenes")?;
        Some(scenes)
    };
    Ok(DemoData {
        tools,
        pretrain,
        pretrain_scenes,
    })
}

/// A world of `side`-pixel square scenes with the default clutter density, the tool world's
/// question kinds and options in a fixed order.
fn world(cfg: &DemoConfig, task: Task, seed: u64, side: u32) -> SynthConfig {
    let mut c = SynthConfig::new(task, seed, 0);
    c.canonical_options = true;
    c.unique_colors = true;
    c.kinds = cfg.data.kinds.clone();
    c.scene.width = side;
    c.scene.height = side;
    c.scene.object_size = cfg.data.object_size;
    c.scene.lit = cfg.data.lit;
    // 40 blobs on an 896x896 canvas (the synth default), the same density here.
    c.scene.clutter =
        ((40.0 * f64::from(side) * f64::from(side) / (896.0 * 896.0)).round() as usize).max(2);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::QwenTokenizer;

    /// The tool-calling baseline's agent must be able to write, in one turn, the longest turn it
    /// was trained on (a tool call or the answer), otherwise its calls are cut off unclosed, and
    /// make as many calls as the expert did.
    #[test]
    fn the_agents_turn_budget_holds_every_rendered_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DemoConfig::default();
        (cfg.data.train, cfg.data.val, cfg.data.test) = (24, 2, 2);
        (cfg.data.pretrain_train, cfg.data.pretrain_val) = (2, 1);
        cfg.data.pretrain_scene_train = cfg.data.pretrain_scene_train.min(2);
        super::super::model_dir::write_model_files(&dir.path().join("model"), cfg.max_pixels)
            .unwrap();
        let tok = QwenTokenizer::from_dir(&dir.path().join("model")).unwrap();
        let data = synthesize(&cfg, &dir.path().join("data"), true).unwrap();
        let file = crate::data::trajectory::load_jsonl(&data.train()).unwrap();
        let (mut longest, mut most_calls, mut crop_only) = (0, 0, 0);
        for n in file
            .items
            .iter()
            .filter(|n| n.trajectory.unsupported_tool().is_none())
        {
            crop_only += 1;
            most_calls = most_calls.max(n.trajectory.meta.tool_calls.len());
            for m in n.trajectory.render_for_tool_agent() {
                if m.role == crate::data::chat::Role::Assistant {
                    // The turn's text and the <|im_end|> that ends it.
                    longest = longest.max(tok.encode(&m.joined_text()).unwrap().len() + 1);
                }
            }
        }
        assert!(crop_only > 0, "no trajectory the agent can replay");
        assert!(
            longest <= cfg.eval.agent_max_new_tokens,
            "the longest rendered turn has {longest} tokens, the agent allows {}",
            cfg.eval.agent_max_new_tokens
        );
        assert!(
            most_calls <= cfg.eval.agent_max_calls,
            "a trajectory makes {most_calls} calls, the agent allows {}",
            cfg.eval.agent_max_calls
        );
    }
}
