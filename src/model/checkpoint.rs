//! Writing checkpoints: safetensors files, parameter values by id, and files written to a temporary
//! name and renamed, so a crash never leaves a half-written checkpoint behind. A family's own
//! hub layout (key names, PyTorch shapes) is in its folder (`qwen2_5_vl::checkpoint`).

use super::names::{hub_name, named_params};
use super::nn::transpose;
use anyhow::Context;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// Row-major f32 values of every float parameter, by id.
pub fn param_values<M: Module>(module: &M) -> HashMap<ParamId, Vec<f32>> {
    struct V(HashMap<ParamId, Vec<f32>>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.insert(
                param.id,
                param.val().try_into_vec_as::<f32>().unwrap_or_default(),
            );
        }
    }
    let mut v = V(HashMap::new());
    module.visit(&mut v);
    v.0
}

/// A parameter (or its gradient) in burn's layout -> PyTorch's: linears `[in, out]` -> `[out, in]`,
/// the patch embedding back to its Conv3d shape `[out, C, T, P, P]` (`patch_kernel` = `[C, T, P, P]`);
/// embeddings and vectors unchanged.
pub fn pytorch_layout(
    name: &str,
    dims: &[usize],
    v: &[f32],
    patch_kernel: [usize; 4],
) -> (Vec<usize>, Vec<f32>) {
    if name == "visual.patch_embed.proj.weight" {
        let (din, dout) = (dims[0], dims[1]);
        (
            [&[dout][..], &patch_kernel[..]].concat(),
            transpose(v, din, dout),
        )
    } else if dims.len() == 2 && !is_embedding(name) {
        (vec![dims[1], dims[0]], transpose(v, dims[0], dims[1]))
    } else {
        (dims.to_vec(), v.to_vec())
    }
}

/// (name, PyTorch shape, values) of every base parameter of `model`, named by `key` from its
/// hub name; `patch_kernel` is the patch embedding's `[C, T, P, P]`. LoRA factors are left out.
pub fn hub_tensors_of<M: Module>(
    model: &M,
    patch_kernel: [usize; 4],
    key: impl Fn(String) -> String,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let values = param_values(model);
    let mut out = Vec::new();
    for p in named_params(model) {
        let Some(name) = hub_name(&p.path) else {
            continue;
        };
        let (shape, data) = pytorch_layout(&name, &p.dims, &values[&p.id], patch_kernel);
        out.push((key(name), shape, data));
    }
    out
}

/// Writes `model.safetensors` (PyTorch metadata) and `config.json` into `dir`, each atomically.
pub fn write_hub_checkpoint(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    config_json: &serde_json::Value,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), tensors, Some(meta))?;
    write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(config_json)?.as_bytes(),
    )
}

/// Embedding tables (`[rows, d]` in both layouts): the token embeddings and Qwen3-VL's learned
/// vision positions.
fn is_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name == "visual.pos_embed.weight"
}

/// Writes f32 tensors to a safetensors file atomically (temp file + rename). Non-finite values are
/// refused: a checkpoint with NaN or Inf is never written.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> anyhow::Result<()> {
    for (name, _, data) in tensors {
        if data.iter().any(|x| !x.is_finite()) {
            anyhow::bail!(
                "refusing to write {}: tensor `{name}` holds non-finite values",
                path.display()
            );
        }
    }
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|(n, s, d)| RawTensor {
            name: n.clone(),
            dtype: safetensors::Dtype::F32,
            shape: s.clone(),
            bytes: d.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
        .collect();
    write_raw_safetensors(path, &raw, metadata)
}

/// A tensor already encoded as little-endian bytes.
pub struct RawTensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: safetensors::Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn i64(name: &str, shape: Vec<usize>, data: &[i64]) -> Self {
        Self {
            name: name.into(),
            dtype: safetensors::Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Writes encoded tensors of any dtype to a safetensors file atomically.
pub fn write_raw_safetensors(
    path: &Path,
    tensors: &[RawTensor],
    metadata: Option<HashMap<String, String>>,
) -> anyhow::Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, metadata).context("cannot serialize tensors")?;
    write_atomic(path, &data)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
