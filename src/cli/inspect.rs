//! `pearl inspect ...`: diagnostics over the model, for users and for the tests.

use crate::model::Qwen2_5VlConfig;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Parameter count of the model a config describes (no weights needed).
    Params {
        /// A `config.json` (hub or current-transformers layout), or a model directory holding one.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    match a.what {
        What::Params { config, json } => params(config, json),
    }
}

fn params(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let path = if config.is_dir() {
        config.join("config.json")
    } else {
        config
    };
    let cfg = Qwen2_5VlConfig::from_file(&path)?;
    let (total, vision, text) = (cfg.num_params(), cfg.vision_params(), cfg.text_params());
    if json {
        println!(
            "{}",
            serde_json::json!({"config": path, "total": total, "vision": vision, "text": text})
        );
    } else {
        println!("config          {}", path.display());
        println!(
            "vision tower    {:>14} ({:.3} B)",
            vision,
            vision as f64 / 1e9
        );
        println!("language model  {:>14} ({:.3} B)", text, text as f64 / 1e9);
        println!(
            "total           {:>14} ({:.3} B)",
            total,
            total as f64 / 1e9
        );
    }
    Ok(())
}
