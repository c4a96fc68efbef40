//! Decoding with an LVR model: latent steps fed back as input embeddings (`decode`; what they
//! feed, LVR's own hidden states or the mediation test's replacements, `feed`), then the answer as
//! text (`generate`, and the evaluation harness's `ChatModel`).

pub mod decode;
pub mod feed;
pub mod generate;

pub use decode::{LatentDecoder, MAX_LATENT_STEPS};
pub use feed::LatentFeed;
pub use generate::{LvrChatModel, lvr_generate, lvr_generate_with};
