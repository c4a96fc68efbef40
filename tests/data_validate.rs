//! Validation: each kind of problem is reported with its line, valid lines pass, and training's
//! entry point refuses or skips-and-counts.

use image::{Rgb, RgbImage};
use pearl::data::validate::{ProblemKind, ValidateOptions, load_validated, validate_files};
use std::path::Path;

/// A valid line with the given first-turn image, tool call and extra edits applied to the JSON.
fn line(id: &str, image: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::json!({"id": id, "task": "t", "messages": [
        {"role":"system","content":[{"type":"text","text":"You are a helpful assistant."}]},
        {"role":"user","content":[{"type":"image","image": image},{"type":"text","text":"Q?"}]},
        {"role":"assistant","content":[{"type":"text","text":"Now I will focus."}]},
        {"role":"user","content":[{"type":"image","image": image},{"type":"text","text":"Here."}]},
        {"role":"assistant","content":[{"type":"text","text":"(A) red"}]}],
      "meta": {"tool_calls": [{"turn": 2, "name": "crop", "arguments": {"bbox_2d": [0.1, 0.1, 0.5, 0.5], "target_image": 1}}]}});
    edit(&mut v);
    v.to_string()
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("data/img")).unwrap();
    RgbImage::from_pixel(100, 50, Rgb([1, 2, 3]))
        .save(dir.join("data/img/ok.png"))
        .unwrap();
    RgbImage::from_pixel(10, 10, Rgb([1, 2, 3]))
        .save(dir.join("outside.png"))
        .unwrap();
    std::fs::write(dir.join("data/img/garbage.png"), b"this is not an image").unwrap();
    // A real PNG cut in half: the header reads, the pixels do not.
    let mut full = std::io::Cursor::new(Vec::new());
    RgbImage::from_fn(64, 64, |x, y| {
        Rgb([(x * 3) as u8, (y * 5) as u8, (x * y) as u8])
    })
    .write_to(&mut full, image::ImageFormat::Png)
    .unwrap();
    let bytes = full.into_inner();
    std::fs::write(
        dir.join("data/img/truncated.png"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
}

#[test]
fn every_problem_kind_is_reported_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let ok = "img/ok.png";
    let cases: Vec<(String, Option<ProblemKind>)> = vec![
        (line("good", ok, |_| {}), None),
        (line("good", ok, |_| {}), Some(ProblemKind::DuplicateId)),
        (
            line("trunc", ok, |_| {})[..60].to_string(),
            Some(ProblemKind::BadJson),
        ),
        (
            line("role", ok, |v| v["messages"][2]["role"] = "robot".into()),
            Some(ProblemKind::UnknownRole),
        ),
        (
            line("types", ok, |v| v["messages"] = "nope".into()),
            Some(ProblemKind::BadSchema),
        ),
        (
            line("noimg", ok, |v| {
                v["messages"][1]["content"]
                    .as_array_mut()
                    .unwrap()
                    .remove(0);
            }),
            Some(ProblemKind::NoImageInFirstUserTurn),
        ),
        (
            line("missing", "img/nope.png", |_| {}),
            Some(ProblemKind::MissingImage),
        ),
        (
            line("garbage", "img/garbage.png", |_| {}),
            Some(ProblemKind::UndecodableImage),
        ),
        (
            line("trunc-img", "img/truncated.png", |_| {}),
            Some(ProblemKind::UndecodableImage),
        ),
        (
            line("bbox", ok, |v| {
                v["meta"]["tool_calls"][0]["arguments"]["bbox_2d"] =
                    serde_json::json!([0.5, 0.1, 1.5, 0.4])
            }),
            Some(ProblemKind::BadBbox),
        ),
        (
            line("empty-bbox", ok, |v| {
                v["meta"]["tool_calls"][0]["arguments"]["bbox_2d"] =
                    serde_json::json!([0.5, 0.1, 0.5, 0.4])
            }),
            Some(ProblemKind::BadBbox),
        ),
        (
            line("noasst", ok, |v| {
                let m = v["messages"].as_array_mut().unwrap();
                m.truncate(2);
                v["meta"] = serde_json::json!({});
            }),
            Some(ProblemKind::NoAssistantTurn),
        ),
        (
            line("empty", ok, |v| {
                v["messages"][4]["content"][0]["text"] = "  ".into()
            }),
            Some(ProblemKind::EmptyText),
        ),
        (
            line("target", ok, |v| {
                v["meta"]["tool_calls"][0]["arguments"]["target_image"] = 2.into()
            }),
            Some(ProblemKind::BadToolCall),
        ),
        (
            line("turn", ok, |v| {
                v["meta"]["tool_calls"][0]["turn"] = 1.into()
            }),
            Some(ProblemKind::BadToolCall),
        ),
        (
            line("escape", "../outside.png", |_| {}),
            Some(ProblemKind::ImageOutsideRoot),
        ),
    ];
    let text: String = cases.iter().map(|(l, _)| format!("{l}\n\n")).collect(); // blank lines are skipped
    let file = dir.path().join("data/set.jsonl");
    std::fs::write(&file, text).unwrap();
    let opts = ValidateOptions {
        root: Some(dir.path().join("data")),
        ..Default::default()
    };
    let (files, report) = validate_files(std::slice::from_ref(&file), &opts);
    assert_eq!(report.examples, cases.len());
    assert_eq!(report.valid, 1);
    assert_eq!(files[0].items.len(), 1);
    assert_eq!(files[0].items[0].line, 1);
    for (k, (_, want)) in cases.iter().enumerate() {
        let line_no = 2 * k + 1;
        let kinds: Vec<ProblemKind> = report
            .problems
            .iter()
            .filter(|p| p.line == line_no)
            .map(|p| p.kind)
            .collect();
        match want {
            None => assert!(kinds.is_empty(), "line {line_no}: unexpected {kinds:?}"),
            Some(w) => assert!(
                kinds.contains(w),
                "line {line_no}: expected {w:?}, got {kinds:?}"
            ),
        }
    }
    let shown = report.problems[0].to_string();
    assert!(
        shown.starts_with(&format!("{}:3: ", file.display())),
        "{shown}"
    );
    assert!(
        report
            .summary()
            .contains("16 examples in 1 file(s): 1 valid, 15 invalid"),
        "{}",
        report.summary()
    );
}

#[test]
fn absurd_sizes_inline_images_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    use base64::Engine;
    let bytes = std::fs::read(dir.path().join("data/img/ok.png")).unwrap();
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let file = dir.path().join("data/set.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            line("inline", &uri, |_| {}),
            line("big", "img/ok.png", |_| {})
        ),
    )
    .unwrap();
    // 100x50 exceeds a 64-pixel side limit; the 100x50 inline copy too.
    let opts = ValidateOptions {
        max_side: 64,
        ..Default::default()
    };
    let (_, report) = validate_files(std::slice::from_ref(&file), &opts);
    assert_eq!(
        report
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::ImageSize)
            .count(),
        2 * 2,
        "{:#?}",
        report.problems
    );
    let (_, report) = validate_files(std::slice::from_ref(&file), &ValidateOptions::default());
    assert!(report.is_clean(), "{:?}", report.problems);

    let (_, report) = validate_files(
        &[dir.path().join("nope.jsonl")],
        &ValidateOptions::default(),
    );
    assert_eq!(report.problems[0].kind, ProblemKind::Unreadable);
}

#[test]
fn training_refuses_invalid_data_unless_told_to_skip() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let file = dir.path().join("data/set.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            line("a", "img/ok.png", |_| {}),
            line("b", "img/nope.png", |_| {})
        ),
    )
    .unwrap();
    let paths = vec![file.clone()];
    let e = load_validated(&paths, &ValidateOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--skip-invalid") && e.contains("set.jsonl:2"),
        "{e}"
    );
    let (files, report) = load_validated(
        &paths,
        &ValidateOptions {
            skip_invalid: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((files[0].items.len(), report.invalid()), (1, 1));
    assert_eq!(files[0].items[0].trajectory.id, "a");
}
