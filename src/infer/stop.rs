//! Which token ids end a generation: `eos_token_id` of the model directory's
//! `generation_config.json` (an id or a list of ids), as transformers' `generate` reads it. A
//! directory without that file falls back to the chat format's own terminators.

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
