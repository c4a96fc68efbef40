//! `pearl inspect ...`: diagnostics over the model, for users and for the tests.

use crate::model::Family;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Parameter count of the model a config describes (no weights needed).
    Params {
        /// A `config.json` (hub or current-transformers layout), or a model directory holding one.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run conversations through processor and model; write every tensor to a safetensors file.
    Forward {
        #[command(flatten)]
        model: super::model_args::ModelArgs,
        /// JSON with `conversations` (chat messages; image paths relative to the file) and
        /// `add_generation_prompt` (one flag per conversation).
        #[arg(long)]
        messages: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// The objective's five loss terms on a batch of chats (JSON), optionally with gradients.
    Loss(super::inspect_loss::LossArgs),
    /// Read a PEFT LoRA adapter as pearl reads it (either transformers key layout, rank and alpha
    /// patterns) and write it back as pearl writes adapters (what PEFT loads).
    Adapter {
        /// The base model directory the adapter belongs to.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        /// Output adapter directory.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    match a.what {
        What::Params { config, json } => params(config, json),
        What::Forward {
            model,
            messages,
            out,
        } => forward(model, messages, out),
        What::Loss(args) => super::inspect_loss::run(args),
        What::Adapter {
            model,
            adapter,
            out,
        } => resave_adapter(model, adapter, out),
    }
}

fn resave_adapter(model: PathBuf, adapter: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    use crate::peft::adapter_config::AdapterConfig;
    use crate::peft::lora::{LoraConfig, load_peft_adapter, save_peft_adapter};
    use anyhow::Context;
    let cfg = AdapterConfig::read(&adapter)?;
    let base = crate::model::Vlm::from_dir(&model, &burn::tensor::Device::flex())?;
    let vlm = load_peft_adapter(base, &adapter)?;
    let lora = LoraConfig {
        r: cfg.r,
        lora_alpha: cfg.lora_alpha,
        lora_dropout: cfg.lora_dropout,
        target_regex: None,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    save_peft_adapter(&vlm, &lora, &model.display().to_string(), &out)?;
    eprintln!(
        "read {} adapted projections from {}, wrote {}",
        vlm.lora_count(),
        adapter.display(),
        out.display()
    );
    Ok(())
}

fn params(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let path = if config.is_dir() {
        config.join("config.json")
    } else {
        config
    };
    let (family, vision, text) = Family::param_counts(&path)?;
    let family = format!("{family:?}");
    let total = vision + text;
    if json {
        println!(
            "{}",
            serde_json::json!({"config": path, "family": family, "total": total, "vision": vision, "text": text})
        );
    } else {
        println!("config          {} ({family})", path.display());
        println!(
            "vision tower    {:>14} ({:.3} B)",
            vision,
            vision as f64 / 1e9
        );
        println!("language model  {:>14} ({:.3} B)", text, text as f64 / 1e9);
        println!(
            "total           {:>14} ({:.3} B)",
            total,
            total as f64 / 1e9
        );
    }
    Ok(())
}

/// `pearl inspect forward`: a batch of conversations through processor and model, every tensor
/// written under transformers' names so it can be compared with a reference (in f32, whatever
/// `--precision` the model computed in).
fn forward(
    model_args: super::model_args::ModelArgs,
    messages: PathBuf,
    out: PathBuf,
) -> anyhow::Result<()> {
    use crate::data::chat::Message;
    use crate::model::checkpoint::{RawTensor, write_raw_safetensors};
    use anyhow::Context;

    #[derive(serde::Deserialize)]
    struct Conversations {
        conversations: Vec<Vec<Message>>,
        #[serde(default)]
        add_generation_prompt: Option<Vec<bool>>,
    }
    let text = std::fs::read_to_string(&messages)
        .with_context(|| format!("cannot read {}", messages.display()))?;
    let conv: Conversations = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a conversations file", messages.display()))?;
    let flags = conv
        .add_generation_prompt
        .unwrap_or_else(|| vec![false; conv.conversations.len()]);
    let base_dir = messages.parent().unwrap_or(std::path::Path::new("."));
    let processor = crate::processor::Processor::from_dir(&model_args.dir)?;
    let enc = processor.encode(&conv.conversations, &flags, base_dir)?;
    let model = model_args.load_model()?;
    let batch = enc.to_vl();
    let o = model.forward(&batch, true)?;
    let (b, s) = (enc.batch, enc.seq_len);
    let f = |t: burn::tensor::Tensor<3>| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
        Ok((
            t.dims().to_vec(),
            t.try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ))
    };
    let mut tensors = vec![
        RawTensor::i64("input_ids", vec![b, s], &enc.input_ids),
        RawTensor::i64("attention_mask", vec![b, s], &enc.attention_mask),
        RawTensor::i64("position_ids", vec![3, b, s], &o.position_ids),
        RawTensor::i64("rope_deltas", vec![b, 1], &o.rope_deltas),
    ];
    if !enc.image_grid_thw.is_empty() {
        let grid: Vec<i64> = enc
            .image_grid_thw
            .iter()
            .flatten()
            .map(|&x| x as i64)
            .collect();
        tensors.push(RawTensor::i64(
            "image_grid_thw",
            vec![enc.image_grid_thw.len(), 3],
            &grid,
        ));
        tensors.push(RawTensor::f32(
            "pixel_values",
            vec![enc.num_patches(), enc.patch_dim],
            &enc.pixel_values,
        ));
        if let Some(img) = o.image_embeds.clone() {
            let dims = img.dims().to_vec();
            let v = img
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            tensors.push(RawTensor::f32("image_embeds", dims, &v));
        }
        // Qwen3-VL's DeepStack features, one row per image token (none for Qwen2.5-VL).
        for (j, t) in o.deepstack_features.iter().enumerate() {
            let dims = t.dims().to_vec();
            let v = t
                .clone()
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            tensors.push(RawTensor::f32(&format!("deepstack_features.{j}"), dims, &v));
        }
    }
    for (l, h) in o.hidden_states.iter().enumerate() {
        let (dims, v) = f(h.clone())?;
        tensors.push(RawTensor::f32(&format!("hidden_states.{l}"), dims, &v));
    }
    let (dims, v) = f(model.logits(o.last_hidden))?;
    tensors.push(RawTensor::f32("logits", dims, &v));
    write_raw_safetensors(&out, &tensors, None)?;
    eprintln!("wrote {} tensors to {}", tensors.len(), out.display());
    Ok(())
}
