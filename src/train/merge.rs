//! `pearl merge`: fold a LoRA adapter into its base model and write a plain hub-layout checkpoint
//! (`config.json`, `model.safetensors` with transformers' names, the tokenizer, chat template and
//! preprocessor files copied) in the family's published layout, which its runtimes load without PEFT.

use crate::model::Vlm;
use crate::peft::lora::{load_peft_adapter, merge_lora};
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

/// Writes the merged model to `out`, merging on `device`; returns the files written.
pub fn merge_adapter(
    model_dir: &Path,
    adapter_dir: &Path,
    out: &Path,
    device: &burn::tensor::Device,
) -> Result<Vec<PathBuf>> {
    ensure!(
        out.canonicalize().ok() != model_dir.canonicalize().ok(),
        "the output directory must not be the base model's directory"
    );
    let base = Vlm::from_dir(model_dir, device)?;
    let merged = merge_lora(load_peft_adapter(base, adapter_dir)?);
    let config_path = model_dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))?;
    merged.save_hub_checkpoint(&config, out)?;
    let mut written = vec![out.join("model.safetensors"), out.join("config.json")];
    for entry in std::fs::read_dir(model_dir)
        .with_context(|| format!("cannot list {}", model_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_file() && is_processor_file(&name) {
            let dest = out.join(&name);
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("cannot copy {name} to {}", out.display()))?;
            written.push(dest);
        }
    }
    Ok(written)
}

/// Everything in a model directory but the weights and the config (written anew).
fn is_processor_file(name: &str) -> bool {
    let weights = name.ends_with(".safetensors")
        || name.ends_with(".safetensors.index.json")
        || name.ends_with(".bin")
        || name.ends_with(".pt")
        || name.ends_with(".pth");
    !weights && name != "config.json" && !name.starts_with('.')
}
