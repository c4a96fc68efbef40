//! LoRA on every linear projection of the model (vision blocks, merger, language model; not lm_head
//! and not the patch embedding, which PEFT's "all-linear" leaves out too), in PEFT's file format:
//! `adapter_config.json` + `adapter_model.safetensors` with PEFT key names and `[r, in]` / `[out, r]`
//! factors, so Python tools load our adapters and we load theirs.

use crate::model::checkpoint::{param_values, write_atomic, write_safetensors};
use crate::model::names::{named_params, parse_peft_name, peft_name};
use crate::model::nn::{Proj, tensor2, transpose};
use crate::model::precision::in_f32;
use crate::model::qwen2_5_vl::Qwen2_5Vl;
use crate::model::weights::{ParamKind, RandomWeights, WeightSource, to_f32};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// Every linear projection of the model with its hub module name, in a fixed order.
pub fn projections_mut(model: &mut Qwen2_5Vl) -> Vec<(String, &mut Proj)> {
    let mut out: Vec<(String, &mut Proj)> = Vec::new();
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
    for (i, l) in model.model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.self_attn.q_proj"), &mut l.self_attn.q_proj));
        out.push((format!("{p}.self_attn.k_proj"), &mut l.self_attn.k_proj));
        out.push((format!("{p}.self_attn.v_proj"), &mut l.self_attn.v_proj));
        out.push((format!("{p}.self_attn.o_proj"), &mut l.self_attn.o_proj));
        out.push((format!("{p}.mlp.gate_proj"), &mut l.mlp.gate_proj));
        out.push((format!("{p}.mlp.up_proj"), &mut l.mlp.up_proj));
        out.push((format!("{p}.mlp.down_proj"), &mut l.mlp.down_proj));
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

/// Attaches LoRA adapters to the targeted projections, with factors from `src` under PEFT names
/// (`lora_A`: `[r, in]`, `lora_B`: `[out, r]`). Base weights stay as they are; freezing is the
/// trainer's business.
fn attach(
    model: Qwen2_5Vl,
    cfg: &LoraConfig,
    src: &mut dyn WeightSource,
) -> anyhow::Result<Qwen2_5Vl> {
    if cfg.r == 0 {
        bail!("LoRA rank r must be positive");
    }
    let is_target = targeted(cfg)?;
    let device = model.device();
    let mut model = model;
    let mut attached = 0;
    for (name, proj) in projections_mut(&mut model) {
        if !is_target(&name) {
            continue;
        }
        let (din, dout) = (proj.d_in(), proj.d_out());
        let peft = |f: &str| format!("base_model.model.{}.{f}.weight", peft_module(&name));
        let a = src.take(&peft("lora_A"), &[cfg.r, din], ParamKind::Weight)?;
        let b = src.take(&peft("lora_B"), &[dout, cfg.r], ParamKind::Bias)?; // B starts at zero
        let a = tensor2(transpose(&a, cfg.r, din), [din, cfg.r], &device);
        let b = tensor2(transpose(&b, dout, cfg.r), [cfg.r, dout], &device);
        let base = std::mem::replace(proj, Proj::from_pytorch(&[], None, 0, 0, &device));
        *proj = base.with_lora(a, b, cfg.lora_alpha, cfg.lora_dropout);
        attached += 1;
    }
    if attached == 0 {
        bail!("the LoRA target selection matches no linear layer of the model");
    }
    Ok(model)
}

/// Fresh adapters (PEFT's default init: A ~ Kaiming-uniform-like normal, B = 0).
pub fn init_lora(model: Qwen2_5Vl, cfg: &LoraConfig, seed: u64) -> anyhow::Result<Qwen2_5Vl> {
    let std = 1.0 / (cfg.r as f32).sqrt() * 0.1;
    attach(model, cfg, &mut RandomWeights::new(seed, std))
}

/// PEFT's module name for a hub module name (current transformers layout).
fn peft_module(hub: &str) -> String {
    if let Some(r) = hub.strip_prefix("model.") {
        format!("model.language_model.{r}")
    } else if let Some(r) = hub.strip_prefix("visual.") {
        format!("model.visual.{r}")
    } else {
        hub.to_string()
    }
}

/// The subset of PEFT's `adapter_config.json` that defines the adapter.
fn read_peft_config(dir: &Path) -> anyhow::Result<(LoraConfig, serde_json::Value)> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if v.get("peft_type")
        .and_then(|t| t.as_str())
        .is_some_and(|t| t != "LORA")
    {
        bail!(
            "{}: peft_type {} is not LORA",
            path.display(),
            v["peft_type"]
        );
    }
    let r = v
        .get("r")
        .and_then(|x| x.as_u64())
        .with_context(|| format!("{}: missing `r`", path.display()))? as usize;
    let alpha = v
        .get("lora_alpha")
        .and_then(|x| x.as_f64())
        .with_context(|| format!("{}: missing `lora_alpha`", path.display()))?;
    if v.get("use_dora").and_then(|x| x.as_bool()) == Some(true)
        || v.get("use_rslora").and_then(|x| x.as_bool()) == Some(true)
    {
        bail!(
            "{}: DoRA / rsLoRA adapters are not supported",
            path.display()
        );
    }
    let dropout = v
        .get("lora_dropout")
        .and_then(|x| x.as_f64())
        .unwrap_or(0.0);
    Ok((
        LoraConfig {
            r,
            lora_alpha: alpha,
            lora_dropout: dropout,
            target_regex: None,
        },
        v,
    ))
}

/// Loads a PEFT LoRA adapter directory onto the model. The projections adapted are exactly those
/// the adapter file has factors for.
pub fn load_peft_adapter(model: Qwen2_5Vl, dir: &Path) -> anyhow::Result<Qwen2_5Vl> {
    let (mut cfg, _) = read_peft_config(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
    let mut modules = Vec::new();
    for key in st.names() {
        let (module, _) = parse_peft_name(key)
            .with_context(|| format!("{}: unexpected key `{key}`", file.display()))?;
        modules.push(regex::escape(&module));
    }
    modules.sort();
    modules.dedup();
    cfg.target_regex = Some(format!("^({})$", modules.join("|")));
    let mut src = PeftSource { st: &st };
    let n_modules = modules.len();
    let model = attach(model, &cfg, &mut src)
        .with_context(|| format!("cannot apply the adapter in {}", dir.display()))?;
    let attached = model.lora_count();
    if attached != n_modules {
        bail!(
            "{}: the adapter names {n_modules} modules but only {attached} exist in this model",
            file.display()
        );
    }
    Ok(model)
}

struct PeftSource<'a> {
    st: &'a safetensors::SafeTensors<'a>,
}

impl WeightSource for PeftSource<'_> {
    fn take(&mut self, name: &str, shape: &[usize], _kind: ParamKind) -> anyhow::Result<Vec<f32>> {
        let raw = if self.st.names().contains(&name) {
            name.to_string()
        } else {
            name.replace(".weight", ".default.weight")
        };
        let view = self
            .st
            .tensor(&raw)
            .with_context(|| format!("adapter has no tensor `{name}`"))?;
        if view.shape() != shape {
            bail!(
                "adapter tensor `{name}` has shape {:?}, the model needs {shape:?}",
                view.shape()
            );
        }
        to_f32(view.dtype(), view.data()).with_context(|| format!("adapter tensor `{name}`"))
    }
    fn contains(&self, name: &str) -> bool {
        self.st.names().contains(&name)
    }
}

/// Saves the model's LoRA factors as a PEFT adapter directory (atomic writes).
pub fn save_peft_adapter(
    model: &Qwen2_5Vl,
    cfg: &LoraConfig,
    base_model: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let values = param_values(model);
    let mut tensors = Vec::new();
    let mut targets = BTreeMap::new();
    for p in named_params(model) {
        let Some(key) = peft_name(&p.path) else {
            continue;
        };
        let (rows, cols) = (p.dims[0], p.dims[1]);
        tensors.push((
            key.clone(),
            vec![cols, rows],
            transpose(&values[&p.id], rows, cols),
        ));
        if let Some(leaf) = key.split('.').rev().nth(2) {
            targets.insert(leaf.to_string(), ());
        }
    }
    if tensors.is_empty() {
        bail!("the model has no LoRA adapter to save");
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
        "target_modules": targets.keys().collect::<Vec<_>>(),
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
pub fn merge_lora(mut model: Qwen2_5Vl) -> Qwen2_5Vl {
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
