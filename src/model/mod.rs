//! Qwen2.5-VL in burn: configuration, weights, vision tower, text decoder, M-RoPE.

pub mod config;
