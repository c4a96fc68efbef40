//! Qwen3-VL, in the order data flows: configuration, vision tower (with DeepStack), interleaved
//! M-RoPE, and the top-level model that joins them. Layers the families share (the text decoder,
//! with Qwen3's q/k norms and DeepStack, vision attention, positions, batches) live in `crate::model`.

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod rope;
pub mod vision;

pub use config::Qwen3VlConfig;
pub use model::Qwen3Vl;
