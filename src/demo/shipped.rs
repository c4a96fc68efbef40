//! The shipped base model (`assets/demo-base/`). Pretraining the demo model until it reads its
//! world takes longer than the demo's 20 minutes, so, as real projects ship small checkpoints, the
//! repository holds one base: its weights and config, its pretraining log, the recipe that made it
//! (`BaseRecipe`: every setting pretraining depends on) and the weights' SHA-256. `pearl demo`
//! fine-tunes it after verifying the checksum when the run's settings are its recipe, and
//! pretrains otherwise; `pearl demo --from-scratch --pretrain-only` rebuilds it (the command is in
//! `base.json`). A rebuild on another CPU may differ in the last bits of the weights (the order of
//! float additions in the kernels follows the machine's SIMD width), so its checksum may differ.

use super::config::{DemoConfig, TrainSettings};
use super::model_dir::{self, add_processor_files};
use crate::data::synth::Kind;
use crate::train::checkpoint::sha256_hex;
use crate::train::metrics::Row;
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const WEIGHTS: &[u8] = include_bytes!("../../assets/demo-base/model.safetensors");
const CONFIG: &str = include_str!("../../assets/demo-base/config.json");
const METRICS: &str = include_str!("../../assets/demo-base/pretrain_metrics.jsonl");
const MANIFEST: &str = include_str!("../../assets/demo-base/base.json");

/// The file, inside a base model directory, that describes how it was made.
pub const MANIFEST_FILE: &str = "base.json";

/// The command that rebuilds the shipped base from random weights.
pub const REBUILD_COMMAND: &str = "pearl demo --from-scratch --pretrain-only --out demo-base";

/// Every setting the base model depends on: the pretraining data, the model, the optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecipe {
    pub seed: u64,
    pub max_pixels: usize,
    /// SHA-256 of the demo model's `config.json` (`assets/demo-model/`).
    pub model_config_sha256: String,
    pub pretrain: TrainSettings,
    pub pretrain_kinds: Vec<Kind>,
    pub pretrain_scene_kinds: Vec<Kind>,
    pub pretrain_train: usize,
    pub pretrain_val: usize,
    pub pretrain_scene_train: usize,
    pub pretrain_side: u32,
    pub pretrain_plain: bool,
    pub scene_side: u32,
    pub object_size: f64,
    pub tools_plain: bool,
    pub lit: bool,
    pub pretrain_calls: bool,
    pub distractors: (usize, usize),
}

impl BaseRecipe {
    pub fn of(cfg: &DemoConfig) -> Self {
        let d = &cfg.data;
        Self {
            seed: cfg.seed,
            max_pixels: cfg.max_pixels,
            model_config_sha256: sha256_hex(model_dir::config_json().as_bytes()),
            pretrain: cfg.pretrain.clone(),
            pretrain_kinds: d.pretrain_kinds.clone(),
            pretrain_scene_kinds: d.pretrain_scene_kinds.clone(),
            pretrain_train: d.pretrain_train,
            pretrain_val: d.pretrain_val,
            pretrain_scene_train: d.pretrain_scene_train,
            pretrain_side: d.pretrain_side,
            pretrain_plain: d.pretrain_plain,
            scene_side: d.scene_side,
            object_size: d.object_size,
            tools_plain: d.tools_plain,
            lit: d.lit,
            pretrain_calls: d.pretrain_calls,
            distractors: d.distractors,
        }
    }
}

/// What `base.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub recipe: BaseRecipe,
    /// SHA-256 of `model.safetensors`, lowercase hex.
    pub sha256: String,
    pub command: String,
    /// Pretraining steps, the best validation loss and its step, and the wall time.
    pub steps: usize,
    pub best_step: Option<usize>,
    pub best_val_loss: Option<f64>,
    pub seconds: f64,
}

/// The shipped base's manifest.
pub fn manifest() -> Result<Manifest> {
    serde_json::from_str(MANIFEST).context("assets/demo-base/base.json is not a base manifest")
}

/// The settings in which `cfg` differs from the shipped base's recipe (empty: it fits).
pub fn mismatch(cfg: &DemoConfig) -> Result<Vec<String>> {
    let (want, have) = (
        serde_json::to_value(BaseRecipe::of(cfg))?,
        serde_json::to_value(manifest()?.recipe)?,
    );
    let (serde_json::Value::Object(want), serde_json::Value::Object(have)) = (want, have) else {
        anyhow::bail!("a base recipe is not a JSON object");
    };
    Ok(want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect())
}

/// Verifies the shipped weights against their checksum and writes the base model directory into
/// `dir` (weights, config, processor files with `max_pixels`, the pretraining log and manifest).
pub fn install(dir: &Path, max_pixels: usize) -> Result<(PathBuf, Vec<Row>)> {
    let m = manifest()?;
    let got = sha256_hex(WEIGHTS);
    ensure!(
        got == m.sha256,
        "the shipped base model's weights (assets/demo-base/model.safetensors) have SHA-256 {got}, \
         but base.json records {}: the file was changed; rebuild it with `{}` or run \
         `pearl demo --from-scratch`",
        m.sha256,
        m.command
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in [
        ("model.safetensors", WEIGHTS),
        ("config.json", CONFIG.as_bytes()),
        (super::pretrain::METRICS, METRICS.as_bytes()),
        (MANIFEST_FILE, MANIFEST.as_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    add_processor_files(dir, max_pixels)?;
    let rows = crate::train::metrics::parse_rows(METRICS.as_bytes())
        .context("the shipped pretraining log is not metrics rows")?;
    Ok((dir.to_path_buf(), rows))
}

/// Writes `base.json` into a base model directory made by this run's pretraining.
pub fn write_manifest(
    dir: &Path,
    cfg: &DemoConfig,
    summary: &crate::train::Summary,
    seconds: f64,
) -> Result<Manifest> {
    let weights = dir.join("model.safetensors");
    let bytes =
        std::fs::read(&weights).with_context(|| format!("cannot read {}", weights.display()))?;
    let m = Manifest {
        recipe: BaseRecipe::of(cfg),
        sha256: sha256_hex(&bytes),
        command: REBUILD_COMMAND.into(),
        steps: summary.step,
        best_step: summary.best.map(|b| b.0),
        best_val_loss: summary.best.map(|b| b.1),
        seconds,
    };
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_base_fits_the_default_settings_and_installs_verified() {
        let cfg = DemoConfig::default();
        assert_eq!(mismatch(&cfg).unwrap(), Vec::<String>::new());
        let dir = tempfile::tempdir().unwrap();
        let (base, rows) = install(&dir.path().join("base"), cfg.max_pixels).unwrap();
        assert!(!rows.is_empty());
        // A model directory every command loads.
        let model = crate::infer::LocalModel::load(
            &base,
            None,
            &burn::tensor::Device::default(),
            crate::model::precision::Precision::F32,
        );
        assert!(model.is_ok(), "{:?}", model.err());
        assert_eq!(
            sha256_hex(&std::fs::read(base.join("model.safetensors")).unwrap()),
            manifest().unwrap().sha256
        );
    }

    #[test]
    fn other_pretraining_settings_do_not_fit_the_shipped_base() {
        let mut cfg = DemoConfig::default();
        cfg.pretrain.steps += 1;
        cfg.data.pretrain_train += 1;
        assert_eq!(
            mismatch(&cfg).unwrap(),
            vec!["pretrain".to_string(), "pretrain_train".to_string()]
        );
        // Fine-tuning settings are not part of the recipe.
        let mut cfg = DemoConfig::default();
        cfg.finetune.steps += 1;
        cfg.data.test += 1;
        assert!(mismatch(&cfg).unwrap().is_empty());
    }
}
