//! A process-wide switch for the fused CPU kernels (attention, softmax, RMSNorm, rotary
//! embedding, SwiGLU, cross-entropy, matrix products). On, the default, ops on the CPU backend take
//! their fused kernels. Off, every op takes its composed form from burn's differentiable ops,
//! which is the code a GPU runs: tests prove that path against the fixture on a CPU
//! (`tests/model_composed.rs`), and `pearl bench train --no-fused` measures what the kernels buy.

use std::sync::atomic::{AtomicBool, Ordering};

static FUSED: AtomicBool = AtomicBool::new(true);

/// Whether the fused CPU kernels may be used.
pub fn enabled() -> bool {
    FUSED.load(Ordering::Relaxed)
}

/// Switches the fused CPU kernels on or off for the whole process.
pub fn set_enabled(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}
