//! Where parameter values come from: a checkpoint on disk (single or sharded safetensors, bf16 / f16 /
//! f32, hub or current-transformers key names) or a seeded random initialisation (demo, benchmarks).
//! Every source hands out tensors by their *hub* name in PyTorch layout (`[out, in]` for linears).

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub trait WeightSource {
    /// The tensor called `name` (hub layout), which must have `shape`.
    fn take(&mut self, name: &str, shape: &[usize], kind: ParamKind) -> anyhow::Result<Vec<f32>>;
    /// Whether the source has a tensor called `name` (used for optional ones such as `lm_head`).
    fn contains(&self, name: &str) -> bool;
}

/// What a parameter is, so random initialisation can do the usual thing for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    NormScale,
}

/// Maps the key names current transformers writes onto the hub names.
pub fn canonical_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = key.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        key.to_string()
    }
}

struct Stored {
    shape: Vec<usize>,
    dtype: Dtype,
    file: usize,
}

/// A safetensors checkpoint: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`. Shards are read one at a time, on demand, and dropped when all
/// their tensors have been taken, so peak memory stays near one shard plus the converted weights.
pub struct SafetensorsWeights {
    files: Vec<PathBuf>,
    index: BTreeMap<String, (String, Stored)>,
    cache: Option<(usize, Vec<u8>)>,
    taken: BTreeSet<String>,
}

impl SafetensorsWeights {
    pub fn open(model_dir: &Path) -> anyhow::Result<Self> {
        let single = model_dir.join("model.safetensors");
        let index_path = model_dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .with_context(|| format!("cannot read {}", index_path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", index_path.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{} has no `weight_map` object", index_path.display()))?;
            let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.into_iter().map(|n| model_dir.join(n)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            bail!(
                "no weights in {}: expected model.safetensors or model.safetensors.index.json",
                model_dir.display()
            );
        };
        Self::open_files(files)
    }

    /// One safetensors file (a dynamics head, a single-file checkpoint).
    pub fn open_file(path: &Path) -> anyhow::Result<Self> {
        Self::open_files(vec![path.to_path_buf()])
    }

    fn open_files(files: Vec<PathBuf>) -> anyhow::Result<Self> {
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            if !f.exists() {
                bail!("missing shard {} (named by the index)", f.display());
            }
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let (_, meta) = SafeTensors::read_metadata(&bytes)
                .with_context(|| format!("{} is not a valid safetensors file", f.display()))?;
            for (name, info) in meta.tensors() {
                let key = canonical_key(&name);
                index.insert(
                    key,
                    (
                        name.clone(),
                        Stored {
                            shape: info.shape.clone(),
                            dtype: info.dtype,
                            file: i,
                        },
                    ),
                );
            }
        }
        Ok(Self {
            files,
            index,
            cache: None,
            taken: BTreeSet::new(),
        })
    }

    /// Keys of the checkpoint that no parameter asked for (reported, not fatal: checkpoints may carry
    /// extras such as a tied `lm_head`).
    pub fn unused(&self) -> Vec<String> {
        self.index
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .cloned()
            .collect()
    }

    fn file_bytes(&mut self, file: usize) -> anyhow::Result<&[u8]> {
        if self.cache.as_ref().map(|(i, _)| *i) != Some(file) {
            let path = &self.files[file];
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            self.cache = Some((file, bytes));
        }
        Ok(&self.cache.as_ref().expect("just filled").1)
    }
}

impl WeightSource for SafetensorsWeights {
    fn take(&mut self, name: &str, shape: &[usize], _kind: ParamKind) -> anyhow::Result<Vec<f32>> {
        let (raw_name, stored) = self
            .index
            .get(name)
            .with_context(|| format!("checkpoint has no tensor `{name}`"))?;
        let (raw_name, file, dtype, stored_shape) = (
            raw_name.clone(),
            stored.file,
            stored.dtype,
            stored.shape.clone(),
        );
        let path = self.files[file].clone();
        if stored_shape != shape {
            bail!(
                "tensor `{raw_name}` in {} has shape {stored_shape:?}, the config implies {shape:?}",
                path.display()
            );
        }
        let bytes = self.file_bytes(file)?;
        let st = SafeTensors::deserialize(bytes)
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        let view = st
            .tensor(&raw_name)
            .with_context(|| format!("cannot read `{raw_name}` from {}", path.display()))?;
        let out = to_f32(dtype, view.data())
            .with_context(|| format!("tensor `{raw_name}` in {}", path.display()))?;
        self.taken.insert(name.to_string());
        Ok(out)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// Little-endian f32 / bf16 / f16 bytes as f32 values.
pub fn to_f32(dtype: Dtype, data: &[u8]) -> anyhow::Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("dtype {other:?} is not supported; expected f32, bf16 or f16"),
    })
}

/// Seeded random initialisation in the style of transformers' `_init_weights`: N(0, std) weights,
/// zero biases, unit norm scales.
pub struct RandomWeights {
    rng: rand_chacha::ChaCha8Rng,
    std: f32,
}

impl RandomWeights {
    pub fn new(seed: u64, std: f32) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            std,
        }
    }
}

impl WeightSource for RandomWeights {
    fn take(&mut self, _name: &str, shape: &[usize], kind: ParamKind) -> anyhow::Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        Ok(match kind {
            ParamKind::Bias => vec![0.0; n],
            ParamKind::NormScale => vec![1.0; n],
            ParamKind::Weight => {
                let dist = Normal::new(0.0f32, self.std).context("invalid init std")?;
                (0..n).map(|_| dist.sample(&mut self.rng)).collect()
            }
        })
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }
}
