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
    let argv = [
        "compare",
        run_a.to_str().unwrap(),
        run_b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
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
