//! The Qwen text decoder both families share: grouped-query attention with M-RoPE (Qwen3 adds a
//! per-head RMSNorm of queries and keys before the rotary), RMSNorm, the SwiGLU MLP, final norm
//! and the language-model head; DeepStack (Qwen3-VL's vision features added at the image tokens
//! after the first layers); the key/value cache of incremental decoding; vocabulary growth for
//! added tokens. What differs between families is in [`DecoderDims`], read from each config.

use crate::kernels::attention::{Mask, attention};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::rope_apply::apply_rope;
use crate::kernels::swiglu::swiglu;
use crate::kernels::tensor::index_tensor;
use crate::model::nn::{Proj, load_embedding, load_rms_norm};
use crate::model::precision::{cast, cast_all, in_f32};
use crate::model::weights::WeightSource;
use burn::module::{Module, Param};
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// The shapes and switches of a text decoder, as a family's config gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderDims {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Per-head width (Qwen2: hidden / heads; Qwen3: from the config).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Biases of `q_proj`, `k_proj`, `v_proj` (Qwen2: always; Qwen3: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias of `o_proj` (Qwen3's `attention_bias`).
    pub o_bias: bool,
    /// Per-head RMSNorm `q_norm` / `k_norm` before the rotary (Qwen3).
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
}

impl DecoderDims {
    /// Parameter count of the decoder these dims build (embeddings counted once when tied).
    pub fn num_params(&self) -> u64 {
        let (d, i, hd) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.head_dim as u64,
        );
        let (q, kv) = (self.num_heads as u64 * hd, self.num_kv_heads as u64 * hd);
        let bias = |on: bool, n: u64| if on { n } else { 0 };
        let attn = d * q
            + 2 * d * kv
            + q * d
            + bias(self.qkv_bias, q + 2 * kv)
            + bias(self.o_bias, d)
            + bias(self.qk_norm, 2 * hd);
        let layer = attn + 3 * d * i + 2 * d;
        let embed = self.vocab_size as u64 * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_layers as u64 * layer + d + head
    }
}

#[derive(Module, Debug)]
pub struct TextAttention {
    pub q_proj: Proj,
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub o_proj: Proj,
    /// RMSNorm over each query / key head's `head_dim` features (Qwen3; `None` in Qwen2).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: TextAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: TextMlp,
}

#[derive(Module, Debug)]
pub struct TextModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens` (`tie_word_embeddings`: Qwen2.5-VL-3B,
    /// Qwen3-VL-2B/4B).
    pub lm_head: Option<Proj>,
}

/// DeepStack input of a forward pass (Qwen3-VL): flat `batch * seq` indices of the image tokens,
/// and one feature `[image tokens, d]` per layer that receives one (feature `k` after layer `k`).
pub struct DeepStack<'a> {
    pub positions: &'a [usize],
    pub features: &'a [Tensor<2>],
}

/// Which of transformers' `hidden_states` conventions a forward pass records. Both have `L + 1`
/// entries, the embeddings first; they differ only where DeepStack adds features and at the end.
/// Without DeepStack and for Qwen2.5-VL (whose 4.x code also appends the final norm's output)
/// only the last entry can differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenStates {
    /// transformers 5 (the fixtures): entry `l` (`0 < l < L`) is layer `l-1`'s output before its
    /// DeepStack feature is added; the last entry is after the final norm.
    #[default]
    #[serde(rename = "transformers5")]
    Transformers5,
    /// transformers 4.57 (the authors' Qwen3-VL runs): entry `l` is layer `l-1`'s output with its
    /// DeepStack feature added; the last entry is the last layer's output before the final norm.
    #[serde(rename = "transformers4.57")]
    Transformers4_57,
}

impl std::str::FromStr for HiddenStates {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "transformers5" => Ok(Self::Transformers5),
            "transformers4.57" => Ok(Self::Transformers4_57),
            other => anyhow::bail!(
                "unknown hidden_states convention {other:?}; expected \"transformers5\" or \"transformers4.57\""
            ),
        }
    }
}

/// What the decoder layers return.
#[derive(Debug)]
pub struct DecoderOutput {
    /// Final-norm hidden states `[batch, seq, d]` (what the head reads).
    pub last_hidden: Tensor<3>,
    /// The last layer's output `[batch, seq, d]` (its DeepStack feature, if any, added), before
    /// the final norm.
    pub pre_norm: Tensor<3>,
    /// transformers' `hidden_states` in the convention asked for (empty when none was).
    pub hidden_states: Vec<Tensor<3>>,
}

impl TextModel {
    pub fn load(
        dims: &DecoderDims,
        src: &mut dyn WeightSource,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        let (d, i, hd) = (dims.hidden_size, dims.intermediate_size, dims.head_dim);
        let (q, kv) = (dims.num_heads * hd, dims.num_kv_heads * hd);
        let eps = dims.rms_norm_eps;
        let embed_tokens = cast_all(
            load_embedding(src, "model.embed_tokens", dims.vocab_size, d, device)?,
            dtype,
        );
        let mut layers = Vec::with_capacity(dims.num_layers);
        for l in 0..dims.num_layers {
            let p = format!("model.layers.{l}");
            let a = format!("{p}.self_attn");
            let qk_norm = |name: &str, src: &mut dyn WeightSource| -> anyhow::Result<_> {
                dims.qk_norm
                    .then(|| load_rms_norm(src, &format!("{a}.{name}"), hd, eps, device))
                    .transpose()
            };
            let layer = DecoderLayer {
                input_layernorm: load_rms_norm(
                    src,
                    &format!("{p}.input_layernorm"),
                    d,
                    eps,
                    device,
                )?,
                self_attn: TextAttention {
                    q_proj: Proj::load(src, &format!("{a}.q_proj"), d, q, dims.qkv_bias, device)?,
                    k_proj: Proj::load(src, &format!("{a}.k_proj"), d, kv, dims.qkv_bias, device)?,
                    v_proj: Proj::load(src, &format!("{a}.v_proj"), d, kv, dims.qkv_bias, device)?,
                    o_proj: Proj::load(src, &format!("{a}.o_proj"), q, d, dims.o_bias, device)?,
                    q_norm: qk_norm("q_norm", src)?,
                    k_norm: qk_norm("k_norm", src)?,
                    num_heads: dims.num_heads,
                    num_kv_heads: dims.num_kv_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: load_rms_norm(
                    src,
                    &format!("{p}.post_attention_layernorm"),
                    d,
                    eps,
                    device,
                )?,
                mlp: TextMlp::load(src, &format!("{p}.mlp"), d, i, device)?,
            };
            // Stored in the load precision layer by layer: the f32 copy of one layer at a time.
            layers.push(cast_all(layer, dtype));
        }
        let norm = cast_all(load_rms_norm(src, "model.norm", d, eps, device)?, dtype);
        let lm_head = if dims.tie_word_embeddings {
            None
        } else {
            Some(cast_all(
                Proj::load(src, "lm_head", d, dims.vocab_size, false, device)?,
                dtype,
            ))
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// Runs the decoder layers over input embeddings `[batch, seq, d]`.
    /// `(cos, sin)`: `[batch, 1, seq, head_dim]` each; `mask`: which of the `past + seq` keys each
    /// query sees; `deepstack`: features added after the first layers; `record`: which
    /// `hidden_states` convention to keep, if any.
    pub fn forward(
        &self,
        x: Tensor<3>,
        (cos, sin): (Tensor<4>, Tensor<4>),
        mask: &Mask,
        mut cache: Option<&mut KvCache>,
        deepstack: Option<DeepStack<'_>>,
        record: Option<HiddenStates>,
    ) -> DecoderOutput {
        let mut hidden = Vec::new();
        if record.is_some() {
            hidden.push(x.clone());
        }
        let mut x = x;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            let h = layer.self_attn.forward(
                rms_norm(&layer.input_layernorm, x.clone()),
                cos.clone(),
                sin.clone(),
                mask,
                slot,
            );
            x = x + h;
            let h = rms_norm(&layer.post_attention_layernorm, x.clone());
            x = x + layer.mlp.forward(h);
            if record == Some(HiddenStates::Transformers5) && l < last {
                hidden.push(x.clone());
            }
            if let Some(ds) = &deepstack
                && let Some(feature) = ds.features.get(l)
            {
                x = add_at_positions(x, ds.positions, feature.clone());
            }
            if record == Some(HiddenStates::Transformers4_57) {
                hidden.push(x.clone());
            }
        }
        let out = rms_norm(&self.norm, x.clone());
        if record == Some(HiddenStates::Transformers5) {
            hidden.push(out.clone());
        }
        DecoderOutput {
            last_hidden: out,
            pre_norm: x,
            hidden_states: hidden,
        }
    }

    /// Logits `[.., vocab]` of final hidden states `[.., d]`, in f32 whatever the compute dtype
    /// (losses and sampling read them).
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        lm_logits(&self.embed_tokens, self.lm_head.as_ref(), hidden)
    }
}

/// `x: [batch, seq, d]` plus `feature: [positions, d]` at the flat `batch * seq` `positions`
/// (transformers' `hidden_states[visual_pos_masks] += visual_embeds`), as a gather of
/// `[0; feature]` so the gradient reaches both.
fn add_at_positions(x: Tensor<3>, positions: &[usize], feature: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let device = x.device();
    let mut index = vec![0usize; b * s];
    for (k, &p) in positions.iter().enumerate() {
        index[p] = k + 1;
    }
    let feature = cast(feature, x.dtype());
    let zero = cast(Tensor::<2>::zeros([1, d], &device), x.dtype());
    let spread = Tensor::cat(vec![zero, feature], 0).select(0, index_tensor(&index, &device));
    x + spread.reshape([b, s, d])
}

impl TextAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: &Mask,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // Normed per head (Qwen3), rotated in the projections' `[b, s, heads, hd]` layout (angles
        // broadcast over heads), then viewed as `[b, heads, s, hd]`.
        let (cos, sin) = (cos.reshape([b, s, 1, hd]), sin.reshape([b, s, 1, hd]));
        let rope = |t: Tensor<4>, norm: &Option<RmsNorm>| {
            let t = match norm {
                Some(n) => rms_norm(n, t),
                None => t,
            };
            apply_rope(t, cos.clone(), sin.clone()).swap_dims(1, 2)
        };
        let q = rope(
            self.q_proj.forward(x.clone()).reshape([b, s, h, hd]),
            &self.q_norm,
        );
        let k = rope(
            self.k_proj.forward(x.clone()).reshape([b, s, kvh, hd]),
            &self.k_norm,
        );
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, kvh, hd])
            .swap_dims(1, 2);
        let (k, v) = with_cached(cache, k, v);
        // Grouped-query attention: each key/value head serves its group of query heads.
        let out = attention(q, k, v, mask);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, h * hd]))
    }
}

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
fn with_cached(
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
fn lm_logits<const D: usize>(
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
