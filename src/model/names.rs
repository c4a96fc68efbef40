//! Parameter names. burn knows each parameter by its module path (`model.layers.0.self_attn.q_proj.base.weight`);
//! checkpoints know them by transformers' names (`model.layers.0.self_attn.q_proj.weight`, PyTorch
//! layout) and adapters by PEFT's (`base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight`).
//! This file is the one place that translates.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Tensor};

/// A float parameter: its module path, id, shape and (when collected with values) row-major data.
#[derive(Debug, Clone)]
pub struct NamedParam {
    pub path: String,
    pub id: ParamId,
    pub dims: Vec<usize>,
    pub require_grad: bool,
    /// Storage dtype (bf16 for frozen weights under [`super::precision::Precision::Bf16`]).
    pub dtype: DType,
}

/// A module path as visitors and mappers walk it (`model.layers.0.self_attn`). The variant of an
/// enum module (the family held by a `Vlm`) adds no level, so a parameter has the same
/// path whether the model is held as its family's type or as a `Vlm`.
#[derive(Debug, Default)]
pub struct ModulePath(Vec<String>);

impl ModulePath {
    pub fn enter(&mut self, name: &str, container_type: &str) {
        let variant = container_type.starts_with("Enum:");
        self.0.push(if variant {
            String::new()
        } else {
            name.to_string()
        });
    }
    pub fn exit(&mut self) {
        self.0.pop();
    }
    pub fn join(&self) -> String {
        let parts: Vec<&str> = self
            .0
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        parts.join(".")
    }
}

struct Collector {
    stack: ModulePath,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(NamedParam {
            path: self.stack.join(),
            id: param.id,
            dims: param.dims().to_vec(),
            require_grad: param.is_require_grad(),
            dtype: param.dtype(),
        });
    }
}

/// Every float parameter of `module` with its path.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut c = Collector {
        stack: ModulePath::default(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Transformers (hub) name of a base parameter path, or `None` for non-base (LoRA) parameters.
pub fn hub_name(path: &str) -> Option<String> {
    if path.contains(".lora.") {
        return None;
    }
    // RMSNorm / LayerNorm scales are `gamma`, LayerNorm shifts `beta` (Qwen3-VL's vision norms).
    let p = path
        .replace(".base.", ".")
        .replace(".gamma", ".weight")
        .replace(".beta", ".bias");
    // The Conv3d patch embedding (with a bias in Qwen3-VL).
    let p = p.replace("visual.patch_embed.", "visual.patch_embed.proj.");
    let p = p
        .replace("visual.merger.mlp0.", "visual.merger.mlp.0.")
        .replace("visual.merger.mlp2.", "visual.merger.mlp.2.");
    Some(match p.strip_prefix("model.lm_head.") {
        Some(rest) => format!("lm_head.{rest}"),
        None => p,
    })
}

/// Module path (without `.base.weight`) of a hub linear name such as `model.layers.0.mlp.up_proj`.
pub fn module_path_of_hub(hub: &str) -> String {
    let p = hub
        .replace("visual.merger.mlp.0", "visual.merger.mlp0")
        .replace("visual.merger.mlp.2", "visual.merger.mlp2");
    let p = p.replace("visual.patch_embed.proj", "visual.patch_embed");
    match p.strip_prefix("lm_head") {
        Some(rest) => format!("model.lm_head{rest}"),
        None => p,
    }
}

/// PEFT key of a LoRA factor at module path `<proj>.lora.a|b`, in current transformers' layout
/// (what PEFT writes for Qwen2.5-VL today): `base_model.model.model.language_model...lora_A.weight`.
pub fn peft_name(path: &str) -> Option<String> {
    let (proj, factor) = path.rsplit_once(".lora.")?;
    let factor = match factor {
        "a" => "lora_A",
        "b" => "lora_B",
        _ => return None,
    };
    let hub = hub_name(&format!("{proj}.base.weight"))?;
    let module = super::weights::current_key(hub.strip_suffix(".weight")?);
    Some(format!("base_model.model.{module}.{factor}.weight"))
}

/// The module of a PEFT LoRA key as the file names it (current transformers layout
/// `model.language_model.layers.0...`, or the pre-4.52 one `model.layers.0...` / `visual...`)
/// and the factor; keys that keep PEFT's adapter name (`lora_A.default.weight`) too.
pub fn split_peft_key(key: &str) -> Option<(&str, char)> {
    let rest = key.strip_prefix("base_model.model.")?;
    [
        (".lora_A.weight", 'a'),
        (".lora_A.default.weight", 'a'),
        (".lora_B.weight", 'b'),
        (".lora_B.default.weight", 'b'),
    ]
    .into_iter()
    .find_map(|(suffix, factor)| Some((rest.strip_suffix(suffix)?, factor)))
}

/// Inverse of [`peft_name`] up to the module: the hub module name of a PEFT key (either
/// transformers layout) and the factor.
pub fn parse_peft_name(key: &str) -> Option<(String, char)> {
    let (module, factor) = split_peft_key(key)?;
    Some((super::weights::canonical_key(module), factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_translate_both_ways() {
        assert_eq!(
            hub_name("model.layers.3.self_attn.q_proj.base.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(hub_name("model.norm.gamma").unwrap(), "model.norm.weight");
        assert_eq!(
            hub_name("model.lm_head.base.weight").unwrap(),
            "lm_head.weight"
        );
        assert_eq!(
            hub_name("visual.merger.mlp2.base.bias").unwrap(),
            "visual.merger.mlp.2.bias"
        );
        assert_eq!(
            hub_name("visual.patch_embed.base.weight").unwrap(),
            "visual.patch_embed.proj.weight"
        );
        // Qwen3-VL: the patch embedding's bias, LayerNorm shifts, DeepStack mergers.
        assert_eq!(
            hub_name("visual.patch_embed.base.bias").unwrap(),
            "visual.patch_embed.proj.bias"
        );
        assert_eq!(
            hub_name("visual.blocks.2.norm1.beta").unwrap(),
            "visual.blocks.2.norm1.bias"
        );
        assert_eq!(
            hub_name("visual.deepstack_merger_list.1.linear_fc1.base.weight").unwrap(),
            "visual.deepstack_merger_list.1.linear_fc1.weight"
        );
        assert!(hub_name("model.layers.0.mlp.up_proj.lora.a").is_none());
        let peft = peft_name("visual.merger.mlp0.lora.b").unwrap();
        assert_eq!(
            peft,
            "base_model.model.model.visual.merger.mlp.0.lora_B.weight"
        );
        assert_eq!(
            parse_peft_name(&peft).unwrap(),
            ("visual.merger.mlp.0".to_string(), 'b')
        );
        let peft = peft_name("model.layers.1.mlp.down_proj.lora.a").unwrap();
        assert_eq!(
            peft,
            "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_A.weight"
        );
        // The pre-transformers-4.52 layout names the same modules.
        for old in [
            "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
            "base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight",
        ] {
            assert_eq!(
                parse_peft_name(old).unwrap(),
                ("model.layers.1.mlp.down_proj".to_string(), 'a')
            );
        }
        assert_eq!(
            parse_peft_name("base_model.model.visual.merger.mlp.0.lora_B.weight").unwrap(),
            ("visual.merger.mlp.0".to_string(), 'b')
        );
        assert!(parse_peft_name("base_model.model.lm_head.weight").is_none());
        assert_eq!(
            module_path_of_hub("model.layers.1.mlp.down_proj"),
            "model.layers.1.mlp.down_proj"
        );
        assert_eq!(
            module_path_of_hub("visual.merger.mlp.0"),
            "visual.merger.mlp0"
        );
    }
}
