//! Training: a run file (`config`), the optimizer with its schedule, global-norm clipping and
//! gradient accumulation (`optim`), one optimizer step (`step`), checkpoints that survive a crash
//! (`checkpoint`), the data order (`data`), metrics and the loss curve (`metrics`), and the loop
//! that ties them together (`loop`).

pub mod config;
pub mod optim;
pub mod param_ids;
pub mod step;

pub use config::RunConfig;
