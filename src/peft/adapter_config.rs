//! PEFT's `adapter_config.json` for LoRA, read and written the way PEFT does: every option is
//! honoured or refused by name, `rank_pattern` / `alpha_pattern` give per-module ranks and
//! alphas with PEFT's matching rule, and `target_modules` are written as the shortest module-name
//! suffixes that select exactly the adapted modules (PEFT matches a target `t` against a module
//! name `n` when `n == t` or `n` ends with `.t`).

use anyhow::{Context, bail};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeSet;
use std::path::Path;

/// A `rank_pattern` / `alpha_pattern`: regular expressions over module names with their values,
/// in the file's order (PEFT takes the first key that matches).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pattern(pub Vec<(String, f64)>);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of module-name patterns and numbers")
            }
            fn visit_unit<E>(self) -> Result<Pattern, E> {
                Ok(Pattern::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pattern, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(Pattern(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Pattern {
    /// The value of the first key that matches `module` the way PEFT's `get_pattern_key` does:
    /// the key, as a regular expression, matches a dot-separated tail of the name (or all of it).
    pub fn lookup(&self, module: &str) -> anyhow::Result<Option<f64>> {
        for (key, value) in &self.0 {
            let re = regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
                .with_context(|| format!("pattern {key:?} is not a valid regular expression"))?;
            if re.is_match(module) {
                return Ok(Some(*value));
            }
        }
        Ok(None)
    }
}

/// The options of an adapter that pearl computes with.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub rank_pattern: Pattern,
    pub alpha_pattern: Pattern,
}

#[derive(Deserialize)]
struct Patterns {
    #[serde(default)]
    rank_pattern: Pattern,
    #[serde(default)]
    alpha_pattern: Pattern,
}

/// Options that do not change what a saved adapter computes (which modules carry factors is read
/// from the tensors): accepted whatever their value.
const INERT: &[&str] = &[
    "peft_type",
    "r",
    "lora_alpha",
    "lora_dropout",
    "rank_pattern",
    "alpha_pattern",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "inference_mode",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "peft_version",
    "init_lora_weights",
    "megatron_core",
    "qalora_group_size",
    "ensure_weight_tying",
    "loftq_config",
];

/// Why an option that is set is refused.
fn refusal(key: &str) -> &'static str {
    match key {
        "use_dora" => "DoRA adapters are not supported",
        "use_rslora" => "rsLoRA scaling (alpha / sqrt(r)) is not supported",
        "modules_to_save" => {
            "fully trained modules saved beside the adapter are not supported (pearl adapts \
             linear projections only)"
        }
        "bias" | "lora_bias" => "trained biases are not supported",
        "fan_in_fan_out" => "transposed (Conv1D) base weights do not occur in Qwen2.5-VL",
        "trainable_token_indices" => "trainable token embeddings are not supported",
        "layer_replication" => "replicated layers are not supported",
        "target_parameters" => "LoRA on parameters (not modules) is not supported",
        _ => "pearl does not implement this option",
    }
}

/// Whether an option holds its "off" value: null, false, empty, `bias: "none"`, or
/// `init_lora_weights` of a plain LoRA (the others, e.g. `"pissa"`, change the base weights).
fn is_off(key: &str, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => key == "bias" && s == "none",
        _ => false,
    }
}

impl AdapterConfig {
    /// Reads `dir/adapter_config.json`, refusing (by name) every option pearl does not honour.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        let obj = v.as_object().context("not a JSON object")?;
        if let Some(t) = obj.get("peft_type").and_then(|t| t.as_str())
            && t != "LORA"
        {
            bail!("peft_type {t:?} is not LORA");
        }
        if let Some(init) = obj.get("init_lora_weights")
            && !matches!(init, serde_json::Value::Bool(_))
            && init.as_str() != Some("gaussian")
        {
            bail!(
                "init_lora_weights {init} is not supported: that initialisation changes the base \
                 weights, so the adapter does not apply to the original model (convert it to a \
                 plain LoRA when saving)"
            );
        }
        for (key, value) in obj {
            if !INERT.contains(&key.as_str()) && !is_off(key, value) {
                bail!("option {key} = {value}: {}", refusal(key));
            }
        }
        let targets_lm_head = match obj.get("target_modules") {
            Some(serde_json::Value::String(s)) => s.contains("lm_head"),
            Some(serde_json::Value::Array(a)) => a.iter().any(|t| t.as_str() == Some("lm_head")),
            _ => false,
        };
        if targets_lm_head {
            bail!("target_modules includes lm_head: LoRA on the LM head is not supported");
        }
        let r = obj
            .get("r")
            .and_then(|x| x.as_u64())
            .context("missing `r`")? as usize;
        let lora_alpha = obj
            .get("lora_alpha")
            .and_then(|x| x.as_f64())
            .context("missing `lora_alpha`")?;
        let lora_dropout = obj
            .get("lora_dropout")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0);
        // From the text: a parsed `Value` would have sorted the keys, and order decides.
        let p: Patterns = serde_json::from_str(text).context("rank_pattern / alpha_pattern")?;
        Ok(Self {
            r,
            lora_alpha,
            lora_dropout,
            rank_pattern: p.rank_pattern,
            alpha_pattern: p.alpha_pattern,
        })
    }

    /// Rank and alpha of the module PEFT names `module`, as PEFT chooses them.
    pub fn rank_and_alpha(&self, module: &str) -> anyhow::Result<(usize, f64)> {
        let r = match self.rank_pattern.lookup(module)? {
            Some(r) if r >= 1.0 && r.fract() == 0.0 => r as usize,
            Some(r) => bail!("rank_pattern gives {module} rank {r}, not a positive integer"),
            None => self.r,
        };
        let alpha = self
            .alpha_pattern
            .lookup(module)?
            .unwrap_or(self.lora_alpha);
        Ok((r, alpha))
    }
}

/// The shortest dot-separated suffixes of the `adapted` module names that select, among all
/// `modules` of the model, exactly the adapted ones (PEFT's `target_modules` list). A suffix never
/// starts with a numeric component (an index means nothing without its list: `0` would also
/// select `blocks.0` and `layers.0`), hence `mlp.0` and `layers.1.self_attn.q_proj`.
pub fn target_suffixes(adapted: &BTreeSet<String>, modules: &BTreeSet<String>) -> Vec<String> {
    let selects =
        |suffix: &str, name: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    let mut out = BTreeSet::new();
    for name in adapted {
        let parts: Vec<&str> = name.split('.').collect();
        let suffix = (1..=parts.len())
            .map(|k| &parts[parts.len() - k..])
            .filter(|p| p[0].parse::<u64>().is_err())
            .map(|p| p.join("."))
            .find(|s| {
                modules
                    .iter()
                    .filter(|m| selects(s, m))
                    .all(|m| adapted.contains(m))
            })
            .unwrap_or_else(|| name.clone());
        out.insert(suffix);
    }
    out.into_iter().collect()
}

/// The module names of a model given its parameter names: every prefix of every name
/// (`visual.blocks.0.attn.proj.weight` gives `visual`, `visual.blocks`, `visual.blocks.0`, ...).
pub fn module_names<'a>(params: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in params {
        let parts: Vec<&str> = p.split('.').collect();
        for k in 1..parts.len() {
            out.insert(parts[..k].join("."));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suffixes_select_only_the_adapted_modules() {
        let modules = module_names([
            "visual.patch_embed.proj.weight",
            "visual.blocks.0.attn.proj.weight",
            "visual.blocks.0.attn.qkv.weight",
            "visual.blocks.1.attn.proj.weight",
            "visual.merger.mlp.0.weight",
            "visual.merger.mlp.2.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.2.self_attn.q_proj.weight",
        ]);
        let all = set(&[
            "visual.blocks.0.attn.proj",
            "visual.blocks.1.attn.proj",
            "visual.blocks.0.attn.qkv",
            "visual.merger.mlp.0",
            "visual.merger.mlp.2",
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.2.self_attn.q_proj",
        ]);
        // `proj` alone would take the Conv3d patch embedding, `2` the block/layer 2.
        assert_eq!(
            target_suffixes(&all, &modules),
            ["attn.proj", "mlp.0", "mlp.2", "q_proj", "qkv"]
        );
        // One layer only: the suffix grows until it names that layer.
        let one = set(&["model.layers.1.self_attn.q_proj"]);
        assert_eq!(
            target_suffixes(&one, &modules),
            ["layers.1.self_attn.q_proj"]
        );
    }

    #[test]
    fn patterns_follow_peft_matching_and_file_order() {
        let cfg = AdapterConfig::parse(
            r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                "rank_pattern": {"layers\\.1\\.self_attn\\.q_proj": 2},
                "alpha_pattern": {"q_proj": 3, "layers.1.self_attn.q_proj": 5, "v_proj": 1}}"#,
        )
        .unwrap();
        let name = "model.language_model.layers.1.self_attn.q_proj";
        // First matching key wins (file order, not sorted order).
        assert_eq!(cfg.rank_and_alpha(name).unwrap(), (2, 3.0));
        assert_eq!(
            cfg.rank_and_alpha("model.language_model.layers.0.mlp.up_proj")
                .unwrap(),
            (4, 8.0)
        );
        // A key must match whole dot-separated components: `proj` is not `q_proj`'s tail.
        let cfg =
            AdapterConfig::parse(r#"{"r": 4, "lora_alpha": 8, "alpha_pattern": {"proj": 1}}"#)
                .unwrap();
        assert_eq!(cfg.rank_and_alpha(name).unwrap().1, 8.0);
        assert_eq!(
            cfg.rank_and_alpha("visual.blocks.0.attn.proj").unwrap().1,
            1.0
        );
    }

    #[test]
    fn options_pearl_does_not_honour_are_refused_by_name() {
        let base = r#""peft_type": "LORA", "r": 4, "lora_alpha": 8"#;
        for (extra, named) in [
            (r#""use_dora": true"#, "use_dora"),
            (r#""use_rslora": true"#, "use_rslora"),
            (r#""modules_to_save": ["lm_head"]"#, "modules_to_save"),
            (
                r#""target_modules": ["q_proj", "lm_head"]"#,
                "target_modules",
            ),
            (r#""bias": "all""#, "bias"),
            (r#""init_lora_weights": "pissa""#, "init_lora_weights"),
            (r#""some_future_option": 3"#, "some_future_option"),
        ] {
            let err = AdapterConfig::parse(&format!("{{{base}, {extra}}}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{extra}: {err}");
        }
        // Options at their "off" value, and inert ones, are fine.
        AdapterConfig::parse(&format!(
            r#"{{{base}, "use_dora": false, "modules_to_save": null, "bias": "none",
                "layers_to_transform": [0, 1], "init_lora_weights": true, "eva_config": null}}"#
        ))
        .unwrap();
    }
}
