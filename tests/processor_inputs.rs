//! The processor on inputs the fixture does not cover: another model family member's config,
//! pixel-budget overrides, bad images, bad model directories, and refused inputs.

use anyhow::Result;
use pearl::data::chat::{Message, Part, Role};
use pearl::processor::tokenizer::QwenTokenizer;
use pearl::processor::{ChatTemplate, Processor, smart_resize};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/qwen2_5_vl_tiny")
}

/// A model directory with the fixture's tokenizer and template and the given preprocessor config.
fn model_dir(preprocessor_config: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(fixture().join("model").join(f), dir.path().join(f))?;
    }
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        preprocessor_config,
    )?;
    Ok(dir)
}

fn image_question(image: &str) -> Vec<Message> {
    vec![Message::new(
        Role::User,
        vec![
            Part::Image {
                image: image.into(),
            },
            Part::Text {
                text: "What is shown?".into(),
            },
        ],
    )]
}

fn error_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn other_patch_and_merge_sizes_give_consistent_shapes() -> Result<()> {
    // A Qwen3-VL-like geometry: 16-pixel patches, 2x2 merge, new-style `size` keys.
    let dir = model_dir(
        r#"{"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
            "size": {"shortest_edge": 4096, "longest_edge": 65536}}"#,
    )?;
    let processor = Processor::from_dir(dir.path())?;
    let images = fixture().join("images");
    let batch = processor.encode(&[image_question("scene1.png")], &[true], &images)?;

    let (h, w) = smart_resize(233, 317, 32, 4096, 65536)?;
    assert!(h % 32 == 0 && w % 32 == 0 && h * w <= 65536, "{h}x{w}");
    assert_eq!(batch.image_grid_thw, vec![[1, h / 16, w / 16]]);
    assert_eq!(batch.patch_dim, 3 * 2 * 16 * 16);
    let rows = h / 16 * (w / 16);
    assert_eq!(batch.pixel_values.len(), rows * batch.patch_dim);

    // One pad per merged 2x2 window, between vision_start and vision_end.
    let special = processor.tokenizer.special();
    let ids: Vec<u32> = batch.input_ids.iter().map(|&t| t as u32).collect();
    let pads = ids.iter().filter(|&&t| t == special.image_pad).count();
    assert_eq!(pads, rows / 4);
    let start = ids
        .iter()
        .position(|&t| t == special.vision_start)
        .expect("vision_start");
    assert!(
        ids[start + 1..=start + pads]
            .iter()
            .all(|&t| t == special.image_pad)
    );
    assert_eq!(ids[start + pads + 1], special.vision_end);
    assert_eq!(batch.lengths, vec![ids.len()]);
    Ok(())
}

#[test]
fn pixel_limit_override_shrinks_the_grid() -> Result<()> {
    let mut processor = Processor::from_dir(&fixture().join("model"))?;
    // 150x200 at most 3136 pixels: beta = sqrt(30000 / 3136) = 3.093;
    // 150 / beta / 28 = 1.73 -> 28, 200 / beta / 28 = 2.31 -> 56: a 2x4 patch grid.
    processor.set_pixel_limits(Some(28 * 28), Some(3136))?;
    let batch = processor.encode(
        &[image_question("scene0.png")],
        &[true],
        &fixture().join("images"),
    )?;
    assert_eq!(batch.image_grid_thw, vec![[1, 2, 4]]);
    let pads = batch
        .input_ids
        .iter()
        .filter(|&&t| t as u32 == processor.tokenizer.special().image_pad)
        .count();
    assert_eq!(pads, 2);

    let msg = error_text(processor.set_pixel_limits(Some(5000), Some(3136)));
    assert!(msg.contains("min_pixels"), "{msg}");
    // A refused override leaves the processor as it was.
    assert_eq!(
        (processor.image.min_pixels, processor.image.max_pixels),
        (28 * 28, 3136)
    );
    Ok(())
}

#[test]
fn bad_images_are_named_with_their_conversation() -> Result<()> {
    let processor = Processor::from_dir(&fixture().join("model"))?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("broken.png"), b"definitely not a png")?;
    std::fs::copy(
        fixture().join("images/scene0.png"),
        dir.path().join("ok.png"),
    )?;

    let convs = [image_question("ok.png"), image_question("broken.png")];
    let msg = error_text(processor.encode(&convs, &[true, true], dir.path()));
    assert!(
        msg.contains("broken.png") && msg.contains("conversation 1"),
        "{msg}"
    );

    let msg = error_text(processor.encode(&[image_question("missing.png")], &[true], dir.path()));
    assert!(
        msg.contains("missing.png") && msg.contains("conversation 0"),
        "{msg}"
    );

    let msg = error_text(processor.encode(&[image_question("ok.png")], &[true, false], dir.path()));
    assert!(msg.contains("add_generation_prompt"), "{msg}");
    Ok(())
}

#[test]
fn placeholders_must_match_images_and_video_is_refused() -> Result<()> {
    let processor = Processor::from_dir(&fixture().join("model"))?;
    let img = processor.load_image("scene1_crop.png", &fixture().join("images"))?;
    let two_pads =
        "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>";
    let msg = error_text(processor.encode_text_with_images(two_pads, std::slice::from_ref(&img)));
    assert!(
        msg.contains("2 image placeholder(s) but 1 image(s)"),
        "{msg}"
    );

    let msg = error_text(
        processor.encode_text_with_images("<|vision_start|><|video_pad|><|vision_end|>", &[]),
    );
    assert!(msg.contains("video"), "{msg}");

    // Matching counts: 84x84 -> 6x6 patches -> 9 merged tokens replace the single pad.
    let ids = processor.encode_text_with_images("a<|image_pad|>b", std::slice::from_ref(&img))?;
    let (a, b) = (
        processor.tokenizer.encode("a")?,
        processor.tokenizer.encode("b")?,
    );
    assert_eq!(ids.len(), a.len() + 9 + b.len());
    assert_eq!(
        ids[a.len()..a.len() + 9],
        [processor.tokenizer.special().image_pad; 9]
    );
    Ok(())
}

#[test]
fn tokenizer_errors_name_the_file_and_pad_falls_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let msg = error_text(QwenTokenizer::from_dir(dir.path()));
    assert!(
        msg.contains("missing tokenizer file") && msg.contains("tokenizer.json"),
        "{msg}"
    );

    std::fs::write(dir.path().join("tokenizer.json"), "{ not json")?;
    let msg = error_text(QwenTokenizer::from_dir(dir.path()));
    assert!(msg.contains("not a valid tokenizer.json"), "{msg}");

    // Without tokenizer_config's pad_token, generation_config's pad_token_id is used.
    std::fs::copy(
        fixture().join("model/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )?;
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"pad_token_id": 574}"#,
    )?;
    assert_eq!(QwenTokenizer::from_dir(dir.path())?.pad_id(), 574);
    // And tokenizer_config's pad_token wins over it.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"pad_token": "<|im_start|>"}"#,
    )?;
    assert_eq!(QwenTokenizer::from_dir(dir.path())?.pad_id(), 573);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"pad_token": "<|no_such_token|>"}"#,
    )?;
    let msg = error_text(QwenTokenizer::from_dir(dir.path()));
    assert!(msg.contains("<|no_such_token|>"), "{msg}");
    Ok(())
}

#[test]
fn chat_template_sources_in_transformers_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let msgs = [Message::text(Role::User, "hi")];
    let render = |d: &Path| ChatTemplate::from_dir(d).and_then(|t| t.render(&msgs, false));

    let msg = error_text(render(dir.path()));
    assert!(
        msg.contains("no chat template") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );

    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": "from tokenizer_config"}"#,
    )?;
    assert_eq!(render(dir.path())?, "from tokenizer_config");
    std::fs::write(
        dir.path().join("chat_template.json"),
        r#"{"chat_template": "from json"}"#,
    )?;
    assert_eq!(render(dir.path())?, "from json");
    std::fs::write(dir.path().join("chat_template.jinja"), "from jinja")?;
    assert_eq!(render(dir.path())?, "from jinja");

    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}",
    )?;
    let msg = error_text(render(dir.path()));
    assert!(msg.contains("chat_template.jinja"), "{msg}");
    Ok(())
}

#[test]
fn vision_ids_label_each_picture() -> Result<()> {
    let mut processor = Processor::from_dir(&fixture().join("model"))?;
    processor.add_vision_id = true;
    let msgs = [Message::new(
        Role::User,
        vec![
            Part::Image {
                image: "a.png".into(),
            },
            Part::Image {
                image: "b.png".into(),
            },
        ],
    )];
    let text = processor.render(&msgs, true)?;
    assert!(
        text.contains("Picture 1: <|vision_start|>")
            && text.contains("Picture 2: <|vision_start|>"),
        "{text}"
    );
    Ok(())
}

#[test]
fn decode_inverts_encode() -> Result<()> {
    let tok = QwenTokenizer::from_dir(&fixture().join("model"))?;
    let text = "Hello world, it's 2026!  \u{4f60}\u{597d}";
    let ids = tok.encode(&format!("<|im_start|>{text}<|im_end|>"))?;
    assert_eq!(ids.first(), Some(&tok.special().im_start));
    assert_eq!(ids.last(), Some(&tok.special().im_end));
    assert_eq!(tok.decode(&ids, true)?, text);
    assert_eq!(
        tok.decode(&ids, false)?,
        format!("<|im_start|>{text}<|im_end|>")
    );
    Ok(())
}
