//! The model worker: one thread owns the model and answers requests one at a time, in arrival
//! order. Requests wait in a bounded channel; when it is full, new requests are turned away at
//! once (503) rather than piling up latency. Each request gets its events (start, text deltas,
//! end or failure) on its own channel; a request whose client has gone away is skipped, or
//! stopped at its next token.

use super::api::Prepared;
use super::error::ApiError;
use crate::infer::LocalModel;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// What the worker tells the handler of one request.
#[derive(Debug)]
pub enum Event {
    /// The prompt was accepted and generation begins.
    Started {
        prompt_tokens: usize,
    },
    /// New answer text (streaming requests only).
    Delta(String),
    Done(Finished),
    Failed(ApiError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub text: String,
    /// `stop` (a stop token) or `length` (the token budget), as OpenAI reports it.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

struct Job {
    request: Prepared,
    events: mpsc::UnboundedSender<Event>,
}

/// The sending side of the queue, shared by the request handlers.
pub struct Queue {
    tx: mpsc::Sender<Job>,
    busy: Arc<AtomicBool>,
}

impl Queue {
    /// Starts the worker thread. It ends when the queue is dropped.
    pub fn spawn(
        model: LocalModel,
        capacity: usize,
        max_prompt_tokens: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            capacity > 0,
            "the request queue needs room for at least one request"
        );
        let (tx, mut rx) = mpsc::channel::<Job>(capacity);
        let busy = Arc::new(AtomicBool::new(false));
        let flag = busy.clone();
        std::thread::Builder::new()
            .name("pearl-model".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    if job.events.is_closed() {
                        continue; // the client left while waiting
                    }
                    flag.store(true, Ordering::SeqCst);
                    run(&model, job, max_prompt_tokens);
                    flag.store(false, Ordering::SeqCst);
                }
            })?;
        Ok(Self { tx, busy })
    }

    /// Queues a request; its events arrive on the returned channel.
    pub fn submit(&self, request: Prepared) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
        let (events, rx) = mpsc::unbounded_channel();
        self.tx
            .try_send(Job { request, events })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ApiError::unavailable(format!(
                    "the server is busy: {} requests are already waiting; retry later",
                    self.tx.max_capacity()
                )),
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::unavailable("the model worker has stopped")
                }
            })?;
        Ok(rx)
    }

    /// Requests waiting (not counting the one being answered).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Whether the model is answering a request right now.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

fn run(model: &LocalModel, job: Job, max_prompt_tokens: usize) {
    let Job { request, events } = job;
    let enc = match model.encode(std::slice::from_ref(&request.chat)) {
        Ok(enc) => enc,
        // Images passed the handler's checks, so what fails here is the request's content
        // (an undecodable image body, a chat the template refuses).
        Err(e) => {
            let _ = events.send(Event::Failed(ApiError::invalid(
                Some("messages".to_string()),
                format!("{e:#}"),
            )));
            return;
        }
    };
    let prompt_tokens = enc.lengths[0];
    if prompt_tokens > max_prompt_tokens {
        let _ = events.send(Event::Failed(
            ApiError::invalid(
                Some("messages".to_string()),
                format!(
                    "the prompt is {prompt_tokens} tokens (images included), more than this \
                     server's limit of {max_prompt_tokens}"
                ),
            )
            .with_code("context_length_exceeded"),
        ));
        return;
    }
    if events.send(Event::Started { prompt_tokens }).is_err() {
        return;
    }
    let mut tokens: Vec<u32> = Vec::new();
    let mut sent = String::new();
    let mut on_token = |_: usize, token: u32| {
        tokens.push(token);
        if !request.stream {
            return !events.is_closed();
        }
        // Decode the whole answer so far and send what is new. Text ending in U+FFFD is a
        // character whose bytes are not all generated yet: wait for the rest. (Byte-level BPE
        // decoding only ever extends its earlier output, so `sent` stays a prefix.)
        let Ok(text) = model.decode_answer(&tokens) else {
            return true;
        };
        if text.len() > sent.len() && text.starts_with(&sent) && !text.ends_with('\u{FFFD}') {
            let delta = text[sent.len()..].to_string();
            sent = text;
            return events.send(Event::Delta(delta)).is_ok();
        }
        !events.is_closed()
    };
    let result = model.complete(
        &enc,
        request.max_new_tokens,
        request.sampling,
        &mut on_token,
    );
    let event = match result.map(|mut g| g.pop()) {
        Ok(Some(g)) => {
            if request.stream && g.text.len() > sent.len() && g.text.starts_with(&sent) {
                let _ = events.send(Event::Delta(g.text[sent.len()..].to_string()));
            }
            let stopped = tokens.last().is_some_and(|t| model.stop_tokens.contains(t));
            Event::Done(Finished {
                text: g.text,
                finish_reason: if stopped { "stop" } else { "length" },
                prompt_tokens,
                completion_tokens: g.new_tokens,
            })
        }
        Ok(None) => Event::Failed(ApiError::internal("the model returned no answer")),
        Err(e) => Event::Failed(ApiError::internal(format!("generation failed: {e:#}"))),
    };
    let _ = events.send(event);
}
