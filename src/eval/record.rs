//! One evaluated item, as a line of a run's `items.jsonl`: what was asked, what came back, how it
//! was read, and what it cost. `pearl compare` pairs two runs by these records' `id`s.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub id: String,
    pub category: String,
    /// Pair id for benchmarks scored by pairs (MMVP: both questions of a pair must be right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub prompt: String,
    /// The model's final assistant text, verbatim.
    pub raw_output: String,
    /// The option letter read from `raw_output` (`protocol::extract_choice`), if any.
    pub parsed: Option<String>,
    pub answer: String,
    pub correct: bool,
    /// Wall time the answer took (all turns for the tool agent).
    pub latency_s: f64,
    /// Generated tokens (all turns for the tool agent).
    pub new_tokens: usize,
    /// Prompt tokens of the (last) generation call, image tokens included.
    pub prompt_tokens: usize,
    /// Image tokens of the (last) generation call: the original images plus any crops.
    pub image_tokens: usize,
    /// Present for tool-agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolUse>,
}

/// What the tool-using agent did on one item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    /// Tool calls the model made, malformed ones included.
    pub calls: usize,
    /// Calls that were executed (valid JSON, a known tool, a box inside the image).
    #[serde(default)]
    pub valid_calls: usize,
    /// Valid calls whose crop contains the item's target box (`None`: the item names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_target: Option<usize>,
    /// One message per call that was answered with an error turn.
    pub errors: Vec<String>,
    /// Every assistant turn's text, in order (the last is `raw_output`).
    pub turns: Vec<String>,
}

/// Reads a run's `items.jsonl`; errors name the file and line.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<ItemRecord>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: ItemRecord = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {} is not an item record", path.display(), i + 1))?;
        out.push(rec);
    }
    Ok(out)
}

/// Reads `DIR/items.jsonl` of a run directory (or the file itself when given one).
pub fn read_run(dir_or_file: &Path) -> anyhow::Result<Vec<ItemRecord>> {
    anyhow::ensure!(
        dir_or_file.exists(),
        "{} does not exist (expected a run directory holding items.jsonl)",
        dir_or_file.display()
    );
    if dir_or_file.is_dir() {
        read_records(&dir_or_file.join("items.jsonl"))
    } else {
        read_records(dir_or_file)
    }
}

/// A graded record with placeholder text and timings, for the tests of the statistics over
/// records (summaries, seeds, comparisons, the demo's table).
#[cfg(test)]
pub(crate) fn graded(id: &str, category: &str, pair: Option<&str>, correct: bool) -> ItemRecord {
    ItemRecord {
        id: id.into(),
        category: category.into(),
        pair: pair.map(Into::into),
        prompt: String::new(),
        raw_output: String::new(),
        parsed: correct.then(|| "A".into()),
        answer: "A".into(),
        correct,
        latency_s: 1.0,
        new_tokens: 2,
        prompt_tokens: 10,
        image_tokens: 4,
        tools: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ItemRecord {
            id: "a".into(),
            category: "c".into(),
            pair: Some("0".into()),
            prompt: "p".into(),
            raw_output: "B".into(),
            parsed: Some("B".into()),
            answer: "B".into(),
            correct: true,
            latency_s: 0.5,
            new_tokens: 2,
            prompt_tokens: 30,
            image_tokens: 16,
            tools: None,
        };
        let path = dir.path().join("items.jsonl");
        std::fs::write(
            &path,
            format!("{}\n\n", serde_json::to_string(&rec).unwrap()),
        )
        .unwrap();
        assert_eq!(read_run(dir.path()).unwrap(), vec![rec.clone()]);

        std::fs::write(
            &path,
            format!("{}\n{{\"id\": 3}}\n", serde_json::to_string(&rec).unwrap()),
        )
        .unwrap();
        let err = format!("{:#}", read_run(dir.path()).unwrap_err());
        assert!(err.contains("items.jsonl: line 2"), "{err}");
        assert!(read_run(&dir.path().join("nope")).is_err());
    }
}
