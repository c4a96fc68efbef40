//! The OpenAI chat-completions request as this server reads it, and its translation into the
//! project's chat messages and generation settings. Fields OpenAI clients send that do not
//! apply here (`user`, `logprobs`, ...) are ignored; fields that would change the answer and are
//! not supported (`n` > 1) are refused.

use super::ServeConfig;
use super::error::ApiError;
use super::images::admit_image;
use crate::data::chat::{Message, Part, Role};
use crate::infer::Sampling;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Not in OpenAI's API; vLLM and others accept it.
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub n: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

/// `{"url": ..., "detail": ...}` as OpenAI specifies, or a bare string as some clients send.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Object { url: String },
    Plain(String),
}

/// A request turned into what the model worker needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub chat: Vec<Message>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub stream: bool,
}

/// Checks a request against the server's limits and converts it. Images are decoded far enough
/// to know their size (`admit_image`), so this does blocking work: call it off the async runtime.
pub fn prepare(req: ChatRequest, cfg: &ServeConfig) -> Result<Prepared, ApiError> {
    if let Some(n) = req.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(
            Some("n".into()),
            format!("n = {n} is not supported: this server returns one choice"),
        ));
    }
    let (param, requested) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let max_new_tokens = requested.unwrap_or(cfg.max_new_tokens);
    if max_new_tokens == 0 || max_new_tokens > cfg.max_new_tokens {
        return Err(ApiError::invalid(
            Some(param.into()),
            format!(
                "{param} = {max_new_tokens} is out of range: this server generates 1 to {} tokens",
                cfg.max_new_tokens
            ),
        ));
    }
    // Greedy unless a temperature is given: the protocol the model is evaluated with, and what
    // the model directories' generation_config.json ask for (`do_sample: false`).
    let sampling = Sampling {
        temperature: req.temperature.unwrap_or(0.0),
        top_k: req.top_k,
        top_p: req.top_p,
        seed: req.seed.unwrap_or(0),
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(None, e.to_string()))?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages".into()),
            "messages must not be empty",
        ));
    }
    let mut images = 0;
    let mut chat = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    Some(format!("messages[{i}].role")),
                    format!("role {other:?} is not supported (system, user, assistant)"),
                ));
            }
        };
        let parts = match m.content {
            None => vec![],
            Some(Content::Text(text)) => vec![ContentPart::Text { text }],
            Some(Content::Parts(parts)) => parts,
        }
        .into_iter()
        .map(|p| convert_part(p, i, &mut images, cfg))
        .collect::<Result<Vec<_>, _>>()?;
        chat.push(Message::new(role, parts));
    }
    Ok(Prepared {
        chat,
        max_new_tokens,
        sampling,
        stream: req.stream,
    })
}

fn convert_part(
    part: ContentPart,
    message: usize,
    images: &mut usize,
    cfg: &ServeConfig,
) -> Result<Part, ApiError> {
    match part {
        ContentPart::Text { text } => Ok(Part::Text { text }),
        ContentPart::ImageUrl { image_url } => {
            let url = match image_url {
                ImageUrl::Object { url } | ImageUrl::Plain(url) => url,
            };
            *images += 1;
            let param = format!("messages[{message}].content");
            if *images > cfg.max_images {
                return Err(ApiError::invalid(
                    Some(param),
                    format!(
                        "too many images: this server accepts {} per request",
                        cfg.max_images
                    ),
                ));
            }
            let image = admit_image(&url, cfg).map_err(|e| ApiError {
                param: Some(param),
                ..e
            })?;
            Ok(Part::Image { image })
        }
    }
}
