//! Multiple-choice evaluation items, shared by the synthetic world (which writes them) and the
//! evaluation harness (which reads every benchmark into them).

use serde::{Deserialize, Serialize};

/// One MCQ item. JSONL, one per line:
/// `{"id":"vstar-12","image":"imgs/12.png","question":"What is the color of the cup?",
///   "options":["red","blue","green","white"],"answer":"B","category":"attribute"}`
/// `image` is a path relative to the JSONL file, an absolute path or a `data:` URI; `images`
/// may hold several (BLINK's multi-image tasks); `answer` is the letter of the correct option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McqItem {
    pub id: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        alias = "image",
        deserialize_with = "one_or_many"
    )]
    pub images: Vec<String>,
    pub question: String,
    pub options: Vec<String>,
    pub answer: String,
    #[serde(default)]
    pub category: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
}

/// The fixed evaluation protocol's prompt suffix (Pearl/LVR convention).
pub const ANSWER_SUFFIX: &str = "Answer with the option's letter from the given choices directly.";

pub fn option_letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

impl McqItem {
    /// The prompt under the fixed protocol: question, lettered options, suffix.
    pub fn prompt(&self) -> String {
        let mut s = self.question.trim_end().to_string();
        s.push_str("\nOptions:");
        for (i, o) in self.options.iter().enumerate() {
            s.push_str(&format!("\n({}) {}", option_letter(i), o));
        }
        s.push('\n');
        s.push_str(ANSWER_SUFFIX);
        s
    }

    pub fn answer_index(&self) -> Option<usize> {
        let c = self
            .answer
            .trim()
            .trim_matches(|c| c == '(' || c == ')')
            .chars()
            .next()?;
        let i = (c.to_ascii_uppercase() as u8).checked_sub(b'A')? as usize;
        (i < self.options.len()).then_some(i)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}
