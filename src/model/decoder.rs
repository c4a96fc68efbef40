//! Pieces of the Qwen text decoders that every family shares: the SwiGLU MLP and the key/value
//! cache of incremental decoding.

use crate::kernels::swiglu::swiglu;
use crate::model::nn::Proj;
use crate::model::weights::WeightSource;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
/// SwiGLU MLP of a decoder layer.
pub struct TextMlp {
    pub gate_proj: Proj,
    pub up_proj: Proj,
    pub down_proj: Proj,
}

impl TextMlp {
    /// `{prefix}.gate_proj|up_proj|down_proj` without biases: `d -> i -> d`.
    pub fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        d: usize,
        i: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            gate_proj: Proj::load(src, &format!("{prefix}.gate_proj"), d, i, false, device)?,
            up_proj: Proj::load(src, &format!("{prefix}.up_proj"), d, i, false, device)?,
            down_proj: Proj::load(src, &format!("{prefix}.down_proj"), i, d, false, device)?,
        })
    }

    /// `down(silu(gate(x)) * up(x))`, `x: [.., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.down_proj.forward(swiglu(
            self.gate_proj.forward(x.clone()),
            self.up_proj.forward(x),
        ))
    }
}

/// Keys and values of earlier positions, per layer, for incremental decoding: `[batch, kv_heads, len, hd]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
