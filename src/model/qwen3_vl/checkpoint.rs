//! Writing Qwen3-VL as a checkpoint in the published layout: `model.language_model.*`,
//! `model.visual.*`, `lm_head.weight` (absent when tied), PyTorch layouts.

use super::model::Qwen3Vl;
use crate::model::checkpoint::{hub_tensors_of, write_hub_checkpoint};
use crate::model::weights::current_key;
use std::path::Path;

/// (published name, PyTorch shape, values) of every base parameter (LoRA factors merged first).
pub fn hub_tensors(model: &Qwen3Vl) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    hub_tensors_of(model, model.patch_kernel(), |name| current_key(&name))
}

/// Saves `model` as a published-layout checkpoint in `dir` with the given config JSON.
pub fn save_hub_checkpoint(
    model: &Qwen3Vl,
    config_json: &serde_json::Value,
    dir: &Path,
) -> anyhow::Result<()> {
    write_hub_checkpoint(&hub_tensors(model), config_json, dir)
}
