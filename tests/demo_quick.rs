//! `pearl demo --quick` end to end (what CI runs): every stage runs, and the report it leaves is
//! complete and computed: `table.json` parses, every accuracy and interval is a number in [0, 1]
//! with lo <= accuracy <= hi, every system and category of the paper's table is there, every
//! figure is a real PNG, and `report.md` shows the table's numbers, no placeholders.

use std::path::Path;
use std::process::Command;

fn png_ok(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000, "{} is nearly empty", path.display());
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    assert!(
        img.width() >= 300 && img.height() >= 300,
        "{}",
        path.display()
    );
}

fn unit(v: &serde_json::Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{what} = {x} is outside [0, 1]");
    x
}

fn md_has_mediation(out: &Path) -> bool {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    md.contains("## LVR mediation test") && md.contains("| true crop's target |")
}

#[test]
fn quick_demo_writes_a_complete_computed_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["demo", "--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "pearl demo --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("report: {}", out.join("report.md").display()),
        "the last line says where the report is"
    );

    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap();
    let t = &table["table"];
    let columns: Vec<&str> = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(columns[0], "overall");
    assert!(columns.len() >= 2, "per-category columns: {columns:?}");
    let systems: Vec<&str> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["system"].as_str().unwrap())
        .collect();
    for want in [
        "Base (no fine-tuning)",
        "Tool calling (fine-tuned agent)",
        "SFT",
        "Pearl",
        "Pearl w/o NextLat",
        "LVR (4 latent steps)",
    ] {
        assert!(systems.contains(&want), "{want} missing from {systems:?}");
    }
    let n_items = t["n_items"].as_u64().unwrap();
    assert!(n_items > 0);
    for row in t["rows"].as_array().unwrap() {
        for col in &columns {
            let cell = &row["cells"][*col];
            let what = format!("{} / {col}", row["system"]);
            let acc = unit(&cell["accuracy"], &what);
            let lo = unit(&cell["ci95"]["lo"], &what);
            let hi = unit(&cell["ci95"]["hi"], &what);
            assert!(
                lo <= acc + 1e-12 && acc <= hi + 1e-12,
                "{what}: {lo} {acc} {hi}"
            );
            assert!(cell["n"].as_u64().unwrap() >= 1);
        }
        assert_eq!(row["cells"]["overall"]["n"].as_u64(), Some(n_items));
        assert!(row["mean_latency_s"].as_f64().unwrap() > 0.0);
        // Only the fine-tuned tool-calling agent calls tools, and it reports how well it did.
        let agent = row["system"] == "Tool calling (fine-tuned agent)";
        assert_eq!(
            row["mean_tool_calls"].is_number(),
            agent,
            "{}",
            row["system"]
        );
        if agent && row["mean_tool_calls"].as_f64().unwrap() > 0.0 {
            let valid = unit(&row["valid_call_share"], "valid calls");
            assert!(unit(&row["on_target_share"], "calls on target") <= valid);
        }
    }

    // Paired comparisons against SFT, the verdict, LVR per step count, mediation, alignment.
    let comparisons = table["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 3);
    for c in comparisons {
        let overall = &c["comparison"]["rows"][0];
        assert_eq!(overall["category"], "overall");
        let d = overall["diff"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&d));
        unit(&overall["mcnemar"]["p_exact"], "McNemar p");
    }
    let verdict = table["verdict"]["statement"].as_str().unwrap();
    assert!(verdict.starts_with("Pearl "), "{verdict}");
    let steps: Vec<u64> = table["lvr_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            unit(&p["accuracy"], "LVR accuracy");
            p["latent_steps"].as_u64().unwrap()
        })
        .collect();
    assert!(steps.len() >= 2 && steps.contains(&4), "{steps:?}");
    // The LVR mediation test: own latents first, then zeros, noise and the true crop's target,
    // each with an accuracy and the share of answers that changed.
    let mediation = table["mediation"].as_array().unwrap();
    let feeds: Vec<&str> = mediation
        .iter()
        .map(|r| r["feed"].as_str().unwrap())
        .collect();
    assert_eq!(
        feeds,
        [
            "own latents",
            "zeros",
            "noise of the same norm",
            "true crop's target"
        ]
    );
    for r in mediation {
        unit(&r["accuracy"], "mediation accuracy");
        unit(&r["changed"], "mediation changed");
    }
    assert_eq!(mediation[0]["changed"].as_f64(), Some(0.0));
    assert!(md_has_mediation(&out));
    assert_eq!(table["alignment"].as_array().unwrap().len(), 2);
    assert!(table["wall_seconds"].as_f64().unwrap() > 0.0);

    for key in ["loss_curves", "tsne", "lvr_steps", "latency"] {
        png_ok(&out.join(table["figures"][key].as_str().unwrap()));
    }
    let per_run = table["figures"]["per_run_loss"].as_array().unwrap();
    assert_eq!(per_run.len(), 5, "one loss curve per fine-tuning");
    for p in per_run {
        png_ok(&out.join(p.as_str().unwrap()));
    }

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for lowered in ["todo", "tbd", "xxx", "placeholder", "nan", "inf ", "{"] {
        assert!(
            !md.to_lowercase().contains(lowered),
            "report.md contains {lowered:?}"
        );
    }
    assert!(md.contains(verdict), "the verdict is in the report");
    // The table's overall Pearl accuracy appears in the report as printed.
    let pearl = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["system"] == "Pearl")
        .unwrap();
    let acc = pearl["cells"]["overall"]["accuracy"].as_f64().unwrap();
    assert!(md.contains(&format!("{:.1}", 100.0 * acc)));
    for fig in [
        "figures/loss_curves.png",
        "figures/tsne.png",
        "figures/lvr_steps.png",
        "figures/latency.png",
    ] {
        assert!(md.contains(&format!("]({fig})")), "report.md links {fig}");
    }
}

/// `--pretrain-only` stops after the base model and writes its manifest (recipe and checksum);
/// `--base DIR` then fine-tunes that base without pretraining, and the report says so.
#[test]
fn pretrain_only_writes_a_verified_base_that_base_reuses() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let run = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["demo", "--quick", "--pretrain-only", "--out"])
        .arg(&first)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let base = first.join("pretrain").join("base");
    assert!(
        !first.join("report.md").exists(),
        "--pretrain-only wrote a report"
    );
    let weights = std::fs::read(base.join("model.safetensors")).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&weights));
    assert!(stdout.contains(&format!("sha256 {sha}")), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("base.json")).unwrap()).unwrap();
    assert_eq!(manifest["sha256"], sha.as_str());
    assert_eq!(manifest["recipe"]["pretrain"]["steps"], 4, "{manifest}");
    // The quick settings are not the shipped base's recipe.
    assert!(stdout.contains("made with other settings"), "{stdout}");

    let second = dir.path().join("second");
    let run = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["demo", "--quick", "--base"])
        .arg(&base)
        .arg("--out")
        .arg(&second)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        !second.join("pretrain").exists(),
        "the given base was pretrained again"
    );
    let md = std::fs::read_to_string(second.join("report.md")).unwrap();
    assert!(md.contains("The base: given"), "{md}");

    // A directory that is no base model is refused by name.
    let run = Command::new(env!("CARGO_BIN_EXE_pearl"))
        .args(["demo", "--quick", "--base"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("third"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("has no config.json and model.safetensors"),
        "{err}"
    );
}
