//! Summary of a trajectory file: examples by task, category, number and kind of tool calls, image
//! sizes, and text lengths (tokens with a tokenizer, else characters and words).

use crate::data::chat::ImageSource;
use crate::data::trajectory::{TrajectoryFile, load_jsonl};
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub examples: usize,
    pub by_task: BTreeMap<String, usize>,
    pub by_category: BTreeMap<String, usize>,
    pub by_tool_calls: BTreeMap<usize, usize>,
    pub by_tool: BTreeMap<String, usize>,
    pub images_per_example: Summary,
    /// Over distinct image references.
    pub image_width: Summary,
    pub image_height: Summary,
    pub unreadable_images: usize,
    /// Per example, all text parts together.
    pub chars: Summary,
    pub words: Summary,
    pub tokens: Option<Summary>,
}

/// min / median / 95th percentile / max / mean of a sample.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            n: v.len(),
            min: v[0],
            median: at(0.5),
            p95: at(0.95),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {} / median {} / p95 {} / max {} (mean {:.1}, n {})",
            self.min, self.median, self.p95, self.max, self.mean, self.n
        )
    }
}

/// Stats of one file; `tokenizer` is a `tokenizer.json` for token counts.
pub fn compute(path: &Path, tokenizer: Option<&Path>) -> anyhow::Result<Stats> {
    let file = load_jsonl(path).context("run `pearl data validate` for a full list of problems")?;
    let tok = match tokenizer {
        Some(p) => Some(
            tokenizers::Tokenizer::from_file(p)
                .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", p.display()))?,
        ),
        None => None,
    };
    of_file(&file, tok.as_ref())
}

fn of_file(file: &TrajectoryFile, tok: Option<&tokenizers::Tokenizer>) -> anyhow::Result<Stats> {
    let mut s = Stats {
        examples: file.items.len(),
        ..Default::default()
    };
    let (mut per_ex_images, mut chars, mut words, mut tokens) = (vec![], vec![], vec![], vec![]);
    let (mut widths, mut heights) = (vec![], vec![]);
    let mut seen = HashSet::new();
    for n in &file.items {
        let t = &n.trajectory;
        *s.by_task.entry(t.task.clone()).or_default() += 1;
        *s.by_category
            .entry(t.meta.category.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
        *s.by_tool_calls.entry(t.meta.tool_calls.len()).or_default() += 1;
        for c in &t.meta.tool_calls {
            *s.by_tool.entry(c.name.clone()).or_default() += 1;
        }
        per_ex_images.push(t.image_count() as f64);
        let text: String = t
            .messages
            .iter()
            .map(|m| m.joined_text())
            .collect::<Vec<_>>()
            .join("\n");
        chars.push(text.chars().count() as f64);
        words.push(text.split_whitespace().count() as f64);
        if let Some(tok) = tok {
            let enc = tok.encode(text.as_str(), false).map_err(|e| {
                anyhow::anyhow!("{}:{}: cannot tokenize: {e}", file.path.display(), n.line)
            })?;
            tokens.push(enc.len() as f64);
        }
        for r in t.images() {
            if !seen.insert(r.to_string()) {
                continue;
            }
            match dimensions(r, &file.base_dir) {
                Some((w, h)) => {
                    widths.push(w as f64);
                    heights.push(h as f64);
                }
                None => s.unreadable_images += 1,
            }
        }
    }
    s.images_per_example = Summary::of(per_ex_images);
    s.image_width = Summary::of(widths);
    s.image_height = Summary::of(heights);
    s.chars = Summary::of(chars);
    s.words = Summary::of(words);
    s.tokens = tok.map(|_| Summary::of(tokens));
    Ok(s)
}

/// Header-only image size.
fn dimensions(reference: &str, base: &Path) -> Option<(u32, u32)> {
    match ImageSource::resolve(reference, base).ok()? {
        ImageSource::Path(p) => image::ImageReader::open(p)
            .ok()?
            .with_guessed_format()
            .ok()?
            .into_dimensions()
            .ok(),
        ImageSource::Inline(b) => image::ImageReader::new(std::io::Cursor::new(b))
            .with_guessed_format()
            .ok()?
            .into_dimensions()
            .ok(),
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} examples", self.examples)?;
        let table = |f: &mut std::fmt::Formatter<'_>,
                     title: &str,
                     m: &BTreeMap<String, usize>|
         -> std::fmt::Result {
            writeln!(f, "{title}:")?;
            m.iter().try_for_each(|(k, n)| writeln!(f, "  {n:>7}  {k}"))
        };
        table(f, "by task", &self.by_task)?;
        table(f, "by category", &self.by_category)?;
        table(
            f,
            "by number of tool calls",
            &self
                .by_tool_calls
                .iter()
                .map(|(k, v)| (format!("{k:>2} call(s)"), *v))
                .collect(),
        )?;
        table(f, "tool calls by tool", &self.by_tool)?;
        writeln!(f, "images per example: {}", self.images_per_example)?;
        writeln!(f, "image width:  {}", self.image_width)?;
        writeln!(f, "image height: {}", self.image_height)?;
        if self.unreadable_images > 0 {
            writeln!(
                f,
                "unreadable images: {} (run `pearl data validate`)",
                self.unreadable_images
            )?;
        }
        writeln!(f, "characters per example: {}", self.chars)?;
        writeln!(f, "words per example: {}", self.words)?;
        if let Some(t) = &self.tokens {
            writeln!(
                f,
                "tokens per example (text only, no chat template or image tokens): {t}"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!((s.min, s.max, s.n), (1.0, 100.0, 100));
        assert_eq!(s.median, 51.0); // index round(99 * 0.5) = 50
        assert_eq!(s.p95, 95.0); // index round(99 * 0.95) = 94
        assert!((s.mean - 50.5).abs() < 1e-12);
        assert_eq!(Summary::of(vec![]), Summary::default());
    }
}
