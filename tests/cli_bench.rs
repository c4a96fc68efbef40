//! `pearl bench generate` runs on the tiny config and writes a complete report (no timing is
//! asserted: speed belongs to the benchmark, not to tests).

mod common;
use common::fixture_dir;
use std::process::Command;

#[test]
fn bench_generate_reports_latency_and_answer_cost() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let trajectories = fixture_dir().join("expected/pearl_trajectories.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["bench", "generate", "--config"])
        .arg(fixture_dir().join("model/config.json"))
        .arg("--prompt-images")
        .arg(fixture_dir().join("images/scene0.png"))
        .args(["--new-tokens", "3", "--runs", "1", "--trajectories"])
        .arg(&trajectories)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| time to first token |"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let g = &v["generate"];
    assert_eq!(g["image_tokens"], 35);
    assert_eq!(g["new_tokens"], 3);
    assert_eq!(g["params"], 356_400);
    for k in [
        "first_token_seconds",
        "per_token_seconds",
        "answer_4_tokens_seconds",
    ] {
        assert!(g[k].as_f64().unwrap() > 0.0, "{k}: {g}");
    }
    assert!(g["peak_rss_mib"].as_f64().unwrap() > 1.0);
    // One entry per trajectory, replaying each assistant turn after the question.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trajectories)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let items = v["answer_cost"]["items"].as_array().unwrap();
    assert_eq!(items.len(), lines.len());
    for (item, t) in items.iter().zip(&lines) {
        assert_eq!(item["id"], t["id"]);
        let assistant_turns = t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "assistant")
            .count();
        assert_eq!(item["tool_turns"], assistant_turns);
        assert!(item["tool_prompt_tokens"].as_u64() > item["direct_prompt_tokens"].as_u64());
        assert!(item["tool_new_tokens"].as_u64().unwrap() > 4);
    }
}

#[test]
fn bench_generate_names_a_missing_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["bench", "generate", "--config", "/nonexistent/config.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.json"));
}

#[test]
fn bench_generate_runs_in_bf16_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["bench", "generate", "--config"])
        .arg(fixture_dir().join("model/config.json"))
        .args(["--new-tokens", "2", "--runs", "1", "--precision", "bf16"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["generate"]["precision"], "bf16");
    assert_eq!(v["generate"]["new_tokens"], 2);
}
