//! The Qwen2 text decoder of Qwen2.5-VL: grouped-query attention with q/k/v biases and M-RoPE,
//! RMSNorm, SwiGLU MLP, final norm and the language-model head (tied to the embeddings or not).

use super::config::TextConfig;
use crate::kernels::attention::{Mask, attention};
use crate::kernels::rms_norm::rms_norm;
use crate::kernels::rope_apply::apply_rope;
pub use crate::model::decoder::{KvCache, TextMlp};
use crate::model::decoder::{lm_logits, with_cached};
use crate::model::nn::{Proj, load_embedding, load_rms_norm};
use crate::model::precision::cast_all;
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
    pub num_heads: usize,
    pub num_kv_heads: usize,
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
    /// `None` when the head is tied to `embed_tokens` (`tie_word_embeddings`, as in the 3B model).
    pub lm_head: Option<Proj>,
}

impl TextModel {
    pub fn load(
        cfg: &TextConfig,
        src: &mut dyn WeightSource,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        let (d, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads * hd;
        let eps = cfg.rms_norm_eps;
        let embed_tokens = cast_all(
            load_embedding(src, "model.embed_tokens", cfg.vocab_size, d, device)?,
            dtype,
        );
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let layer = DecoderLayer {
                input_layernorm: load_rms_norm(
                    src,
                    &format!("{p}.input_layernorm"),
                    d,
                    eps,
                    device,
                )?,
                self_attn: TextAttention {
                    q_proj: Proj::load(src, &format!("{p}.self_attn.q_proj"), d, d, true, device)?,
                    k_proj: Proj::load(src, &format!("{p}.self_attn.k_proj"), d, kv, true, device)?,
                    v_proj: Proj::load(src, &format!("{p}.self_attn.v_proj"), d, kv, true, device)?,
                    o_proj: Proj::load(src, &format!("{p}.self_attn.o_proj"), d, d, false, device)?,
                    num_heads: cfg.num_attention_heads,
                    num_kv_heads: cfg.num_key_value_heads,
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
    /// `cos`/`sin`: `[batch, 1, seq, hd]`; `mask`: which of the `past + seq` keys each query sees.
    /// Returns the final-norm hidden states and, if `all_hidden`, every layer's input plus the
    /// final output (transformers' `hidden_states`: index 0 = embeddings, last = after the norm).
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: &Mask,
        mut cache: Option<&mut KvCache>,
        all_hidden: bool,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let mut hidden = Vec::new();
        let mut x = x;
        for (l, layer) in self.layers.iter().enumerate() {
            if all_hidden {
                hidden.push(x.clone());
            }
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

impl TextAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: &Mask,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let (h, kvh) = (self.num_heads, self.num_kv_heads);
        let hd = d / h;
        // Rotated in the projections' `[b, s, heads, hd]` layout (angles broadcast over heads),
        // then viewed as `[b, heads, s, hd]`.
        let (cos, sin) = (cos.reshape([b, s, 1, hd]), sin.reshape([b, s, 1, hd]));
        let rope = |t: Tensor<4>| apply_rope(t, cos.clone(), sin.clone()).swap_dims(1, 2);
        let q = rope(self.q_proj.forward(x.clone()).reshape([b, s, h, hd]));
        let k = rope(self.k_proj.forward(x.clone()).reshape([b, s, kvh, hd]));
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, kvh, hd])
            .swap_dims(1, 2);
        let (k, v) = with_cached(cache, k, v);
        // Grouped-query attention: each key/value head serves its group of query heads.
        let out = attention(q, k, v, mask);
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}
