//! The OpenAI chat-completions request as this server reads it, and its translation into the
//! project's chat messages and generation settings. Fields OpenAI clients send that cannot change
//! the answer (`user`, `logprobs`, `stream_options`, unknown ones, ...) are ignored; `stop` is
//! honoured; fields that would change the answer and are not supported (`n` > 1, `tools`,
//! `response_format`, penalties, `logit_bias`, ...) are refused with a 400 naming the field,
//! unless their value is the neutral one that changes nothing.

use super::ServeConfig;
use super::error::ApiError;
use super::images::admit_image;
use crate::data::chat::{Message, Part, Role};
use crate::infer::Sampling;
use crate::infer::stop::StopStrings;
use serde::Deserialize;
use serde_json::{Value, json};

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
    /// A string or a list of strings: the answer ends before the first occurrence of any.
    #[serde(default)]
    pub stop: Option<Stop>,
    // Fields that would change the answer and are not supported: refused unless neutral.
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub functions: Option<Value>,
    #[serde(default)]
    pub function_call: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub presence_penalty: Option<Value>,
    #[serde(default)]
    pub frequency_penalty: Option<Value>,
    #[serde(default)]
    pub logit_bias: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
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

impl ChatRequest {
    /// The fields this server does not support: name, value, and the values that change nothing
    /// and so may pass (OpenAI's documented defaults; `null` always passes too, and a tool choice
    /// of `"auto"` as no tools can be given).
    fn unsupported(&self) -> [(&'static str, &Option<Value>, Vec<Value>); 8] {
        let no_choice = || vec![json!("none"), json!("auto")];
        [
            ("tools", &self.tools, vec![json!([])]),
            ("tool_choice", &self.tool_choice, no_choice()),
            ("functions", &self.functions, vec![json!([])]),
            ("function_call", &self.function_call, no_choice()),
            (
                "response_format",
                &self.response_format,
                vec![json!({"type": "text"})],
            ),
            ("presence_penalty", &self.presence_penalty, vec![json!(0)]),
            ("frequency_penalty", &self.frequency_penalty, vec![json!(0)]),
            ("logit_bias", &self.logit_bias, vec![json!({})]),
        ]
    }
}

/// Refuses, naming it, the first unsupported field whose value is not neutral.
fn refuse_unsupported(req: &ChatRequest) -> Result<(), ApiError> {
    for (name, value, neutral) in req.unsupported() {
        let Some(value) = value.as_ref().filter(|v| !v.is_null()) else {
            continue;
        };
        // Numbers compare as numbers: 0 and 0.0 are both the neutral penalty.
        let same = |n: &Value| match (n.as_f64(), value.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => n == value,
        };
        if !neutral.iter().any(same) {
            let allowed: Vec<String> = neutral.iter().map(Value::to_string).collect();
            return Err(ApiError::invalid(
                Some(name.to_string()),
                format!(
                    "`{name}` is not supported by this server (it would change the answer): \
                     leave it out, or send null or {}",
                    allowed.join(" or ")
                ),
            ));
        }
    }
    Ok(())
}

/// A request turned into what the model worker needs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub chat: Vec<Message>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub stop: StopStrings,
    pub stream: bool,
}

/// Checks a request against the server's limits and converts it. Images are decoded far enough
/// to know their size (`admit_image`), so this does blocking work: call it off the async runtime.
pub fn prepare(req: ChatRequest, cfg: &ServeConfig) -> Result<Prepared, ApiError> {
    refuse_unsupported(&req)?;
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
    let stop = match req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(list)) => list,
    };
    let stop = StopStrings::new(stop)
        .map_err(|e| ApiError::invalid(Some("stop".into()), e.to_string()))?;
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
        stop,
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
