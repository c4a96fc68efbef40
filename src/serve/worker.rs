//! The model worker: one thread owns the model and answers requests one at a time, in arrival
//! order. Requests wait in a bounded channel; when it is full, new requests are turned away at
//! once (503) rather than piling up latency. Each request gets its events (start, text deltas,
//! end or failure) on its own channel; a request whose client has gone away is skipped, or
//! stopped at its next token. A request whose job panics (a bug in the model code) is answered
//! with a 500 and the worker goes on with the next one; `/health` reports the panics, and reports
//! the server unavailable if the worker thread has ended.

use super::answer::Answer;
use super::api::Prepared;
use super::error::ApiError;
use crate::infer::LocalModel;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
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
    /// `stop` (a stop token or stop string) or `length` (the token budget), as OpenAI reports it.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

struct Job {
    request: Prepared,
    events: mpsc::UnboundedSender<Event>,
}

/// A test hook, hidden from the documentation and never armed by `pearl serve`: makes the worker
/// fail the way a bug in the model code would, so that tests can check the server survives it.
/// Shared by clones: a test keeps one and passes another in `ServeConfig::faults`.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    panic_in_next_job: Arc<AtomicBool>,
    end_worker_after_next_job: Arc<AtomicBool>,
}

impl FaultInjection {
    /// The job being answered, or else the next one, panics at its next generated token.
    pub fn panic_in_next_job(&self) {
        self.panic_in_next_job.store(true, Ordering::SeqCst);
    }

    /// The worker thread itself panics (outside any job) once its next job is done.
    pub fn end_worker_after_next_job(&self) {
        self.end_worker_after_next_job.store(true, Ordering::SeqCst);
    }
}

/// The worker's state as `/health` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerHealth {
    /// The worker thread is alive (it takes requests).
    pub running: bool,
    /// Answering a request right now.
    pub busy: bool,
    /// Jobs that panicked since the server started (each answered with a 500).
    pub panics: u64,
    /// The message of the last panic and when it happened (Unix seconds).
    pub last_panic: Option<(String, u64)>,
}

/// Shared between the worker thread and the handlers.
#[derive(Default)]
struct Shared {
    busy: AtomicBool,
    panics: AtomicU64,
    last_panic: Mutex<Option<(String, u64)>>,
}

/// The sending side of the queue, shared by the request handlers.
pub struct Queue {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Queue {
    /// Starts the worker thread. It ends when the queue is dropped.
    pub fn spawn(
        model: LocalModel,
        capacity: usize,
        max_prompt_tokens: usize,
        faults: FaultInjection,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            capacity > 0,
            "the request queue needs room for at least one request"
        );
        let (tx, mut rx) = mpsc::channel::<Job>(capacity);
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        std::thread::Builder::new()
            .name("pearl-model".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    if job.events.is_closed() {
                        continue; // the client left while waiting
                    }
                    state.busy.store(true, Ordering::SeqCst);
                    let events = job.events.clone();
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        run(&model, job, max_prompt_tokens, &faults)
                    }));
                    if let Err(payload) = outcome {
                        state.record_panic(panic_message(payload.as_ref()), &events);
                    }
                    state.busy.store(false, Ordering::SeqCst);
                    if faults
                        .end_worker_after_next_job
                        .swap(false, Ordering::SeqCst)
                    {
                        panic!("injected fault: the model worker thread ends");
                    }
                }
            })?;
        Ok(Self { tx, shared })
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

    pub fn health(&self) -> WorkerHealth {
        WorkerHealth {
            // The worker thread owns the receiving end: it is closed once the thread has ended,
            // however it ended.
            running: !self.tx.is_closed(),
            busy: self.shared.busy.load(Ordering::SeqCst),
            panics: self.shared.panics.load(Ordering::SeqCst),
            last_panic: lock(&self.shared.last_panic).clone(),
        }
    }
}

impl Shared {
    /// Counts a panicked job and answers its request (if the panic came before its answer).
    fn record_panic(&self, message: String, events: &mpsc::UnboundedSender<Event>) {
        eprintln!("pearl serve: a request's job panicked ({message}); the worker goes on");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *lock(&self.last_panic) = Some((message.clone(), now));
        self.panics.fetch_add(1, Ordering::SeqCst);
        let _ = events.send(Event::Failed(ApiError::internal(format!(
            "the model failed on this request (it panicked: {message}); the server goes on \
             with other requests"
        ))));
    }
}

/// The mutex's value, even if a thread panicked while holding it (it holds plain data).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn run(model: &LocalModel, job: Job, max_prompt_tokens: usize, faults: &FaultInjection) {
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
    let mut answer = Answer::new(
        &model.processor.tokenizer,
        &model.stop_tokens,
        &request.stop,
    );
    let mut last_token = None;
    let mut on_token = |_: usize, token: u32| {
        last_token = Some(token);
        if faults.panic_in_next_job.swap(false, Ordering::SeqCst) {
            panic!("injected fault: a job panics during generation");
        }
        let more = answer.push(token);
        if request.stream
            && let Some(delta) = answer.release()
            && events.send(Event::Delta(delta)).is_err()
        {
            return false;
        }
        more && !events.is_closed()
    };
    let result = model.complete(
        &enc,
        request.max_new_tokens,
        request.sampling,
        &mut on_token,
    );
    let event = match result.map(|mut g| g.pop()) {
        Ok(Some(g)) => {
            let end = answer.finish(&g.text);
            if request.stream && !end.rest.is_empty() {
                let _ = events.send(Event::Delta(end.rest));
            }
            let stop_token = last_token.is_some_and(|t| model.stop_tokens.contains(&t));
            Event::Done(Finished {
                text: end.text,
                finish_reason: if stop_token || end.stop_string {
                    "stop"
                } else {
                    "length"
                },
                prompt_tokens,
                completion_tokens: g.new_tokens,
            })
        }
        Ok(None) => Event::Failed(ApiError::internal("the model returned no answer")),
        Err(e) => Event::Failed(ApiError::internal(format!("generation failed: {e:#}"))),
    };
    let _ = events.send(event);
}
