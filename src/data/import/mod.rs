//! Importers: the published trajectory formats converted into the canonical JSONL. Each importer
//! reads its source, checks every row, writes what it could convert, and counts what it skipped
//! and why (never silently). Images it renders (LVR crops) or extracts (ThinkMorph bytes) go to
//! `<OUT stem>_images/` beside the output file.

pub mod arrow_json;
pub mod llava;
pub mod lvr;
pub mod pixelreasoner;
pub mod thinkmorph;

use crate::data::trajectory::{ToolCall, Trajectory, write_jsonl};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the inputs are and where the output goes.
#[derive(Debug, Clone)]
pub struct ImportPaths {
    pub input: PathBuf,
    /// Root of the source's relative image paths.
    pub images: PathBuf,
    pub out: PathBuf,
}

impl ImportPaths {
    /// Directory for images the importer writes: `OUT_images/` for `OUT.jsonl`.
    pub fn image_dir(&self) -> PathBuf {
        let stem = self
            .out
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "out".into());
        self.out.with_file_name(format!("{stem}_images"))
    }

    pub fn out_dir(&self) -> PathBuf {
        crate::data::trajectory::base_dir_of(&self.out)
    }

    /// How the output file refers to `path`: relative when it lies under the output's directory,
    /// absolute otherwise (both are valid canonical references).
    pub fn reference(&self, path: &Path) -> String {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = std::path::absolute(self.out_dir()).unwrap_or_default();
        match abs.strip_prefix(&base) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => abs.display().to_string(),
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows: usize,
    pub written: usize,
    /// Skipped rows by reason.
    pub skipped: BTreeMap<String, usize>,
    /// The first skipped rows, `row N: reason (detail)`, for the user to look at.
    pub examples: Vec<String>,
}

impl ImportReport {
    pub fn skip(&mut self, row: usize, reason: &str, detail: impl std::fmt::Display) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < 20 {
            self.examples
                .push(format!("row {row}: {reason} ({detail})"));
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} rows read, {} written, {} skipped",
            self.rows,
            self.written,
            self.rows - self.written
        );
        for (reason, n) in &self.skipped {
            s.push_str(&format!("\n  {n:>7}  {reason}"));
        }
        s
    }
}

/// A row the importer refused: reason (counted) and detail (shown).
pub struct Skip {
    pub reason: &'static str,
    pub detail: String,
}

pub fn skip(reason: &'static str, detail: impl std::fmt::Display) -> Skip {
    Skip {
        reason,
        detail: detail.to_string(),
    }
}

/// Converts each row with `convert`, writes the output file and returns the report.
pub fn run_rows<R>(
    paths: &ImportPaths,
    rows: impl IntoIterator<Item = R>,
    mut convert: impl FnMut(usize, R) -> Result<Trajectory, Skip>,
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut out = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        report.rows += 1;
        match convert(i, row) {
            Ok(t) => out.push(t),
            Err(s) => report.skip(i, s.reason, s.detail),
        }
    }
    if let Some(dir) = paths.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_jsonl(&paths.out, &out)?;
    report.written = out.len();
    Ok(report)
}

/// A JSON list or JSONL file as JSON values; a malformed line is an error naming the line, found
/// before anything is written.
pub fn read_json_rows(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid JSON list", path.display()));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: bad JSON", path.display(), i + 1))
        })
        .collect()
}

/// Splits an assistant text the way Pearl does: the text before the first `<tool_call>` (trimmed),
/// and every `<tool_call>{json}</tool_call>` block after it parsed as `{"name":..,"arguments":{..}}`.
pub fn split_tool_calls(text: &str, turn: usize) -> Result<(String, Vec<ToolCall>), Skip> {
    let Some(start) = text.find("<tool_call>") else {
        return Ok((text.trim().to_string(), Vec::new()));
    };
    let mut calls = Vec::new();
    for block in text[start..].split("<tool_call>").skip(1) {
        let body = block.split("</tool_call>").next().unwrap_or("").trim();
        #[derive(serde::Deserialize)]
        struct Call {
            name: String,
            #[serde(default)]
            arguments: serde_json::Map<String, serde_json::Value>,
        }
        let call: Call = serde_json::from_str(body)
            .map_err(|e| skip("unparseable tool call", format!("{e}: {body}")))?;
        calls.push(ToolCall {
            turn,
            name: call.name,
            arguments: call.arguments,
        });
    }
    Ok((text[..start].trim().to_string(), calls))
}

/// Checks that a source image exists and decodes its header (cheap), so rows with missing images
/// are skipped rather than written.
pub fn check_image(path: &Path) -> Result<(u32, u32), Skip> {
    image::ImageReader::open(path)
        .map_err(|e| skip("missing image", format!("{}: {e}", path.display())))?
        .with_guessed_format()
        .map_err(|e| skip("undecodable image", format!("{}: {e}", path.display())))?
        .into_dimensions()
        .map_err(|e| skip("undecodable image", format!("{}: {e}", path.display())))
}

/// Writes an image the importer made as PNG into the output's image directory.
pub fn save_png(img: &image::DynamicImage, path: &Path) -> Result<(), Skip> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| skip("cannot write image", format!("{}: {e}", path.display())))
}

/// A file-name-safe version of a source id.
pub fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The authors' system turn for LVR (and PixelReasoner's, cut to its length); ThinkMorph's adds a
/// newline (`thinkmorph::SYSTEM_PROMPT`).
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_text_is_cut_and_parsed() {
        let t = r#"I should zoom. <tool_call>{"name":"crop_image","arguments":{"bbox_2d":[0.1,0.2,0.3,0.4],"target_image":1}}</tool_call>"#;
        let (text, calls) = split_tool_calls(t, 2).ok().unwrap();
        assert_eq!(text, "I should zoom.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "crop_image");
        assert_eq!(calls[0].turn, 2);
        assert_eq!(calls[0].bbox().unwrap().unwrap(), [0.1, 0.2, 0.3, 0.4]);
        assert!(split_tool_calls("x <tool_call>{oops</tool_call>", 2).is_err());
        assert_eq!(split_tool_calls("plain", 1).ok().unwrap().0, "plain");
    }

    #[test]
    fn references_are_relative_under_the_output_dir() {
        let p = ImportPaths {
            input: "in.json".into(),
            images: "/data/img".into(),
            out: "/tmp/x/out.jsonl".into(),
        };
        assert_eq!(p.image_dir(), PathBuf::from("/tmp/x/out_images"));
        assert_eq!(
            p.reference(Path::new("/tmp/x/out_images/a.png")),
            "out_images/a.png"
        );
        assert_eq!(p.reference(Path::new("/data/img/a.png")), "/data/img/a.png");
    }
}
