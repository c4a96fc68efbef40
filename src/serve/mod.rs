//! `pearl serve`: the model behind an OpenAI-compatible HTTP API (axum + tokio). One worker
//! thread runs the model; requests wait in a bounded queue; every limit (image bytes and pixels,
//! images per request, prompt and output tokens, body size) is answered with a 4xx error in
//! OpenAI's shape that says which limit and by how much. A request whose job panics gets a 500;
//! the worker survives it and `/health` reports it.

pub mod answer;
pub mod api;
pub mod error;
pub mod images;
pub mod routes;
pub mod worker;

use crate::infer::LocalModel;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use routes::AppState;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use worker::{FaultInjection, Queue};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The id `/v1/models` lists and responses name.
    pub model_name: String,
    /// Requests that may wait while the model answers another; more get 503.
    pub queue_capacity: usize,
    /// Prompt tokens, image tokens included.
    pub max_prompt_tokens: usize,
    /// The most `max_tokens` a request may ask for, and what it gets when it asks for nothing.
    pub max_new_tokens: usize,
    pub max_images: usize,
    /// Encoded image size (the file, not the bitmap).
    pub max_image_bytes: usize,
    /// Width x height, read from the image header before decoding.
    pub max_image_pixels: u64,
    /// Local image paths (and `file://` URLs) are read only under this directory.
    pub local_images: Option<PathBuf>,
    /// Fetch `http(s)://` image URLs (off: the server makes no outgoing connections).
    pub allow_remote_images: bool,
    /// Test hook (never set by `pearl serve`): lets a test make the worker panic.
    #[doc(hidden)]
    pub faults: FaultInjection,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_name: "pearl".into(),
            queue_capacity: 16,
            max_prompt_tokens: 16_384,
            max_new_tokens: 1024,
            max_images: 8,
            max_image_bytes: 10 << 20,
            // Far above what the processor keeps (it resizes to its max_pixels), yet bounded.
            max_image_pixels: 50_000_000,
            local_images: None,
            allow_remote_images: false,
            faults: FaultInjection::default(),
        }
    }
}

impl ServeConfig {
    /// The largest request body worth reading: every image at its limit, base64-encoded, plus
    /// 1 MiB of text.
    pub fn max_body_bytes(&self) -> usize {
        (self.max_image_bytes / 3 + 1) * 4 * self.max_images + (1 << 20)
    }
}

/// The HTTP application. Starts the model worker thread, which ends when the router is dropped.
pub fn app(model: LocalModel, cfg: ServeConfig) -> anyhow::Result<Router> {
    let queue = Queue::spawn(
        model,
        cfg.queue_capacity,
        cfg.max_prompt_tokens,
        cfg.faults.clone(),
    )?;
    let body_limit = cfg.max_body_bytes();
    let state = AppState {
        queue: Arc::new(queue),
        cfg: Arc::new(cfg),
        next_id: Arc::new(AtomicU64::new(0)),
    };
    Ok(Router::new()
        .route("/health", get(routes::health))
        .route("/v1/models", get(routes::models))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state))
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
