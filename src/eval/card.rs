//! The protocol card of an evaluation run, `protocol.json`: everything that decides the answers
//! (prompt, system prompt, answer extraction, pixel budget, decoding and token budget, agent
//! limits, precision, and checksums of the weights and the benchmark files) and what is only
//! recorded (pearl's version, the device, the item count). `pearl compare` refuses runs whose
//! cards differ in the first part: published scores of one checkpoint move by tens of points with
//! these settings.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub const FILE_NAME: &str = "protocol.json";

/// What decides the answers. Two runs with equal `Protocol`s and equal weights answer alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    pub bench: String,
    /// `direct` (the fixed protocol) or `tools` (the agent); LVR's latent decoding is `direct`
    /// with `latent_steps`.
    pub mode: String,
    /// The user text of an item, with `{question}` and `{option_k}` placeholders.
    pub prompt_template: String,
    /// `None`: the chat template's default system turn.
    pub system_prompt: Option<String>,
    /// The extraction rules' name and a fingerprint of what they read out of a fixed set of
    /// outputs (changes whenever the rules do).
    pub answer_extraction: String,
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// `greedy`, or the sampling settings.
    pub decoding: String,
    /// New tokens per answer (per assistant turn for the agent).
    pub max_new_tokens: usize,
    #[serde(default)]
    pub agent_max_tool_calls: Option<usize>,
    #[serde(default)]
    pub latent_steps: Option<usize>,
    pub precision: String,
    /// SHA-256 over the model directory's files (`None` when the model is not a directory).
    pub model_sha256: Option<String>,
    pub adapter_sha256: Option<String>,
    /// SHA-256 of every benchmark file read, by path relative to `--data`.
    pub benchmark_sha256: BTreeMap<String, String>,
}

/// The fields of [`Protocol`] that name the weights rather than how they are asked.
pub const WEIGHT_FIELDS: [&str; 2] = ["model_sha256", "adapter_sha256"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolCard {
    pub protocol: Protocol,
    /// Items evaluated (after `--categories` and `--limit`).
    pub items: usize,
    pub pearl_version: String,
    pub device: String,
}

impl ProtocolCard {
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<()> {
        let path = run_dir.join(FILE_NAME);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The card of a run directory; `None` for runs made before cards existed.
    pub fn read(run_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = run_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a protocol card", path.display()))
    }

    /// The card as a Markdown section (for `summary.md`).
    pub fn to_markdown(&self) -> String {
        let p = &self.protocol;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        let num = |v: Option<usize>| v.map_or_else(|| "-".into(), |n| n.to_string());
        let mut s =
            String::from("\n## Protocol (protocol.json)\n\n| setting | value |\n|---|---|\n");
        let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {} |\n", cell(&v)));
        row("benchmark", format!("{} ({} items)", p.bench, self.items));
        row("mode", p.mode.clone());
        row("prompt template", p.prompt_template.clone());
        row(
            "system prompt",
            p.system_prompt
                .clone()
                .unwrap_or_else(|| "the chat template's default".into()),
        );
        row("answer extraction", p.answer_extraction.clone());
        row(
            "pixels (min / max)",
            format!("{} / {}", num(p.min_pixels), num(p.max_pixels)),
        );
        row(
            "decoding",
            format!("{}, {} new tokens", p.decoding, p.max_new_tokens),
        );
        if let Some(n) = p.agent_max_tool_calls {
            row("agent tool calls", n.to_string());
        }
        if let Some(n) = p.latent_steps {
            row("latent steps", n.to_string());
        }
        row(
            "precision / device",
            format!("{} / {}", p.precision, self.device),
        );
        row("model sha256", opt(&p.model_sha256));
        row("adapter sha256", opt(&p.adapter_sha256));
        for (file, sum) in &p.benchmark_sha256 {
            row(&format!("benchmark file {file}"), sum.clone());
        }
        row("pearl", self.pearl_version.clone());
        s
    }
}

/// A Markdown table cell: one line, pipes escaped, long values shortened.
fn cell(v: &str) -> String {
    let one_line = v.replace('\n', "\\n").replace('|', "\\|");
    match one_line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// How the runs' protocols differ from the first one's: `run: field: A vs B` lines (fields
/// naming the weights left out when `weights_may_differ`), and the runs that have no card.
pub fn check_runs(
    runs: &[std::path::PathBuf],
    weights_may_differ: bool,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut cards = Vec::new();
    let mut missing = Vec::new();
    for r in runs {
        match ProtocolCard::read(r)? {
            Some(c) => cards.push((r, c)),
            None => missing.push(r.display().to_string()),
        }
    }
    let mut lines = Vec::new();
    if let Some(((first, reference), rest)) = cards.split_first() {
        for (run, card) in rest {
            for (field, line) in differences(&reference.protocol, &card.protocol)? {
                if weights_may_differ && WEIGHT_FIELDS.contains(&field.as_str()) {
                    continue;
                }
                lines.push(format!("{} vs {}: {line}", first.display(), run.display()));
            }
        }
    }
    Ok((lines, missing))
}

/// The fields in which two protocols differ, each as `field: A vs B`.
pub fn differences(a: &Protocol, b: &Protocol) -> anyhow::Result<Vec<(String, String)>> {
    let (va, vb) = (serde_json::to_value(a)?, serde_json::to_value(b)?);
    let (Some(oa), Some(ob)) = (va.as_object(), vb.as_object()) else {
        anyhow::bail!("a protocol is not a JSON object");
    };
    Ok(oa
        .iter()
        .filter(|(k, v)| ob.get(*k) != Some(*v))
        .map(|(k, v)| {
            let other = ob.get(k).cloned().unwrap_or(serde_json::Value::Null);
            (k.clone(), format!("{k}: {} vs {}", short(v), short(&other)))
        })
        .collect())
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// SHA-256 of a file, streamed (weights can be many GB).
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// SHA-256 of every file under `path` (the file itself when it is one), by path relative to it;
/// hidden files left out.
pub fn tree_sha256(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if path.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        out.insert(name.unwrap_or_default(), file_sha256(path)?);
        return Ok(out);
    }
    for p in crate::eval::bench::files_under(path)? {
        let rel = p.strip_prefix(path).unwrap_or(&p).display().to_string();
        out.insert(rel, file_sha256(&p)?);
    }
    Ok(out)
}

/// One checksum for a directory (or file): SHA-256 over its files' relative paths and checksums.
/// `None` when `path` does not exist.
pub fn dir_sha256(path: &Path) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut h = Sha256::new();
    for (rel, sum) in tree_sha256(path)? {
        h.update(format!("{rel}\t{sum}\n").as_bytes());
    }
    Ok(Some(format!("{:x}", h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol() -> Protocol {
        Protocol {
            bench: "vstar".into(),
            mode: "direct".into(),
            prompt_template: "{question}".into(),
            system_prompt: None,
            answer_extraction: "rules".into(),
            min_pixels: Some(3136),
            max_pixels: Some(1_003_520),
            decoding: "greedy".into(),
            max_new_tokens: 4,
            agent_max_tool_calls: None,
            latent_steps: None,
            precision: "f32".into(),
            model_sha256: Some("m".into()),
            adapter_sha256: None,
            benchmark_sha256: BTreeMap::from([("a.parquet".into(), "x".into())]),
        }
    }

    #[test]
    fn differences_name_each_field_that_differs() {
        let a = protocol();
        assert!(differences(&a, &a.clone()).unwrap().is_empty());
        let b = Protocol {
            max_pixels: Some(12_845_056),
            max_new_tokens: 16,
            ..a.clone()
        };
        let d = differences(&a, &b).unwrap();
        let fields: Vec<&str> = d.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["max_new_tokens", "max_pixels"]);
        assert!(d[1].1.contains("1003520 vs 12845056"), "{:?}", d[1]);
    }

    #[test]
    fn directory_checksum_covers_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "1").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.bin"), "2").unwrap();
        let first = dir_sha256(dir.path()).unwrap().unwrap();
        assert_eq!(tree_sha256(dir.path()).unwrap().len(), 2);
        std::fs::write(dir.path().join("sub/b.bin"), "3").unwrap();
        let second = dir_sha256(dir.path()).unwrap().unwrap();
        assert_ne!(first, second);
        std::fs::rename(dir.path().join("a.json"), dir.path().join("c.json")).unwrap();
        assert_ne!(dir_sha256(dir.path()).unwrap().unwrap(), second);
        assert_eq!(dir_sha256(&dir.path().join("missing")).unwrap(), None);
    }
}
