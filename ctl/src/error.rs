//! What can go wrong, as one line for people and an exit code for scripts (the codes
//! are listed in `haremqctl --help`).

use std::fmt;

use serde_json::Value;

/// Exit codes. 2 is clap's for usage errors, kept for ours too.
pub mod exit {
    pub const LOCAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const AUTHENTICATION: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const CLIENT: u8 = 6;
    pub const SERVER: u8 = 7;
}

#[derive(Debug)]
pub enum CtlError {
    /// A bad option value found after parsing (e.g. an https base URI).
    Usage(String),
    /// No HTTP answer: connection refused, unknown host, timeout.
    Unreachable { url: String, cause: String },
    /// The broker answered with a 4xx or 5xx status.
    Status {
        status: u16,
        method: &'static str,
        path: String,
        /// RabbitMQ's `reason` (or `error`) from the error body, else the body's text.
        reason: String,
        /// The error body when it was JSON (a failed health check lists its alarms).
        body: Option<Value>,
    },
    /// Something found missing without a 404 of its own (a binding to delete).
    Missing(String),
    /// A local problem: a file, an answer that is not JSON.
    Local(String),
}

impl CtlError {
    /// The error for an HTTP error answer, its reason taken from RabbitMQ's error body
    /// `{"error": ..., "reason": ...}`.
    pub fn from_answer(status: u16, method: &'static str, path: &str, text: &str) -> Self {
        let body: Option<Value> = serde_json::from_str(text).ok();
        let field = |name: &str| match body.as_ref().and_then(|b| b.get(name)) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(Value::String(_)) => None,
            Some(other) => Some(other.to_string()),
        };
        let reason = field("reason").or_else(|| field("error")).unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                // No body (a 405, a bare 401): HTTP's name for the status.
                let canonical = ureq::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
                canonical.filter(|_| status != 401).unwrap_or_default().to_string()
            } else {
                text.chars().take(200).collect()
            }
        });
        CtlError::Status { status, method, path: path.to_string(), reason, body }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => exit::USAGE,
            CtlError::Unreachable { .. } => exit::UNREACHABLE,
            CtlError::Status { status: 401, .. } => exit::AUTHENTICATION,
            CtlError::Status { status: 404, .. } | CtlError::Missing(_) => exit::NOT_FOUND,
            CtlError::Status { status: 400..=499, .. } => exit::CLIENT,
            CtlError::Status { .. } => exit::SERVER,
            CtlError::Local(_) => exit::LOCAL,
        }
    }

    /// True for a 404 (what `--idempotently` forgives).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CtlError::Status { status: 404, .. })
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Usage(message) | CtlError::Local(message) => f.write_str(message),
            CtlError::Missing(message) => write!(f, "not found: {message}"),
            CtlError::Unreachable { url, cause } => write!(f, "broker unreachable at {url}: {cause}"),
            CtlError::Status { status, method, path, reason, .. } => {
                let kind = match status {
                    401 => "authentication failed",
                    404 => "not found",
                    400..=499 => "client error",
                    _ => "server error",
                };
                write!(f, "{kind} ({status}) on {method} {path}")?;
                match (*status, reason.is_empty()) {
                    (_, false) => write!(f, ": {reason}"),
                    (401, true) => f.write_str(": check --username and --password"),
                    _ => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_comes_from_rabbitmqs_error_body() {
        let e = CtlError::from_answer(
            404,
            "GET",
            "/api/queues/%2F/q",
            r#"{"error":"Object Not Found","reason":"Not Found"}"#,
        );
        assert_eq!(e.to_string(), "not found (404) on GET /api/queues/%2F/q: Not Found");
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        let e = CtlError::from_answer(400, "PUT", "/api/queues/%2F/q", r#"{"error":"bad_request","reason":{"x":1}}"#);
        assert_eq!(e.to_string(), r#"client error (400) on PUT /api/queues/%2F/q: {"x":1}"#);
        assert_eq!(e.exit_code(), exit::CLIENT);
        let e = CtlError::from_answer(401, "GET", "/api/overview", "");
        assert_eq!(e.to_string(), "authentication failed (401) on GET /api/overview: check --username and --password");
        assert_eq!(e.exit_code(), exit::AUTHENTICATION);
        let e = CtlError::from_answer(503, "GET", "/api/health/checks/alarms", "upstream down\n");
        assert_eq!(e.to_string(), "server error (503) on GET /api/health/checks/alarms: upstream down");
        assert_eq!(e.exit_code(), exit::SERVER);
        let e = CtlError::from_answer(405, "PUT", "/api/queues/%2F/q", "");
        assert_eq!(e.to_string(), "client error (405) on PUT /api/queues/%2F/q: Method Not Allowed");
    }
}
