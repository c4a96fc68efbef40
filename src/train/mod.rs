//! Training: a run file (`config`), the optimizer with its schedule and global-norm clipping
//! (`optim`), one optimizer step over micro-batches (`step`), ids that make optimizer state
//! resumable (`param_ids`), what a resume may change (`resume`), checkpoints that survive a crash (`checkpoint`), the data order
//! (`data`), metrics and the loss curve (`metrics`), the same step spread over several GPUs
//! (`parallel`), and the loop that ties them together (`loop`).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod r#loop;
pub mod merge;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod param_ids;
pub mod resume;
pub mod setup;
pub mod step;

pub use config::RunConfig;
pub use r#loop::{Options, Summary, Trainer, run};
pub use resume::Resume;
pub use step::{StepReport, train_step};
