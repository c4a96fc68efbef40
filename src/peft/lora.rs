//! LoRA on every linear projection of the model (vision blocks, merger, language model; not lm_head
//! and not the patch embedding, which PEFT's "all-linear" leaves out too), in PEFT's file format:
//! `adapter_config.json` + `adapter_model.safetensors` with PEFT key names and `[r, in]` / `[out, r]`
//! factors, so Python tools load our adapters and we load theirs.

use super::adapter_config::{AdapterConfig, module_names, target_suffixes};
use crate::model::Vlm;
use crate::model::checkpoint::{param_values, write_atomic, write_safetensors};
use crate::model::names::{hub_name, named_params, peft_name, split_peft_key};
use crate::model::nn::{Proj, tensor2, transpose};
use crate::model::precision::in_f32;
use crate::model::weights::{ParamKind, RandomWeights, WeightSource, canonical_key, to_f32};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    /// Regex over hub module names (`model.layers.0.self_attn.q_proj`, `visual.blocks.3.attn.qkv`);
    /// `None` = every linear except lm_head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_regex: Option<String>,
}

/// A closure from a decoder layer (either family: the fields are named alike) to its seven
/// projections, in [`projections_mut`]'s `LAYER` order.
macro_rules! layer_projections {
    () => {
        |l| {
            let a = &mut l.self_attn;
            [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut l.mlp.gate_proj,
                &mut l.mlp.up_proj,
                &mut l.mlp.down_proj,
            ]
        }
    };
}

/// Every linear projection of the model with its hub module name, in a fixed order.
pub fn projections_mut(model: &mut Vlm) -> Vec<(String, &mut Proj)> {
    let mut out: Vec<(String, &mut Proj)> = Vec::new();
    let layers: Vec<[&mut Proj; 7]> = match model {
        Vlm::Qwen2_5Vl(model) => {
            for (i, b) in model.visual.blocks.iter_mut().enumerate() {
                let p = format!("visual.blocks.{i}");
                out.push((format!("{p}.attn.qkv"), &mut b.attn.qkv));
                out.push((format!("{p}.attn.proj"), &mut b.attn.proj));
                out.push((format!("{p}.mlp.gate_proj"), &mut b.mlp.gate_proj));
                out.push((format!("{p}.mlp.up_proj"), &mut b.mlp.up_proj));
                out.push((format!("{p}.mlp.down_proj"), &mut b.mlp.down_proj));
            }
            out.push(("visual.merger.mlp.0".into(), &mut model.visual.merger.mlp0));
            out.push(("visual.merger.mlp.2".into(), &mut model.visual.merger.mlp2));
            model
                .model
                .layers
                .iter_mut()
                .map(layer_projections!())
                .collect()
        }
        Vlm::Qwen3Vl(model) => {
            let v = &mut model.visual;
            for (i, b) in v.blocks.iter_mut().enumerate() {
                let p = format!("visual.blocks.{i}");
                out.push((format!("{p}.attn.qkv"), &mut b.attn.qkv));
                out.push((format!("{p}.attn.proj"), &mut b.attn.proj));
                out.push((format!("{p}.mlp.linear_fc1"), &mut b.mlp.linear_fc1));
                out.push((format!("{p}.mlp.linear_fc2"), &mut b.mlp.linear_fc2));
            }
            out.push(("visual.merger.linear_fc1".into(), &mut v.merger.linear_fc1));
            out.push(("visual.merger.linear_fc2".into(), &mut v.merger.linear_fc2));
            for (k, m) in v.deepstack_merger_list.iter_mut().enumerate() {
                let p = format!("visual.deepstack_merger_list.{k}");
                out.push((format!("{p}.linear_fc1"), &mut m.linear_fc1));
                out.push((format!("{p}.linear_fc2"), &mut m.linear_fc2));
            }
            model
                .model
                .layers
                .iter_mut()
                .map(layer_projections!())
                .collect()
        }
    };
    // The decoder layers' projections, named alike in both families.
    const LAYER: [&str; 7] = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ];
    for (i, projs) in layers.into_iter().enumerate() {
        for (name, proj) in LAYER.iter().zip(projs) {
            out.push((format!("model.layers.{i}.{name}"), proj));
        }
    }
    out
}

fn targeted(cfg: &LoraConfig) -> anyhow::Result<impl Fn(&str) -> bool> {
    let re = match &cfg.target_regex {
        Some(r) => {
            Some(regex::Regex::new(r).with_context(|| format!("invalid LoRA target regex {r:?}"))?)
        }
        None => None,
    };
    Ok(move |name: &str| re.as_ref().is_none_or(|re| re.is_match(name)))
}

/// One projection's adapter in PEFT's layout: `a: [r, in]`, `b: [out, r]`, scale `alpha / r`.
struct Factors {
    a: Vec<f32>,
    b: Vec<f32>,
    r: usize,
    alpha: f64,
}

/// Attaches LoRA adapters to the projections `factors` returns some for (called with each hub
/// module name, `d_in`, `d_out`). Base weights stay as they are; freezing is the trainer's
/// business.
fn attach(
    mut model: Vlm,
    dropout: f64,
    mut factors: impl FnMut(&str, usize, usize) -> anyhow::Result<Option<Factors>>,
) -> anyhow::Result<Vlm> {
    let device = model.device();
    let mut attached = 0;
    for (name, proj) in projections_mut(&mut model) {
        let (din, dout) = (proj.d_in(), proj.d_out());
        let Some(f) = factors(&name, din, dout)? else {
            continue;
        };
        let a = tensor2(transpose(&f.a, f.r, din), [din, f.r], &device);
        let b = tensor2(transpose(&f.b, dout, f.r), [f.r, dout], &device);
        let base = std::mem::replace(proj, Proj::from_pytorch(&[], None, 0, 0, &device));
        *proj = base.with_lora(a, b, f.alpha, dropout);
        attached += 1;
    }
    if attached == 0 {
        bail!("the LoRA target selection matches no linear layer of the model");
    }
    Ok(model)
}

/// Fresh adapters (PEFT's default init: A ~ Kaiming-uniform-like normal, B = 0).
pub fn init_lora(model: Vlm, cfg: &LoraConfig, seed: u64) -> anyhow::Result<Vlm> {
    if cfg.r == 0 {
        bail!("LoRA rank r must be positive");
    }
    let is_target = targeted(cfg)?;
    let std = 1.0 / (cfg.r as f32).sqrt() * 0.1;
    let mut src = RandomWeights::new(seed, std);
    attach(model, cfg.lora_dropout, |name, din, dout| {
        if !is_target(name) {
            return Ok(None);
        }
        Ok(Some(Factors {
            a: src.take(name, &[cfg.r, din], ParamKind::Weight)?,
            b: src.take(name, &[dout, cfg.r], ParamKind::Bias)?, // B starts at zero
            r: cfg.r,
            alpha: cfg.lora_alpha,
        }))
    })
}

/// The factors' keys of one module in an adapter file, and the module's name there.
#[derive(Default)]
struct FileModule {
    name: String,
    a: Option<String>,
    b: Option<String>,
}

/// Loads a PEFT LoRA adapter directory onto the model: the projections adapted are exactly those
/// the adapter file has factors for, under either transformers layout's names; each gets the
/// rank and alpha `adapter_config.json` gives it (`r`, `lora_alpha`, `rank_pattern`,
/// `alpha_pattern`); options pearl does not honour are refused by name.
pub fn load_peft_adapter(model: Vlm, dir: &Path) -> anyhow::Result<Vlm> {
    let cfg = AdapterConfig::read(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
    let mut modules: BTreeMap<String, FileModule> = BTreeMap::new();
    for key in st.names() {
        let (module, factor) = split_peft_key(key).with_context(|| {
            format!(
                "{}: unexpected key `{key}` (a LoRA adapter holds \
                 base_model.model.<module>.lora_A.weight and .lora_B.weight)",
                file.display()
            )
        })?;
        let hub = canonical_key(module);
        if hub == "lm_head" || hub.ends_with("embed_tokens") {
            bail!(
                "{}: the adapter adapts `{module}` (target_modules includes it): LoRA on the LM \
                 head or the embeddings is not supported",
                file.display()
            );
        }
        let m = modules.entry(hub).or_default();
        m.name = module.to_string();
        match factor {
            'a' => m.a = Some(key.to_string()),
            _ => m.b = Some(key.to_string()),
        }
    }
    let take = |key: &Option<String>, module: &str, factor: &str, shape: &[usize], r: usize| {
        let key = key
            .as_deref()
            .with_context(|| format!("`{module}` has no {factor}"))?;
        let view = st.tensor(key)?;
        if view.shape() != shape {
            bail!(
                "adapter tensor `{key}` has shape {:?}, the model needs {shape:?} (rank {r})",
                view.shape()
            );
        }
        to_f32(view.dtype(), view.data()).with_context(|| format!("adapter tensor `{key}`"))
    };
    let model = attach(model, cfg.lora_dropout, |name, din, dout| {
        let Some(m) = modules.get(name) else {
            return Ok(None);
        };
        let (r, alpha) = cfg.rank_and_alpha(&m.name)?;
        Ok(Some(Factors {
            a: take(&m.a, &m.name, "lora_A", &[r, din], r)?,
            b: take(&m.b, &m.name, "lora_B", &[dout, r], r)?,
            r,
            alpha,
        }))
    })
    .with_context(|| format!("cannot apply the adapter in {}", dir.display()))?;
    let present: BTreeSet<String> = projections(&model).into_iter().collect();
    let unknown: Vec<&str> = modules
        .iter()
        .filter(|(hub, _)| !present.contains(*hub))
        .map(|(_, m)| m.name.as_str())
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: the adapter names {} modules this model has no linear projection for: {}",
            file.display(),
            unknown.len(),
            unknown.join(", ")
        );
    }
    Ok(model)
}

/// The hub names of the model's linear projections (those LoRA can adapt).
fn projections(model: &Vlm) -> Vec<String> {
    let mut m = model.clone();
    projections_mut(&mut m)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// Saves the model's LoRA factors as a PEFT adapter directory (atomic writes). `target_modules`
/// are the shortest name suffixes that select exactly the adapted projections (what
/// `PeftModel.from_pretrained` needs: a bare `proj` would also take the Conv3d patch embedding,
/// `0` the first vision block); a projection whose rank or scale differs from `cfg` is listed in
/// `rank_pattern` / `alpha_pattern`.
pub fn save_peft_adapter(
    model: &Vlm,
    cfg: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let values = param_values(model);
    let params = named_params(model);
    let mut tensors = Vec::new();
    for p in &params {
        let Some(key) = peft_name(&p.path) else {
            continue;
        };
        let (rows, cols) = (p.dims[0], p.dims[1]);
        tensors.push((key, vec![cols, rows], transpose(&values[&p.id], rows, cols)));
    }
    if tensors.is_empty() {
        bail!("the model has no LoRA adapter to save");
    }
    let hub_params: Vec<String> = params.iter().filter_map(|p| hub_name(&p.path)).collect();
    let all_modules = module_names(hub_params.iter().map(String::as_str));
    let mut adapted = BTreeSet::new();
    let (mut rank_pattern, mut alpha_pattern) = (serde_json::Map::new(), serde_json::Map::new());
    let mut m = model.clone();
    for (name, proj) in projections_mut(&mut m) {
        let Some(l) = &proj.lora else {
            continue;
        };
        adapted.insert(name.clone());
        let r = l.a.dims()[1];
        let alpha = l.scale * r as f64;
        let own = || {
            let one = BTreeSet::from([name.clone()]);
            regex::escape(&target_suffixes(&one, &all_modules)[0])
        };
        if r != cfg.r {
            rank_pattern.insert(own(), r.into());
        }
        if (alpha - cfg.lora_alpha).abs() > 1e-9 * cfg.lora_alpha.abs().max(1.0) {
            alpha_pattern.insert(own(), alpha.into());
        }
    }
    write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, None)?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "target_modules": target_suffixes(&adapted, &all_modules),
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "task_type": null,
        "use_dora": false,
        "use_rslora": false,
        "modules_to_save": null,
    });
    write_atomic(
        &dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
}

/// Folds every adapter into its base weight (`W + scale * A B`) and removes it: a plain model.
pub fn merge_lora(mut model: Vlm) -> Vlm {
    for (_, proj) in projections_mut(&mut model) {
        if let Some(l) = proj.lora.take() {
            // In f32 whatever the base's dtype: the merged weight is a new master copy.
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let w = in_f32(proj.base.weight.val()) + in_f32(delta);
            proj.base.weight = burn::module::Param::from_tensor(w);
        }
    }
    model
}
