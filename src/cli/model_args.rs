//! The model a command runs: `--model`, `--adapter`, `--precision`, `--device`, declared once
//! and flattened into `pearl eval`, `generate`, `serve` and `inspect forward`.

use crate::infer::LocalModel;
use crate::model::Vlm;
use crate::model::device::DeviceSpec;
use crate::model::precision::Precision;
use burn::tensor::Device;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (hub layout: config.json, safetensors, tokenizer, preprocessor config).
    #[arg(long = "model")]
    pub dir: PathBuf,
    /// PEFT LoRA adapter directory, merged into the weights at load.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// f32, or bf16: weights and activations in bf16 (half the memory; on the CPU slower, as
    /// bf16 products convert through f32).
    #[arg(long, default_value = "f32", value_parser = Precision::parse)]
    pub precision: Precision,
    /// Where the model runs: `cpu`, `cuda:N` (the N-th NVIDIA GPU; a build with `--features
    /// cuda`) or `wgpu`, `wgpu:gl`, `wgpu:vulkan` (a build with `--features wgpu`).
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse_available)]
    pub device: DeviceSpec,
}

impl ModelArgs {
    /// The device the model runs on.
    pub fn device(&self) -> anyhow::Result<Device> {
        self.device.device()
    }

    /// The device's name for the protocol card.
    pub fn device_name(&self) -> String {
        self.device.to_string()
    }

    /// The weights alone, adapter merged, in the chosen precision.
    pub fn load_model(&self) -> anyhow::Result<Vlm> {
        crate::infer::local::load_for_inference(
            &self.dir,
            self.adapter.as_deref(),
            &self.device()?,
            self.precision,
        )
    }

    /// The model with its processor and stop tokens, ready to chat.
    pub fn load_chat_model(&self) -> anyhow::Result<LocalModel> {
        LocalModel::load(
            &self.dir,
            self.adapter.as_deref(),
            &self.device()?,
            self.precision,
        )
    }
}
