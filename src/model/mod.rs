//! Models in burn: the shared layers (linear projections with optional LoRA, norms, tensor
//! helpers, dtypes, weights and checkpoints) and one folder per model family (`qwen2_5_vl`).

pub mod checkpoint;
pub mod device;
pub mod names;
pub mod nn;
pub mod precision;
pub mod qwen2_5_vl;
pub mod weights;

pub use qwen2_5_vl::{Qwen2_5Vl, Qwen2_5VlConfig, VlBatch, VlOutput};
