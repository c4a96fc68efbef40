//! `pearl bench generate`: decoding latency of a randomly initialised model of a given config
//! (weights do not change the arithmetic, so no checkpoint is needed): time to first token,
//! per-token latency with the KV cache, the protocol's 4-token answer end to end, peak memory.
//! The prompt is processed by the processor of the config's directory, so image sizes and token
//! counts are those the real model would see.

use super::{median, peak_rss_bytes};
use crate::data::chat::{Message, Part, Role};
use crate::eval::answerer::ChatModel;
use crate::infer::{GenerateOptions, LocalModel, Sampling, generate};
use crate::model::Vlm;
use crate::model::device::DeviceSpec;
use crate::model::precision::Precision;
use crate::processor::Processor;
use anyhow::{Context, ensure};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// `config.json` of a model directory that also holds the tokenizer and preprocessor.
    pub config: PathBuf,
    pub prompt: String,
    pub images: Vec<PathBuf>,
    /// Tokens decoded per timed run (per-token latency is measured over these).
    pub new_tokens: usize,
    /// Timed runs after one warm-up run.
    pub runs: usize,
    pub seed: u64,
    pub precision: Precision,
    pub device: DeviceSpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    pub config: String,
    pub precision: Precision,
    pub params: u64,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub new_tokens: usize,
    pub runs: usize,
    pub init_seconds: f64,
    /// Medians over the runs.
    pub first_token_seconds: f64,
    pub per_token_seconds: f64,
    pub tokens_per_second: f64,
    /// Tokenizing, image preprocessing, prefill and 4 tokens, as `pearl eval` answers.
    pub answer_4_tokens_seconds: f64,
    pub peak_rss_mib: Option<f64>,
}

/// A random model of `config` with the processor of the config's directory. Stop tokens are
/// disabled: random weights would end answers at arbitrary points, and timings need fixed lengths.
pub fn random_local_model(
    config: &Path,
    seed: u64,
    precision: Precision,
    device: DeviceSpec,
) -> anyhow::Result<LocalModel> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let processor = Processor::from_dir(dir).with_context(|| {
        format!(
            "the directory of {} needs the processor files",
            config.display()
        )
    })?;
    let model =
        Vlm::random_from_config(config, seed, &device.device()?)?.for_inference(precision)?;
    Ok(LocalModel::new(model, processor, vec![]))
}

/// One user turn: the images (made absolute, the chat model's contract) then the prompt.
pub fn user_turn(prompt: &str, images: &[PathBuf]) -> anyhow::Result<Vec<Message>> {
    let mut content = Vec::new();
    for p in images {
        let abs =
            std::path::absolute(p).with_context(|| format!("bad image path {}", p.display()))?;
        ensure!(abs.is_file(), "image {} does not exist", p.display());
        content.push(Part::Image {
            image: abs.to_string_lossy().into_owned(),
        });
    }
    content.push(Part::Text {
        text: prompt.to_string(),
    });
    Ok(vec![Message::new(Role::User, content)])
}

pub fn run(b: &GenerateBench) -> anyhow::Result<GenerateReport> {
    ensure!(
        b.runs >= 1 && b.new_tokens >= 2,
        "need at least 1 run of at least 2 tokens"
    );
    let started = Instant::now();
    let mut local = random_local_model(&b.config, b.seed, b.precision, b.device)?;
    let init_seconds = started.elapsed().as_secs_f64();
    let chat = user_turn(&b.prompt, &b.images)?;
    let enc = local.encode(std::slice::from_ref(&chat))?;
    let batch = enc.to_vl();
    let opts = GenerateOptions {
        max_new_tokens: b.new_tokens,
        sampling: Sampling::greedy(),
        stop_tokens: vec![],
    };
    let (mut ttft, mut steps, mut answers) = (vec![], vec![], vec![]);
    for run in 0..=b.runs {
        let out = generate(&local.model, &batch, &opts)?;
        let answer = local.generate(std::slice::from_ref(&chat), 4)?;
        if run == 0 {
            continue; // warm-up: allocator and thread pool
        }
        ttft.push(out.timing.first_token_seconds);
        steps.extend(out.timing.step_seconds);
        answers.push(answer[0].seconds);
    }
    let image_pad = i64::from(local.processor.tokenizer.special().image_pad);
    let per_token = median(&steps);
    Ok(GenerateReport {
        config: b.config.display().to_string(),
        precision: b.precision,
        params: local.model.num_params(),
        prompt_tokens: enc.lengths[0],
        image_tokens: enc.input_ids.iter().filter(|&&t| t == image_pad).count(),
        new_tokens: b.new_tokens,
        runs: b.runs,
        init_seconds,
        first_token_seconds: median(&ttft),
        per_token_seconds: per_token,
        tokens_per_second: if per_token > 0.0 {
            1.0 / per_token
        } else {
            0.0
        },
        answer_4_tokens_seconds: median(&answers),
        peak_rss_mib: peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64),
    })
}

impl GenerateReport {
    pub fn to_table(&self) -> String {
        let rss = self
            .peak_rss_mib
            .map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"));
        let rows = [
            ("config", self.config.clone()),
            ("precision", self.precision.name().to_string()),
            ("parameters", format!("{:.1} M", self.params as f64 / 1e6)),
            (
                "prompt tokens",
                format!("{} ({} image)", self.prompt_tokens, self.image_tokens),
            ),
            (
                "timed runs",
                format!("{} x {} tokens", self.runs, self.new_tokens),
            ),
            (
                "time to first token",
                format!("{:.1} ms", self.first_token_seconds * 1e3),
            ),
            (
                "per-token latency",
                format!(
                    "{:.2} ms ({:.1} tokens/s)",
                    self.per_token_seconds * 1e3,
                    self.tokens_per_second
                ),
            ),
            (
                "4-token answer",
                format!("{:.1} ms", self.answer_4_tokens_seconds * 1e3),
            ),
            ("peak RSS", rss),
        ];
        let mut s = String::from("| measure | value |\n|---|---|\n");
        for (k, v) in rows {
            s += &format!("| {k} | {v} |\n");
        }
        s
    }
}
