//! The demo model: a small Qwen2.5-VL-shaped config and its processor files
//! (`assets/demo-model/`), compiled into the binary so that `pearl demo` runs from a fresh clone
//! with nothing else on disk. There are no weights: the demo pretrains them.

use anyhow::{Context, Result};
use std::path::Path;

/// `(file name, contents)` of the demo model directory, weights excluded.
const FILES: [(&str, &str); 7] = [
    (
        "config.json",
        include_str!("../../assets/demo-model/config.json"),
    ),
    (
        "preprocessor_config.json",
        include_str!("../../assets/demo-model/preprocessor_config.json"),
    ),
    (
        "tokenizer.json",
        include_str!("../../assets/demo-model/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_str!("../../assets/demo-model/tokenizer_config.json"),
    ),
    (
        "chat_template.json",
        include_str!("../../assets/demo-model/chat_template.json"),
    ),
    (
        "chat_template.jinja",
        include_str!("../../assets/demo-model/chat_template.jinja"),
    ),
    (
        "generation_config.json",
        include_str!("../../assets/demo-model/generation_config.json"),
    ),
];

/// The demo model's `config.json`.
pub fn config_json() -> &'static str {
    FILES[0].1
}

/// Writes the config and processor files into `dir` (created if missing), with the image pixel
/// budget set to `max_pixels`.
pub fn write_model_files(dir: &Path, max_pixels: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in FILES {
        let text = if name == "preprocessor_config.json" {
            with_max_pixels(text, max_pixels)?
        } else {
            text.to_string()
        };
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Copies the processor files (everything but `config.json`) into a model directory that holds
/// only weights and config (what full fine-tuning checkpoints write), making it loadable alone.
pub fn add_processor_files(dir: &Path, max_pixels: usize) -> Result<()> {
    for (name, text) in FILES.iter().filter(|(n, _)| *n != "config.json") {
        let text = if *name == "preprocessor_config.json" {
            with_max_pixels(text, max_pixels)?
        } else {
            text.to_string()
        };
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn with_max_pixels(text: &str, max_pixels: usize) -> Result<String> {
    let mut v: serde_json::Value =
        serde_json::from_str(text).context("the demo preprocessor config is not JSON")?;
    v["max_pixels"] = serde_json::json!(max_pixels);
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Qwen2_5VlConfig;
    use crate::processor::Processor;

    #[test]
    fn the_demo_model_directory_loads_and_fits_pearls_and_lvrs_tokens() {
        let dir = tempfile::tempdir().unwrap();
        write_model_files(dir.path(), 56 * 56).unwrap();
        let cfg = Qwen2_5VlConfig::from_file(&dir.path().join("config.json")).unwrap();
        let mut p = Processor::from_dir(dir.path()).unwrap();
        assert_eq!(p.image.max_pixels, 56 * 56);
        p.tokenizer.add_pearl_tokens();
        p.tokenizer.add_lvr_tokens();
        // Spare embedding rows: no fine-tuning has to grow the vocabulary of the base model.
        assert!(p.tokenizer.vocab_size() <= cfg.text.vocab_size);
    }
}
