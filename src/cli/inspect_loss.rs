//! `pearl inspect loss`: the five loss terms of the objective on a file of chats (all lines form
//! one batch), as JSON, and optionally the gradients under PEFT / authors' names.

use crate::data::trajectory::load_jsonl;
use crate::model::Vlm;
use crate::model::checkpoint::write_safetensors;
use crate::model::decoder::HiddenStates;
use crate::model::device::{DeviceSpec, training_device};
use crate::objective::batch::Example;
use crate::objective::freeze::lora_only;
use crate::objective::grads::named_gradients;
use crate::objective::{
    Distance, DynamicsHead, ObjectiveConfig, PearlModel, Supervise, TrainBatch, compute_losses,
};
use crate::peft::lora::load_peft_adapter;
use crate::processor::Processor;
use anyhow::{Context, ensure};
use burn::optim::GradientsParams;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LossArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory (without one, every weight is trainable: full fine-tuning).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Dynamics head (`dynamics_head.*` safetensors); without one a fresh head (seed 0) is used.
    #[arg(long)]
    dynamics_head: Option<PathBuf>,
    /// JSONL of `{"id", "messages"}` chats, image paths relative to the file; all lines form one batch.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 4)]
    predictors: usize,
    /// cosine, smoothl1 (or smooth-l1), l2, mse: the authors' `--jepa_loss` values.
    #[arg(long, default_value = "cosine", value_parser = crate::spelling::parse::<Distance>)]
    jepa_loss: Distance,
    #[arg(long, default_value_t = 0.2)]
    lambda: f64,
    /// all-assistant or last-assistant.
    #[arg(long, default_value = "all-assistant", value_parser = crate::spelling::parse::<Supervise>)]
    supervise: Supervise,
    /// Whose `hidden_states[-1]` JEPA and NextLat read: transformers5 (after the final norm) or
    /// transformers4.57 (Qwen3-VL: before it, as in the authors' Qwen3-VL runs).
    #[arg(long, default_value = "transformers5")]
    hidden_states: HiddenStates,
    #[arg(long)]
    no_jepa: bool,
    #[arg(long)]
    no_nextlat: bool,
    /// Write d(total)/d(param) of every trainable tensor here.
    #[arg(long)]
    grads_out: Option<PathBuf>,
    /// Where to run: cpu, cuda:N (`cuda` feature) or wgpu[:gl|:vulkan] (`wgpu` feature).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    device: DeviceSpec,
}

pub fn run(a: LossArgs) -> anyhow::Result<()> {
    let cfg = ObjectiveConfig {
        jepa: !a.no_jepa,
        nextlat: !a.no_nextlat,
        predictors: a.predictors,
        lambda: a.lambda,
        distance: a.jepa_loss,
        supervise: a.supervise,
        hidden_states: a.hidden_states,
    };
    cfg.validate()?;
    let device = training_device(a.device.device()?, false);
    let mut processor = Processor::from_dir(&a.model)?;
    processor.tokenizer.add_pearl_tokens();
    let mut vlm = Vlm::from_dir(&a.model, &device)?;
    vlm.ensure_vocab(processor.tokenizer.vocab_size());
    let lora = a.adapter.is_some();
    if let Some(dir) = &a.adapter {
        vlm = load_peft_adapter(vlm, dir)?;
    }
    let d = vlm.hidden_size();
    let dynamics = match (&a.dynamics_head, cfg.nextlat) {
        (_, false) => None,
        (Some(p), true) => Some(DynamicsHead::load(p, d, &device)?),
        (None, true) => Some(DynamicsHead::init(d, 0, &device)),
    };
    let mut model = PearlModel { vlm, dynamics };
    if lora {
        model = lora_only(model);
    }
    let file = load_jsonl(&a.data)?;
    ensure!(
        !file.items.is_empty(),
        "{} holds no chats",
        a.data.display()
    );
    let examples = Example::all_of(&file);
    let batch = TrainBatch::build(&processor, &examples, &cfg)?;
    let losses = compute_losses(&model, &batch, &cfg)?;
    println!("{}", serde_json::to_string_pretty(&losses.values)?);
    if let Some(out) = a.grads_out {
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        let named = named_gradients(&model, &grads);
        write_safetensors(&out, &named, None)
            .with_context(|| format!("cannot write the gradients to {}", out.display()))?;
        eprintln!(
            "wrote {} gradient tensors to {}",
            named.len(),
            out.display()
        );
    }
    Ok(())
}
