//! RabbitMQ's query parameters for list endpoints, applied in one place to every
//! listing: `sort` / `sort_reverse` and `columns` always; with `page`, also the name
//! filter (`name`, `use_regex`) and the page (`page_size`, at most 500), answered in
//! RabbitMQ's envelope `{filtered_count, item_count, items, page, page_count,
//! page_size, total_count}`.
//!
//! The order follows RabbitMQ 3.10 (checked against it): filter by name, sort (stable,
//! then reversed as a whole), cut the page, keep the columns. The name filter is a
//! case-insensitive substring, or a case-insensitive regular expression with
//! `use_regex=true`; without `page` it is ignored, as RabbitMQ ignores it.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::{Call, Reply};

/// RabbitMQ's largest page.
const MAX_PAGE_SIZE: i64 = 500;
/// RabbitMQ's page size when `page` is given alone.
const DEFAULT_PAGE_SIZE: i64 = 100;

/// The listing `items` (in the endpoint's default order) as the query asks for it.
pub fn reply(call: &Call, items: Vec<Value>) -> Result<Reply, Reply> {
    Ok(Reply::json(apply(call, items)?))
}

/// A page asked for: its number, size and name filter.
struct Page {
    number: i64,
    size: i64,
    filter: Option<NameFilter>,
}

enum NameFilter {
    Substring(String),
    Regex(regex::Regex),
}

impl NameFilter {
    fn keeps(&self, item: &Value) -> bool {
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        match self {
            NameFilter::Substring(s) => name.to_lowercase().contains(s.as_str()),
            NameFilter::Regex(r) => r.is_match(name),
        }
    }
}

fn invalid() -> Reply {
    Reply::bad_request("Pagination parameters are invalid")
}

fn page_of(call: &Call) -> Result<Option<Page>, Reply> {
    let Some(page) = call.query("page") else {
        return Ok(None);
    };
    let number: i64 = page.parse().map_err(|_| invalid())?;
    let size = match call.query("page_size") {
        Some(s) => Some(s.parse::<i64>().map_err(|_| invalid())?),
        None => None,
    };
    if number < 1 || size.is_some_and(|s| !(1..=MAX_PAGE_SIZE).contains(&s)) {
        let size = size.map_or("undefined".to_string(), |s| s.to_string());
        return Err(Reply::error(
            400,
            "invalid_pagination_parameters",
            &format!("Invalid pagination parameters: page number {number}, page size {size}"),
        ));
    }
    let filter = match call.query("name").filter(|n| !n.is_empty()) {
        None => None,
        Some(name) if call.query_flag("use_regex") => Some(NameFilter::Regex(
            regex::RegexBuilder::new(name).case_insensitive(true).build().map_err(|_| invalid())?,
        )),
        Some(name) => Some(NameFilter::Substring(name.to_lowercase())),
    };
    Ok(Some(Page { number, size: size.unwrap_or(DEFAULT_PAGE_SIZE), filter }))
}

fn apply(call: &Call, mut items: Vec<Value>) -> Result<Value, Reply> {
    let page = page_of(call)?;
    let total = items.len();
    if let Some(filter) = page.as_ref().and_then(|p| p.filter.as_ref()) {
        items.retain(|i| filter.keeps(i));
    }
    if let Some(key) = call.query("sort").filter(|s| !s.is_empty()) {
        let path: Vec<&str> = key.split('.').collect();
        items.sort_by(|a, b| compare(lookup(a, &path), lookup(b, &path)));
    }
    if call.query_flag("sort_reverse") {
        items.reverse();
    }
    let columns: Option<Vec<Vec<&str>>> = call
        .query("columns")
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').filter(|c| !c.is_empty()).map(|c| c.split('.').collect()).collect());
    let keep = |items: Vec<Value>| -> Vec<Value> {
        match &columns {
            Some(cols) => items.iter().map(|i| select(i, cols)).collect(),
            None => items,
        }
    };
    let Some(page) = page else {
        return Ok(Value::Array(keep(items)));
    };
    let filtered = items.len() as i64;
    let offset = (page.number - 1).saturating_mul(page.size);
    // RabbitMQ (lists:sublist) accepts a page starting just past the end (empty).
    if offset > filtered {
        return Err(Reply::error(
            400,
            "page_out_of_range",
            &format!("Page out of range, page: {} page size: {}, len: {filtered}", page.number, page.size),
        ));
    }
    let items: Vec<Value> = items.into_iter().skip(offset as usize).take(page.size as usize).collect();
    Ok(json!({
        "filtered_count": filtered,
        "item_count": items.len(),
        "items": keep(items),
        "page": page.number,
        "page_count": (filtered + page.size - 1) / page.size,
        "page_size": page.size,
        "total_count": total,
    }))
}

/// The value at a dotted path (`message_stats.publish`), if any.
fn lookup<'a>(item: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(item, |v, key| v.get(*key))
}

/// Only the listed columns of an item; a dotted column keeps its path's objects.
/// Missing columns are left out.
fn select(item: &Value, columns: &[Vec<&str>]) -> Value {
    let mut out = Map::new();
    for path in columns {
        if let Some(value) = lookup(item, path) {
            insert_at(&mut out, path, value.clone());
        }
    }
    Value::Object(out)
}

fn insert_at(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(next) = entry {
                insert_at(next, rest, value);
            }
        }
    }
}

/// Erlang's term order where it matters for sort keys: missing and null first, then
/// booleans, numbers (by value), strings (bytewise); other values compare equal.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_columns_keep_their_path() {
        let item = json!({"name": "q", "message_stats": {"publish": 3, "ack": 1}, "durable": true});
        let cols = vec![vec!["name"], vec!["message_stats", "publish"], vec!["nope", "x"]];
        assert_eq!(select(&item, &cols), json!({"name": "q", "message_stats": {"publish": 3}}));
    }

    #[test]
    fn sort_keys_compare_like_erlang_terms() {
        assert_eq!(compare(Some(&json!(2)), Some(&json!(10))), Ordering::Less);
        assert_eq!(compare(Some(&json!("b")), Some(&json!("a"))), Ordering::Greater);
        assert_eq!(compare(None, Some(&json!(0))), Ordering::Less);
        assert_eq!(compare(Some(&json!(1)), Some(&json!("1"))), Ordering::Less);
    }
}
