//! Decoding with an LVR model: latent steps fed back as input embeddings (`decode`), then the
//! answer as text (`generate`, and the evaluation harness's `ChatModel`).

pub mod decode;
pub mod generate;

pub use decode::{LatentDecoder, MAX_LATENT_STEPS};
pub use generate::{LvrChatModel, lvr_generate};
