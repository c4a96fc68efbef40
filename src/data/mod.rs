//! Trajectory data: the canonical chat schema, MCQ items, validation, importers, the synthetic world.

pub mod chat;
pub mod mcq;
pub mod trajectory;
pub mod validate;
pub mod synth;
pub mod import;
pub mod stats;
