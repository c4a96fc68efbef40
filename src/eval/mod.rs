//! Evaluation harness: benchmark loaders into `McqItem`s, the fixed Pearl/LVR protocol, a batched
//! runner that writes per-item records and summaries, paired comparison of runs, and the
//! tool-using agent baseline. Everything here talks to a model only through `answerer::ChatModel`.

pub mod answerer;
pub mod protocol;
pub mod stats;
