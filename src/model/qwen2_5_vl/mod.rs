//! Qwen2.5-VL, in the order data flows: configuration, vision tower (window attention), M-RoPE,
//! and the top-level model that joins them with the shared text decoder (`crate::model::decoder`).

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod rope;
pub mod vision;

pub use config::Qwen2_5VlConfig;
pub use model::{Qwen2_5Vl, VlBatch, VlOutput};
