//! Answer latency, Pearl versus tool use, on the same model and the same held-out trajectories
//! (`bench::answer_cost`): Pearl answers in one turn of the protocol's 4 tokens; a tool-using
//! model generates every turn of the expert trajectory (each tool call, then the answer) with the
//! crops in its context. Timed with batch size 1.

use super::config::DemoConfig;
use crate::bench::answer_cost::{self, AnswerCostReport};
use crate::eval::protocol::MAX_NEW_TOKENS;
use crate::infer::LocalModel;
use anyhow::{Context, Result};
use burn::tensor::Device;
use std::io::{BufRead, Write};
use std::path::Path;

/// Times the first `cfg.eval.latency_items` trajectories of `val` with `base` + `adapter`.
pub fn measure(
    cfg: &DemoConfig,
    base: &Path,
    adapter: &Path,
    val: &Path,
) -> Result<AnswerCostReport> {
    // A subset file next to `val`, so that its relative image paths resolve the same way.
    let subset = val.with_file_name("latency_trajectories.jsonl");
    let input =
        std::fs::File::open(val).with_context(|| format!("cannot open {}", val.display()))?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&subset)
            .with_context(|| format!("cannot create {}", subset.display()))?,
    );
    for line in std::io::BufReader::new(input)
        .lines()
        .take(cfg.eval.latency_items)
    {
        let line = line.with_context(|| format!("cannot read {}", val.display()))?;
        writeln!(out, "{line}").with_context(|| format!("cannot write {}", subset.display()))?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", subset.display()))?;
    drop(out);
    let mut model = LocalModel::load(
        base,
        Some(adapter),
        &Device::default(),
        crate::model::precision::Precision::F32,
    )?;
    answer_cost::run(&mut model, &subset, MAX_NEW_TOKENS, cfg.eval.latency_runs)
}
