//! `pearl serve`: an OpenAI-compatible chat endpoint for a model directory.

use crate::serve::{ServeConfig, app, serve};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: super::model_args::ModelArgs,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on (loopback by default; 0.0.0.0 exposes the server to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Model id reported by /v1/models (default: the model directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Requests that may wait while one is answered; more are refused with 503.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    #[arg(long, default_value_t = 16_384)]
    pub max_prompt_tokens: usize,
    /// Upper bound of a request's max_tokens, and its default.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub max_images: usize,
    /// Bytes of one encoded image.
    #[arg(long, default_value_t = 10 << 20)]
    pub max_image_bytes: usize,
    /// Width x height of one image.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_image_pixels: u64,
    /// Accept local image paths and file:// URLs, but only under this directory.
    #[arg(long)]
    pub allow_local_images: Option<PathBuf>,
    /// Fetch http(s) image URLs (lets clients make the server connect anywhere it can reach).
    #[arg(long)]
    pub allow_remote_images: bool,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let name = a.name.clone().unwrap_or_else(|| {
        a.model
            .dir
            .file_name()
            .map_or_else(|| "pearl".into(), |n| n.to_string_lossy().into_owned())
    });
    let cfg = ServeConfig {
        model_name: name,
        queue_capacity: a.queue,
        max_prompt_tokens: a.max_prompt_tokens,
        max_new_tokens: a.max_new_tokens,
        max_images: a.max_images,
        max_image_bytes: a.max_image_bytes,
        max_image_pixels: a.max_image_pixels,
        local_images: a.allow_local_images.clone(),
        allow_remote_images: a.allow_remote_images,
        faults: Default::default(),
    };
    if let Some(dir) = &cfg.local_images {
        anyhow::ensure!(
            dir.is_dir(),
            "--allow-local-images {} is not a directory",
            dir.display()
        );
    }
    let model = a.model.load_chat_model()?;
    let router = app(model, cfg)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "serving {} on http://{}",
            a.model.dir.display(),
            listener.local_addr()?
        );
        serve(listener, router, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}
