//! `pearl bench ...`: speed and memory measurements.

use crate::bench::train::{self, TrainBenchArgs};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// One training step, SFT vs Pearl, on a random-initialised model with LoRA.
    Train(TrainBenchArgs),
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.cmd {
        BenchCmd::Train(args) => {
            let r = train::run(&args)?;
            train::print(&r);
            let json = serde_json::to_string_pretty(&r)?;
            if let Some(p) = &args.json {
                crate::model::checkpoint::write_atomic(p, json.as_bytes())?;
            }
            println!("{json}");
            Ok(())
        }
    }
}
