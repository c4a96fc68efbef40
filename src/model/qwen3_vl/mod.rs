//! Qwen3-VL, in the order data flows: configuration, vision tower (with DeepStack), interleaved
//! M-RoPE, Qwen3 text decoder, and the top-level model that joins them. Layers the families share
//! (vision attention, SwiGLU MLP, positions, batches) live in `crate::model`.

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod rope;
pub mod text;
pub mod vision;

pub use config::Qwen3VlConfig;
pub use model::Qwen3Vl;
