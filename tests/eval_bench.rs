//! Benchmark loaders: each test writes a small benchmark in its published format (parquet through
//! the parquet crate's ArrowWriter, images with the image crate), loads it, and checks the items;
//! malformed files must give errors naming the file and the row.

use arrow_array::builder::{BinaryBuilder, ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields};
use base64::Engine;
use pearl::eval::bench::{self, BenchFormat};
use std::path::Path;
use std::sync::Arc;

/// PNG bytes of a `w`x`h` image filled with `rgb`.
fn png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(vec![]);
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn pixel_of(path: &str) -> [u8; 3] {
    assert!(Path::new(path).is_absolute(), "{path} is not absolute");
    // Test images are PNG bytes whatever their extension: decode by content.
    let reader = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap();
    reader.decode().unwrap().to_rgb8().get_pixel(0, 0).0
}

/// A `datasets`-style image column: struct {bytes, path}, null where `None`.
fn image_column(images: &[Option<Vec<u8>>]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let mut b = StructBuilder::new(
        fields,
        vec![
            Box::new(BinaryBuilder::new()),
            Box::new(StringBuilder::new()),
        ],
    );
    for img in images {
        let bytes = b.field_builder::<BinaryBuilder>(0).unwrap();
        match img {
            Some(v) => bytes.append_value(v),
            None => bytes.append_null(),
        }
        let path = b.field_builder::<StringBuilder>(1).unwrap();
        match img {
            Some(_) => path.append_value("x.png"),
            None => path.append_null(),
        }
        b.append(img.is_some());
    }
    Arc::new(b.finish())
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[test]
fn vstar_folder_shuffles_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("direct_attributes");
    std::fs::create_dir_all(&sub).unwrap();
    let options = ["red", "blue", "green", "white"];
    for k in 0..12 {
        std::fs::write(sub.join(format!("sa_{k}.jpg")), png(4, 4, [k as u8, 0, 0])).unwrap();
        let json = serde_json::json!({
            "target_object": ["cup"], "bbox": [[1, 2, 3, 4]],
            "question": format!("What is the color of cup {k}?"), "options": options
        });
        std::fs::write(sub.join(format!("sa_{k}.json")), json.to_string()).unwrap();
    }
    let rel = dir.path().join("relative_position");
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::write(rel.join("p.png"), png(4, 4, [0, 9, 0])).unwrap();
    std::fs::write(
        rel.join("p.json"),
        r#"{"target_object": ["a", "b"], "bbox": [], "question": "Is a left of b?", "options": ["left", "right"]}"#,
    )
    .unwrap();

    let cache = dir.path().join("cache");
    let items = bench::load(BenchFormat::Vstar, dir.path(), &cache).unwrap();
    assert_eq!(items.len(), 13);
    for it in &items {
        // The first listed option of the JSON is the answer, wherever the shuffle put it.
        let correct = &it.options[it.answer_index().unwrap()];
        assert!(correct == "red" || correct == "left", "{it:?}");
        let mut sorted = it.options.clone();
        sorted.sort();
        assert!(sorted == ["blue", "green", "red", "white"] || sorted == ["left", "right"]);
    }
    // Over 12 items the answer is not always A.
    let letters: std::collections::BTreeSet<_> = items.iter().map(|i| i.answer.clone()).collect();
    assert!(letters.len() > 1, "{letters:?}");
    // Same order on every load.
    assert_eq!(
        bench::load(BenchFormat::Vstar, dir.path(), &cache).unwrap(),
        items
    );
    let p = items
        .iter()
        .find(|i| i.id == "vstar/relative_position/p")
        .unwrap();
    assert_eq!(p.category, "relative_position");
    assert_eq!(pixel_of(&p.images[0]), [0, 9, 0]);

    std::fs::write(sub.join("bad.json"), r#"{"question": "q"}"#).unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Vstar, dir.path(), &cache).unwrap_err()
    );
    assert!(
        err.contains("bad.json") && err.contains("not a V* item"),
        "{err}"
    );
    std::fs::write(
        sub.join("bad.json"),
        r#"{"question": "q", "options": ["a", "b"]}"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Vstar, dir.path(), &cache).unwrap_err()
    );
    assert!(
        err.contains("bad.json") && err.contains("no image"),
        "{err}"
    );
}

#[test]
fn vstar_hf_parquet_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("test-00000-of-00001.parquet");
    write_parquet(
        &pq,
        vec![
            (
                "question_id",
                Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef,
            ),
            (
                "image",
                image_column(&[Some(png(3, 3, [1, 2, 3])), Some(png(3, 3, [4, 5, 6]))]),
            ),
            (
                "text",
                strings(&[
                    "What is the color of the glove?\n(A) rubber\n(B) cotton\n(C) kevlar\n(D) leather\nAnswer with the option's letter from the given choices directly.",
                    "Is the dog on the left or right of the cat?\n(A) left\n(B) right\nAnswer with the option's letter from the given choices directly.",
                ]),
            ),
            ("label", strings(&["C", "B"])),
            (
                "category",
                strings(&["direct_attributes", "relative_position"]),
            ),
        ],
    );
    let items = bench::load(BenchFormat::VstarHf, dir.path(), &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].id, "vstar/0");
    assert_eq!(items[0].question, "What is the color of the glove?");
    assert_eq!(items[0].options, ["rubber", "cotton", "kevlar", "leather"]);
    assert_eq!(
        (items[0].answer.as_str(), items[0].category.as_str()),
        ("C", "direct_attributes")
    );
    assert_eq!(pixel_of(&items[1].images[0]), [4, 5, 6]);

    std::fs::write(dir.path().join("img.png"), png(2, 2, [7, 7, 7])).unwrap();
    let jsonl = dir.path().join("test_questions.jsonl");
    std::fs::write(
        &jsonl,
        r#"{"image": "img.png", "text": "Q?\n(A) x\n(B) y", "category": "direct_attributes", "question_id": 5, "label": "B"}
{"image": "img.png", "text": "no options here", "category": "c", "question_id": 6, "label": "A"}
"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::VstarHf, &jsonl, &dir.path().join("cache")).unwrap_err()
    );
    assert!(
        err.contains("test_questions.jsonl: line 2")
            && err.contains("no \"(A) .. (B) ..\" options"),
        "{err}"
    );
}

#[test]
fn mmvp_csv_and_pairs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("MMVP_Images")).unwrap();
    for i in 1..=4u8 {
        std::fs::write(
            dir.path().join(format!("MMVP_Images/{i}.jpg")),
            png(2, 2, [i, i, i]),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("Questions.csv"),
        "Index,Question,Options,Correct Answer\n\
         1,Is the door open?,(a) Open (b) Closed,(a)\n\
         2,Is the door open?,(a) Open (b) Closed,(b)\n\
         3,\"Which way, left or right?\",(a) Left (b) Right,(b)\n\
         4,\"Which way, left or right?\",(a) Left (b) Right,(a)\n",
    )
    .unwrap();
    let items = bench::load(BenchFormat::Mmvp, dir.path(), &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[2].question, "Which way, left or right?");
    assert_eq!(items[0].options, ["Open", "Closed"]);
    assert_eq!(
        items.iter().map(|i| i.answer.as_str()).collect::<Vec<_>>(),
        ["A", "B", "B", "A"]
    );
    let pairs: Vec<_> = items
        .iter()
        .map(|i| i.meta["pair"].as_u64().unwrap())
        .collect();
    assert_eq!(pairs, [0, 0, 1, 1]);
    assert_eq!(pixel_of(&items[3].images[0]), [4, 4, 4]);

    std::fs::write(
        dir.path().join("Questions.csv"),
        "Index,Question,Options,Correct Answer\nfive,Q,(a) x (b) y,(a)\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Mmvp, dir.path(), &dir.path().join("c")).unwrap_err()
    );
    assert!(
        err.contains("Questions.csv: row 1") && err.contains("not a number"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("Questions.csv"),
        "Index,Question,Options,Correct Answer\n9,Q,(a) x (b) y,(a)\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Mmvp, dir.path(), &dir.path().join("c")).unwrap_err()
    );
    assert!(
        err.contains("row 1") && err.contains("9.jpg does not exist"),
        "{err}"
    );
}

fn choices(rows: &[&[&str]]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for c in *r {
            b.values().append_value(c);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

#[test]
fn blink_parquet_with_multiple_images() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("Jigsaw");
    std::fs::create_dir_all(&task).unwrap();
    write_parquet(
        &task.join("val-00000-of-00001.parquet"),
        vec![
            ("idx", strings(&["val_Jigsaw_1", "val_Jigsaw_2"])),
            (
                "question",
                strings(&["Which piece fits?", "Which piece fits here?"]),
            ),
            (
                "choices",
                choices(&[&["first", "second"], &["first", "second", "third"]]),
            ),
            ("answer", strings(&["(B)", "(C)"])),
            (
                "image_1",
                image_column(&[Some(png(2, 2, [1, 0, 0])), Some(png(2, 2, [2, 0, 0]))]),
            ),
            ("image_2", image_column(&[Some(png(2, 2, [1, 1, 0])), None])),
            ("image_3", image_column(&[Some(png(2, 2, [1, 1, 1])), None])),
            ("image_4", image_column(&[None, None])),
            ("sub_task", strings(&["Jigsaw", "Jigsaw"])),
        ],
    );
    let items = bench::load(BenchFormat::Blink, dir.path(), &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].images.len(), 3);
    assert_eq!(items[1].images.len(), 1);
    assert_eq!(
        items[0]
            .images
            .iter()
            .map(|p| pixel_of(p))
            .collect::<Vec<_>>(),
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    );
    assert_eq!(
        (items[0].answer.as_str(), items[1].answer.as_str()),
        ("B", "C")
    );
    assert_eq!(items[1].options, ["first", "second", "third"]);
    assert_eq!(items[0].category, "Jigsaw");
    assert!(pearl::eval::bench::blink::PEARL_SUBSETS.contains(&"Jigsaw"));

    // Undecodable image bytes: the error names file and row.
    write_parquet(
        &task.join("val-00000-of-00001.parquet"),
        vec![
            ("idx", strings(&["val_Jigsaw_1"])),
            ("question", strings(&["Which?"])),
            ("choices", choices(&[&["a", "b"]])),
            ("answer", strings(&["(A)"])),
            ("image_1", image_column(&[Some(b"not an image".to_vec())])),
        ],
    );
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Blink, dir.path(), &dir.path().join("cache")).unwrap_err()
    );
    assert!(
        err.contains("val-00000-of-00001.parquet: row 1") && err.contains("not a recognised image"),
        "{err}"
    );

    // A missing column is named, with the columns that exist.
    write_parquet(
        &task.join("val-00000-of-00001.parquet"),
        vec![
            ("idx", strings(&["val_Jigsaw_1"])),
            ("image_1", image_column(&[Some(png(2, 2, [0, 0, 0]))])),
        ],
    );
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Blink, dir.path(), &dir.path().join("cache")).unwrap_err()
    );
    assert!(
        err.contains("no column \"question\" (columns: idx, image_1)"),
        "{err}"
    );

    std::fs::write(task.join("val-00000-of-00001.parquet"), b"garbage").unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Blink, dir.path(), &dir.path().join("cache")).unwrap_err()
    );
    assert!(err.contains("not a readable parquet file"), "{err}");
}

#[test]
fn vlmevalkit_tsv_with_references_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (red, blue) = (b64(png(2, 2, [200, 0, 0])), b64(png(2, 2, [0, 0, 200])));
    let tsv = format!(
        "index\timage\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\n\
         10\t{red}\tWhat colour?\t\tred\tblue\t\t\tA\tcolor\n\
         11\t10\tWhat colour again?\tLook closely.\tred\tblue\tgreen\t\tC\tcolor\n\
         12\t['{red}', '{blue}']\tWhich differs?\tnan\tfirst\tsecond\tthird\tfourth\tD\tmulti\n"
    );
    let path = dir.path().join("HRBench4K.tsv");
    std::fs::write(&path, tsv).unwrap();
    let items = bench::load(BenchFormat::Tsv, &path, &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].id, "HRBench4K/10");
    assert_eq!(items[0].options, ["red", "blue"]);
    // Row 11 reuses row 10's image through its index.
    assert_eq!(items[1].images, items[0].images);
    assert_eq!(items[1].question, "Hint: Look closely.\nWhat colour again?");
    assert_eq!(items[1].options.len(), 3);
    assert_eq!(items[2].question, "Which differs?");
    assert_eq!(
        items[2]
            .images
            .iter()
            .map(|p| pixel_of(p))
            .collect::<Vec<_>>(),
        [[200, 0, 0], [0, 0, 200]]
    );
    assert_eq!(items[2].category, "multi");

    std::fs::write(
        &path,
        "index\timage\tquestion\tA\tB\tanswer\n1\t!!notbase64!!\tQ\tx\ty\tA\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Tsv, &path, &dir.path().join("cache")).unwrap_err()
    );
    assert!(
        err.contains("HRBench4K.tsv: row 1") && err.contains("neither base64"),
        "{err}"
    );
    std::fs::write(
        &path,
        format!("index\timage\tquestion\tA\tB\tanswer\n1\t{red}\tQ\tx\ty\tE\n"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Tsv, &path, &dir.path().join("cache")).unwrap_err()
    );
    assert!(err.contains("\"HRBench4K/1\" has answer \"E\""), "{err}");
}

#[test]
fn mcq_jsonl_resolves_relative_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
    std::fs::write(dir.path().join("imgs/1.png"), png(2, 2, [5, 5, 5])).unwrap();
    let path = dir.path().join("mcq.jsonl");
    std::fs::write(
        &path,
        r#"{"id":"w-1","image":"imgs/1.png","question":"Colour?","options":["grey","pink"],"answer":"A","category":"attr"}

{"id":"w-2","images":["data:image/png;base64,AAAA"],"question":"Q?","options":["a","b","c"],"answer":"C"}
"#,
    )
    .unwrap();
    let items = bench::load(BenchFormat::Jsonl, &path, &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(pixel_of(&items[0].images[0]), [5, 5, 5]);
    assert!(items[1].images[0].starts_with("data:image/png"));

    std::fs::write(
        &path,
        r#"{"id":"w-1","image":"imgs/404.png","question":"Q","options":["a","b"],"answer":"A"}"#,
    )
    .unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Jsonl, &path, &dir.path().join("cache")).unwrap_err()
    );
    assert!(
        err.contains("mcq.jsonl: line 1") && err.contains("404.png does not exist"),
        "{err}"
    );
    std::fs::write(&path, "{\"id\": 1}\n").unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Jsonl, &path, &dir.path().join("cache")).unwrap_err()
    );
    assert!(err.contains("mcq.jsonl: line 1: not an MCQ item"), "{err}");
    let dup = r#"{"id":"same","question":"Q","options":["a","b"],"answer":"A"}"#;
    std::fs::write(&path, format!("{dup}\n{dup}\n")).unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Jsonl, &path, &dir.path().join("cache")).unwrap_err()
    );
    assert!(err.contains("\"same\" appears twice"), "{err}");
}

#[test]
fn category_filter() {
    let mk = |id: &str, cat: &str| pearl::data::mcq::McqItem {
        id: id.into(),
        images: vec![],
        question: "q".into(),
        options: vec!["a".into(), "b".into()],
        answer: "A".into(),
        category: cat.into(),
        meta: serde_json::Value::Null,
    };
    let items = vec![mk("1", "Counting"), mk("2", "Jigsaw"), mk("3", "Art_Style")];
    let kept =
        bench::filter_categories(items.clone(), &["Counting".into(), "Jigsaw".into()]).unwrap();
    assert_eq!(
        kept.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(
        bench::filter_categories(items.clone(), &[]).unwrap().len(),
        3
    );
    let err = bench::filter_categories(items, &["IQ_Test".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("IQ_Test") && err.contains("Art_Style"),
        "{err}"
    );
}

/// Single-image BLINK sub-tasks as the hub ships them: `image_2..4` present but null in every
/// row (arrow type Null), or absent. Both mean "no such image".
#[test]
fn blink_null_or_missing_image_columns_mean_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("Counting");
    std::fs::create_dir_all(&task).unwrap();
    let nulls = || Arc::new(arrow_array::NullArray::new(2)) as ArrayRef;
    write_parquet(
        &task.join("val-00000-of-00001.parquet"),
        vec![
            ("idx", strings(&["val_Counting_1", "val_Counting_2"])),
            ("question", strings(&["How many?", "How many cups?"])),
            ("choices", choices(&[&["1", "2"], &["3", "4"]])),
            ("answer", strings(&["(A)", "(B)"])),
            (
                "image_1",
                image_column(&[Some(png(2, 2, [9, 0, 0])), Some(png(2, 2, [8, 0, 0]))]),
            ),
            ("image_2", nulls()),
            ("image_3", nulls()),
            ("sub_task", strings(&["Counting", "Counting"])),
        ],
    );
    let items = bench::load(BenchFormat::Blink, dir.path(), &dir.path().join("cache")).unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.images.len() == 1), "{items:?}");
    assert_eq!(pixel_of(&items[1].images[0]), [8, 0, 0]);
}

/// A V* item folder (`NAME.json` + image).
fn vstar_folder(root: &Path) {
    let sub = root.join("direct_attributes");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("sa_1.jpg"), png(2, 2, [1, 1, 1])).unwrap();
    let json = serde_json::json!({"question": "Color?", "options": ["red", "blue"]});
    std::fs::write(sub.join("sa_1.json"), json.to_string()).unwrap();
}

/// `--bench vstar` and `--bench vstar-hf` read whichever V* layout the user downloaded, each
/// preferring its own; a path holding neither is an error naming both.
#[test]
fn vstar_layout_is_detected_from_what_was_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The hub parquet, given to --bench vstar.
    let hf = dir.path().join("hf/data");
    std::fs::create_dir_all(&hf).unwrap();
    write_parquet(
        &hf.join("test-00000-of-00001.parquet"),
        vec![
            (
                "question_id",
                Arc::new(Int64Array::from(vec![7])) as ArrayRef,
            ),
            ("image", image_column(&[Some(png(2, 2, [3, 3, 3]))])),
            ("text", strings(&["Q?\n(A) x\n(B) y"])),
            ("label", strings(&["B"])),
            ("category", strings(&["relative_position"])),
        ],
    );
    for path in [
        dir.path().join("hf"),
        hf.join("test-00000-of-00001.parquet"),
    ] {
        let items = bench::load(BenchFormat::Vstar, &path, &cache).unwrap();
        assert_eq!(items[0].id, "vstar/7", "{}", path.display());
    }
    // The folder layout, given to --bench vstar-hf.
    let folder = dir.path().join("folder");
    vstar_folder(&folder);
    let items = bench::load(BenchFormat::VstarHf, &folder, &cache).unwrap();
    assert_eq!(items[0].id, "vstar/direct_attributes/sa_1");
    // craigwu/vstar_bench holds both: each format takes its own.
    std::fs::write(
        folder.join("test_questions.jsonl"),
        r#"{"image": "direct_attributes/sa_1.jpg", "text": "Color?\n(A) red\n(B) blue", "category": "direct_attributes", "question_id": 0, "label": "A"}
"#,
    )
    .unwrap();
    assert_eq!(
        bench::load(BenchFormat::Vstar, &folder, &cache).unwrap()[0].id,
        "vstar/direct_attributes/sa_1"
    );
    assert_eq!(
        bench::load(BenchFormat::VstarHf, &folder, &cache).unwrap()[0].id,
        "vstar/0"
    );
    // Neither layout.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("README.md"), "hi").unwrap();
    for format in [BenchFormat::Vstar, BenchFormat::VstarHf] {
        let err = format!("{:#}", bench::load(format, &other, &cache).unwrap_err());
        assert!(
            err.contains("vstar-hf") && err.contains("not a V* download"),
            "{err}"
        );
    }
}

/// MMVP as `git clone` of the hub dataset lays it out: `MMVP Images/` (with a space).
#[test]
fn mmvp_reads_the_hub_image_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("MMVP Images")).unwrap();
    for i in 1..=2u8 {
        std::fs::write(
            dir.path().join(format!("MMVP Images/{i}.jpg")),
            png(2, 2, [i, 0, 0]),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("Questions.csv"),
        "Index,Question,Options,Correct Answer\n1,Open?,(a) Yes (b) No,(a)\n2,Open?,(a) Yes (b) No,(b)\n",
    )
    .unwrap();
    let items = bench::load(BenchFormat::Mmvp, dir.path(), &dir.path().join("c")).unwrap();
    assert_eq!(pixel_of(&items[1].images[0]), [2, 0, 0]);
    std::fs::rename(dir.path().join("MMVP Images"), dir.path().join("imgs")).unwrap();
    let err = format!(
        "{:#}",
        bench::load(BenchFormat::Mmvp, dir.path(), &dir.path().join("c")).unwrap_err()
    );
    assert!(
        err.contains("MMVP Images") && err.contains("MMVP_Images"),
        "{err}"
    );
}
