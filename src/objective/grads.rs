//! Gradients under the names other tools use: PEFT keys for LoRA factors, the authors'
//! `dynamics_head.*` keys for the head, hub names for full fine-tuning; PyTorch layouts.

use super::dynamics::key_of_path;
use super::pearl::PearlModel;
use crate::model::checkpoint::pytorch_layout;
use crate::model::names::{hub_name, named_params, peft_name};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// `(name, PyTorch shape, values)` of every parameter that received a gradient.
pub fn named_gradients(
    model: &PearlModel,
    grads: &GradientsParams,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for p in named_params(model) {
        let name = if let Some(path) = p.path.strip_prefix("vlm.") {
            peft_name(path).or_else(|| hub_name(path))
        } else if let Some(path) = p.path.strip_prefix("dynamics.") {
            key_of_path(path)
        } else {
            None
        };
        let Some(name) = name else { continue };
        let values = match p.dims.len() {
            1 => grads.get::<1>(p.id).map(to_vec),
            2 => grads.get::<2>(p.id).map(to_vec),
            _ => None,
        };
        let Some(values) = values else { continue };
        let (shape, data) = pytorch_layout(&name, &p.dims, &values, model.vlm.patch_kernel());
        out.push((name, shape, data));
    }
    out
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap_or_default()
}
