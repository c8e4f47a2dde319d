//! A handler's answer: a status, an optional JSON body and extra headers, with
//! RabbitMQ's error bodies (`{"error": ..., "reason": ...}`).

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};

pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
    /// A refused login is answered no sooner than this (the login throttle).
    pub not_before: Option<std::time::Instant>,
}

impl Reply {
    pub fn json(body: Value) -> Self {
        Reply { status: 200, body: Some(body), headers: Vec::new(), not_before: None }
    }

    /// A status without a body (201 created, 204 done).
    pub fn empty(status: u16) -> Self {
        Reply { status, body: None, headers: Vec::new(), not_before: None }
    }

    pub fn error(status: u16, error: &str, reason: &str) -> Self {
        Reply { status, body: Some(json!({"error": error, "reason": reason})), headers: Vec::new(), not_before: None }
    }

    /// RabbitMQ's 404, for unknown paths and missing objects alike.
    pub fn not_found() -> Self {
        Self::error(404, "Object Not Found", "Not Found")
    }

    /// RabbitMQ's 400 for a malformed request.
    pub fn bad_request(reason: impl AsRef<str>) -> Self {
        Self::error(400, "bad_request", reason.as_ref())
    }

    /// 405 with the `allow` header and no body, as RabbitMQ (webmachine) answers.
    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        let mut allow: Vec<&str> = vec!["HEAD"];
        allow.extend(allowed.iter().filter(|m| **m != "HEAD"));
        allow.push("OPTIONS");
        Reply { status: 405, body: None, headers: vec![("allow", allow.join(", "))], not_before: None }
    }

    pub fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut builder = hyper::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let body = match &self.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(body)).unwrap_or_else(|_| {
            let mut r = hyper::Response::new(Full::new(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}
