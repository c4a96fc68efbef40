//! Parameter ids derived from module paths.
//!
//! burn's optimizer keeps its state (AdamW moments) keyed by `ParamId`, and ids are random per
//! process. A resumed run rebuilds the model in a new process, so its parameters would get new
//! ids and the restored optimizer state would match none of them. Rather than saving an id map
//! next to the state, every parameter gets an id that is a hash of its module path
//! (`vlm.model.layers.0.self_attn.q_proj.lora.a`): the same model structure gives the same ids
//! in every process, and the optimizer state file stays burn's own format.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::Tensor;

/// 64-bit FNV-1a: stable across Rust releases and platforms, which `std`'s `DefaultHasher` is
/// not documented to be (the ids are written to disk).
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id a parameter at `path` receives.
pub fn id_of_path(path: &str) -> ParamId {
    ParamId::from(fnv1a(path))
}

struct PathIds {
    path: crate::model::names::ModulePath,
}

impl ModuleMapper for PathIds {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(id_of_path(&self.path.join()), value, mapper)
    }
}

/// Re-ids every float parameter of `module` from its module path (values and `require_grad`
/// unchanged).
pub fn ids_from_paths<M: Module>(module: M) -> M {
    module.map(&mut PathIds {
        path: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::named_params;
    use crate::model::{Qwen2_5Vl, Qwen2_5VlConfig, VlFamily};
    use std::collections::HashSet;
    use std::path::Path;

    #[test]
    fn ids_are_a_function_of_the_path_and_unique() {
        let cfg = Qwen2_5VlConfig::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/qwen2_5_vl_tiny/model/config.json"),
        )
        .unwrap();
        let dev = burn::tensor::Device::default();
        let a = ids_from_paths(Qwen2_5Vl::random(&cfg, 1, &dev).unwrap());
        let b = ids_from_paths(Qwen2_5Vl::random(&cfg, 2, &dev).unwrap());
        let (pa, pb) = (named_params(&a), named_params(&b));
        assert_eq!(pa.len(), pb.len());
        let mut seen = HashSet::new();
        for (x, y) in pa.iter().zip(&pb) {
            assert_eq!(x.path, y.path);
            assert_eq!(x.id, y.id, "{}", x.path);
            assert_eq!(x.id, id_of_path(&x.path));
            assert!(seen.insert(x.id), "duplicate id at {}", x.path);
        }
        // Values are untouched.
        let before: Vec<f32> = Qwen2_5Vl::random(&cfg, 1, &dev)
            .unwrap()
            .model
            .norm
            .gamma
            .val()
            .try_into_vec_as()
            .unwrap();
        let after: Vec<f32> = a.model.norm.gamma.val().try_into_vec_as().unwrap();
        assert_eq!(before, after);
    }
}
