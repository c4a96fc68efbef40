//! The HTTP endpoints: `/health`, `/v1/models`, `/v1/chat/completions` (whole or streamed as
//! server-sent events, OpenAI's chunk format).

use super::ServeConfig;
use super::api::{ChatRequest, prepare};
use super::error::ApiError;
use super::worker::{Event, Finished, Queue};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<Queue>,
    pub cfg: Arc<ServeConfig>,
    pub next_id: Arc<AtomicU64>,
}

/// The server's state: `ok` (200) while the model worker runs, `unavailable` (503) once it has
/// ended; with the queue and the jobs that panicked (each answered with a 500, the worker going
/// on with the next request).
pub async fn health(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let w = s.queue.health();
    let status = if w.running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let last_panic = w
        .last_panic
        .map(|(message, at)| json!({"message": message, "unix_time": at}));
    let body = json!({
        "status": if w.running { "ok" } else { "unavailable" },
        "model": s.cfg.model_name,
        "busy": w.busy,
        "queued": s.queue.queued(),
        "queue_capacity": s.queue.capacity(),
        "worker": {
            "running": w.running,
            "panics": w.panics,
            "last_panic": last_panic,
        },
    });
    (status, Json(body))
}

pub async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": s.cfg.model_name, "object": "model", "created": 0, "owned_by": "pearl"}],
    }))
}

pub async fn chat_completions(
    State(s): State<AppState>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(rejection)?;
    let cfg = s.cfg.clone();
    // Decoding data: URLs and reading image headers is blocking work.
    let prepared = tokio::task::spawn_blocking(move || prepare(req, &cfg))
        .await
        .map_err(|e| ApiError::internal(format!("request preparation failed: {e}")))??;
    let stream = prepared.stream;
    let mut events = s.queue.submit(prepared)?;
    // Wait until the worker accepts the prompt, so a refused prompt still gets its 4xx status.
    match events.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(e),
        Some(other) => {
            return Err(ApiError::internal(format!(
                "unexpected worker event {other:?}"
            )));
        }
        None => return Err(ApiError::internal("the model worker stopped")),
    }
    let meta = Meta {
        id: format!("chatcmpl-{}", s.next_id.fetch_add(1, Ordering::Relaxed)),
        model: s.cfg.model_name.clone(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if stream {
        let first = meta.chunk(json!({"role": "assistant", "content": ""}), None);
        let chunks = Chunks {
            events,
            meta,
            pending: VecDeque::from([first]),
            done: false,
        };
        return Ok(Sse::new(chunks).into_response());
    }
    loop {
        match events.recv().await {
            Some(Event::Done(f)) => return Ok(Json(meta.completion(&f)).into_response()),
            Some(Event::Failed(e)) => return Err(e),
            Some(_) => {}
            None => return Err(ApiError::internal("the model worker stopped")),
        }
    }
}

/// axum's JSON extractor errors (syntax, schema, content type, body too large) in OpenAI's shape.
fn rejection(r: JsonRejection) -> ApiError {
    let status = match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::invalid(None, format!("invalid request body: {}", r.body_text())).with_status(status)
}

struct Meta {
    id: String,
    model: String,
    created: u64,
}

impl Meta {
    fn completion(&self, f: &Finished) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": f.text},
                "finish_reason": f.finish_reason,
            }],
            "usage": usage(f),
        })
    }

    /// One stream chunk; the last one also carries `usage` (OpenAI sends it only when asked with
    /// `stream_options`; an extra field is harmless to clients that did not ask).
    fn chunk(&self, delta: Value, last: Option<&Finished>) -> sse::Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": last.map(|f| f.finish_reason)}],
        });
        if let Some(f) = last {
            chunk["usage"] = usage(f);
        }
        sse::Event::default().data(chunk.to_string())
    }
}

fn usage(f: &Finished) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

/// The worker's events as OpenAI stream chunks, ending with `data: [DONE]`. Dropping it (the
/// client disconnected) closes the event channel, which stops the generation.
struct Chunks {
    events: UnboundedReceiver<Event>,
    meta: Meta,
    pending: VecDeque<sse::Event>,
    done: bool,
}

impl futures_core::Stream for Chunks {
    type Item = Result<sse::Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let event = match this.events.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    continue;
                }
                Poll::Ready(Some(e)) => e,
            };
            match event {
                Event::Started { .. } => {}
                Event::Delta(text) => {
                    this.pending
                        .push_back(this.meta.chunk(json!({"content": text}), None));
                }
                Event::Done(f) => {
                    this.pending.push_back(this.meta.chunk(json!({}), Some(&f)));
                    this.pending.push_back(sse::Event::default().data("[DONE]"));
                    this.done = true;
                }
                Event::Failed(e) => {
                    this.pending
                        .push_back(sse::Event::default().data(e.body().to_string()));
                    this.pending.push_back(sse::Event::default().data("[DONE]"));
                    this.done = true;
                }
            }
        }
    }
}
