//! Parameter-efficient fine-tuning: LoRA adapters in PEFT's file format, and merging them.

pub mod adapter_config;
pub mod lora;
