//! Qwen2.5-VL in burn: configuration, weights, vision tower, text decoder, M-RoPE.

pub mod adapter_config;
pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod cpu_kernel;
pub mod device;
pub mod fused;
pub mod lora;
pub mod matmul;
pub mod matvec;
pub mod names;
pub mod nn;
pub mod precision;
pub mod projection;
pub mod qwen2_5_vl;
pub mod rms_norm;
pub mod rope;
pub mod rope_apply;
pub mod softmax;
pub mod swiglu;
pub mod text;
pub mod vision;
pub mod vocab;
pub mod weights;

pub use config::Qwen2_5VlConfig;
pub use qwen2_5_vl::{Qwen2_5Vl, VlBatch, VlOutput};
