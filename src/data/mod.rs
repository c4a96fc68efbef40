//! Trajectory data: the canonical chat schema, MCQ items, validation, importers, the synthetic world.

pub mod chat;
pub mod import;
pub mod mcq;
pub mod pyrepr;
pub mod stats;
pub mod synth;
pub mod tool_protocol;
pub mod trajectory;
pub mod validate;
