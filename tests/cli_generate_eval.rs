//! `pearl generate` and `pearl eval` (direct protocol and tool agent) with the tiny fixture model,
//! run as the real binary.

mod common;
use common::fixture_dir;
use pearl::eval::record::read_run;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pearl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(args)
        .output()
        .expect("cannot run pearl")
}

fn model_dir() -> String {
    fixture_dir().join("model").display().to_string()
}

fn image(name: &str) -> String {
    fixture_dir()
        .join("images")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn generate_answers_and_reports_token_counts() {
    let out = pearl(&[
        "generate",
        "--model",
        &model_dir(),
        "--image",
        &image("scene0.png"),
        "--prompt",
        "What is the colour of the square?",
        "--max-new-tokens",
        "5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The fixture's 200x150 image is 35 merged image tokens.
    assert!(stderr.contains("(35 image)"), "{stderr}");
    assert!(stderr.contains("new tokens"), "{stderr}");
    // Same seed, same sample; the adapter loads and merges.
    let sampled = |seed: &str| {
        let o = pearl(&[
            "generate",
            "--model",
            &model_dir(),
            "--adapter",
            &fixture_dir().join("adapter").display().to_string(),
            "--prompt",
            "Hi",
            "--temperature",
            "1.0",
            "--top-k",
            "50",
            "--seed",
            seed,
            "--max-new-tokens",
            "6",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    assert_eq!(sampled("4"), sampled("4"));
    // In bf16 (weights and activations), the adapter merged first.
    let bf16 = pearl(&[
        "generate",
        "--model",
        &model_dir(),
        "--adapter",
        &fixture_dir().join("adapter").display().to_string(),
        "--image",
        &image("scene0.png"),
        "--prompt",
        "What is the colour of the square?",
        "--max-new-tokens",
        "3",
        "--precision",
        "bf16",
    ]);
    let stderr = String::from_utf8_lossy(&bf16.stderr);
    assert!(bf16.status.success(), "{stderr}");
    assert!(stderr.contains("(35 image)"), "{stderr}");
}

#[test]
fn generate_refuses_bad_arguments_with_a_message() {
    let missing = pearl(&[
        "generate",
        "--model",
        &model_dir(),
        "--image",
        "no_such_image.png",
        "--prompt",
        "x",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no_such_image.png"));
    let temp = pearl(&[
        "generate",
        "--model",
        &model_dir(),
        "--prompt",
        "x",
        "--temperature=-1",
    ]);
    assert!(!temp.status.success());
    assert!(String::from_utf8_lossy(&temp.stderr).contains("temperature"));
    let precision = pearl(&[
        "generate",
        "--model",
        &model_dir(),
        "--prompt",
        "x",
        "--precision",
        "fp8",
    ]);
    assert!(!precision.status.success());
    assert!(String::from_utf8_lossy(&precision.stderr).contains("\"fp8\""));
}

/// Three MCQ items over the fixture images, in the project's JSONL format.
fn write_items(dir: &Path) -> PathBuf {
    let items = [
        ("q1", "scene0.png", "What colour is the small square?", "B"),
        ("q2", "scene1.png", "Where is the circle?", "A"),
        ("q3", "scene1_crop.png", "What shape is shown?", "C"),
    ];
    let mut lines = String::new();
    for (id, img, question, answer) in items {
        lines += &serde_json::json!({
            "id": id, "image": image(img), "question": question,
            "options": ["red", "blue", "green"], "answer": answer, "category": "synthetic"
        })
        .to_string();
        lines.push('\n');
    }
    let path = dir.join("mcq.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn eval_runs_the_fixture_model_directly_and_with_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_items(tmp.path()).display().to_string();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let (model, out_s) = (model_dir(), out.display().to_string());
        let mut args = vec![
            "eval", "--model", &model, "--bench", "jsonl", "--data", &data, "--out", &out_s,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let o = pearl(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };

    let direct = run("direct", &[]);
    let records = read_run(&direct).unwrap();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert!(
            r.new_tokens >= 1 && r.new_tokens <= 4,
            "protocol budget: {r:?}"
        );
        assert!(r.image_tokens > 0 && r.prompt_tokens > r.image_tokens);
        assert!(r.latency_s > 0.0);
        assert!(r.prompt.contains("Answer with the option's letter"));
        assert!(r.tools.is_none());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(direct.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["overall"]["n"], 3, "{summary}");
    assert!(direct.join("summary.md").is_file());

    let tools = run(
        "tools",
        &[
            "--agent",
            "tools",
            "--max-tool-calls",
            "1",
            "--turn-tokens",
            "8",
        ],
    );
    let records = read_run(&tools).unwrap();
    assert_eq!(records.len(), 3);
    for r in &records {
        let t = r.tools.as_ref().expect("tool records");
        // At most two turns of 8 tokens: one allowed call plus the answer turn.
        assert!(r.new_tokens <= 16 && !t.turns.is_empty(), "{r:?}");
    }
}

/// The LVR baseline end to end through the CLI: `pearl train --lvr` writes an adapter, and
/// `pearl eval --latent-steps` answers with latent decoding (the latent steps cost time but no
/// answer tokens).
#[test]
fn lvr_trains_and_evaluates_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = pearl::data::synth::SynthConfig::new(pearl::data::synth::Task::Chain, 5, 6);
    (cfg.train, cfg.val, cfg.test) = (4, 1, 1);
    cfg.scene.width = 112;
    cfg.scene.height = 112;
    cfg.scene.object_size = 8.0;
    cfg.scene.clutter = 2;
    cfg.threads = 1;
    let data_dir = tmp.path().join("data");
    pearl::data::synth::generate(&cfg, &data_dir).unwrap();
    let run_dir = tmp.path().join("lvr");
    let (model, train, out) = (
        model_dir(),
        data_dir.join("train.jsonl").display().to_string(),
        run_dir.display().to_string(),
    );
    let o = pearl(&[
        "train",
        "--lvr",
        "--model",
        &model,
        "--train",
        &train,
        "--output",
        &out,
        "--steps",
        "2",
        "--quiet",
        "--set",
        "max_pixels=12544",
        "--set",
        "lora.r=4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let adapter = run_dir.join("step-0000002/adapter");
    assert!(adapter.join("adapter_model.safetensors").is_file());

    let items = write_items(tmp.path()).display().to_string();
    let eval_out = tmp.path().join("eval").display().to_string();
    let adapter_s = adapter.display().to_string();
    let o = pearl(&[
        "eval",
        "--model",
        &model,
        "--adapter",
        &adapter_s,
        "--bench",
        "jsonl",
        "--data",
        &items,
        "--out",
        &eval_out,
        "--latent-steps",
        "3",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = read_run(Path::new(&eval_out)).unwrap();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.new_tokens <= 4 && r.latency_s > 0.0)
    );
}
