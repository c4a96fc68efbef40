//! Checkpoints that survive a crash. A checkpoint is a directory written as `NAME.tmp/`, every file
//! fsynced, then renamed to `NAME/` (a rename is atomic), so a run killed at any moment leaves only
//! complete checkpoints behind. Each holds:
//!
//! - the trainable weights: `adapter/` (PEFT format, LoRA) or `model/` (hub layout, full
//!   fine-tuning), and `dynamics_head.safetensors` (NextLat);
//! - `optimizer.bpk` (AdamW moments, burn's format, keyed by path-derived ids: see `param_ids`);
//! - `state.json` (step, data cursor, bad-step counters, best validation loss);
//! - `run.toml` (the run configuration) and `metrics.jsonl` (the metrics up to this step);
//! - `manifest.json`: size and SHA-256 of every file, so a truncated or corrupted checkpoint is
//!   refused with an error naming the file rather than loaded.
//!
//! The learning rate and the dropout randomness are functions of the step and the seed, so the
//! step is all the "RNG state" a resume needs.

use super::data::Cursor;
use super::optim::AdamW;
use crate::model::Vlm;
use crate::model::checkpoint::write_atomic;
use crate::objective::{DynamicsHead, PearlModel};
use crate::peft::lora::{LoraConfig, load_peft_adapter, save_peft_adapter};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const FORMAT: &str = "pearl-checkpoint-1";
const MANIFEST: &str = "manifest.json";
pub const BEST: &str = "best";

/// Where the run stands; everything besides weights and optimizer a resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken (skipped ones included: they consumed their data).
    pub step: usize,
    pub total_steps: usize,
    pub cursor: Cursor,
    /// Consecutive steps with a non-finite loss or gradient, and all such steps.
    pub bad_in_a_row: usize,
    pub skipped: usize,
    /// Best validation loss (total) so far and its step.
    pub best: Option<(usize, f64)>,
    /// Wall-clock seconds of training so far (over all resumed segments).
    pub elapsed_s: f64,
    /// Training examples skipped for exceeding `max_tokens` (each time one was drawn).
    #[serde(default)]
    pub too_long: usize,
}

/// How the trainable weights are stored.
pub enum Trainable<'a> {
    /// PEFT adapter; `base_model` goes into `adapter_config.json`.
    Lora {
        cfg: &'a LoraConfig,
        base_model: &'a str,
    },
    /// A full hub-layout checkpoint with this `config.json`.
    Full { config_json: &'a serde_json::Value },
}

pub struct Contents<'a> {
    pub model: &'a PearlModel,
    pub trainable: Trainable<'a>,
    pub optimizer: &'a AdamW,
    pub state: &'a TrainState,
    pub run_toml: &'a str,
    pub metrics: &'a [u8],
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    step: usize,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

/// The directory name of the checkpoint after `step` steps.
pub fn step_name(step: usize) -> String {
    format!("step-{step:07}")
}

/// Writes the checkpoint `run_dir/name` atomically, replacing an older one of that name.
/// Non-finite weights are refused (`write_safetensors`): no checkpoint with NaN is ever written.
pub fn write(run_dir: &Path, name: &str, c: &Contents) -> Result<PathBuf> {
    let tmp = run_dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = fill(&tmp, c);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("checkpoint {name} not written")));
    }
    let dest = run_dir.join(name);
    replace_dir(&tmp, &dest)?;
    sync_dir(run_dir)?;
    Ok(dest)
}

fn fill(dir: &Path, c: &Contents) -> Result<()> {
    match c.trainable {
        Trainable::Lora { cfg, base_model } => {
            save_peft_adapter(&c.model.vlm, cfg, base_model, &dir.join("adapter"))?
        }
        Trainable::Full { config_json } => c
            .model
            .vlm
            .save_hub_checkpoint(config_json, &dir.join("model"))?,
    }
    if let Some(head) = &c.model.dynamics {
        head.save(&dir.join("dynamics_head.safetensors"))?;
    }
    write_atomic(&dir.join("optimizer.bpk"), &c.optimizer.state_bytes()?)?;
    write_atomic(
        &dir.join("state.json"),
        serde_json::to_string_pretty(c.state)?.as_bytes(),
    )?;
    write_atomic(&dir.join("run.toml"), c.run_toml.as_bytes())?;
    write_atomic(&dir.join("metrics.jsonl"), c.metrics)?;
    let mut files = BTreeMap::new();
    for rel in list_files(dir)? {
        let path = dir.join(&rel);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files.insert(
            rel,
            FileEntry {
                bytes: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            },
        );
        File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", path.display()))?;
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        step: c.state.step,
        files,
    };
    write_atomic(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    File::open(dir.join(MANIFEST))
        .and_then(|f| f.sync_all())
        .context("cannot sync the manifest")?;
    for sub in ["adapter", "model"] {
        if dir.join(sub).is_dir() {
            sync_dir(&dir.join(sub))?;
        }
    }
    sync_dir(dir)
}

/// Moves `tmp` to `dest`; an existing `dest` is moved aside first and removed after.
fn replace_dir(tmp: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        let old = dest.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(dest, &old)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
        std::fs::rename(tmp, dest)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    } else {
        std::fs::rename(tmp, dest)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// SHA-256 of `bytes`, lowercase hex (the checksums of checkpoints and of the shipped demo base).
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Files under `dir` (relative paths with `/`), the manifest excluded, sorted.
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in
            std::fs::read_dir(&abs).with_context(|| format!("cannot list {}", abs.display()))?
        {
            let entry = entry?;
            let r = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(r);
            } else {
                let s = r.to_string_lossy().replace('\\', "/");
                if s != MANIFEST {
                    out.push(s);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks a checkpoint against its manifest: every listed file present, of the listed size and
/// checksum. Returns the step it was written at.
pub fn verify(dir: &Path) -> Result<usize> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a complete checkpoint: cannot read its {MANIFEST}",
            dir.display()
        )
    })?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupted {MANIFEST}", dir.display()))?;
    ensure!(
        m.format == FORMAT,
        "{}: unknown checkpoint format {:?} (expected {FORMAT})",
        dir.display(),
        m.format
    );
    for (rel, e) in &m.files {
        let p = dir.join(rel);
        let bytes = std::fs::read(&p).with_context(|| {
            format!("checkpoint {} is incomplete: missing {rel}", dir.display())
        })?;
        if bytes.len() as u64 != e.bytes {
            bail!(
                "checkpoint {} is truncated or damaged: {rel} has {} bytes, the manifest says {}",
                dir.display(),
                bytes.len(),
                e.bytes
            );
        }
        if sha256_hex(&bytes) != e.sha256 {
            bail!(
                "checkpoint {} is corrupted: the checksum of {rel} does not match its manifest",
                dir.display()
            );
        }
    }
    Ok(m.step)
}

/// Everything a resume reads besides the weights, after [`verify`].
pub struct Restored {
    pub state: TrainState,
    pub run_toml: String,
    pub metrics: Vec<u8>,
    pub optimizer: Vec<u8>,
}

pub fn read(dir: &Path) -> Result<Restored> {
    verify(dir)?;
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let state: TrainState = serde_json::from_slice(&read("state.json")?)
        .with_context(|| format!("{}: bad state.json", dir.display()))?;
    Ok(Restored {
        state,
        run_toml: String::from_utf8(read("run.toml")?).context("run.toml is not UTF-8")?,
        metrics: read("metrics.jsonl")?,
        optimizer: read("optimizer.bpk")?,
    })
}

/// The checkpoint's VLM: the base model with the saved adapter (LoRA), or the saved full model.
pub fn restore_vlm(dir: &Path, base: Vlm) -> Result<Vlm> {
    if dir.join("adapter").is_dir() {
        load_peft_adapter(base, &dir.join("adapter"))
    } else if dir.join("model").is_dir() {
        let device = base.device();
        drop(base);
        Vlm::from_dir(&dir.join("model"), &device)
    } else {
        bail!("{}: holds neither adapter/ nor model/", dir.display())
    }
}

/// The checkpoint's dynamics head, when it has one.
pub fn restore_head(dir: &Path, vlm: &Vlm) -> Result<Option<DynamicsHead>> {
    let p = dir.join("dynamics_head.safetensors");
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(DynamicsHead::load(
        &p,
        vlm.hidden_size(),
        &vlm.device(),
    )?))
}

/// Step checkpoints of a run, oldest first.
pub fn step_dirs(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    if !run_dir.exists() {
        return Ok(out);
    }
    for e in
        std::fs::read_dir(run_dir).with_context(|| format!("cannot list {}", run_dir.display()))?
    {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|n| n.parse::<usize>().ok())
            && e.file_type()?.is_dir()
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest step checkpoint.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(step_dirs(run_dir)?.pop().map(|(_, p)| p))
}

/// Deletes all but the newest `keep` step checkpoints (`best/` is not a step checkpoint).
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let dirs = step_dirs(run_dir)?;
    let n = dirs.len().saturating_sub(keep);
    for (_, p) in &dirs[..n] {
        std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

/// Cleans up after a killed run: removes half-written `*.tmp` checkpoints, and puts back a
/// checkpoint moved aside (`*.old`) whose replacement never arrived.
pub fn remove_partial(run_dir: &Path) -> Result<()> {
    if !run_dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(run_dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if !e.file_type()?.is_dir() {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".old")
            && !run_dir.join(stem).exists()
        {
            // Killed between moving the old checkpoint aside and moving the new one in.
            std::fs::rename(e.path(), run_dir.join(stem))?;
        } else if name.ends_with(".tmp") || name.ends_with(".old") {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("cannot remove {}", e.path().display()))?;
        }
    }
    Ok(())
}
