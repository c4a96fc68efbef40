//! `pearl bench load`: how long a model directory's weights take to load, and the process's peak
//! memory meanwhile (weights are memory-mapped, each shard read once; see `model::weights`).

use crate::model::device::DeviceSpec;
use crate::model::precision::Precision;
use crate::model::{Qwen2_5Vl, VlFamily};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub model: String,
    pub precision: Precision,
    pub device: String,
    /// Bytes of the safetensors files.
    pub checkpoint_bytes: u64,
    pub params: u64,
    pub load_seconds: f64,
    /// The process's peak resident memory after loading (Linux; `None` elsewhere).
    pub peak_rss_mib: Option<f64>,
}

/// Loads `dir` on `device` in `precision` and reports the cost.
pub fn run(dir: &Path, precision: Precision, device: DeviceSpec) -> anyhow::Result<LoadReport> {
    let checkpoint_bytes = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let start = Instant::now();
    let model = Qwen2_5Vl::from_dir_in(dir, &device.device()?, precision)?;
    let load_seconds = start.elapsed().as_secs_f64();
    Ok(LoadReport {
        model: dir.display().to_string(),
        precision,
        device: device.to_string(),
        checkpoint_bytes,
        params: burn::module::Module::num_params(&model) as u64,
        load_seconds,
        peak_rss_mib: super::peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64),
    })
}
