//! Inference: KV-cached generation (greedy or sampled) over the Qwen2.5-VL model, stop tokens of
//! a model directory, and `LocalModel`, the model directory as a chat model.

pub mod generate;
pub mod local;
pub mod lvr;
pub mod sampling;
pub mod stop;

pub use generate::{
    GenerateOptions, GenerateOutput, Generated, Timing, generate, generate_streaming,
};
pub use local::LocalModel;
pub use sampling::Sampling;
