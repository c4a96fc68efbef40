//! Evaluation harness: benchmark loaders into `McqItem`s, the fixed Pearl/LVR protocol, a batched
//! runner that writes per-item records and summaries, paired comparison of runs, and the
//! tool-using agent baseline. Everything here talks to a model only through `answerer::ChatModel`.

pub mod agent;
pub mod answerer;
pub mod bench;
pub mod card;
pub mod compare;
pub mod ids;
pub mod protocol;
pub mod record;
pub mod run;
pub mod seeds;
pub mod stats;
pub mod summary;
