//! Pieces of the Qwen text decoders that every family shares: the SwiGLU MLP, the key/value
//! cache of incremental decoding, and vocabulary growth for added tokens.

use crate::kernels::swiglu::swiglu;
use crate::model::nn::Proj;
use crate::model::precision::{cast, in_f32};
use crate::model::weights::WeightSource;
use burn::module::{Module, Param};
use burn::nn::Embedding;
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

/// Keys and values `[batch, kv_heads, len, hd]` for attention: with a cache slot, the cached ones
/// followed by the new `k`, `v` (which the slot then holds); without one, `k`, `v` themselves.
pub fn with_cached(
    slot: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    k: Tensor<4>,
    v: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let Some(slot) = slot else {
        return (k, v);
    };
    let (k, v) = match slot.take() {
        None => (k, v),
        Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}

/// Logits `[.., vocab]` of final hidden states `[.., d]` through `lm_head`, or through the
/// embedding's transpose when the head is tied; in f32 whatever the compute dtype (losses and
/// sampling read them).
pub fn lm_logits<const D: usize>(
    embed_tokens: &Embedding,
    lm_head: Option<&Proj>,
    hidden: Tensor<D>,
) -> Tensor<D> {
    in_f32(match lm_head {
        Some(head) => head.forward(hidden),
        None => {
            // Tied head: decoding rows take the matrix-vector kernel.
            let w = embed_tokens.weight.val();
            crate::kernels::matvec::linear(cast(hidden, w.dtype()), w.transpose(), None)
        }
    })
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

/// Grows the embedding `[V, d]` (and an untied head `[d, V]`) to at least `rows` rows for added
/// tokens (Pearl's predictor tokens); returns how many rows were added. New rows start at the
/// mean of the existing ones, as transformers' `resize_token_embeddings(mean_resizing=True)`
/// centres them, so the new tokens do not start as outliers. Released checkpoints usually have
/// spare rows, so this only runs when a model truly lacks them.
pub fn grow_vocab(embed_tokens: &mut Embedding, lm_head: Option<&mut Proj>, rows: usize) -> usize {
    let emb = embed_tokens.weight.val(); // [V, d]
    let [old, d] = emb.dims();
    if rows <= old {
        return 0;
    }
    let extra = rows - old;
    let mean = emb.clone().mean_dim(0); // [1, d]
    embed_tokens.weight = Param::from_tensor(Tensor::cat(vec![emb, mean.expand([extra, d])], 0));
    if let Some(head) = lm_head {
        let w = head.base.weight.val(); // [d, V]
        let mean = w.clone().mean_dim(1); // [d, 1]
        let grown = Tensor::cat(vec![w, mean.expand([d, extra])], 1);
        head.base.weight = Param::from_tensor(grown);
        if let Some(b) = head.base.bias.as_mut() {
            let v = b.val();
            let m = v.clone().mean().expand([extra]);
            *b = Param::from_tensor(Tensor::cat(vec![v, m], 0));
        }
    }
    extra
}
