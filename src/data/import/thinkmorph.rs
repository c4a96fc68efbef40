//! ThinkMorph parquet rows (`pid, question, answer, task, problem_image_0, resoning_thought_0,
//! reasoning_image_0, resoning_thought_1`; the `resoning` typo is the real field name). Images
//! (binary, or struct `{bytes, path}`) are written out as PNG. Chat, as the authors render it
//! (`pearl/data.py`): system "You are a helpful assistant.\n" (with the newline), user [image,
//! question], assistant thought 0, user [edited image, "Here is the focused image."], assistant
//! thought 1. The edit is recorded as a tool call named after the row's task (its tool type).

use crate::data::chat::{Message, Part, Role};
use crate::data::import::arrow_json::{image_bytes_at, text_at};
use crate::data::import::{ImportPaths, ImportReport, Skip, run_rows, safe_name, save_png, skip};
use crate::data::trajectory::{Meta, ToolCall, Trajectory};
use anyhow::Context;
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The authors' ThinkMorph system turn: their LVR and PixelReasoner one, plus a newline.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.\n";

/// The text of the user turn that shows the edited (reasoning) image.
pub const FOCUSED_IMAGE: &str = "Here is the focused image.";

const COLUMNS: [&str; 8] = [
    "pid",
    "question",
    "answer",
    "task",
    "problem_image_0",
    "resoning_thought_0",
    "reasoning_image_0",
    "resoning_thought_1",
];

pub fn import(paths: &ImportPaths) -> anyhow::Result<ImportReport> {
    let file = std::fs::File::open(&paths.input)
        .with_context(|| format!("cannot open {}", paths.input.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a parquet file", paths.input.display()))?;
    // All columns are checked before anything is written.
    let schema = builder.schema().clone();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| schema.index_of(c).is_err())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{}: missing column(s) {missing:?}",
        paths.input.display()
    );
    let batches: Vec<RecordBatch> = builder
        .build()?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: cannot read record batches", paths.input.display()))?;
    let img_dir = paths.image_dir();
    std::fs::create_dir_all(&img_dir)
        .with_context(|| format!("cannot create {}", img_dir.display()))?;
    let rows = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)));
    run_rows(paths, rows, |n, (batch, i)| convert(n, batch, i, paths))
}

fn convert(
    n: usize,
    batch: &RecordBatch,
    i: usize,
    paths: &ImportPaths,
) -> Result<Trajectory, Skip> {
    let col =
        |name: &str| -> &ArrayRef { batch.column(batch.schema().index_of(name).unwrap_or(0)) };
    let text = |name: &str| -> Result<String, Skip> {
        text_at(col(name), i)
            .map_err(|e| skip("wrong column type", format!("{name}: {e}")))?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| skip("missing field", name))
    };
    let pid = text("pid").unwrap_or_else(|_| format!("thinkmorph-{n}"));
    let (question, thought0, thought1) = (
        text("question")?,
        text("resoning_thought_0")?,
        text("resoning_thought_1")?,
    );
    let task = text("task").unwrap_or_else(|_| "thinkmorph".into());
    let mut refs = Vec::new();
    for (column, suffix) in [
        ("problem_image_0", "problem"),
        ("reasoning_image_0", "reasoning"),
    ] {
        let bytes = image_bytes_at(col(column), i)
            .map_err(|e| skip("wrong column type", format!("{column}: {e}")))?
            .ok_or_else(|| skip("missing image", column))?;
        let img = image::load_from_memory(&bytes)
            .map_err(|e| skip("undecodable image", format!("{column}: {e}")))?;
        let path = paths
            .image_dir()
            .join(format!("{}_{suffix}.png", safe_name(&pid)));
        save_png(&img, &path)?;
        refs.push(paths.reference(&path));
    }
    let messages = vec![
        Message::text(Role::System, SYSTEM_PROMPT),
        Message::new(
            Role::User,
            vec![
                Part::Image {
                    image: refs[0].clone(),
                },
                Part::Text { text: question },
            ],
        ),
        Message::text(Role::Assistant, thought0),
        Message::new(
            Role::User,
            vec![
                Part::Image {
                    image: refs[1].clone(),
                },
                Part::Text {
                    text: FOCUSED_IMAGE.into(),
                },
            ],
        ),
        Message::text(Role::Assistant, thought1),
    ];
    let mut extra = serde_json::Map::new();
    extra.insert("source".into(), "thinkmorph".into());
    if let Ok(a) = text("answer") {
        extra.insert("answer".into(), a.into());
    }
    let tool = task.to_lowercase().replace(' ', "_");
    Ok(Trajectory {
        id: pid,
        messages,
        task: "thinkmorph".into(),
        meta: Meta {
            tool_calls: vec![ToolCall::on_image(2, &tool, 1)],
            category: Some(task),
            extra,
        },
    })
}
