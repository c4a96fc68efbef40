//! The pieces a run is assembled from, each small and named: where to resume from, the data,
//! the devices, the base model and its vocabulary growth, the model to train (fresh or
//! restored), what trains (the freeze policy) and in which precision the rest is kept.

use super::checkpoint::{self, Restored};
use super::config::RunConfig;
use super::data::{Examples, load_items};
use super::resume::{Resume, check_resume};
use crate::model::Vlm;
use crate::model::precision::Precision;
use crate::objective::freeze::{lora_only, set_trainable};
use crate::objective::lvr::lvr_lora_only;
use crate::objective::{DynamicsHead, MethodKind, PearlModel, prepare_tokenizer};
use crate::peft::lora::{LoraConfig, init_lora};
use crate::processor::Processor;
use anyhow::{Context, Result, bail, ensure};
use burn::tensor::Device;
use std::path::PathBuf;

/// The checkpoint to resume from, if any. A run without `--resume` refuses an output that
/// already holds checkpoints (it would mix two runs).
pub fn resume_point(cfg: &RunConfig, resume: Option<&Resume>) -> Result<Option<PathBuf>> {
    let out = &cfg.output;
    match resume {
        None => {
            if let Some(last) = checkpoint::latest(out)? {
                bail!(
                    "{} already holds checkpoints ({}): pass --resume to continue that run, or choose another output",
                    out.display(),
                    last.display()
                );
            }
            Ok(None)
        }
        Some(Resume::Dir(d)) => Ok(Some(d.clone())),
        Some(Resume::Latest) => Ok(Some(checkpoint::latest(out)?.with_context(|| {
            format!("nothing to resume: {} holds no checkpoint", out.display())
        })?)),
    }
}

/// Reads the checkpoint at `dir` after checking that this run may continue it (see `resume`);
/// prints the keys that changed.
pub fn read_checkpoint(dir: &std::path::Path, cfg: &RunConfig) -> Result<Restored> {
    let r =
        checkpoint::read(dir).with_context(|| format!("cannot resume from {}", dir.display()))?;
    let changed = check_resume(&r.run_toml, cfg).with_context(|| {
        format!(
            "cannot resume from {} (its run file: {})",
            dir.display(),
            dir.join("run.toml").display()
        )
    })?;
    for c in changed {
        eprintln!("note: resuming with a changed {c}");
    }
    Ok(r)
}

/// The processor (with Pearl's tokens added) and the training and validation examples.
pub fn load_data(cfg: &RunConfig) -> Result<(Processor, Examples, Examples)> {
    let mut processor = Processor::from_dir(cfg.processor_dir()?)?;
    processor.set_pixel_limits(cfg.min_pixels, cfg.max_pixels)?;
    prepare_tokenizer(&mut processor.tokenizer, cfg.method());
    let train = Examples::new(
        load_items(&cfg.train, cfg.skip_invalid, "training")?,
        cfg.method,
        "training",
    )?;
    let val = if cfg.val.is_empty() {
        Examples::new(Vec::new(), cfg.method, "validation")?
    } else {
        Examples::new(
            load_items(&cfg.val, cfg.skip_invalid, "validation")?,
            cfg.method,
            "validation",
        )?
    };
    Ok((processor, train, val))
}

/// The run's devices, with autodiff (and gradient checkpointing if asked): the run file's
/// `devices`, or burn's default device.
pub fn train_devices(cfg: &RunConfig) -> Result<Vec<Device>> {
    let autodiff = |d| crate::model::device::training_device(d, cfg.gradient_checkpointing);
    match cfg.device_specs()? {
        None => Ok(vec![autodiff(Device::default())]),
        Some(specs) => specs
            .into_iter()
            .map(|s| Ok(autodiff(s.device()?)))
            .collect(),
    }
}

/// The VLM before adapters, and for full fine-tuning the `config.json` its checkpoints carry.
pub fn base_model(cfg: &RunConfig, device: &Device) -> Result<(Vlm, Option<serde_json::Value>)> {
    let config_path = match (&cfg.model, &cfg.random_config) {
        (Some(dir), _) => dir.join("config.json"),
        (None, Some(file)) => file.clone(),
        (None, None) => bail!("set `model` or `random_config`"),
    };
    // The frozen base of a LoRA run is stored in the run's precision as it is read; full
    // fine-tuning trains every weight, so it reads f32 master copies.
    let precision = if cfg.full {
        Precision::F32
    } else {
        cfg.precision
    };
    let vlm = match &cfg.model {
        Some(dir) => Vlm::from_dir_in(dir, device, precision)?,
        None => Vlm::random_from_config(&config_path, cfg.seed, device)?,
    };
    let config_json = if cfg.full {
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", config_path.display()))?,
        )
    } else {
        None
    };
    Ok((vlm, config_json))
}

/// Released checkpoints have spare rows for Pearl's added tokens; a model without them grows its
/// embeddings (and the `config.json` a full fine-tune writes says so).
pub fn grow_vocab(base: &mut Vlm, config_json: Option<&mut serde_json::Value>, words: usize) {
    let grown = base.ensure_vocab(words);
    if grown == 0 {
        return;
    }
    eprintln!("note: grew the embeddings by {grown} rows for the added tokens");
    if let Some(json) = config_json {
        let rows = serde_json::json!(base.vocab_size());
        json["vocab_size"] = rows.clone();
        if let Some(text) = json.get_mut("text_config").filter(|t| t.is_object()) {
            text["vocab_size"] = rows;
        }
    }
}

/// A new run's model: fresh LoRA adapters (unless full fine-tuning) and dynamics head (NextLat).
pub fn fresh_model(cfg: &RunConfig, base: Vlm, lora: &LoraConfig) -> Result<PearlModel> {
    let vlm = if cfg.full {
        base
    } else {
        init_lora(base, lora, cfg.seed.wrapping_add(1))?
    };
    let d = vlm.hidden_size();
    let dynamics = match (&cfg.dynamics_head, cfg.has_dynamics_head()) {
        (_, false) => None,
        (Some(p), true) => Some(DynamicsHead::load(p, d, &vlm.device())?),
        (None, true) => Some(DynamicsHead::init(
            d,
            cfg.seed.wrapping_add(2),
            &vlm.device(),
        )),
    };
    Ok(PearlModel { vlm, dynamics })
}

/// The checkpoint's model: its adapters (or weights) on `base`, and its dynamics head.
pub fn restored_model(cfg: &RunConfig, dir: &std::path::Path, base: Vlm) -> Result<PearlModel> {
    let vlm = checkpoint::restore_vlm(dir, base)?;
    let dynamics = checkpoint::restore_head(dir, &vlm)?;
    ensure!(
        dynamics.is_some() == cfg.has_dynamics_head(),
        "{}: the checkpoint's dynamics head does not match the objective",
        dir.display()
    );
    Ok(PearlModel { vlm, dynamics })
}

/// What trains: every weight (full fine-tuning), or the LoRA factors and the dynamics head; LVR
/// keeps the vision tower frozen, its targets being that tower's own output. Then the frozen
/// weights take the run's precision while the trainable ones stay f32 master copies.
pub fn trainable_in_precision(cfg: &RunConfig, model: PearlModel) -> Result<PearlModel> {
    let mut model = match (cfg.full, cfg.method) {
        (true, _) => set_trainable(model, |_| true),
        (false, MethodKind::Pearl | MethodKind::ToolCall) => lora_only(model),
        (false, MethodKind::Lvr) => lvr_lora_only(model),
    };
    model.vlm = model.vlm.with_precision(cfg.precision)?;
    Ok(model)
}
