//! Aligned columns: a header line, then one line per row, each column as wide as its
//! widest cell, two spaces apart, no trailing spaces.

use serde_json::Value;

/// Renders a table (every row as long as `headers`).
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as one cell: strings as they are (line breaks escaped so a row stays one
/// line), nothing for null or a missing field, a list of strings (tags) comma-separated,
/// other objects and lists as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.replace('\r', "\\r").replace('\n', "\\n"),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let texts: Vec<String> = items.iter().map(|item| cell(Some(item))).collect();
            texts.join(",")
        }
        Some(other) => other.to_string(),
    }
}

/// The value at a dotted path (`queue.name`, `message_stats.publish`).
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned() {
        let rows = vec![vec!["orders".to_string(), "12".to_string()], vec!["é".to_string(), String::new()]];
        assert_eq!(render(&["name", "messages"], &rows), "name    messages\norders  12\né\n");
        assert_eq!(render(&["name"], &[]), "name\n");
    }

    #[test]
    fn cells_show_values_compactly() {
        let v = json!({"a": {"b": 1}, "s": "x\ny", "n": null, "args": {}, "ok": true, "tags": ["a", "b"], "none": [], "l": [1]});
        assert_eq!(cell(lookup(&v, "tags")), "a,b");
        assert_eq!(cell(lookup(&v, "none")), "");
        assert_eq!(cell(lookup(&v, "l")), "[1]");
        assert_eq!(cell(lookup(&v, "a.b")), "1");
        assert_eq!(cell(lookup(&v, "s")), "x\\ny");
        assert_eq!(cell(lookup(&v, "n")), "");
        assert_eq!(cell(lookup(&v, "missing.deeper")), "");
        assert_eq!(cell(lookup(&v, "args")), "{}");
        assert_eq!(cell(lookup(&v, "ok")), "true");
    }
}
