//! Where parameter values come from: a checkpoint on disk (single or sharded safetensors, bf16 / f16 /
//! f32, hub or current-transformers key names) or a seeded random initialisation (demo, benchmarks).
//! Every source hands out tensors by their *hub* name in PyTorch layout (`[out, in]` for linears).

use crate::mapped;
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

/// The key current transformers (and the published Qwen3-VL checkpoints) use for a hub name:
/// `model.layers.0...` -> `model.language_model.layers.0...`, `visual.*` -> `model.visual.*`
/// (`lm_head.*` unchanged). The inverse of [`canonical_key`].
pub fn current_key(hub: &str) -> String {
    if let Some(rest) = hub.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else if let Some(rest) = hub.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else {
        hub.to_string()
    }
}

/// Where a tensor's bytes are: its shard, and the byte range in the shard's mapping.
struct Stored {
    shape: Vec<usize>,
    dtype: Dtype,
    file: usize,
    bytes: std::ops::Range<usize>,
}

/// A safetensors checkpoint: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`. Each shard is memory-mapped and its header parsed once, when
/// the checkpoint is opened; a tensor's bytes are read from the mapping when it is taken (the
/// kernel pages them in once and may drop them again), so memory holds the converted weights,
/// not a copy of the shards.
pub struct SafetensorsWeights {
    files: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    index: BTreeMap<String, (String, Stored)>,
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
        let mut maps = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            if !f.exists() {
                bail!("missing shard {} (named by the index)", f.display());
            }
            let map = mapped::map_file(f)?;
            // Validates the header and that every tensor's bytes lie inside the file.
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .with_context(|| format!("{} is not a valid safetensors file", f.display()))?;
            let data_start = 8 + header_len;
            for (name, info) in meta.tensors() {
                let (begin, end) = info.data_offsets;
                let stored = Stored {
                    shape: info.shape.clone(),
                    dtype: info.dtype,
                    file: i,
                    bytes: data_start + begin..data_start + end,
                };
                index.insert(canonical_key(&name), (name.clone(), stored));
            }
            maps.push(map);
        }
        Ok(Self {
            files,
            maps,
            index,
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
}

impl WeightSource for SafetensorsWeights {
    fn take(&mut self, name: &str, shape: &[usize], _kind: ParamKind) -> anyhow::Result<Vec<f32>> {
        let (raw_name, stored) = self
            .index
            .get(name)
            .with_context(|| format!("checkpoint has no tensor `{name}`"))?;
        let path = &self.files[stored.file];
        if stored.shape != shape {
            bail!(
                "tensor `{raw_name}` in {} has shape {:?}, the config implies {shape:?}",
                path.display(),
                stored.shape
            );
        }
        let map = &self.maps[stored.file];
        let out = to_f32(stored.dtype, &map[stored.bytes.clone()])
            .with_context(|| format!("tensor `{raw_name}` in {}", path.display()))?;
        mapped::release(map, &stored.bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::{RawTensor, write_raw_safetensors};

    /// Two shards named by an index; tensors of both, in bf16 and f32, read from the mappings.
    fn sharded(dir: &Path) {
        let bf16 = |x: f32| half::bf16::from_f32(x).to_le_bytes();
        let a = RawTensor {
            name: "model.language_model.a".into(),
            dtype: Dtype::BF16,
            shape: vec![2, 2],
            bytes: [1.0f32, -2.0, 0.5, 4.0]
                .iter()
                .flat_map(|&x| bf16(x))
                .collect(),
        };
        let b = RawTensor::f32("b", vec![3], &[7.0, 8.0, 9.0]);
        let c = RawTensor::f32("c", vec![1], &[3.0]);
        write_raw_safetensors(&dir.join("s1.safetensors"), &[a, c], None).unwrap();
        write_raw_safetensors(&dir.join("s2.safetensors"), &[b], None).unwrap();
        let index = r#"{"weight_map": {"model.language_model.a": "s1.safetensors",
            "c": "s1.safetensors", "b": "s2.safetensors"}}"#;
        std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    }

    #[test]
    fn shards_are_mapped_and_tensors_read_by_their_hub_names() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path());
        let mut w = SafetensorsWeights::open(dir.path()).unwrap();
        assert!(w.contains("model.a") && w.contains("b"));
        let b = w.take("b", &[3], ParamKind::Weight).unwrap();
        assert_eq!(b, vec![7.0, 8.0, 9.0]);
        let a = w.take("model.a", &[2, 2], ParamKind::Weight).unwrap();
        assert_eq!(a, vec![1.0, -2.0, 0.5, 4.0]);
        // Taking again reads the released pages back from the file.
        assert_eq!(w.take("b", &[3], ParamKind::Weight).unwrap(), b);
        assert_eq!(w.unused(), vec!["c".to_string()]);
        let e = w.take("b", &[4], ParamKind::Weight).unwrap_err();
        assert!(format!("{e:#}").contains("has shape [3]"), "{e:#}");
    }

    #[test]
    fn a_truncated_shard_is_refused_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        sharded(dir.path());
        let shard = dir.path().join("s2.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
        let e = SafetensorsWeights::open(dir.path())
            .err()
            .expect("truncated");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("s2.safetensors is not a valid safetensors file"),
            "{msg}"
        );
    }
}
