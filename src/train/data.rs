//! Training data: validated trajectory files turned into chats to train on, and the seeded order
//! in which micro-batches visit them. The order of epoch `e` is a permutation drawn from
//! `(seed, e)` alone, so a resumed run needs only the cursor (epoch, position) to continue it.

use crate::data::chat::Message;
use crate::data::trajectory::Trajectory;
use crate::data::validate::{ValidateOptions, load_validated};
use crate::objective::batch::Example;
use crate::objective::lvr::LvrExample;
use crate::objective::{MethodExample, MethodKind};
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One training chat (rendered for Pearl) and where its relative image paths resolve.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub chat: Vec<Message>,
    pub base_dir: PathBuf,
    /// The trajectory as loaded (tool-call metadata included: LVR reads its crop box).
    pub trajectory: Trajectory,
}

impl Item {
    pub fn example(&self) -> Example<'_> {
        Example {
            id: &self.id,
            chat: &self.chat,
            base_dir: &self.base_dir,
        }
    }
}

/// Loads and validates trajectory files (`load_validated`: invalid data is refused, or with
/// `skip_invalid` dropped and reported on stderr).
pub fn load_items(paths: &[PathBuf], skip_invalid: bool, what: &str) -> Result<Vec<Item>> {
    let opts = ValidateOptions {
        skip_invalid,
        ..ValidateOptions::default()
    };
    let (files, report) =
        load_validated(paths, &opts).with_context(|| format!("cannot load the {what} data"))?;
    if !report.is_clean() {
        eprintln!(
            "{what} data: skipped {} invalid example(s)\n{}",
            report.invalid(),
            report.summary()
        );
    }
    Ok(files
        .into_iter()
        .flat_map(|f| {
            let base = f.base_dir.clone();
            f.items.into_iter().map(move |n| Item {
                id: n.trajectory.id.clone(),
                chat: n.trajectory.render_for_pearl(),
                base_dir: base.clone(),
                trajectory: n.trajectory,
            })
        })
        .collect())
}

/// Where the data order stands: `pos` examples of epoch `epoch` have been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: usize,
    pub pos: usize,
}

/// The seeded visiting order of `n` examples.
#[derive(Debug, Clone)]
pub struct DataOrder {
    n: usize,
    seed: u64,
    epoch: usize,
    order: Vec<usize>,
}

impl DataOrder {
    pub fn new(n: usize, seed: u64) -> Self {
        let mut o = Self {
            n,
            seed,
            epoch: usize::MAX,
            order: Vec::new(),
        };
        o.set_epoch(0);
        o
    }

    fn set_epoch(&mut self, epoch: usize) {
        if self.epoch == epoch {
            return;
        }
        // A stream of its own per epoch: the permutation does not depend on earlier epochs.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64);
        self.order = (0..self.n).collect();
        self.order.shuffle(&mut rng);
        self.epoch = epoch;
    }

    /// The next up to `size` example indices from `cursor`, advancing it; a micro-batch never
    /// spans two epochs (the last one of an epoch may be smaller).
    pub fn next_batch(&mut self, cursor: &mut Cursor, size: usize) -> Vec<usize> {
        if cursor.pos >= self.n {
            *cursor = Cursor {
                epoch: cursor.epoch + 1,
                pos: 0,
            };
        }
        self.set_epoch(cursor.epoch);
        let end = (cursor.pos + size).min(self.n);
        let out = self.order[cursor.pos..end].to_vec();
        cursor.pos = end;
        out
    }
}

/// Micro-batches in one epoch of `n` examples.
pub fn batches_per_epoch(n: usize, micro_batch: usize) -> usize {
    n.div_ceil(micro_batch)
}

/// A list of paths for messages.
pub fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The examples a method trains on: every item for Pearl; for LVR the items with a crop of the
/// first image; for the tool-calling baseline the items whose calls the agent can execute (crops),
/// rendered for a tool-calling model. Items left out are counted and reported, never dropped
/// silently.
pub enum Examples {
    Pearl(Vec<Item>),
    Lvr(Vec<LvrExample>),
}

impl Examples {
    pub fn new(items: Vec<Item>, method: MethodKind, what: &str) -> Result<Self> {
        match method {
            MethodKind::Pearl => Ok(Examples::Pearl(items)),
            MethodKind::ToolCall => {
                let n = items.len();
                let mut skipped = std::collections::BTreeMap::<String, usize>::new();
                let out: Vec<Item> = items
                    .into_iter()
                    .filter_map(|it| {
                        if let Some(tool) = it.trajectory.unsupported_tool() {
                            *skipped.entry(tool.to_string()).or_default() += 1;
                            return None;
                        }
                        let chat = it.trajectory.render_for_tool_agent();
                        Some(Item { chat, ..it })
                    })
                    .collect();
                if !skipped.is_empty() {
                    eprintln!(
                        "{what} data: {} of {n} trajectories call tools the agent cannot run ({skipped:?}); the tool-calling baseline trains on the other {}",
                        n - out.len(),
                        out.len()
                    );
                }
                anyhow::ensure!(
                    !out.is_empty() || n == 0,
                    "none of the {what} trajectories uses only the crop tool: the tool-calling baseline has nothing to learn"
                );
                Ok(Examples::Pearl(out))
            }
            MethodKind::Lvr => {
                let mut out = Vec::new();
                let mut skipped = 0;
                for it in &items {
                    match LvrExample::from_trajectory(&it.trajectory, &it.base_dir)
                        .with_context(|| format!("{what} example {:?}", it.id))?
                    {
                        Some(e) => out.push(e),
                        None => skipped += 1,
                    }
                }
                if skipped > 0 {
                    eprintln!(
                        "{what} data: {skipped} of {} trajectories have no crop of the first image; LVR trains on the other {}",
                        items.len(),
                        out.len()
                    );
                }
                anyhow::ensure!(
                    !out.is_empty() || items.is_empty(),
                    "none of the {what} trajectories has a crop of the first image: LVR has nothing to reconstruct"
                );
                Ok(Examples::Lvr(out))
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Examples::Pearl(v) => v.len(),
            Examples::Lvr(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> MethodExample<'_> {
        match self {
            Examples::Pearl(v) => MethodExample::Pearl(v[i].example()),
            Examples::Lvr(v) => MethodExample::Lvr(&v[i]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_seeded_permutation_per_epoch_and_resumable() {
        let mut o = DataOrder::new(10, 7);
        let mut c = Cursor::default();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.extend(o.next_batch(&mut c, 3));
        }
        // 3 + 3 + 3 + 1: the last micro-batch of the epoch is short.
        assert_eq!(seen.len(), 10);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "not shuffled");
        let e1 = o.next_batch(&mut c, 3);
        assert_eq!(c, Cursor { epoch: 1, pos: 3 });
        assert_ne!(e1, seen[..3].to_vec(), "epochs share an order");
        // A fresh order resumed at the cursor continues identically.
        let mut resumed = DataOrder::new(10, 7);
        let mut rc = c;
        let mut oc = c;
        assert_eq!(resumed.next_batch(&mut rc, 4), o.next_batch(&mut oc, 4));
        // Another seed, another order.
        let mut other = DataOrder::new(10, 8);
        assert_ne!(other.next_batch(&mut Cursor::default(), 10), seen);
        assert_eq!(batches_per_epoch(10, 3), 4);
    }
    fn item(tool: &str) -> Item {
        let line = r#"{"id":"x","messages":[
          {"role":"system","content":[{"type":"text","text":"You are a helpful assistant."}]},
          {"role":"user","content":[{"type":"image","image":"a.png"},{"type":"text","text":"Q?"}]},
          {"role":"assistant","content":[{"type":"text","text":"Look."}]},
          {"role":"user","content":[{"type":"image","image":"b.png"},{"type":"text","text":"Here."}]},
          {"role":"assistant","content":[{"type":"text","text":"(A) red"}]}],
          "meta":{"tool_calls":[{"turn":2,"name":"TOOL","arguments":{"bbox_2d":[0.1,0.2,0.3,0.4],"target_image":1}}]}}"#;
        let trajectory: Trajectory = serde_json::from_str(&line.replace("TOOL", tool)).unwrap();
        Item {
            id: format!("{tool}-1"),
            chat: trajectory.render_for_pearl(),
            base_dir: PathBuf::new(),
            trajectory,
        }
    }

    #[test]
    fn the_tool_calling_baseline_trains_on_the_agents_rendering_with_the_sft_loss() {
        let ex =
            Examples::new(vec![item("crop"), item("depth")], MethodKind::ToolCall, "t").unwrap();
        assert_eq!(ex.len(), 1, "the depth trajectory is left out");
        let MethodExample::Pearl(e) = ex.get(0) else {
            panic!("the tool-calling baseline builds Pearl-style (SFT) batches")
        };
        assert_eq!(e.id, "crop-1");
        assert_eq!(e.chat, item("crop").trajectory.render_for_tool_agent());
        assert!(e.chat[2].joined_text().contains("<tool_call>"));
        let err = Examples::new(vec![item("depth")], MethodKind::ToolCall, "t")
            .err()
            .unwrap();
        assert!(err.to_string().contains("only the crop tool"), "{err}");
        // Pearl trains on the chat without call markup.
        let Examples::Pearl(p) = Examples::new(vec![item("crop")], MethodKind::Pearl, "t").unwrap()
        else {
            panic!()
        };
        assert!(!p[0].chat[2].joined_text().contains("<tool_call>"));
        let run = crate::train::RunConfig {
            method: MethodKind::ToolCall,
            ..Default::default()
        };
        let crate::objective::Method::Pearl(obj) = run.method() else {
            panic!("toolcall is not an SFT objective")
        };
        assert!(obj.is_sft());
        assert_eq!(obj.supervise, crate::objective::Supervise::AllAssistant);
        assert!(!run.has_dynamics_head());
    }
}
