//! Writing results to standard output in the chosen format: the table format shows
//! chosen columns aligned (`columns.rs`, `table.rs`); the JSON format prints what the
//! API returned, pretty-printed, for `jq` and scripts.

pub mod columns;
pub mod table;

use std::io::Write;

use serde_json::Value;

use crate::args::Format;
use crate::error::CtlError;
use columns::Column;

/// A list of objects: one row each.
pub fn list(format: Format, columns: &[Column], rows: &Value) -> Result<(), CtlError> {
    // A paginated answer (`?page=`) has its objects under `items`.
    let items = rows.get("items").unwrap_or(rows);
    let Value::Array(items) = items else {
        return Err(CtlError::Local(format!("expected a list from the broker, got: {}", short(rows))));
    };
    match format {
        Format::Json => write_stdout(&pretty(&Value::Array(items.clone()))),
        Format::Table => {
            let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
            let cells: Vec<Vec<String>> = items
                .iter()
                .map(|item| columns.iter().map(|(_, path)| table::cell(table::lookup(item, path))).collect())
                .collect();
            write_stdout(&table::render(&headers, &cells))
        }
    }
}

/// One object: in the table format a `field  value` line per column the object has.
pub fn record(format: Format, columns: &[Column], value: &Value) -> Result<(), CtlError> {
    match format {
        Format::Json => write_stdout(&pretty(value)),
        Format::Table => {
            let cells: Vec<Vec<String>> = columns
                .iter()
                .filter_map(|(header, path)| {
                    table::lookup(value, path).map(|v| vec![header.to_string(), table::cell(Some(v))])
                })
                .collect();
            write_stdout(&table::render(&["field", "value"], &cells))
        }
    }
}

/// A command that changed something: a line for people, nothing in the JSON format
/// (the exit code says it worked).
pub fn done(format: Format, message: &str) -> Result<(), CtlError> {
    match format {
        Format::Json => Ok(()),
        Format::Table => write_stdout(&format!("{message}\n")),
    }
}

/// JSON as it is, whatever the format (definitions).
pub fn json(value: &Value) -> Result<(), CtlError> {
    write_stdout(&pretty(value))
}

pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn short(value: &Value) -> String {
    value.to_string().chars().take(100).collect()
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CtlError::Local(format!("cannot write to standard output: {e}"))),
    }
}
