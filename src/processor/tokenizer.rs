//! The model's `tokenizer.json` (via the `tokenizers` crate), the special tokens the processor
//! needs by name, the pad id, and the tokens Pearl adds to the vocabulary.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::Path;
use tokenizers::{AddedToken, Tokenizer};

pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const VIDEO_PAD: &str = "<|video_pad|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Number of `<|predictor_k|>` tokens Pearl adds (K used in training is at most this).
pub const MAX_PREDICTOR_TOKENS: usize = 10;

/// `<|predictor_k|>`, k = 1..=10: the tokens the input view appends so that its last hidden
/// state predicts the trajectory's.
pub fn predictor_token(k: usize) -> String {
    format!("<|predictor_{k}|>")
}

/// All tokens Pearl adds, in the order (and hence id order) the reference implementation adds them.
pub fn pearl_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = (1..=MAX_PREDICTOR_TOKENS).map(predictor_token).collect();
    for t in [
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|perception|>",
    ] {
        tokens.push(t.to_string());
    }
    tokens
}

/// The tokens of the LVR-style reconstruction baseline: the delimiters of the latent span and
/// the placeholder that holds one latent slot (its embedding is replaced, never trained as text).
pub const LVR_START: &str = "<|lvr_start|>";
pub const LVR_END: &str = "<|lvr_end|>";
pub const LVR_LATENT: &str = "<|lvr_latent|>";

/// All tokens the LVR baseline adds, in id order.
pub fn lvr_tokens() -> [&'static str; 3] {
    [LVR_START, LVR_END, LVR_LATENT]
}

/// Ids of the special tokens the processor and the model look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub image_pad: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub im_start: u32,
    pub im_end: u32,
    pub end_of_text: u32,
    /// Absent from some tokenizers; only needed to refuse video.
    pub video_pad: Option<u32>,
}

pub struct QwenTokenizer {
    inner: Tokenizer,
    special: SpecialIds,
    pad_id: u32,
}

impl QwenTokenizer {
    /// Loads `tokenizer.json` from a model directory; the pad token comes from
    /// `tokenizer_config.json` (`pad_token`), else `generation_config.json` (`pad_token_id`),
    /// else `<|endoftext|>`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| match path.exists() {
                true => format!("{} is not a valid tokenizer.json", path.display()),
                false => format!("missing tokenizer file {}", path.display()),
            })?;
        let pad = configured_pad(dir)?;
        Self::new(inner, pad).with_context(|| format!("unusable tokenizer {}", path.display()))
    }

    /// Wraps a loaded tokenizer; `pad` is the pad token's text or id if configured.
    pub fn new(inner: Tokenizer, pad: Option<PadToken>) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| anyhow!("the tokenizer has no {t} token"))
        };
        let special = SpecialIds {
            image_pad: id(IMAGE_PAD)?,
            vision_start: id(VISION_START)?,
            vision_end: id(VISION_END)?,
            im_start: id(IM_START)?,
            im_end: id(IM_END)?,
            end_of_text: id(END_OF_TEXT)?,
            video_pad: inner.token_to_id(VIDEO_PAD),
        };
        let pad_id = match pad {
            Some(PadToken::Text(t)) => id(&t).context("pad_token of tokenizer_config.json")?,
            Some(PadToken::Id(i)) => i,
            None => special.end_of_text,
        };
        Ok(Self {
            inner,
            special,
            pad_id,
        })
    }

    pub fn special(&self) -> SpecialIds {
        self.special
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of a token given by its text (special or ordinary vocabulary entry).
    pub fn token_id(&self, token: &str) -> Result<u32> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| anyhow!("the tokenizer has no token {token:?}"))
    }

    /// Vocabulary size including added tokens: the embedding rows the ids need.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Adds Pearl's 14 special tokens after the last id, skipping any already present (so
    /// calling it twice changes nothing), and returns their ids in `pearl_tokens()` order.
    pub fn add_pearl_tokens(&mut self) -> Vec<u32> {
        let tokens = pearl_tokens();
        let missing: Vec<AddedToken> = tokens
            .iter()
            .filter(|t| self.inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        self.inner.add_special_tokens(&missing);
        tokens
            .iter()
            .filter_map(|t| self.inner.token_to_id(t))
            .collect()
    }

    /// Adds the LVR baseline's 3 special tokens after the last id, skipping any already present,
    /// and returns their ids in `lvr_tokens()` order. Independent of Pearl's tokens: a tokenizer
    /// may carry both.
    pub fn add_lvr_tokens(&mut self) -> Vec<u32> {
        let missing: Vec<AddedToken> = lvr_tokens()
            .iter()
            .filter(|t| self.inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        self.inner.add_special_tokens(&missing);
        lvr_tokens()
            .iter()
            .filter_map(|t| self.inner.token_to_id(t))
            .collect()
    }

    /// Token ids of `text`, special tokens in it recognized, none added around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("cannot decode token ids: {e}"))
    }

    /// The underlying `tokenizers` tokenizer, for what this wrapper does not cover.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// A pad token as configured: by text (tokenizer_config) or by id (generation_config).
#[derive(Debug, Clone, PartialEq)]
pub enum PadToken {
    Text(String),
    Id(u32),
}

/// Reads the pad token from the model directory's configs, if any says one.
fn configured_pad(dir: &Path) -> Result<Option<PadToken>> {
    if let Some(cfg) = read_json_if_present(&dir.join("tokenizer_config.json"))?
        && let Some(text) = token_text(cfg.get("pad_token"))
    {
        return Ok(Some(PadToken::Text(text)));
    }
    if let Some(cfg) = read_json_if_present(&dir.join("generation_config.json"))?
        && let Some(id) = cfg.get("pad_token_id").and_then(Value::as_u64)
    {
        let id =
            u32::try_from(id).context("pad_token_id of generation_config.json is out of range")?;
        return Ok(Some(PadToken::Id(id)));
    }
    Ok(None)
}

/// A token as tokenizer_config.json writes it: a string, or an AddedToken object with `content`.
pub(crate) fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Parses a JSON file that may legitimately be absent; a present but broken file is an error.
pub(crate) fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(v) => Ok(Some(v)),
        Err(e) => bail!("{} is not valid JSON: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearl_token_list_is_in_reference_order() {
        let t = pearl_tokens();
        assert_eq!(t.len(), 14);
        assert_eq!(t[0], "<|predictor_1|>");
        assert_eq!(t[9], "<|predictor_10|>");
        assert_eq!(
            &t[10..],
            [
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|perception|>"
            ]
        );
    }

    #[test]
    fn token_text_accepts_both_spellings() {
        let v: Value =
            serde_json::json!({"a": "<x>", "b": {"content": "<y>", "special": true}, "c": null});
        assert_eq!(token_text(v.get("a")), Some("<x>".into()));
        assert_eq!(token_text(v.get("b")), Some("<y>".into()));
        assert_eq!(token_text(v.get("c")), None);
        assert_eq!(token_text(v.get("d")), None);
    }
}
