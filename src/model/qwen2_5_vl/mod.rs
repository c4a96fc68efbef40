//! Qwen2.5-VL, in the order data flows: configuration, vision tower, M-RoPE, text decoder, and
//! the top-level model that joins them (with its vocabulary growth).

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod rope;
pub mod text;
pub mod vision;
pub mod vocab;

pub use config::Qwen2_5VlConfig;
pub use model::{Qwen2_5Vl, VlBatch, VlOutput};
