//! Arrow values to JSON, for parquet columns that hold nested rows (PixelReasoner's
//! `message_list`). Hand-written because `arrow-json` is not a dependency and only the handful
//! of types these datasets use is needed; anything else is a clear error.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use serde_json::{Value, json};

/// Row `i` of `array` as JSON.
pub fn value_at(array: &ArrayRef, i: usize) -> anyhow::Result<Value> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => json!(array.as_boolean().value(i)),
        DataType::Int8 => json!(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => json!(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => json!(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => json!(array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => json!(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => json!(array.as_string::<i64>().value(i)),
        DataType::Utf8View => json!(array.as_string_view().value(i)),
        DataType::List(_) => list(&array.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(i))?,
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut obj = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                obj.insert(f.name().clone(), value_at(col, i)?);
            }
            Value::Object(obj)
        }
        other => anyhow::bail!("unsupported arrow type {other} in a JSON-like column"),
    })
}

fn list(values: &ArrayRef) -> anyhow::Result<Value> {
    (0..values.len())
        .map(|j| value_at(values, j))
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Value::Array)
}

/// Binary payload of row `i`: a binary column, or a struct `{bytes, path}` (the Hugging Face
/// `Image` feature). None when null.
pub fn image_bytes_at(array: &ArrayRef, i: usize) -> anyhow::Result<Option<Vec<u8>>> {
    // A column null in every row of the file has type `Null`, whose cells are null too.
    if array.is_null(i) || *array.data_type() == DataType::Null {
        return Ok(None);
    }
    Ok(match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i).to_vec()),
        DataType::BinaryView => Some(array.as_binary_view().value(i).to_vec()),
        DataType::Struct(fields) => {
            let idx = fields
                .iter()
                .position(|f| f.name() == "bytes")
                .ok_or_else(|| anyhow::anyhow!("image struct has no `bytes` field"))?;
            image_bytes_at(array.as_struct().column(idx), i)?
        }
        other => anyhow::bail!(
            "image column has type {other}; expected binary or struct {{bytes, path}}"
        ),
    })
}

/// Row `i` of a column as text (strings, or numbers printed), for ids and free text.
pub fn text_at(array: &ArrayRef, i: usize) -> anyhow::Result<Option<String>> {
    Ok(match value_at(array, i)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}
