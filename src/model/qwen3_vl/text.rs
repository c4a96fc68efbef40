//! The Qwen3 text decoder of Qwen3-VL: grouped-query attention whose queries and keys get a
//! per-head RMSNorm (`q_norm`, `k_norm`) before the interleaved M-RoPE, `head_dim` from the config,
//! no q/k/v biases (unless `attention_bias`), SwiGLU MLP, and DeepStack: the vision tower's
//! intermediate features added at the image-token positions after the first decoder layers.

use super::config::TextConfig;
use crate::kernels::attention::{Mask, attention};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::rope_apply::apply_rope;
use crate::kernels::tensor::index_tensor;
use crate::model::decoder::{KvCache, TextMlp, lm_logits, with_cached};
use crate::model::nn::{Proj, load_embedding, load_rms_norm};
use crate::model::precision::{cast, cast_all};
use crate::model::weights::WeightSource;
use burn::module::Module;
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::{DType, Device, Tensor};

#[derive(Module, Debug)]
pub struct TextAttention {
    pub q_proj: Proj,
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub o_proj: Proj,
    /// RMSNorm over each query / key head's `head_dim` features.
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
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
    /// `None` when the head is tied to `embed_tokens` (`tie_word_embeddings`, as in the 2B and 4B models).
    pub lm_head: Option<Proj>,
}

/// DeepStack input of a forward pass: flat `batch * seq` indices of the image tokens, and one
/// feature `[image tokens, d]` per layer that receives one (feature `k` after layer `k`).
pub struct DeepStack<'a> {
    pub positions: &'a [usize],
    pub features: &'a [Tensor<2>],
}

impl TextModel {
    pub fn load(
        cfg: &TextConfig,
        src: &mut dyn WeightSource,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        let (d, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let (eps, bias) = (cfg.rms_norm_eps, cfg.attention_bias);
        let embed_tokens = cast_all(
            load_embedding(src, "model.embed_tokens", cfg.vocab_size, d, device)?,
            dtype,
        );
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let a = format!("{p}.self_attn");
            let layer = DecoderLayer {
                input_layernorm: load_rms_norm(
                    src,
                    &format!("{p}.input_layernorm"),
                    d,
                    eps,
                    device,
                )?,
                self_attn: TextAttention {
                    q_proj: Proj::load(src, &format!("{a}.q_proj"), d, q, bias, device)?,
                    k_proj: Proj::load(src, &format!("{a}.k_proj"), d, kv, bias, device)?,
                    v_proj: Proj::load(src, &format!("{a}.v_proj"), d, kv, bias, device)?,
                    o_proj: Proj::load(src, &format!("{a}.o_proj"), q, d, bias, device)?,
                    q_norm: load_rms_norm(src, &format!("{a}.q_norm"), hd, eps, device)?,
                    k_norm: load_rms_norm(src, &format!("{a}.k_norm"), hd, eps, device)?,
                    num_heads: cfg.num_attention_heads,
                    num_kv_heads: cfg.num_key_value_heads,
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
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(cast_all(
                Proj::load(src, "lm_head", d, cfg.vocab_size, false, device)?,
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
    /// `(cos, sin)`: `[batch, 1, seq, head_dim]` each; `mask`: which of the `past + seq` keys each query sees.
    /// Returns the final-norm hidden states and, if `all_hidden`, transformers 5's `hidden_states`:
    /// the embeddings, each layer's output before its DeepStack addition (layers `0..L-1`), and the
    /// final norm of the last layer's output (its DeepStack feature, if any, included).
    pub fn forward(
        &self,
        x: Tensor<3>,
        (cos, sin): (Tensor<4>, Tensor<4>),
        mask: &Mask,
        mut cache: Option<&mut KvCache>,
        deepstack: Option<DeepStack<'_>>,
        all_hidden: bool,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let mut hidden = Vec::new();
        if all_hidden {
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
            if all_hidden && l < last {
                hidden.push(x.clone());
            }
            if let Some(ds) = &deepstack
                && let Some(feature) = ds.features.get(l)
            {
                x = add_at_positions(x, ds.positions, feature.clone());
            }
        }
        let out = rms_norm(&self.norm, x);
        if all_hidden {
            hidden.push(out.clone());
        }
        (out, hidden)
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
        // Normed per head, rotated in the projections' `[b, s, heads, hd]` layout (angles broadcast
        // over heads), then viewed as `[b, heads, s, hd]`.
        let (cos, sin) = (cos.reshape([b, s, 1, hd]), sin.reshape([b, s, 1, hd]));
        let rope = |t: Tensor<4>| apply_rope(t, cos.clone(), sin.clone()).swap_dims(1, 2);
        let q = self.q_proj.forward(x.clone()).reshape([b, s, h, hd]);
        let k = self.k_proj.forward(x.clone()).reshape([b, s, kvh, hd]);
        let q = rope(rms_norm(&self.q_norm, q));
        let k = rope(rms_norm(&self.k_norm, k));
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
