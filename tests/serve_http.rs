//! `pearl serve` over real HTTP: a server on 127.0.0.1:0 inside the test, the tiny fixture
//! model behind it, and `ureq` as the client.

mod common;
use base64::Engine;
use burn::tensor::Device;
use common::fixture_dir;
use pearl::data::chat::{Message, Part, Role};
use pearl::eval::answerer::ChatModel;
use pearl::infer::LocalModel;
use pearl::serve::worker::FaultInjection;
use pearl::serve::{ServeConfig, app, serve};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};

fn fixture_model() -> LocalModel {
    let mut m = LocalModel::load(
        &fixture_dir().join("model"),
        None,
        &Device::flex(),
        pearl::model::precision::Precision::F32,
    )
    .unwrap();
    // Random weights may emit a stop token at any step; without stops every answer uses its
    // whole budget, which the tests rely on.
    m.stop_tokens = vec![];
    m
}

/// Starts a server with `cfg` on a free loopback port; returns its base URL.
fn start(cfg: ServeConfig) -> String {
    spawn_router(app(fixture_model(), cfg).unwrap())
}

fn spawn_router(router: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, router, std::future::pending())
                .await
                .unwrap();
        });
    });
    format!("http://{addr}")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs a raw body; returns the status and the parsed JSON answer.
fn post_raw(url: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(&format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

fn post(url: &str, body: Value) -> (u16, Value) {
    post_raw(url, &body.to_string())
}

fn get(url: &str) -> Value {
    let mut r = agent().get(url).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join("images").join(name)).unwrap()
}

fn user(content: Value) -> Value {
    json!([{"role": "user", "content": content}])
}

/// What the model answers without the server in between.
fn direct_answer(prompt: &str, max_new_tokens: usize) -> String {
    let chat = vec![Message::new(
        Role::User,
        vec![Part::Text {
            text: prompt.into(),
        }],
    )];
    fixture_model().generate(&[chat], max_new_tokens).unwrap()[0]
        .text
        .clone()
}

fn assert_error(status: u16, body: &Value, want_status: u16, fragment: &str) {
    assert_eq!(status, want_status, "{body}");
    let msg = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(msg.contains(fragment), "{fragment:?} not in {msg:?}");
    assert!(body["error"]["type"].is_string(), "{body}");
}

/// GETs `/health`, whatever its status.
fn health(url: &str) -> (u16, Value) {
    let mut r = agent().get(&format!("{url}/health")).call().unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
    )
}

/// The data events of a streamed completion, up to `[DONE]` (as `Value::Null`).
fn stream_events(url: &str, body: Value) -> Vec<Value> {
    let resp = agent()
        .post(&format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = vec![];
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            events.push(Value::Null);
            break;
        }
        events.push(serde_json::from_str(data).unwrap());
    }
    events
}

/// The streamed answer's text and finish reason.
fn streamed(url: &str, mut body: Value) -> (String, Value) {
    body["stream"] = json!(true);
    let events = stream_events(url, body);
    assert!(events.last().unwrap().is_null(), "ends with [DONE]");
    let chunks = &events[..events.len() - 1];
    let text = chunks
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap_or(""))
        .collect();
    (
        text,
        chunks.last().unwrap()["choices"][0]["finish_reason"].clone(),
    )
}

#[test]
fn health_models_and_completions_match_the_model() {
    let url = start(ServeConfig {
        model_name: "tiny".into(),
        ..ServeConfig::default()
    });
    assert_eq!(get(&format!("{url}/health"))["status"], "ok");
    assert_eq!(get(&format!("{url}/v1/models"))["data"][0]["id"], "tiny");

    let (status, v) = post(
        &url,
        json!({"model": "tiny", "messages": user(json!("Hello")), "max_tokens": 5}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        direct_answer("Hello", 5)
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);

    // An image as a data: URL adds its 35 image tokens (200x150 at the fixture's pixel budget).
    let with_image = user(json!([
        {"type": "image_url", "image_url": {"url": data_url(&fixture_image("scene0.png"))}},
        {"type": "text", "text": "Hello"}
    ]));
    let (status, w) = post(&url, json!({"messages": with_image, "max_tokens": 2}));
    assert_eq!(status, 200, "{w}");
    let extra = w["usage"]["prompt_tokens"].as_u64().unwrap()
        - v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(extra >= 35, "{extra}");
}

#[test]
fn streaming_sends_the_same_text_in_chunks() {
    let url = start(ServeConfig::default());
    let whole = post(
        &url,
        json!({"messages": user(json!("Stream me")), "max_tokens": 6}),
    )
    .1;
    let chunks = stream_events(
        &url,
        json!({"messages": user(json!("Stream me")), "max_tokens": 6, "stream": true}),
    );
    let mut text = String::new();
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        text += c["choices"][0]["delta"]["content"].as_str().unwrap_or("");
    }
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks.len() >= 4,
        "role chunk, some text, the final chunk, [DONE]: {chunks:?}"
    );
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"]["completion_tokens"], 6);
    assert!(chunks.last().unwrap().is_null(), "ends with [DONE]");
}

#[test]
fn malformed_and_unsupported_requests_get_openai_errors() {
    let url = start(ServeConfig {
        max_new_tokens: 64,
        ..ServeConfig::default()
    });
    let (s, v) = post_raw(&url, r#"{"messages": [{"role": "user", "content": "Hi"}"#);
    assert_error(s, &v, 400, "JSON");
    let (s, v) = post_raw(&url, r#"{"prompt": "Hi"}"#);
    assert_error(s, &v, 400, "messages");
    let (s, v) = post(&url, json!({"messages": []}));
    assert_error(s, &v, 400, "empty");
    let (s, v) = post(&url, json!({"messages": user(json!("Hi")), "n": 2}));
    assert_error(s, &v, 400, "n = 2");
    assert_eq!(v["error"]["param"], "n");
    let (s, v) = post(
        &url,
        json!({"messages": user(json!("Hi")), "max_tokens": 65}),
    );
    assert_error(s, &v, 400, "1 to 64");
    assert_eq!(v["error"]["param"], "max_tokens");
    let (s, v) = post(
        &url,
        json!({"messages": user(json!("Hi")), "temperature": -1}),
    );
    assert_error(s, &v, 400, "temperature");
    let (s, v) = post(
        &url,
        json!({"messages": [{"role": "tool", "content": "x"}]}),
    );
    assert_error(s, &v, 400, "role");
    let (s, v) = post(
        &url,
        json!({"messages": user(json!([{"type": "audio", "data": "x"}]))}),
    );
    assert_error(s, &v, 400, "invalid request body");
}

#[test]
fn image_limits_and_sources_are_enforced() {
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(
        allowed.path().join("ok.png"),
        fixture_image("scene1_crop.png"),
    )
    .unwrap();
    let url = start(ServeConfig {
        max_image_bytes: 40_000,
        max_image_pixels: 100_000,
        max_images: 2,
        local_images: Some(allowed.path().to_path_buf()),
        ..ServeConfig::default()
    });
    let ask = |image_url: &str| {
        post(
            &url,
            json!({"messages": user(json!([{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "?"}])), "max_tokens": 1}),
        )
    };
    // scene0.png is 60 KB: over the byte limit.
    let (s, v) = ask(&data_url(&fixture_image("scene0.png")));
    assert_error(s, &v, 413, "40000 bytes");
    assert_eq!(v["error"]["code"], "image_too_large");
    // A 1000x1000 PNG of one colour is a few KB but a million pixels.
    let mut big = std::io::Cursor::new(vec![]);
    image::RgbImage::from_pixel(1000, 1000, image::Rgb([1, 2, 3]))
        .write_to(&mut big, image::ImageFormat::Png)
        .unwrap();
    let (s, v) = ask(&data_url(big.get_ref()));
    assert_error(s, &v, 400, "1000x1000");
    let (s, v) = ask(&data_url(b"definitely not a picture"));
    assert_error(s, &v, 400, "not an image");
    let (s, v) = ask("data:image/png;base64,@@@");
    assert_error(s, &v, 400, "base64");
    let (s, v) = ask("https://example.com/cat.png");
    assert_error(s, &v, 400, "remote");
    // Local files: inside the allowed directory yes, elsewhere no.
    let (s, v) = ask(&allowed.path().join("ok.png").display().to_string());
    assert_eq!(s, 200, "{v}");
    let (s, v) = ask(&format!(
        "file://{}",
        allowed.path().join("ok.png").display()
    ));
    assert_eq!(s, 200, "{v}");
    let outside = fixture_dir().join("images/scene1_crop.png");
    let (s, v) = ask(&outside.display().to_string());
    assert_error(s, &v, 400, "outside");
    let (s, v) = ask(&format!(
        "{}/../ok.png",
        allowed.path().join("ok.png").display()
    ));
    assert_error(s, &v, 400, "cannot read image");
    // Too many images.
    let one = json!({"type": "image_url", "image_url": {"url": data_url(&fixture_image("scene1_crop.png"))}});
    let (s, v) = post(
        &url,
        json!({"messages": user(json!([one, one, one])), "max_tokens": 1}),
    );
    assert_error(s, &v, 400, "too many images");
    // A body beyond what the image limits can explain is refused unread.
    let huge = "x".repeat(
        ServeConfig {
            max_image_bytes: 40_000,
            max_images: 2,
            ..ServeConfig::default()
        }
        .max_body_bytes()
            + 10,
    );
    let (s, v) = post(&url, json!({"messages": user(json!(huge))}));
    assert_error(s, &v, 413, "invalid request body");
}

#[test]
fn local_paths_are_refused_without_the_flag() {
    let url = start(ServeConfig::default());
    let path = fixture_dir()
        .join("images/scene1_crop.png")
        .display()
        .to_string();
    let (s, v) = post(
        &url,
        json!({"messages": user(json!([{"type": "image_url", "image_url": path}])), "max_tokens": 1}),
    );
    assert_error(s, &v, 400, "local image paths are refused");
}

#[test]
fn prompt_token_limit() {
    let url = start(ServeConfig {
        max_prompt_tokens: 20,
        ..ServeConfig::default()
    });
    let (s, v) = post(
        &url,
        json!({"messages": user(json!("Hello there")), "max_tokens": 1}),
    );
    assert_error(s, &v, 400, "limit of 20");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[test]
fn concurrent_requests_each_get_their_own_answer() {
    let url = start(ServeConfig::default());
    let prompts = ["one", "two two", "three three three", "four"];
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let url = &url;
                s.spawn(move || post(url, json!({"messages": user(json!(p)), "max_tokens": 4})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, (status, v)) in prompts.iter().zip(&answers) {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            direct_answer(p, 4),
            "{p}"
        );
    }
}

#[test]
fn a_full_queue_answers_503_and_a_dropped_stream_frees_the_worker() {
    let url = start(ServeConfig {
        queue_capacity: 1,
        max_new_tokens: 100_000,
        max_prompt_tokens: 200_000,
        ..ServeConfig::default()
    });
    // A streams a very long answer; reading its first chunk proves the worker is on it.
    let long = agent()
        .post(&format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(
            json!({"messages": user(json!("Go on")), "max_tokens": 100_000, "stream": true})
                .to_string(),
        )
        .unwrap();
    let mut reader = BufReader::new(long.into_body().into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    // B waits in the queue (capacity 1) ...
    let b = {
        let url = url.clone();
        std::thread::spawn(move || {
            post(&url, json!({"messages": user(json!("B")), "max_tokens": 2}))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while get(&format!("{url}/health"))["queued"] != 1 {
        assert!(std::time::Instant::now() < deadline, "B never queued");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(get(&format!("{url}/health"))["busy"], true);
    // ... so C is turned away at once.
    let (s, v) = post(&url, json!({"messages": user(json!("C")), "max_tokens": 2}));
    assert_error(s, &v, 503, "busy");
    // Hanging up on A stops its generation; B is then answered.
    drop(reader);
    let (s, v) = b.join().unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[test]
fn remote_images_are_fetched_only_when_allowed() {
    use axum::http::StatusCode;
    use axum::routing::get;
    let small = fixture_image("scene1_crop.png");
    let big = fixture_image("scene0.png");
    let images = spawn_router(
        axum::Router::new()
            .route("/small.png", get(move || async move { small.clone() }))
            .route("/big.png", get(move || async move { big.clone() }))
            .route("/gone.png", get(|| async { StatusCode::NOT_FOUND })),
    );
    let ask = |url: &str, image: String| {
        post(
            url,
            json!({"messages": user(json!([{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "?"}])), "max_tokens": 1}),
        )
    };
    let refusing = start(ServeConfig::default());
    let (s, v) = ask(&refusing, format!("{images}/small.png"));
    assert_error(s, &v, 400, "--allow-remote-images");

    let url = start(ServeConfig {
        allow_remote_images: true,
        max_image_bytes: 40_000,
        ..ServeConfig::default()
    });
    let (s, v) = ask(&url, format!("{images}/small.png"));
    assert_eq!(s, 200, "{v}");
    // The fetched image reached the model: the same prompt tokens as sending it inline.
    let (_, inline) = ask(&url, data_url(&fixture_image("scene1_crop.png")));
    assert_eq!(
        v["usage"]["prompt_tokens"],
        inline["usage"]["prompt_tokens"]
    );
    let (s, v) = ask(&url, format!("{images}/big.png"));
    assert_error(s, &v, 413, "more than 40000 bytes");
    let (s, v) = ask(&url, format!("{images}/gone.png"));
    assert_error(s, &v, 400, "404");
}

#[test]
fn a_panicking_job_gets_a_500_and_the_server_goes_on() {
    let faults = FaultInjection::default();
    let url = start(ServeConfig {
        faults: faults.clone(),
        ..ServeConfig::default()
    });
    let (s, h) = health(&url);
    assert_eq!((s, &h["worker"]["panics"]), (200, &json!(0)), "{h}");
    assert!(h["worker"]["last_panic"].is_null(), "{h}");

    let ask = json!({"messages": user(json!("Hello")), "max_tokens": 3});
    faults.panic_in_next_job();
    let (s, v) = post(&url, ask.clone());
    assert_error(s, &v, 500, "panicked");
    assert_eq!(v["error"]["type"], "server_error");

    // The worker survived: the next request is answered, as the model answers it.
    let (s, v) = post(&url, ask.clone());
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        direct_answer("Hello", 3)
    );
    let (s, h) = health(&url);
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["worker"]["running"], true);
    assert_eq!(h["worker"]["panics"], 1);
    let message = h["worker"]["last_panic"]["message"].as_str().unwrap();
    assert!(message.contains("injected fault"), "{h}");
    assert!(h["worker"]["last_panic"]["unix_time"].as_u64().unwrap() > 0);

    // A streamed request already has its 200: the failure comes as an error event, then [DONE].
    faults.panic_in_next_job();
    let events = stream_events(&url, json!({"messages": user(json!("Hi")), "stream": true}));
    let error = &events[events.len() - 2]["error"];
    assert!(
        error["message"].as_str().unwrap().contains("panicked"),
        "{events:?}"
    );
    assert!(events.last().unwrap().is_null());
    assert_eq!(health(&url).1["worker"]["panics"], 2);
    assert_eq!(post(&url, ask).0, 200);
}

#[test]
fn health_is_unavailable_once_the_worker_has_ended() {
    let faults = FaultInjection::default();
    let url = start(ServeConfig {
        faults: faults.clone(),
        ..ServeConfig::default()
    });
    faults.end_worker_after_next_job();
    let ask = json!({"messages": user(json!("Hello")), "max_tokens": 2});
    assert_eq!(post(&url, ask.clone()).0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (s, h) = loop {
        let (s, h) = health(&url);
        if s != 200 || std::time::Instant::now() > deadline {
            break (s, h);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(s, 503, "{h}");
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["worker"]["running"], false);
    let (s, v) = post(&url, ask);
    assert_error(s, &v, 503, "stopped");
}

#[test]
fn stop_strings_end_the_answer_before_them() {
    let url = start(ServeConfig::default());
    let ask = |extra: Value| {
        let mut body = json!({"messages": user(json!("Tell me more")), "max_tokens": 24});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let whole = post(&url, ask(json!({}))).1["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string from the first half of the answer: two characters, whole ones.
    let chars: Vec<char> = whole.chars().collect();
    assert!(
        chars.len() >= 8,
        "the answer is too short to cut: {whole:?}"
    );
    let stop: String = (1..chars.len() / 2)
        .map(|i| chars[i..i + 2].iter().collect::<String>())
        .find(|s: &String| !s.contains('\u{FFFD}'))
        .unwrap();
    let want = &whole[..whole.find(&stop).unwrap()];

    for stop_field in [json!(stop), json!(["never seen \u{1}", stop])] {
        let (s, v) = post(&url, ask(json!({"stop": stop_field})));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], want, "stop {stop:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(
            v["usage"]["completion_tokens"].as_u64().unwrap() < 24,
            "generation ends at the stop string: {v}"
        );
        let (text, finish) = streamed(&url, ask(json!({"stop": stop_field})));
        assert_eq!(text, want, "streamed, stop {stop:?}");
        assert_eq!(finish, "stop");
    }
    // A stop string that never occurs changes nothing.
    let (s, v) = post(&url, ask(json!({"stop": "never seen \u{1}"})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], whole);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(streamed(&url, ask(json!({"stop": ["\u{1}"]}))).0, whole);

    let (s, v) = post(&url, ask(json!({"stop": ""})));
    assert_error(s, &v, 400, "empty");
    assert_eq!(v["error"]["param"], "stop");
    let (s, v) = post(&url, ask(json!({"stop": 7})));
    assert_error(s, &v, 400, "invalid request body");
}

#[test]
fn fields_that_would_change_the_answer_are_refused_by_name() {
    let url = start(ServeConfig::default());
    let ask = |field: &str, value: Value| {
        let mut body = json!({"messages": user(json!("Hi")), "max_tokens": 1});
        body[field] = value;
        post(&url, body)
    };
    let refused = [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "zoom"}}]),
        ),
        ("tool_choice", json!("required")),
        ("functions", json!([{"name": "zoom"}])),
        ("function_call", json!({"name": "zoom"})),
        ("response_format", json!({"type": "json_object"})),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(-1)),
        ("logit_bias", json!({"42": 100})),
    ];
    for (field, value) in refused {
        let (s, v) = ask(field, value);
        assert_error(s, &v, 400, field);
        assert_eq!(v["error"]["param"], field, "{v}");
    }
    // Neutral values (the documented defaults) and fields that cannot change the answer pass.
    let passing = [
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("response_format", json!({"type": "text"})),
        ("presence_penalty", json!(0)),
        ("frequency_penalty", json!(0.0)),
        ("logit_bias", json!({})),
        ("logit_bias", Value::Null),
        ("user", json!("someone")),
        ("stream_options", json!({"include_usage": true})),
        ("some_future_field", json!(1)),
    ];
    for (field, value) in passing {
        let (s, v) = ask(field, value.clone());
        assert_eq!(s, 200, "{field} = {value}: {v}");
    }
}

/// `pearl serve` on the Qwen3-VL fixture: an answer through the HTTP path equals the model's own,
/// and the prompt is the Qwen3-VL template's (no default system prompt, which Qwen2.5-VL's adds),
/// image tokens included.
#[test]
fn qwen3_model_answers_through_http_with_its_own_template() {
    let dir = common::qwen3_fixture_dir();
    let load = || {
        let mut m = LocalModel::load(
            &dir.join("model"),
            None,
            &Device::flex(),
            pearl::model::precision::Precision::F32,
        )
        .unwrap();
        m.stop_tokens = vec![];
        m
    };
    let mut local = load();
    assert_eq!(local.model.family(), pearl::model::Family::Qwen3Vl);
    let url = spawn_router(app(load(), ServeConfig::default()).unwrap());
    let (status, v) = post(
        &url,
        json!({"messages": user(json!("Hello")), "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{v}");
    let chat = vec![Message::new(
        Role::User,
        vec![Part::Text {
            text: "Hello".into(),
        }],
    )];
    let direct = local.generate(std::slice::from_ref(&chat), 4).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], direct[0].text);
    let rendered = local.processor.render(&chat, true).unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    let prompt = local.processor.tokenizer.encode(&rendered).unwrap().len() as u64;
    assert_eq!(v["usage"]["prompt_tokens"], prompt);

    // An image (16-pixel patches, 32-pixel merged units) through a data: URL.
    let image = std::fs::read(dir.join("images/scene0.png")).unwrap();
    let with_image = user(json!([
        {"type": "image_url", "image_url": {"url": data_url(&image)}},
        {"type": "text", "text": "Hello"}
    ]));
    let (status, w) = post(&url, json!({"messages": with_image, "max_tokens": 2}));
    assert_eq!(status, 200, "{w}");
    let extra = w["usage"]["prompt_tokens"].as_u64().unwrap() - prompt;
    assert!(extra > 2, "{extra} more prompt tokens with an image");
}
