//! pearl: train vision-language models to reason in latent space from expert tool-use
//! trajectories (Pearl, arXiv 2604.08065), evaluate them, and serve them as ordinary models.

pub mod bench;
pub mod cli;
pub mod data;
pub mod demo;
pub mod eval;
pub mod infer;
pub mod kernels;
pub mod malloc;
pub mod mapped;
pub mod model;
pub mod objective;
pub mod peft;
pub mod plot;
pub mod processor;
pub mod serve;
pub mod spelling;
pub mod tools;
pub mod train;
