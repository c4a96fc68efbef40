//! The optimizer side of a step: AdamW (burn's) on the parameters that require gradients, the
//! learning rate of each step (linear warmup, cosine decay), and PyTorch-style global-norm
//! gradient clipping.
//!
//! The learning rate is a pure function of the step rather than burn's stateful schedulers, so a
//! resumed run needs nothing but the step number to continue the schedule exactly.
//! Clipping is done here rather than with burn's `GradientClippingConfig::Norm`, which clips each
//! tensor by its own norm; PyTorch's `clip_grad_norm_` (what the reference trainer uses) scales
//! every gradient by one factor computed from the norm over all of them.

use super::config::{OptimizerConfig, ScheduleConfig};
use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Tensor};

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
/// left untouched), with weight decay decoupled as in PyTorch's `AdamW`.
pub struct AdamW {
    inner: ModuleOptimizer,
}

impl AdamW {
    pub fn new(cfg: &OptimizerConfig) -> Self {
        let inner = AdamWConfig::new()
            .with_beta_1(cfg.betas[0] as f32)
            .with_beta_2(cfg.betas[1] as f32)
            .with_epsilon(cfg.eps as f32)
            .with_weight_decay(cfg.weight_decay as f32)
            .init();
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
        let mut a = AdamW::new(&cfg);
        let layer = a.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let mut b = AdamW::new(&cfg)
            .load_state(a.state_bytes().unwrap())
            .unwrap();
        let la = a.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let lb = b.step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let wa: Vec<f32> = la.weight.val().try_into_vec_as().unwrap();
        let wb: Vec<f32> = lb.weight.val().try_into_vec_as().unwrap();
        assert_eq!(wa, wb);
        // A fresh optimizer (no moments) takes a different step.
        let lc = AdamW::new(&cfg).step(1e-2, layer.clone(), grads_of(&layer, &dev));
        let wc: Vec<f32> = lc.weight.val().try_into_vec_as().unwrap();
        assert_ne!(wa, wc);
        assert!(AdamW::new(&cfg).load_state(vec![1, 2, 3]).is_err());
    }
}
