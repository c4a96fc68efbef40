//! `pearl data stats` on a hand-written file: counts, image sizes and text lengths.

use image::{Rgb, RgbImage};
use pearl::data::stats::compute;

#[test]
fn counts_sizes_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::from_pixel(100, 50, Rgb([0, 0, 0]))
        .save(dir.path().join("a.png"))
        .unwrap();
    RgbImage::from_pixel(10, 20, Rgb([0, 0, 0]))
        .save(dir.path().join("b.png"))
        .unwrap();
    let with_call = serde_json::json!({"id": "1", "task": "lvr", "messages": [
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "one two three"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
        {"role": "user", "content": [{"type": "image", "image": "b.png"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "five six"}]}],
        "meta": {"tool_calls": [{"turn": 1, "name": "crop", "arguments": {}}], "category": "x"}});
    let plain = serde_json::json!({"id": "2", "task": "pretrain", "messages": [
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]});
    let file = dir.path().join("t.jsonl");
    std::fs::write(&file, format!("{with_call}\n{plain}\n")).unwrap();
    let s = compute(&file, None).unwrap();
    assert_eq!(s.examples, 2);
    assert_eq!((s.by_task["lvr"], s.by_task["pretrain"]), (1, 1));
    assert_eq!((s.by_tool_calls[&0], s.by_tool_calls[&1]), (1, 1));
    assert_eq!(s.by_tool["crop"], 1);
    assert_eq!((s.by_category["x"], s.by_category["-"]), (1, 1));
    // Distinct images: a.png (100x50) and b.png (10x20).
    assert_eq!(
        (s.image_width.min, s.image_width.max, s.image_height.max),
        (10.0, 100.0, 50.0)
    );
    assert_eq!(
        (s.images_per_example.min, s.images_per_example.max),
        (1.0, 2.0)
    );
    assert_eq!((s.words.min, s.words.max), (2.0, 6.0));
    assert!(s.tokens.is_none());
    assert!(compute(&dir.path().join("missing.jsonl"), None).is_err());

    let tok = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/qwen2_5_vl_tiny/model/tokenizer.json");
    let t = compute(&file, Some(&tok)).unwrap().tokens.unwrap();
    assert_eq!(t.n, 2);
    assert!(
        t.min >= 1.0 && t.max > t.min,
        "the longer example has more tokens: {t}"
    );
}
