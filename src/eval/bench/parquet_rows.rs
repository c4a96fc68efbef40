//! Row-by-row access to the Hugging Face parquet files benchmarks ship in: strings, string
//! lists, and images stored the `datasets` way (a struct `{bytes, path}`), with errors that name
//! the file, the row and the column. Batches are streamed so a file of large images is never
//! held in memory whole.

use anyhow::{Context, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// One row of a parquet file.
pub struct Row<'a> {
    batch: &'a RecordBatch,
    i: usize,
    /// 1-based row number in the file, for messages.
    pub number: usize,
    path: &'a Path,
}

/// Calls `f` on every row of the parquet file at `path`, in order.
pub fn for_each_row(
    path: &Path,
    mut f: impl FnMut(&Row) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64).build())
        .with_context(|| format!("{} is not a readable parquet file", path.display()))?;
    let mut number = 0;
    for batch in reader {
        let batch = batch
            .with_context(|| format!("{}: cannot read rows after row {number}", path.display()))?;
        for i in 0..batch.num_rows() {
            number += 1;
            f(&Row {
                batch: &batch,
                i,
                number,
                path,
            })?;
        }
    }
    Ok(())
}

impl Row<'_> {
    pub fn has(&self, col: &str) -> bool {
        self.batch.column_by_name(col).is_some()
    }

    fn column(&self, col: &str) -> anyhow::Result<&ArrayRef> {
        self.batch.column_by_name(col).ok_or_else(|| {
            let names: Vec<_> = self
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            anyhow::anyhow!(
                "{}: has no column {col:?} (columns: {})",
                self.path.display(),
                names.join(", ")
            )
        })
    }

    /// Whether the cell is null. A column that is null in every row of a file has arrow type
    /// `Null` (BLINK's unused `image_2..4` in single-image sub-tasks), whose cells are null too.
    fn is_null(&self, a: &dyn Array) -> bool {
        is_null_at(a, self.i)
    }

    fn err(&self, col: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: row {}: column {col:?}: {msg}",
            self.path.display(),
            self.number
        )
    }

    /// A text value; integers are rendered as text (ids are stored either way). `None` for null.
    pub fn text(&self, col: &str) -> anyhow::Result<Option<String>> {
        let a = self.column(col)?;
        if self.is_null(a.as_ref()) {
            return Ok(None);
        }
        scalar_text(a.as_ref(), self.i)
            .map(Some)
            .ok_or_else(|| self.err(col, format!("type {} is not text", a.data_type())))
    }

    /// A text value that must be present.
    pub fn required_text(&self, col: &str) -> anyhow::Result<String> {
        self.text(col)?.ok_or_else(|| self.err(col, "is null"))
    }

    /// A list of strings (BLINK's `choices`).
    pub fn text_list(&self, col: &str) -> anyhow::Result<Vec<String>> {
        let a = self.column(col)?;
        if self.is_null(a.as_ref()) {
            bail!(self.err(col, "is null"));
        }
        let values = match a.data_type() {
            DataType::List(_) => a.as_list::<i32>().value(self.i),
            DataType::LargeList(_) => a.as_list::<i64>().value(self.i),
            t => bail!(self.err(col, format!("type {t} is not a list of strings"))),
        };
        (0..values.len())
            .map(|j| {
                scalar_text(values.as_ref(), j)
                    .ok_or_else(|| self.err(col, format!("element {j} is not text")))
            })
            .collect()
    }

    /// Image bytes from a `datasets` image struct `{bytes, path}` or a plain binary column.
    /// `None` when the cell is null or holds no bytes (unused `image_2..4` slots in BLINK).
    pub fn image_bytes(&self, col: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let a = self.column(col)?;
        if self.is_null(a.as_ref()) {
            return Ok(None);
        }
        let (arr, i): (&dyn Array, usize) = match a.data_type() {
            DataType::Struct(_) => {
                let s = a.as_struct();
                let bytes = s
                    .column_by_name("bytes")
                    .ok_or_else(|| self.err(col, "image struct has no \"bytes\" field (images stored by path are not supported)"))?;
                (bytes.as_ref(), self.i)
            }
            _ => (a.as_ref(), self.i),
        };
        if is_null_at(arr, i) {
            return Ok(None);
        }
        let bytes = match arr.data_type() {
            DataType::Binary => arr.as_binary::<i32>().value(i).to_vec(),
            DataType::LargeBinary => arr.as_binary::<i64>().value(i).to_vec(),
            DataType::BinaryView => arr.as_binary_view().value(i).to_vec(),
            t => bail!(self.err(col, format!("type {t} holds no image bytes"))),
        };
        Ok((!bytes.is_empty()).then_some(bytes))
    }
}

fn is_null_at(a: &dyn Array, i: usize) -> bool {
    *a.data_type() == DataType::Null || a.is_null(i)
}

fn scalar_text(a: &dyn Array, i: usize) -> Option<String> {
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => a.as_string_view().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        _ => return None,
    })
}

/// `path` itself when it is a file, else every `*.parquet` below the folder, sorted.
pub fn parquet_files(path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let found: Vec<_> = super::files_under(path)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    anyhow::ensure!(
        !found.is_empty(),
        "no .parquet files under {}",
        path.display()
    );
    Ok(found)
}
