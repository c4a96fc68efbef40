//! The optimizer side of a step: AdamW (burn's) on the parameters that require gradients, with
//! weight decay grouped as Hugging Face's Trainer groups it (no decay for biases and norm
//! weights), the learning rate of each step (linear warmup, cosine decay), and PyTorch-style
//! global-norm gradient clipping.
//!
//! The learning rate is a pure function of the step rather than burn's stateful schedulers, so a
//! resumed run needs nothing but the step number to continue the schedule exactly.
//! Clipping is done here rather than with burn's `GradientClippingConfig::Norm`, which clips each
//! tensor by its own norm; PyTorch's `clip_grad_norm_` (what the reference trainer uses) scales
//! every gradient by one factor computed from the norm over all of them.

use super::config::{OptimizerConfig, ScheduleConfig};
use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Tensor};
use regex::RegexSet;
use std::sync::LazyLock;

/// Learning rate per step: linear warmup to `lr` over `warmup` steps, then cosine to `min_lr` at
/// the last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    pub fn new(opt: &OptimizerConfig, s: &ScheduleConfig, total: usize) -> Self {
        let warmup = s
            .warmup_steps
            .unwrap_or((s.warmup_ratio * total as f64).ceil() as usize)
            .min(total);
        Self {
            lr: opt.lr,
            min_lr: s.min_lr,
            warmup,
            total,
        }
    }

    /// The rate of step `step` (0-based). Warmup reaches `lr` at its last step rather than
    /// starting from exactly 0 (transformers' first step has lr 0 and changes nothing).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let decay = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / decay as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cosine
    }
}

/// AdamW over the trainable parameters (those with gradients; frozen ones get none and are
/// left untouched), with weight decay decoupled as in PyTorch's `AdamW` and applied only to the
/// parameters [`decays`] selects: two parameter groups, as Hugging Face's Trainer builds them.
pub struct AdamW {
    inner: ModuleOptimizer,
}

impl AdamW {
    /// The optimizer of `module`'s parameters: `cfg.weight_decay` for those that [`decays`],
    /// none for the others. The groups are keyed by module path, so the optimizer state stays
    /// burn's own and a checkpoint written before the grouping still loads.
    pub fn new<M: Module>(cfg: &OptimizerConfig, module: &M) -> Self {
        let adamw = |weight_decay: f64| {
            AdamWConfig::new()
                .with_beta_1(cfg.betas[0] as f32)
                .with_beta_2(cfg.betas[1] as f32)
                .with_epsilon(cfg.eps as f32)
                .with_weight_decay(weight_decay as f32)
        };
        let mut inner = adamw(cfg.weight_decay).init();
        let exempt = no_decay_paths(module);
        if !exempt.is_empty() {
            inner = inner.with_group(ParamGroup::from_paths(exempt), adamw(0.0).build(), None);
        }
        Self { inner }
    }

    /// Applies one update with rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        self.inner.step(lr, module, grads)
    }

    /// The moment estimates and step counts, keyed by `ParamId` (burn's burnpack format).
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self
            .inner
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialize the optimizer state: {e:?}"))?;
        Ok(bytes.to_vec())
    }

    /// Restores the state written by [`AdamW::state_bytes`].
    pub fn load_state(self, bytes: Vec<u8>) -> Result<Self> {
        let inner = self
            .inner
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .context("cannot read the optimizer state")?;
        Ok(Self { inner })
    }
}

/// Hugging Face's `Trainer.get_decay_parameter_names` (transformers 4.54): a parameter decays
/// unless it sits in a LayerNorm module (`ALL_LAYERNORM_LAYERS`, i.e. `nn.LayerNorm` only) or
/// its lower-cased name matches one of these patterns. RMSNorm modules are not LayerNorms, so
/// their weights escape decay only by name: the text model's `input_layernorm`,
/// `post_attention_layernorm` and final `norm` do, the vision blocks' `norm1`/`norm2` and the
/// merger's `ln_q` do not (the Trainer decays those in full fine-tuning, and so do we).
/// burn's module paths keep every piece of transformers' names these patterns look at
/// (`.base.` and `gamma` for `weight` change nothing they match).
static NO_DECAY_NAMES: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"bias",
        r"layernorm",
        r"rmsnorm",
        r"(?:^|\.)norm(?:$|\.)",
        r"_norm(?:$|\.)",
    ])
    .expect("valid patterns")
});

/// Whether the parameter at module `path` takes weight decay; `in_layer_norm`: it belongs to a
/// LayerNorm module (burn's `LayerNorm`, PyTorch's `nn.LayerNorm`).
pub fn decays(path: &str, in_layer_norm: bool) -> bool {
    !in_layer_norm && !NO_DECAY_NAMES.is_match(&path.to_lowercase())
}

/// Module paths of `module`'s float parameters that take no weight decay (trainable or not: a
/// frozen parameter gets no gradient, so its group never matters).
pub fn no_decay_paths<M: Module>(module: &M) -> Vec<String> {
    struct Collect {
        path: crate::model::names::ModulePath,
        layer_norms: usize,
        out: Vec<String>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
            if container_type == "Struct:LayerNorm" {
                self.layer_norms += 1;
            }
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.path.exit();
            if container_type == "Struct:LayerNorm" {
                self.layer_norms -= 1;
            }
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            let path = self.path.join();
            if !decays(&path, self.layer_norms > 0) {
                self.out.push(path);
            }
        }
    }
    let mut c = Collect {
        path: Default::default(),
        layer_norms: 0,
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// The L2 norm over all gradients of `module`'s parameters (one host sync).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        parts: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.parts.push(g.square().sum());
            }
        }
    }
    let mut v = SumSquares {
        grads,
        parts: Vec::new(),
    };
    module.visit(&mut v);
    if v.parts.is_empty() {
        return 0.0;
    }
    let total = Tensor::cat(v.parts, 0).sum().into_scalar::<f64>();
    total.sqrt()
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let id: ParamId = param.id;
            if let Some(g) = self.grads.remove::<D>(id) {
                self.grads.register(id, g.mul_scalar(self.factor));
            }
        }
    }
    module.visit(&mut Scale { grads, factor });
}

/// PyTorch's `clip_grad_norm_`: when the global norm exceeds `max_norm`, scale every gradient by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping (non-finite when a gradient is).
/// `max_norm = 0` only measures.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(module, grads);
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        scale_grads(module, grads, max_norm / (norm + 1e-6));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = Schedule {
            lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            total: 14,
        };
        assert_eq!(s.lr_at(0), 0.25);
        assert_eq!(s.lr_at(3), 1.0);
        assert_eq!(s.lr_at(4), 1.0);
        assert!((s.lr_at(9) - 0.55).abs() < 1e-12, "{}", s.lr_at(9));
        assert!((s.lr_at(14) - 0.1).abs() < 1e-12);
        assert!(s.lr_at(13) > 0.1 && s.lr_at(13) < s.lr_at(12));
        let no_warmup = Schedule::new(
            &OptimizerConfig {
                lr: 2.0,
                ..Default::default()
            },
            &ScheduleConfig {
                warmup_ratio: 0.0,
                ..Default::default()
            },
            10,
        );
        assert_eq!(no_warmup.lr_at(0), 2.0);
    }

    fn grads_of(layer: &Linear, dev: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, -1.0]], dev);
        let loss = layer.forward(x).square().sum().mul_scalar(10.0);
        GradientsParams::from_grads(loss.backward(), layer)
    }

    fn flat(layer: &Linear, g: &GradientsParams) -> Vec<f32> {
        let mut v: Vec<f32> = g
            .get::<2>(layer.weight.id)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        v.extend(
            g.get::<1>(layer.bias.as_ref().unwrap().id)
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap(),
        );
        v
    }

    #[test]
    fn clipping_scales_all_gradients_by_one_global_factor() {
        let dev = Device::default().autodiff();
        let layer: Linear = LinearConfig::new(2, 3).init(&dev);
        let mut g = grads_of(&layer, &dev);
        let before = flat(&layer, &g);
        let expected = before
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = clip_global_norm(&layer, &mut g, 0.5);
        assert!(
            (norm - expected).abs() < 1e-4 * expected,
            "{norm} vs {expected}"
        );
        assert!(norm > 0.5, "the test needs a norm above the threshold");
        let after = flat(&layer, &g);
        let factor = 0.5 / (expected + 1e-6);
        for (a, b) in after.iter().zip(&before) {
            assert!((*a as f64 - *b as f64 * factor).abs() < 1e-5, "{a} vs {b}");
        }
        let new_norm = global_grad_norm(&layer, &g);
        assert!((new_norm - 0.5).abs() < 1e-4, "{new_norm}");
        // Below the threshold nothing changes.
        let mut g = grads_of(&layer, &dev);
        clip_global_norm(&layer, &mut g, 1e9);
        assert_eq!(flat(&layer, &g), before);
    }

    #[test]
    fn optimizer_state_round_trips() {
        let dev = Device::default().autodiff();
        let layer: Linear = LinearConfig::new(2, 3).init(&dev);
        let cfg = OptimizerConfig::default();
        let mut a = AdamW::new(&cfg, &layer);
        let layer = a.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let mut b = AdamW::new(&cfg, &layer)
            .load_state(a.state_bytes().unwrap())
            .unwrap();
        let la = a.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let lb = b.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let wa: Vec<f32> = la.weight.val().try_into_vec_as().unwrap();
        let wb: Vec<f32> = lb.weight.val().try_into_vec_as().unwrap();
        assert_eq!(wa, wb);
        // A fresh optimizer (no moments) takes a different step.
        let lc = AdamW::new(&cfg, &layer).step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let wc: Vec<f32> = lc.weight.val().try_into_vec_as().unwrap();
        assert_ne!(wa, wc);
        assert!(AdamW::new(&cfg, &layer).load_state(vec![1, 2, 3]).is_err());
    }

    /// The decay groups of the real model, by name: what Hugging Face's Trainer would pass to
    /// `torch.optim.AdamW` as its weight-decay group and its no-decay group.
    #[test]
    fn weight_decay_groups_follow_the_trainer() {
        use crate::model::names::named_params;
        use crate::model::{Qwen2_5Vl, Qwen2_5VlConfig, VlFamily};
        use crate::objective::{DynamicsHead, PearlModel};
        use crate::peft::lora::{LoraConfig, init_lora};
        let cfg = Qwen2_5VlConfig::from_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/qwen2_5_vl_tiny/model/config.json"),
        )
        .unwrap();
        let dev = Device::default();
        let lora = LoraConfig {
            r: 2,
            lora_alpha: 4.0,
            lora_dropout: 0.0,
            target_regex: None,
        };
        let vlm = init_lora(Qwen2_5Vl::random(&cfg, 1, &dev).unwrap().into(), &lora, 2).unwrap();
        let d = vlm.hidden_size();
        let model = PearlModel {
            vlm,
            dynamics: Some(DynamicsHead::init(d, 3, &dev)),
        };
        let exempt = no_decay_paths(&model);
        let all: Vec<String> = named_params(&model).into_iter().map(|p| p.path).collect();
        let is_exempt = |p: &str| exempt.iter().any(|e| e == p);
        let has = |needle: &str| all.iter().any(|p| p.contains(needle));
        for p in &all {
            let by_name = p.ends_with(".bias")
                || p.ends_with("layernorm.gamma")
                || p == "vlm.model.norm.gamma"
                || p.starts_with("dynamics.ln.");
            assert_eq!(is_exempt(p), by_name, "{p}");
        }
        // Every kind the rule must tell apart is present in the tiny model.
        for needle in [
            ".lora.a",
            "self_attn.q_proj.base.bias",
            "input_layernorm.gamma",
            "post_attention_layernorm.gamma",
            "visual.blocks.0.norm1.gamma",
            "visual.merger.ln_q.gamma",
            "dynamics.ln.beta",
            "dynamics.mlp0.bias",
            "embed_tokens",
        ] {
            assert!(has(needle), "the tiny model has no {needle}");
        }
        // RMSNorm gains outside the text model's `*layernorm`/`norm` decay, as in the Trainer.
        assert!(decays("vlm.visual.blocks.0.norm1.gamma", false));
        assert!(decays("vlm.visual.merger.ln_q.gamma", false));
        assert!(!decays("vlm.model.norm.gamma", false));
        assert!(!decays("any.weight", true));
    }

    #[derive(Module, Debug)]
    struct Toy {
        proj: Linear,
        ln: burn::nn::LayerNorm,
    }

    /// With zero gradients AdamW's update is zero, so only the decay moves a weight: the
    /// projection's weight shrinks by `1 - lr * weight_decay`, its bias and the LayerNorm do not.
    #[test]
    fn only_the_decay_group_is_decayed() {
        let dev = Device::default().autodiff();
        let toy = Toy {
            proj: LinearConfig::new(3, 3).init(&dev),
            ln: burn::nn::LayerNormConfig::new(3).init(&dev),
        };
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0]], &dev);
        let loss = toy.proj.forward(toy.ln.forward(x)).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &toy);
        let cfg = OptimizerConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        let values = |t: &Toy| -> Vec<Vec<f32>> {
            vec![
                t.proj.weight.val().try_into_vec_as().unwrap(),
                t.proj
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .try_into_vec_as()
                    .unwrap(),
                t.ln.gamma.val().try_into_vec_as().unwrap(),
                t.ln.beta.as_ref().unwrap().val().try_into_vec_as().unwrap(),
            ]
        };
        let before = values(&toy);
        let after = values(&AdamW::new(&cfg, &toy).step(0.1, toy, grads));
        for (a, b) in after[0].iter().zip(&before[0]) {
            assert!((a - b * 0.95).abs() < 1e-6, "weight {b} -> {a}");
        }
        assert!(before[0].iter().any(|w| w.abs() > 1e-3));
        assert_eq!(after[1..], before[1..], "bias and LayerNorm must not decay");
    }
}
