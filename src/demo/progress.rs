//! Stage headers and timings. Stages that train or evaluate draw their own progress bars (the
//! training loop's and the evaluation runner's); the others get a spinner with the elapsed time.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// Records how long each stage took, for the report.
#[derive(Debug, Default)]
pub struct Stages {
    pub show: bool,
    pub done: Vec<(String, f64)>,
}

impl Stages {
    pub fn new(show: bool) -> Self {
        Self {
            show,
            done: Vec::new(),
        }
    }

    /// Runs `f` as the stage `name`; `spinner` draws one while it runs (for stages without a bar).
    pub fn run<T>(
        &mut self,
        name: &str,
        spinner: bool,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if self.show {
            eprintln!("==> {name}");
        }
        let bar = if self.show && spinner {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .expect("static progress template"),
            );
            bar.set_message(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        let started = Instant::now();
        let out = f();
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        if self.show && out.is_ok() {
            eprintln!("    {name}: {secs:.1} s");
        }
        self.done.push((name.to_string(), secs));
        out
    }
}
