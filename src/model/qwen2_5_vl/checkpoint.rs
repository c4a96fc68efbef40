//! Writing Qwen2.5-VL as a hub-layout checkpoint (`config.json` + `model.safetensors` with
//! transformers' key names and PyTorch layouts) that any Qwen2.5-VL runtime loads.

use super::config::VisionConfig;
use super::model::Qwen2_5Vl;
use crate::model::checkpoint::{param_values, write_atomic, write_safetensors};
use crate::model::names::{hub_name, named_params};
use crate::model::nn::transpose;
use std::collections::HashMap;
use std::path::Path;

/// (hub name, PyTorch shape, values) of every base parameter. LoRA factors are not included:
/// merge them first (`merge_lora`) to export a plain checkpoint.
pub fn hub_tensors(model: &Qwen2_5Vl) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let values = param_values(model);
    let mut out = Vec::new();
    for p in named_params(model) {
        let Some(name) = hub_name(&p.path) else {
            continue;
        };
        let (shape, data) = pytorch_layout(&name, &p.dims, &values[&p.id], &model.cfg.vision);
        out.push((name, shape, data));
    }
    out
}

/// A parameter (or its gradient) in burn's layout -> PyTorch's: linears `[in, out]` -> `[out, in]`,
/// the patch embedding back to its Conv3d shape; embeddings and vectors unchanged.
pub fn pytorch_layout(
    name: &str,
    dims: &[usize],
    v: &[f32],
    vision: &VisionConfig,
) -> (Vec<usize>, Vec<f32>) {
    if name == "visual.patch_embed.proj.weight" {
        let (din, dout) = (dims[0], dims[1]);
        (
            vec![
                dout,
                vision.in_chans,
                vision.temporal_patch_size,
                vision.patch_size,
                vision.patch_size,
            ],
            transpose(v, din, dout),
        )
    } else if dims.len() == 2 && !name.ends_with("embed_tokens.weight") {
        (vec![dims[1], dims[0]], transpose(v, dims[0], dims[1]))
    } else {
        (dims.to_vec(), v.to_vec())
    }
}

/// Saves `model` as a hub-layout checkpoint in `dir`: `model.safetensors` plus the given config JSON.
pub fn save_hub_checkpoint(
    model: &Qwen2_5Vl,
    config_json: &serde_json::Value,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(
        &dir.join("model.safetensors"),
        &hub_tensors(model),
        Some(meta),
    )?;
    write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(config_json)?.as_bytes(),
    )
}
