//! Which parameters train. LoRA: only the adapters (and the dynamics head); full fine-tuning:
//! everything. Frozen parameters stop requiring gradients, so backward never computes their
//! gradients and the optimizer never sees them.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

struct Freeze<F: Fn(&str) -> bool> {
    trainable: F,
    path: crate::model::names::ModulePath,
}

impl<F: Fn(&str) -> bool> ModuleMapper for Freeze<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let keep = (self.trainable)(&self.path.join());
        param.set_require_grad(keep)
    }
}

/// Sets `require_grad` on every float parameter: true where `trainable(module path)` holds.
pub fn set_trainable<M: Module>(module: M, trainable: impl Fn(&str) -> bool) -> M {
    module.map(&mut Freeze {
        trainable,
        path: Default::default(),
    })
}

/// LoRA training: adapters and the dynamics head train, every base weight is frozen.
pub fn lora_only<M: Module>(module: M) -> M {
    set_trainable(module, |p| {
        p.contains(".lora.") || p.starts_with("dynamics")
    })
}
