//! Stage 4: every system answers the same held-out MCQ items under the fixed protocol
//! (`eval::run::evaluate`: one user turn, greedy, 4 new tokens): the base model, the fine-tunings,
//! and LVR at several latent step counts (the paper's Figure 3); the fine-tuned tool-calling
//! baseline answers as an agent that executes its crop calls (`eval::agent`, several turns).

use super::config::{DemoConfig, LVR_STEPS};
use super::finetune::{Finetuned, Method};
use crate::data::mcq::McqItem;
use crate::eval::agent::AgentConfig;
use crate::eval::answerer::ChatModel;
use crate::eval::record::ItemRecord;
use crate::eval::run::{Mode, RunConfig, evaluate};
use crate::eval::stats::Bootstrap;
use crate::eval::summary::Summary;
use crate::infer::LocalModel;
use crate::infer::lvr::{LatentFeed, LvrChatModel};
use crate::model::precision::Precision;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Base,
    Finetuned(Method),
    /// LVR decoding this many latent steps.
    LvrSteps(usize),
    /// LVR at its published step count with its latents replaced (the mediation test).
    LvrMediation(Mediation),
}

/// What replaces LVR's latents in the mediation test (`infer::lvr::feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Mediation {
    Zeros,
    Noise,
    CropTarget,
}

impl Mediation {
    pub const ALL: [Mediation; 3] = [Mediation::Zeros, Mediation::Noise, Mediation::CropTarget];

    pub fn label(self) -> &'static str {
        match self {
            Mediation::Zeros => LatentFeed::Zeros.label(),
            Mediation::Noise => LatentFeed::Noise { seed: 0 }.label(),
            Mediation::CropTarget => LatentFeed::CropTarget {
                boxes: BTreeMap::new(),
            }
            .label(),
        }
    }

    /// The feed of this variant for `items` (the crop target reads each item's expert crop).
    pub fn feed(self, items: &[McqItem], seed: u64) -> Result<LatentFeed> {
        Ok(match self {
            Mediation::Zeros => LatentFeed::Zeros,
            Mediation::Noise => LatentFeed::Noise { seed },
            Mediation::CropTarget => LatentFeed::CropTarget {
                boxes: expert_crops(items)?,
            },
        })
    }
}

/// Each item's expert crop box (`meta.expert_crop`, which `data::synth` writes), keyed by the
/// item's first image as its chat names it.
fn expert_crops(items: &[McqItem]) -> Result<BTreeMap<String, [f64; 4]>> {
    items
        .iter()
        .map(|item| {
            let image = item
                .images
                .first()
                .with_context(|| format!("item {} has no image", item.id))?;
            let bbox: [f64; 4] = item
                .meta
                .get("expert_crop")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .with_context(|| {
                    format!("item {} has no expert crop box (meta.expert_crop)", item.id)
                })?;
            Ok((image.clone(), bbox))
        })
        .collect()
}

impl System {
    pub fn label(&self) -> String {
        match self {
            System::Base => "Base (no fine-tuning)".into(),
            System::Finetuned(Method::Lvr) => "LVR (4 latent steps)".into(),
            System::Finetuned(m) => m.label().into(),
            System::LvrSteps(s) => format!("LVR ({s} latent steps)"),
            System::LvrMediation(m) => {
                format!("LVR ({LVR_STEPS} latent steps), latents: {}", m.label())
            }
        }
    }

    fn slug(&self) -> String {
        match self {
            System::Base => "base".into(),
            System::Finetuned(m) => m.slug().into(),
            System::LvrSteps(s) => format!("lvr-steps{s}"),
            System::LvrMediation(m) => format!("lvr-{m:?}").to_lowercase(),
        }
    }
}

/// One system's evaluation (per fine-tuning seed for fine-tuned systems).
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub system: System,
    /// Fine-tuning seed (`None` for the base model).
    pub seed: Option<u64>,
    pub dir: PathBuf,
    pub summary: Summary,
    pub records: Vec<ItemRecord>,
}

/// What every evaluation of one call shares: the items, where runs go, the demo's settings.
struct EvalSet<'a> {
    cfg: &'a DemoConfig,
    items: &'a [McqItem],
    eval_dir: &'a Path,
    progress: bool,
}

impl EvalSet<'_> {
    /// Runs `system` over the items into `eval_dir/<system>[-seedN]`.
    fn run_one(
        &self,
        model: &mut dyn ChatModel,
        system: System,
        seed: Option<u64>,
        mode: &Mode,
    ) -> Result<Evaluated> {
        let name = match seed {
            Some(s) => format!("{}-seed{s}", system.slug()),
            None => system.slug(),
        };
        let dir = self.eval_dir.join(name);
        let run = RunConfig {
            bench: "synthetic visual search (held-out test split)".into(),
            batch_size: self.cfg.eval.batch_size,
            bootstrap: bootstrap(self.cfg),
            progress: self.progress,
        };
        let summary = evaluate(model, self.items, mode, &run, &dir)
            .with_context(|| format!("evaluating {}", system.label()))?;
        let records = crate::eval::record::read_run(&dir)?;
        Ok(Evaluated {
            system,
            seed,
            dir,
            summary,
            records,
        })
    }
}

pub fn bootstrap(cfg: &DemoConfig) -> Bootstrap {
    Bootstrap {
        resamples: cfg.eval.bootstrap_resamples,
        seed: cfg.seed,
        level: 0.95,
    }
}

/// The base model, under the fixed protocol.
pub fn evaluate_base(
    cfg: &DemoConfig,
    base: &Path,
    items: &[McqItem],
    eval_dir: &Path,
    progress: bool,
) -> Result<Vec<Evaluated>> {
    let set = EvalSet {
        cfg,
        items,
        eval_dir,
        progress,
    };
    let device = cfg.device()?;
    let mut model = LocalModel::load(base, None, &device, Precision::F32)?;
    Ok(vec![set.run_one(
        &mut model,
        System::Base,
        None,
        &Mode::Direct,
    )?])
}

/// The agent settings of the tool-calling baseline; its crops go to `eval_dir/agent-crops-seedN`.
fn agent_config(cfg: &DemoConfig, eval_dir: &Path, seed: u64) -> AgentConfig {
    AgentConfig {
        max_calls: cfg.eval.agent_max_calls,
        max_new_tokens: cfg.eval.agent_max_new_tokens,
        ..AgentConfig::new(eval_dir.join(format!("agent-crops-seed{seed}")))
    }
}

/// The base model on held-out items of its own pretraining world (small scenes, objects plainly
/// visible): whether pretraining taught it to read a scene and answer with a letter at all.
pub fn evaluate_base_on_pretraining_world(
    cfg: &DemoConfig,
    base: &Path,
    items: &[McqItem],
    eval_dir: &Path,
    progress: bool,
) -> Result<Summary> {
    let mut model = LocalModel::load(base, None, &cfg.device()?, Precision::F32)?;
    let dir = eval_dir.join("base-pretraining-world");
    let run = RunConfig {
        bench: "synthetic pretraining world (held-out validation items)".into(),
        batch_size: cfg.eval.batch_size,
        bootstrap: bootstrap(cfg),
        progress,
    };
    evaluate(&mut model, items, &Mode::Direct, &run, &dir)
        .context("evaluating the base model on its pretraining world")
}

/// A fine-tuned model; for LVR, once per latent-step count.
pub fn evaluate_finetuned(
    cfg: &DemoConfig,
    base: &Path,
    run: &Finetuned,
    items: &[McqItem],
    eval_dir: &Path,
    progress: bool,
) -> Result<Vec<Evaluated>> {
    let set = EvalSet {
        cfg,
        items,
        eval_dir,
        progress,
    };
    let device = cfg.device()?;
    let seed = Some(run.seed);
    if run.method != Method::Lvr {
        let mut model = LocalModel::load(base, Some(&run.adapter), &device, Precision::F32)?;
        let mode = match run.method {
            Method::ToolCall => Mode::Tools(agent_config(cfg, eval_dir, run.seed)),
            _ => Mode::Direct,
        };
        return Ok(vec![set.run_one(
            &mut model,
            System::Finetuned(run.method),
            seed,
            &mode,
        )?]);
    }
    let mut model =
        LvrChatModel::load(base, Some(&run.adapter), LVR_STEPS, &device, Precision::F32)?;
    let mut out = Vec::new();
    for &steps in &cfg.eval.lvr_steps {
        model.latent_steps = steps;
        let e = set.run_one(&mut model, System::LvrSteps(steps), seed, &Mode::Direct)?;
        if steps == LVR_STEPS {
            // LVR's row in the table is the published setting: the same run, not a second one.
            out.push(Evaluated {
                system: System::Finetuned(Method::Lvr),
                ..e.clone()
            });
        }
        out.push(e);
    }
    // The mediation test: the same model and step count, the latents replaced.
    model.latent_steps = LVR_STEPS;
    for m in Mediation::ALL {
        model.feed = m.feed(items, cfg.seed)?;
        out.push(set.run_one(&mut model, System::LvrMediation(m), seed, &Mode::Direct)?);
    }
    model.feed = LatentFeed::Own;
    Ok(out)
}
