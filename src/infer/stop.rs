//! What ends a generation. Stop tokens: `eos_token_id` of the model directory's
//! `generation_config.json` (an id or a list of ids), as transformers' `generate` reads it; a
//! directory without that file falls back to the chat format's own terminators. Stop strings
//! (OpenAI's `stop`): the answer ends before the first occurrence of any of them in its text.

use crate::processor::QwenTokenizer;
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;

/// Stop token ids, deduplicated, in the order they were configured.
pub fn stop_tokens(model_dir: &Path, tokenizer: &QwenTokenizer) -> anyhow::Result<Vec<u32>> {
    let path = model_dir.join("generation_config.json");
    let configured = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        eos_ids(&v).with_context(|| format!("{}: bad eos_token_id", path.display()))?
    } else {
        vec![]
    };
    // A configuration without eos ids would never stop before the token budget; the chat
    // template's turn terminator is what every Qwen chat model ends its answer with.
    let mut ids = if configured.is_empty() {
        let s = tokenizer.special();
        vec![s.im_end, s.end_of_text]
    } else {
        configured
    };
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok(ids)
}

/// Stop strings: the answer is the text before the earliest occurrence of any of them (the stop
/// string itself is not part of it), as OpenAI's `stop` is defined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopStrings {
    strings: Vec<String>,
}

impl StopStrings {
    /// The most stop strings one request may give (OpenAI allows 4; vLLM-style clients send more).
    pub const MAX: usize = 16;

    /// Refuses an empty string (it would end every answer before its first character) and more
    /// than [`Self::MAX`] strings.
    pub fn new(strings: Vec<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            strings.len() <= Self::MAX,
            "{} stop strings given, at most {} are accepted",
            strings.len(),
            Self::MAX
        );
        if let Some(i) = strings.iter().position(String::is_empty) {
            bail!("stop string {i} is empty");
        }
        Ok(Self { strings })
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Byte offset in `text` where the earliest occurrence of a stop string starts, looking only
    /// at occurrences that end after byte `seen` (the caller searched `text[..seen]` already).
    pub fn find(&self, text: &str, seen: usize) -> Option<usize> {
        let longest = self.strings.iter().map(String::len).max()?;
        let from = floor_char_boundary(text, seen.saturating_sub(longest - 1));
        self.strings
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()))
            .min()
            .map(|i| from + i)
    }

    /// The length of the part of `text` that is final: all of it but a tail that is the start of
    /// a stop string (more text could complete it). `text` must hold no whole stop string.
    pub fn settled_len(&self, text: &str) -> usize {
        let longest = self.strings.iter().map(String::len).max().unwrap_or(0);
        let from = floor_char_boundary(text, text.len().saturating_sub(longest.saturating_sub(1)));
        (from..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .find(|&i| self.strings.iter().any(|s| s.starts_with(&text[i..])))
            .unwrap_or(text.len())
    }
}

/// The largest char boundary of `text` at or before byte `i`.
fn floor_char_boundary(text: &str, i: usize) -> usize {
    (0..=i.min(text.len()))
        .rev()
        .find(|&j| text.is_char_boundary(j))
        .unwrap_or(0)
}

/// `eos_token_id` as an id, a list of ids, null or absent.
fn eos_ids(config: &Value) -> anyhow::Result<Vec<u32>> {
    let as_id = |v: &Value| -> anyhow::Result<u32> {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .with_context(|| format!("{v} is not a token id"))
    };
    match config.get("eos_token_id") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(as_id).collect(),
        Some(v @ Value::Number(_)) => Ok(vec![as_id(v)?]),
        Some(v) => bail!("expected an id or a list of ids, found {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_tokenizer() -> QwenTokenizer {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny/model");
        QwenTokenizer::from_dir(&dir).unwrap()
    }

    fn stops(s: &[&str]) -> StopStrings {
        StopStrings::new(s.iter().map(|x| x.to_string()).collect()).unwrap()
    }

    #[test]
    fn stop_strings_find_the_earliest_occurrence() {
        let s = stops(&["END", "\n\n"]);
        assert_eq!(s.find("abc", 0), None);
        assert_eq!(s.find("ab\n\ncd END", 0), Some(2));
        assert_eq!(s.find("abEND\n\n", 0), Some(2));
        // Overlapping candidates: the earliest start wins, whichever string it is.
        assert_eq!(stops(&["bcd", "abc"]).find("xabcd", 0), Some(1));
        // `seen` skips what was searched, but not an occurrence that ends after it.
        assert_eq!(s.find("xxEN", 0), None);
        assert_eq!(s.find("xxEND", 4), Some(2));
        assert_eq!(s.find("END xxEND", 6), Some(6));
        // Multi-byte text: the search window starts on a char boundary.
        assert_eq!(stops(&["世界"]).find("你好世界", 7), Some(6));
        assert_eq!(StopStrings::default().find("anything", 0), None);
    }

    #[test]
    fn a_possible_start_of_a_stop_string_is_not_settled() {
        let s = stops(&["<stop>", "ZZ"]);
        assert_eq!(s.settled_len("hello"), 5);
        assert_eq!(s.settled_len("hello <st"), 6);
        assert_eq!(s.settled_len("hello <"), 6);
        assert_eq!(s.settled_len("helloZ"), 5);
        assert_eq!(s.settled_len("hello <x"), 8);
        assert_eq!(stops(&["世界"]).settled_len("你好世"), 6);
        assert_eq!(StopStrings::default().settled_len("abc"), 3);
    }

    #[test]
    fn empty_or_too_many_stop_strings_are_refused() {
        let e = StopStrings::new(vec!["a".into(), String::new()]).unwrap_err();
        assert!(e.to_string().contains("stop string 1 is empty"), "{e}");
        let e = StopStrings::new(vec!["x".into(); StopStrings::MAX + 1]).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
        assert!(StopStrings::new(vec![]).unwrap().is_empty());
    }

    #[test]
    fn eos_is_read_as_id_or_list() {
        assert_eq!(eos_ids(&json!({"eos_token_id": 7})).unwrap(), vec![7]);
        assert_eq!(
            eos_ids(&json!({"eos_token_id": [3, 9]})).unwrap(),
            vec![3, 9]
        );
        assert!(eos_ids(&json!({})).unwrap().is_empty());
        assert!(eos_ids(&json!({"eos_token_id": "x"})).is_err());
        assert!(eos_ids(&json!({"eos_token_id": [-1]})).is_err());
    }

    #[test]
    fn model_dir_file_and_fallback() {
        let tok = tiny_tokenizer();
        let tmp = tempfile::tempdir().unwrap();
        // No file: the chat terminators.
        let s = tok.special();
        assert_eq!(
            stop_tokens(tmp.path(), &tok).unwrap(),
            vec![s.im_end, s.end_of_text]
        );
        std::fs::write(
            tmp.path().join("generation_config.json"),
            r#"{"eos_token_id": [5, 6, 5]}"#,
        )
        .unwrap();
        assert_eq!(stop_tokens(tmp.path(), &tok).unwrap(), vec![5, 6]);
        std::fs::write(tmp.path().join("generation_config.json"), "{oops").unwrap();
        let err = format!("{:#}", stop_tokens(tmp.path(), &tok).unwrap_err());
        assert!(err.contains("generation_config.json"), "{err}");
    }
}
