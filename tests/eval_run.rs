//! End to end without a real model: `pearl eval` (direct protocol and tool agent) on an MCQ JSONL
//! with a fake `ChatModel`, then `pearl compare` on the two runs.

use clap::Parser;
use pearl::cli::eval::{CompareArgs, EvalArgs, run_compare, run_eval};
use pearl::data::chat::Message;
use pearl::eval::answerer::{ChatModel, Generation};
use pearl::eval::record::read_run;
use std::path::Path;

#[derive(Parser)]
struct EvalCli {
    #[command(flatten)]
    args: EvalArgs,
}

#[derive(Parser)]
struct CompareCli {
    #[command(flatten)]
    args: CompareArgs,
}

/// Answers "A" at once; when the chat offers the crop tool (a system prompt) it first asks for a
/// crop, then answers with the letter the question hides after "key:". So the tool agent is
/// always right and the direct protocol only when the answer is A.
struct FakeModel;

impl ChatModel for FakeModel {
    fn generate(&mut self, chats: &[Vec<Message>], _max: usize) -> anyhow::Result<Vec<Generation>> {
        Ok(chats
            .iter()
            .map(|chat| {
                let images: usize = chat.iter().map(|m| m.images().count()).sum();
                let has_tools = chat[0].role == pearl::data::chat::Role::System;
                let text = if !has_tools {
                    "A".to_string()
                } else if images == 1 {
                    r#"<tool_call>{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "target_image": 1}}</tool_call>"#.to_string()
                } else {
                    let q = chat[1].joined_text();
                    let key = q.split("key:").nth(1).and_then(|s| s.trim().chars().next()).unwrap_or('?');
                    format!("<answer>{key}</answer>")
                };
                Generation { text, new_tokens: 3, prompt_tokens: 100, image_tokens: 64 * images, seconds: 0.001 }
            })
            .collect())
    }
}

fn write_bench(dir: &Path) -> std::path::PathBuf {
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .save(dir.join("img.png"))
        .unwrap();
    let mut lines = String::new();
    for i in 0..20 {
        let answer = ["A", "B", "C"][i % 3];
        let cat = if i < 10 { "first" } else { "second" };
        lines.push_str(&serde_json::json!({
            "id": format!("it-{i}"), "image": "img.png", "question": format!("Question {i}? key: {answer}"),
            "options": ["x", "y", "z"], "answer": answer, "category": cat
        }).to_string());
        lines.push('\n');
    }
    let path = dir.join("mcq.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn eval_direct_and_tools_then_compare() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_bench(dir.path());
    let run_a = dir.path().join("run_a");
    let run_b = dir.path().join("run_b");
    let common = |out: &Path| {
        vec![
            "eval".to_string(),
            "--model".into(),
            "unused".into(),
            "--bench".into(),
            "jsonl".into(),
            "--data".into(),
            data.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--batch-size".into(),
            "4".into(),
            "--quiet".into(),
        ]
    };
    let a = EvalCli::parse_from(common(&run_a)).args;
    run_eval(a, |args| {
        assert_eq!(args.model.dir, Path::new("unused"));
        Ok(Box::new(FakeModel))
    })
    .unwrap();
    let mut b_argv = common(&run_b);
    b_argv.extend([
        "--agent".into(),
        "tools".into(),
        "--max-tool-calls".into(),
        "2".into(),
    ]);
    run_eval(EvalCli::parse_from(b_argv).args, |_| {
        Ok(Box::new(FakeModel))
    })
    .unwrap();

    let ra = read_run(&run_a).unwrap();
    let rb = read_run(&run_b).unwrap();
    assert_eq!((ra.len(), rb.len()), (20, 20));
    // Direct: right exactly on the 7 items whose answer is A (i % 3 == 0).
    assert_eq!(ra.iter().filter(|r| r.correct).count(), 7);
    assert!(ra.iter().all(|r| r.tools.is_none()));
    // Tools: one crop each, then the right letter.
    assert!(rb.iter().all(|r| {
        r.correct
            && r.tools
                .as_ref()
                .is_some_and(|t| t.calls == 1 && t.errors.is_empty())
    }));
    assert!(
        rb.iter()
            .all(|r| r.image_tokens == 128 && r.new_tokens == 6)
    );
    assert_eq!(std::fs::read_dir(run_b.join("crops")).unwrap().count(), 20);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_b.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["mode"], "tools");
    assert_eq!(summary["cost"]["tool_calls"], 1.0);
    assert!(
        std::fs::read_to_string(run_a.join("summary.md"))
            .unwrap()
            .contains("| **overall** | 20 | 35.0 |")
    );

    let out = dir.path().join("cmp.json");
    // Direct protocol vs tool agent: different protocols, refused unless asked for.
    let err = run_compare(
        CompareCli::parse_from(["compare", run_a.to_str().unwrap(), run_b.to_str().unwrap()]).args,
    )
    .unwrap_err()
    .to_string();
    for field in [
        "mode",
        "max_new_tokens",
        "agent_max_tool_calls",
        "system_prompt",
    ] {
        assert!(err.contains(&format!("{field}: ")), "{field}: {err}");
    }
    assert!(err.contains("--allow-protocol-mismatch"), "{err}");
    let argv = [
        "compare",
        run_a.to_str().unwrap(),
        run_b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--allow-protocol-mismatch",
    ];
    run_compare(CompareCli::parse_from(argv).args).unwrap();
    let cmp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let overall = &cmp[0]["rows"][0];
    assert_eq!(overall["category"], "overall");
    assert_eq!(overall["n"], 20);
    assert!((overall["diff"].as_f64().unwrap() - 13.0 / 20.0).abs() < 1e-12);
    // 13 discordant items, all in B's favour: p = 2 / 2^13.
    assert_eq!(overall["mcnemar"]["only_b"], 13);
    assert!((overall["mcnemar"]["p_exact"].as_f64().unwrap() - 2.0 / 8192.0).abs() < 1e-12);
    assert_eq!(cmp[0]["rows"].as_array().unwrap().len(), 3);

    // Seeds form: the same runs twice on each side aggregate with zero spread.
    let sides = format!("{},{}", run_a.display(), run_a.display());
    let argv = [
        "compare",
        "--a",
        &sides,
        "--b",
        run_b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--allow-protocol-mismatch",
    ];
    run_compare(CompareCli::parse_from(argv).args).unwrap();
    let cmp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(cmp[0]["rows"][0]["acc_a"]["n"], 2);
    assert_eq!(cmp[0]["rows"][0]["acc_a"]["std"], 0.0);
    assert!(cmp[0]["rows"][0].get("mcnemar").is_none());

    // Bad invocations are errors, not panics.
    assert!(
        run_compare(CompareCli::parse_from(["compare", run_a.to_str().unwrap()]).args).is_err()
    );
    let missing = dir.path().join("missing");
    let err = run_compare(
        CompareCli::parse_from([
            "compare",
            run_a.to_str().unwrap(),
            missing.to_str().unwrap(),
        ])
        .args,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// Every run writes its protocol card; `pearl compare` refuses cards that differ in what changes
/// answers (naming the field), not in the device or pearl's version; `--models-differ` lets the
/// weights differ and nothing else.
#[test]
fn protocol_cards_are_written_and_checked_by_compare() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_bench(dir.path());
    let run_a = dir.path().join("a");
    let argv = [
        "eval",
        "--model",
        "unused",
        "--bench",
        "jsonl",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run_a.to_str().unwrap(),
        "--limit",
        "6",
        "--quiet",
    ];
    run_eval(EvalCli::parse_from(argv).args, |_| Ok(Box::new(FakeModel))).unwrap();
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_a.join("protocol.json")).unwrap())
            .unwrap();
    let p = &card["protocol"];
    assert_eq!(card["items"], 6);
    assert_eq!(p["mode"], "direct");
    assert_eq!(p["max_new_tokens"], 4);
    assert_eq!(p["decoding"], "greedy");
    assert_eq!(p["precision"], "f32");
    assert!(
        p["prompt_template"]
            .as_str()
            .unwrap()
            .contains("{question}")
    );
    assert!(
        p["answer_extraction"]
            .as_str()
            .unwrap()
            .contains("extract_choice")
    );
    // The benchmark file (`--data`) with its SHA-256.
    let files = p["benchmark_sha256"].as_object().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files["mcq.jsonl"].as_str().unwrap().len(), 64);
    assert!(card["pearl_version"].is_string() && card["device"].is_string());
    let md = std::fs::read_to_string(run_a.join("summary.md")).unwrap();
    assert!(
        md.contains("## Protocol") && md.contains("answer extraction"),
        "{md}"
    );

    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(run_a.join("items.jsonl"), d.join("items.jsonl")).unwrap();
        let mut c = card.clone();
        edit(&mut c);
        std::fs::write(d.join("protocol.json"), c.to_string()).unwrap();
        d
    };
    let compare = |b: &Path, extra: &[&str]| {
        let mut argv = vec!["compare", run_a.to_str().unwrap(), b.to_str().unwrap()];
        argv.extend_from_slice(extra);
        run_compare(CompareCli::parse_from(argv).args)
    };
    // Another machine, another version: recorded, not refused.
    let elsewhere = copy("elsewhere", &|c| {
        c["device"] = "cuda:0".into();
        c["pearl_version"] = "9.9.9".into();
    });
    compare(&elsewhere, &[]).unwrap();
    // A different pixel budget changes answers.
    let pixels = copy("pixels", &|c| {
        c["protocol"]["max_pixels"] = 12_845_056.into()
    });
    let err = compare(&pixels, &[]).unwrap_err().to_string();
    assert!(
        err.contains("max_pixels: ") && err.contains("12845056"),
        "{err}"
    );
    assert!(compare(&pixels, &["--models-differ"]).is_err());
    compare(&pixels, &["--allow-protocol-mismatch"]).unwrap();
    // Other weights: refused, unless the comparison is of models.
    let other = copy("other", &|c| c["protocol"]["adapter_sha256"] = "ab".into());
    let err = compare(&other, &[]).unwrap_err().to_string();
    assert!(err.contains("adapter_sha256"), "{err}");
    compare(&other, &["--models-differ"]).unwrap();
}
