//! Models in burn: the shared layers (linear projections with optional LoRA, norms, tensor
//! helpers, dtypes, weights and checkpoints) and one folder per model family (`qwen2_5_vl`, `qwen3_vl`).

pub mod batch;
pub mod checkpoint;
pub mod config_json;
pub mod decoder;
pub mod device;
pub mod family;
pub mod names;
pub mod nn;
pub mod precision;
pub mod qwen2_5_vl;
pub mod qwen3_vl;
pub mod rope;
pub mod vision_attention;
pub mod vlm;
pub mod weights;

pub use batch::{VlBatch, VlOutput};
pub use family::{ImageFeatures, VlFamily};
pub use qwen2_5_vl::{Qwen2_5Vl, Qwen2_5VlConfig};
pub use qwen3_vl::{Qwen3Vl, Qwen3VlConfig};
pub use vlm::{Family, Vlm};
