//! Mixed precision: bf16 weights and activations, f32 master copies of what trains.
//!
//! With `Precision::Bf16` every frozen parameter (the base weights of LoRA training, the whole
//! model at inference) is stored in bf16, and activations flow in bf16 from the embeddings to the
//! last hidden state. Trainable parameters (LoRA factors, the dynamics head, everything in full
//! fine-tuning) stay f32: they are the master copies AdamW updates. A projection casts an f32 base
//! weight to the activations' dtype as it uses it, and runs a LoRA branch in f32 as PEFT does
//! (`nn::Proj::forward`); burn's `cast` is differentiable and casts the gradient back, so
//! gradients, AdamW moments and updates are f32.
//!
//! What stays f32 inside a bf16 forward pass, as transformers computes it: RMSNorm statistics,
//! the rotary embedding, attention's softmax, and everything a loss reads (logits, the embeddings
//! compared by the JEPA loss, NextLat's states). bf16 has f32's exponent range, so no loss
//! scaling is needed.

pub use crate::kernels::tensor::{cast, in_f32};
use anyhow::bail;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// The dtype of frozen weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => bail!("unknown precision {other:?}; expected \"f32\" or \"bf16\""),
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }

    /// Refuses a device that cannot hold this precision's dtype (e.g. a GPU without bf16).
    pub fn check_supported(self, device: &Device) -> anyhow::Result<()> {
        if !device.supports_dtype(self.dtype()) {
            bail!(
                "precision {} is not supported on device {device:?}",
                self.name()
            );
        }
        Ok(())
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// Casts the float parameters of `module` for which `select(require_grad)` holds to `dtype`.
/// Ids and `require_grad` are kept.
fn cast_params<M: Module>(module: M, dtype: DType, select: fn(bool) -> bool) -> M {
    struct CastParams(DType, fn(bool) -> bool);
    impl ModuleMapper for CastParams {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !(self.1)(param.is_require_grad()) {
                return param;
            }
            let dtype = self.0;
            param.map(|t| cast(t, dtype))
        }
    }
    module.map(&mut CastParams(dtype, select))
}

/// Casts every float parameter that does not require a gradient to `dtype`; trainable ones are
/// left as they are (f32 master copies).
pub fn cast_frozen<M: Module>(module: M, dtype: DType) -> M {
    cast_params(module, dtype, |trains| !trains)
}

/// Casts every float parameter to `dtype` (loading a model in a precision).
pub fn cast_all<M: Module>(module: M, dtype: DType) -> M {
    cast_params(module, dtype, |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_and_names_a_bad_one() {
        assert_eq!(Precision::parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(Precision::parse("BFloat16").unwrap(), Precision::Bf16);
        assert_eq!(Precision::parse("fp32").unwrap(), Precision::F32);
        let err = Precision::parse("fp8").unwrap_err().to_string();
        assert!(err.contains("\"fp8\"") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn cast_is_differentiable_and_returns_f32_gradients() {
        let device = burn::tensor::Device::flex().autodiff();
        let w = Tensor::<1>::from_floats([1.5, -2.0, 0.25], &device).require_grad();
        let y = cast(w.clone(), DType::BF16);
        assert_eq!(y.dtype(), DType::BF16);
        let loss = in_f32(y.powi_scalar(2)).sum();
        let grads = loss.backward();
        let g = w.grad(&grads).expect("gradient");
        assert_eq!(g.dtype(), DType::F32);
        let g: Vec<f32> = g.try_into_vec_as::<f32>().unwrap();
        assert_eq!(g, vec![3.0, -4.0, 0.5]);
    }
}
