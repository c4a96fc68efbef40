//! A V*-like synthetic visual-search world that runs on a CPU: large cluttered, noisy scenes in
//! which the object a question is about is small, so that at a small model's `max_pixels` the
//! answer is barely visible and the expert's zoom makes it visible.
//!
//! Data flows scene (`scene`) -> question with one right answer (`question`) -> expert tool plan
//! (`expert`) -> rendered images, trajectories and MCQ items on disk (`render`, `world`).

pub mod expert;
pub mod question;
pub mod render;
pub mod scene;
pub mod world;

pub use expert::Tool;
pub use question::Kind;
pub use world::{SynthConfig, SynthSummary, Task, generate};
