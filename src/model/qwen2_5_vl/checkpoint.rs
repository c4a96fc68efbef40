//! Writing Qwen2.5-VL as a hub-layout checkpoint (`config.json` + `model.safetensors` with
//! the hub's key names, `model.*` / `visual.*`, and PyTorch layouts) that any Qwen2.5-VL runtime loads.

use super::model::Qwen2_5Vl;
use crate::model::checkpoint::{hub_tensors_of, write_hub_checkpoint};
use std::path::Path;

/// (hub name, PyTorch shape, values) of every base parameter. LoRA factors are not included:
/// merge them first (`merge_lora`) to export a plain checkpoint.
pub fn hub_tensors(model: &Qwen2_5Vl) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    hub_tensors_of(model, model.patch_kernel(), |name| name)
}

/// Saves `model` as a hub-layout checkpoint in `dir`: `model.safetensors` plus the given config JSON.
pub fn save_hub_checkpoint(
    model: &Qwen2_5Vl,
    config_json: &serde_json::Value,
    dir: &Path,
) -> anyhow::Result<()> {
    write_hub_checkpoint(&hub_tensors(model), config_json, dir)
}
