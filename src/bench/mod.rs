//! Benchmarks (speed and memory goals live here, not in timed tests).

pub mod memory;
pub mod train;
