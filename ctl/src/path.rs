//! API paths: `/api/` followed by percent-encoded segments, so that the vhost `/`
//! becomes `%2F` and names with spaces, slashes or dots reach the broker intact.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters is encoded. `.` is encoded too, so
/// that a name like `..` is never taken for a dot segment on the way.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// `/api/seg1/seg2/...`, each segment percent-encoded.
pub fn api(segments: &[&str]) -> String {
    let mut path = String::from("/api");
    for segment in segments {
        path.push('/');
        path.push_str(&encode(segment));
    }
    path
}

/// One segment, percent-encoded.
pub fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `path?key=value&...` with the values percent-encoded.
pub fn with_query(path: String, pairs: &[(&str, &str)]) -> String {
    let mut out = path;
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        out.extend(utf8_percent_encode(value, SEGMENT));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(api(&["queues", "/", "orders"]), "/api/queues/%2F/orders");
        assert_eq!(api(&["queues", "a b", "x/y.z"]), "/api/queues/a%20b/x%2Fy%2Ez");
        assert_eq!(api(&["vhosts", "é"]), "/api/vhosts/%C3%A9");
        assert_eq!(api(&["exchanges", "/", ""]), "/api/exchanges/%2F/");
        assert_eq!(api(&[]), "/api");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(with_query(api(&["x"]), &[]), "/api/x");
        assert_eq!(with_query(api(&["x"]), &[("if-empty", "true"), ("k", "a&b")]), "/api/x?if-empty=true&k=a%26b");
    }
}
