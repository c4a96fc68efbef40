//! The chat format every part of pearl speaks: the message list transformers' chat templates take
//! (`role`, `content` = list of typed parts), with images referenced by path or `data:` URI.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    Image { image: String },
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Self {
        Self { role, content }
    }
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![Part::Text { text: text.into() }],
        }
    }
    /// Image references of this message, in order.
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.content.iter().filter_map(|p| match p {
            Part::Image { image } => Some(image.as_str()),
            _ => None,
        })
    }
    /// All text parts joined (images skipped).
    pub fn joined_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Where an image reference points, resolved against the directory of the file that named it.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Path(PathBuf),
    /// The decoded payload of a `data:` URI.
    Inline(Vec<u8>),
}

impl ImageSource {
    /// Resolves `reference` (relative path, absolute path or `data:<mime>;base64,<payload>`).
    pub fn resolve(reference: &str, base_dir: &Path) -> anyhow::Result<ImageSource> {
        use base64::Engine;
        if let Some(rest) = reference.strip_prefix("data:") {
            let (_, payload) = rest.split_once(";base64,").ok_or_else(|| {
                anyhow::anyhow!(
                    "data URI is not base64-encoded: {}",
                    truncate(reference, 60)
                )
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload.trim())
                .map_err(|e| anyhow::anyhow!("data URI has invalid base64: {e}"))?;
            return Ok(ImageSource::Inline(bytes));
        }
        let p = Path::new(reference);
        Ok(ImageSource::Path(if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }))
    }

    pub fn describe(&self) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Inline(b) => format!("<inline image, {} bytes>", b.len()),
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
