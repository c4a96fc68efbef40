//! Importers on small files in each published format, written here: converted chats, rendered
//! crops, extracted images, skip counts per reason, and validity of the output.

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields};
use image::{Rgb, RgbImage};
use pearl::data::chat::Role;
use pearl::data::import::{ImportPaths, llava, lvr, pixelreasoner, thinkmorph};
use pearl::data::trajectory::load_jsonl;
use pearl::data::validate::{ValidateOptions, validate_files};
use std::path::Path;
use std::sync::Arc;

/// 100x50 image whose pixel (x, y) is (x, y, 7): crops can be checked by their corner pixel.
fn coords_png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(100, 50, |x, y| Rgb([x as u8, y as u8, 7]))
        .save(path)
        .unwrap();
}

fn paths(dir: &Path, input: &str) -> ImportPaths {
    ImportPaths {
        input: dir.join(input),
        images: dir.join("src_images"),
        out: dir.join("out/data.jsonl"),
    }
}

fn assert_valid(out: &Path, n: usize) {
    let (_, report) = validate_files(&[out.to_path_buf()], &ValidateOptions::default());
    assert!(
        report.is_clean(),
        "{:?}",
        report
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.valid, n);
}

#[test]
fn lvr_rows_become_crop_trajectories_and_degenerate_boxes_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/viscot/a.png"));
    let row = |qid: u32, img: &str, bbox: serde_json::Value| {
        serde_json::json!({"dataset":"flickr30k","split":"train","question_id":qid,"image":[img],
          "conversations":[{"from":"human","value":"<image>\nWhat is here?\nProvide a short and direct response."},
                           {"from":"gpt","value":"<lvr>\n<answer> a dog </answer>"}],
          "bboxes":[bbox]})
    };
    let rows = serde_json::json!([
        row(1, "viscot/a.png", serde_json::json!([0.25, 0.3, 0.55, 0.7])),
        row(2, "viscot/a.png", serde_json::json!([0.0, 0.5, 1.0, 0.51])), // floor: rows 25..25
        row(
            3,
            "viscot/missing.png",
            serde_json::json!([0.1, 0.1, 0.5, 0.5])
        ),
        row(4, "viscot/a.png", serde_json::json!([0.1, 0.1, 1.2, 0.5])),
        serde_json::json!({"image": "viscot/a.png"}),
    ]);
    std::fs::write(dir.path().join("lvr.json"), rows.to_string()).unwrap();
    let p = paths(dir.path(), "lvr.json");
    let report = lvr::import(&p, lvr::LvrFilters::default()).unwrap();
    assert_eq!(
        (report.rows, report.written),
        (5, 1),
        "{}",
        report.summary()
    );
    for reason in [
        "empty crop",
        "missing image",
        "bbox outside [0, 1]",
        "malformed row",
    ] {
        assert_eq!(
            report.skipped.get(reason),
            Some(&1),
            "{reason}: {}",
            report.summary()
        );
    }

    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.id, "flickr30k-1");
    let roles: Vec<Role> = t.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant
        ]
    );
    assert_eq!(
        t.messages[1].joined_text(),
        "What is here?\nProvide a short and direct response."
    );
    assert_eq!(
        t.messages[2].joined_text(),
        "Now I will focus on the relevant part of the image within the normalized bounding boxes: [0.25, 0.3, 0.55, 0.7]."
    );
    assert_eq!(t.messages[4].joined_text(), "a dog");
    assert_eq!(
        t.meta.tool_calls[0].bbox().unwrap().unwrap(),
        [0.25, 0.3, 0.55, 0.7]
    );
    // floor(box * size): x 25..55, y 15..35.
    let crop_ref = t.messages[3].images().next().unwrap().to_string();
    assert!(
        !Path::new(&crop_ref).is_absolute(),
        "crop written beside the output: {crop_ref}"
    );
    let crop = image::open(p.out_dir().join(&crop_ref)).unwrap().to_rgb8();
    assert_eq!(crop.dimensions(), (30, 20));
    assert_eq!(crop.get_pixel(0, 0).0, [25, 15, 7]);
    assert_eq!(crop.get_pixel(29, 19).0, [54, 34, 7]);
    assert_valid(&p.out, 1);
}

fn pr_row(text: &str, video: Option<&str>) -> serde_json::Value {
    serde_json::json!({"message_list": [
        {"role":"system","content":[{"text":"You are a helpful assistant.","image":null,"video":null}]},
        {"role":"user","content":[{"image":"a.png","text":null,"video":null},{"text":"Find the dog.","image":null,"video":video}]},
        {"role":"assistant","content":[{"text":text,"image":null,"video":null}]},
        {"role":"user","content":[{"image":"a.png","text":null,"video":null}]},
        {"role":"assistant","content":[{"text":"It is brown.","image":null,"video":null}]}]})
}

const CALL: &str = r#"Let me zoom in. <tool_call>{"name":"crop_image","arguments":{"bbox_2d":[0.1,0.1,0.5,0.5],"target_image":1}}</tool_call>"#;

#[test]
fn pixelreasoner_jsonl_cuts_tool_calls_keeps_them_in_meta_and_drops_video() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/a.png"));
    let lines = [
        pr_row(CALL, None),
        pr_row(CALL, Some("v.mp4")),
        pr_row("x <tool_call>{not json</tool_call>", None),
    ];
    std::fs::write(
        dir.path().join("pr.jsonl"),
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let p = paths(dir.path(), "pr.jsonl");
    let report = pixelreasoner::import(&p).unwrap();
    assert_eq!(report.written, 1, "{}", report.summary());
    assert_eq!(report.skipped.get("video"), Some(&1));
    assert_eq!(report.skipped.get("unparseable tool call"), Some(&1));
    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.messages[2].joined_text(), "Let me zoom in.");
    assert_eq!(t.meta.tool_calls.len(), 1);
    assert_eq!(
        (
            t.meta.tool_calls[0].turn,
            t.meta.tool_calls[0].name.as_str()
        ),
        (2, "crop_image")
    );
    assert!(
        t.render_for_tool_agent()[2]
            .joined_text()
            .contains("<tool_call>{\"arguments\"")
    );
    assert_valid(&p.out, 1);
}

/// The same rows as a parquet file whose `message_list` column is nested (list of structs).
#[test]
fn pixelreasoner_parquet_with_nested_message_list() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/a.png"));
    let item_fields = Fields::from(vec![
        Field::new("image", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
        Field::new("video", DataType::Utf8, true),
    ]);
    let content_type = DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(item_fields.clone()),
        true,
    )));
    let msg_fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", content_type, true),
    ]);
    let content_builder = ListBuilder::new(StructBuilder::from_fields(item_fields, 0));
    let mut rows = ListBuilder::new(StructBuilder::new(
        msg_fields,
        vec![Box::new(StringBuilder::new()), Box::new(content_builder)],
    ));
    // One row: user [image, text], assistant [text with a call], user [image], assistant [text].
    type Item<'a> = (Option<&'a str>, Option<&'a str>);
    let messages: [(&str, Vec<Item>); 4] = [
        (
            "user",
            vec![(Some("a.png"), None), (None, Some("Find the dog."))],
        ),
        ("assistant", vec![(None, Some(CALL))]),
        ("user", vec![(Some("a.png"), None)]),
        ("assistant", vec![(None, Some("Brown."))]),
    ];
    for (role, items) in messages {
        let msg = rows.values();
        msg.field_builder::<StringBuilder>(0)
            .unwrap()
            .append_value(role);
        let content = msg.field_builder::<ListBuilder<StructBuilder>>(1).unwrap();
        for (image, text) in items {
            let item = content.values();
            item.field_builder::<StringBuilder>(0)
                .unwrap()
                .append_option(image);
            item.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_option(text);
            item.field_builder::<StringBuilder>(2)
                .unwrap()
                .append_null();
            item.append(true);
        }
        content.append(true);
        msg.append(true);
    }
    rows.append(true);
    let list = rows.finish();
    let batch = RecordBatch::try_from_iter([("message_list", Arc::new(list) as ArrayRef)]).unwrap();
    let file = std::fs::File::create(dir.path().join("pr.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let p = paths(dir.path(), "pr.parquet");
    let report = pixelreasoner::import(&p).unwrap();
    assert_eq!(report.written, 1, "{}", report.summary());
    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.messages.len(), 4);
    assert_eq!(t.messages[0].joined_text(), "Find the dog.");
    assert_eq!(t.messages[1].joined_text(), "Let me zoom in.");
    // No system turn in this row: the first user turn is still the one left whole.
    assert_eq!(t.messages[0].images().count(), 1);
    assert_eq!(t.meta.tool_calls[0].turn, 1);
    assert_valid(&p.out, 1);
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn thinkmorph_parquet_images_as_struct_or_binary_are_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let problem = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 20, y as u8 * 30, 1]));
    let edited = RgbImage::from_fn(5, 5, |x, y| Rgb([200, x as u8, y as u8]));
    let img_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let problem_col = StructArray::new(
        img_fields,
        vec![
            Arc::new(BinaryArray::from(vec![
                Some(png_bytes(&problem).as_slice()),
                Some(b"not an image".as_slice()),
            ])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("p0.png"), Some("p1.png")])),
        ],
        None,
    );
    let edited_bytes = png_bytes(&edited);
    let s = |v: [&str; 2]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let batch = RecordBatch::try_from_iter([
        ("pid", s(["tm-1", "tm-2"])),
        ("question", s(["Where is the cup?", "Q2"])),
        ("answer", s(["left", "B"])),
        ("task", s(["Visual_Search", "Visual_Search"])),
        ("problem_image_0", Arc::new(problem_col) as ArrayRef),
        ("resoning_thought_0", s(["I look for the cup.", "t0"])),
        (
            "reasoning_image_0",
            Arc::new(BinaryArray::from(vec![
                Some(edited_bytes.as_slice()),
                Some(edited_bytes.as_slice()),
            ])) as ArrayRef,
        ),
        ("resoning_thought_1", s(["It is on the left.", "t1"])),
    ])
    .unwrap();
    let file = std::fs::File::create(dir.path().join("tm.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let p = paths(dir.path(), "tm.parquet");
    let report = thinkmorph::import(&p).unwrap();
    assert_eq!(
        (report.written, report.skipped.get("undecodable image")),
        (1, Some(&1)),
        "{}",
        report.summary()
    );
    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.id, "tm-1");
    // As the authors render it: their system turn (newline included), the sentence in the user
    // turn that shows the edited image, the thoughts as they are.
    assert_eq!(
        t.messages[0].joined_text(),
        "You are a helpful assistant.\n"
    );
    assert_eq!(t.messages[1].joined_text(), "Where is the cup?");
    assert_eq!(t.messages[2].joined_text(), "I look for the cup.");
    assert_eq!(t.messages[3].role, Role::User);
    assert_eq!(t.messages[3].joined_text(), "Here is the focused image.");
    assert!(matches!(
        t.messages[3].content[..],
        [
            pearl::data::chat::Part::Image { .. },
            pearl::data::chat::Part::Text { .. }
        ]
    ));
    assert_eq!(t.messages[4].joined_text(), "It is on the left.");
    assert_eq!(t.meta.category.as_deref(), Some("Visual_Search"));
    let out_dir = p.out_dir();
    let got0 = image::open(out_dir.join(t.messages[1].images().next().unwrap()))
        .unwrap()
        .to_rgb8();
    let got1 = image::open(out_dir.join(t.messages[3].images().next().unwrap()))
        .unwrap()
        .to_rgb8();
    assert_eq!(got0, problem);
    assert_eq!(got1, edited);
    assert_valid(&p.out, 1);

    // A file without the expected columns is refused before anything is written.
    let bad = RecordBatch::try_from_iter([("pid", s(["a", "b"]))]).unwrap();
    let file = std::fs::File::create(dir.path().join("bad.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, bad.schema(), None).unwrap();
    w.write(&bad).unwrap();
    w.close().unwrap();
    let mut p2 = paths(dir.path(), "bad.parquet");
    p2.out = dir.path().join("out2/x.jsonl");
    let e = thinkmorph::import(&p2).unwrap_err().to_string();
    assert!(
        e.contains("resoning_thought_0") && e.contains("bad.parquet"),
        "{e}"
    );
    assert!(!p2.out.exists());
}

#[test]
fn llava_placeholders_place_images_in_order() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/a.png"));
    coords_png(&dir.path().join("src_images/b.png"));
    let rows = serde_json::json!([
        {"id":"x","images":["a.png","b.png"],"conversations":[
            {"from":"human","value":"<image>\nLook."},
            {"from":"gpt","value":"Zoom. <tool_call>{\"name\":\"crop\",\"arguments\":{\"bbox_2d\":[0,0,0.5,0.5],\"target_image\":1}}</tool_call>"},
            {"from":"human","value":"<image>"},
            {"from":"gpt","value":"A cat."}]},
        {"id":7,"image":"a.png","conversations":[{"from":"human","value":"What?"},{"from":"gpt","value":"A dog."}]},
        {"id":"y","image":"a.png","conversations":[{"from":"human","value":"<image><image>"},{"from":"gpt","value":"?"}]},
        {"id":"z","conversations":[{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello"}]}
    ]);
    std::fs::write(dir.path().join("llava.json"), rows.to_string()).unwrap();
    let p = paths(dir.path(), "llava.json");
    let report = llava::import(&p).unwrap();
    assert_eq!(report.written, 2, "{}", report.summary());
    assert_eq!(report.skipped.get("image count mismatch"), Some(&1));
    assert_eq!(report.skipped.get("no image"), Some(&1));
    let file = load_jsonl(&p.out).unwrap();
    let t = &file.items[0].trajectory;
    let img = |m: usize| {
        t.messages[m]
            .images()
            .next()
            .map(|s| s.rsplit('/').next().unwrap().to_string())
    };
    assert_eq!(
        (img(0).as_deref(), img(2).as_deref()),
        (Some("a.png"), Some("b.png"))
    );
    assert_eq!(t.messages[1].joined_text(), "Zoom.");
    assert_eq!(t.meta.tool_calls[0].turn, 1);
    let t2 = &file.items[1].trajectory;
    assert_eq!(t2.id, "7");
    assert!(
        t2.messages[0].images().next().is_some(),
        "images without placeholders open the first user turn"
    );
    assert_valid(&p.out, 2);
}

/// LVR as the authors render it: `bboxes[0]` only (all boxes on request), numbers printed as
/// Python prints what the file holds, boxes with a side ratio above 200 dropped.
#[test]
fn lvr_keeps_the_first_box_prints_numbers_as_written_and_drops_thin_crops() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/a.png"));
    let wide = dir.path().join("src_images/wide.png");
    RgbImage::from_fn(1000, 10, |x, _| Rgb([(x % 256) as u8, 0, 0]))
        .save(&wide)
        .unwrap();
    let row = |qid: u32, img: &str, boxes: serde_json::Value| {
        serde_json::json!({"dataset":"gqa","question_id":qid,"image":[img],
          "conversations":[{"from":"human","value":"<image>\nWhat is it?"},
                           {"from":"gpt","value":"<lvr>\n<answer> a cat </answer>"}],
          "bboxes": boxes})
    };
    let rows = serde_json::json!([
        row(
            1,
            "a.png",
            serde_json::json!([[0, 0.3, 1, 0.7], [0.1, 0.1, 0.2, 0.2]])
        ),
        // 1000x1 crop: side ratio 1000.
        row(2, "wide.png", serde_json::json!([[0.0, 0.0, 1.0, 0.1]])),
    ]);
    std::fs::write(dir.path().join("lvr.json"), rows.to_string()).unwrap();

    let p = paths(dir.path(), "lvr.json");
    let report = lvr::import(&p, lvr::LvrFilters::default()).unwrap();
    assert_eq!(
        (report.rows, report.written),
        (2, 1),
        "{}",
        report.summary()
    );
    assert_eq!(report.skipped.get("extreme aspect ratio"), Some(&1));
    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.messages[0].joined_text(), "You are a helpful assistant.");
    assert_eq!(
        t.messages[2].joined_text(),
        "Now I will focus on the relevant part of the image within the normalized bounding boxes: [0, 0.3, 1, 0.7]."
    );
    assert_eq!(
        t.messages[3].joined_text(),
        "Here is the relevant cropped part of the image within the normalized bounding boxes: [0, 0.3, 1, 0.7]."
    );
    assert_eq!(t.messages[3].images().count(), 1);
    assert_eq!(t.meta.tool_calls.len(), 1);
    assert_valid(&p.out, 1);

    let mut all = paths(dir.path(), "lvr.json");
    all.out = dir.path().join("all/data.jsonl");
    lvr::import_with(&all, lvr::LvrFilters::default(), lvr::Boxes::All).unwrap();
    let t = &load_jsonl(&all.out).unwrap().items[0].trajectory;
    assert_eq!(t.messages[3].images().count(), 2);
    assert_eq!(t.meta.tool_calls.len(), 2);
    assert!(
        t.messages[2]
            .joined_text()
            .ends_with("[0, 0.3, 1, 0.7], [0.1, 0.1, 0.2, 0.2].")
    );
}

/// PixelReasoner as the authors render it: the system turn cut to "You are a helpful
/// assistant.", `<tool_call>` text cut from every turn after the first user turn (not only the
/// assistant's), images before text within a turn.
#[test]
fn pixelreasoner_system_turn_and_every_later_turn_lose_tool_call_markup() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("src_images/a.png"));
    let system = "You are a helpful assistant.\n\n# Tools\n<tools>{\"name\":\"crop_image\"}</tools>\nFor each call return <tool_call>{\"name\": ..}</tool_call>";
    let row = serde_json::json!({"message_list": [
        {"role":"system","content":[{"text":system,"image":null,"video":null}]},
        {"role":"user","content":[{"text":"Find the dog.","image":null,"video":null},{"image":"a.png","text":null,"video":null}]},
        {"role":"assistant","content":[{"text":CALL,"image":null,"video":null}]},
        {"role":"user","content":[{"text":"Here is the crop. <tool_call>leftover","image":null,"video":null},{"image":"a.png","text":null,"video":null}]},
        {"role":"assistant","content":[{"text":"It is brown.","image":null,"video":null}]}]});
    std::fs::write(dir.path().join("pr.jsonl"), row.to_string() + "\n").unwrap();
    let p = paths(dir.path(), "pr.jsonl");
    let report = pixelreasoner::import(&p).unwrap();
    assert_eq!(report.written, 1, "{}", report.summary());
    let t = &load_jsonl(&p.out).unwrap().items[0].trajectory;
    assert_eq!(t.messages[0].joined_text(), "You are a helpful assistant.");
    assert_eq!(t.messages[2].joined_text(), "Let me zoom in.");
    assert_eq!(t.messages[3].joined_text(), "Here is the crop.");
    for m in &t.messages[1..4] {
        assert!(
            matches!(m.content[0], pearl::data::chat::Part::Image { .. })
                || m.images().count() == 0,
            "images come first: {m:?}"
        );
    }
    assert_eq!(t.meta.tool_calls.len(), 1);
    assert_valid(&p.out, 1);
}

/// Validation reads every turn for tool-call markup, the system turn included.
#[test]
fn validation_flags_tool_call_markup_in_any_turn() {
    let dir = tempfile::tempdir().unwrap();
    coords_png(&dir.path().join("a.png"));
    let with_system = |system: &str| {
        serde_json::json!({"id": "x", "messages": [
            {"role":"system","content":[{"type":"text","text":system}]},
            {"role":"user","content":[{"type":"image","image":"a.png"},{"type":"text","text":"Q?"}]},
            {"role":"assistant","content":[{"type":"text","text":"A."}]}]})
        .to_string()
            + "\n"
    };
    let file = dir.path().join("t.jsonl");
    std::fs::write(&file, with_system("Use <tool_call>{}</tool_call> to crop.")).unwrap();
    let (_, report) = validate_files(std::slice::from_ref(&file), &ValidateOptions::default());
    assert_eq!(report.valid, 0);
    let p = &report.problems[0];
    assert_eq!(p.kind, pearl::data::validate::ProblemKind::ToolCallMarkup);
    assert!(p.message.contains("message 0 (system)"), "{p}");
    std::fs::write(&file, with_system("You are a helpful assistant.")).unwrap();
    assert_valid(&file, 1);
}
