//! The management API over blocking HTTP/1.1 (ureq): basic auth on every request, JSON
//! bodies, and every failure turned into a `CtlError` that knows its exit code.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::error::CtlError;

/// How long connecting may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a big definitions export still fits).
const MAX_ANSWER: u64 = 1 << 30;

pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port[/prefix]`, no trailing `/`.
    base: String,
    authorization: String,
}

impl Client {
    pub fn new(base: String, username: &str, password: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Error statuses are answers to read (their body has the reason).
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            // The API is usually on loopback: an http_proxy from the environment would
            // send its credentials elsewhere.
            .proxy(None)
            .user_agent(concat!("haremqctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Client { agent, base, authorization: format!("Basic {credentials}") }
    }

    /// GET a path that answers JSON.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.send("GET", path, None, &[])?
            .ok_or_else(|| CtlError::Local(format!("GET {path}: the broker's answer has no body")))
    }

    /// PUT a JSON body; the answer's body, if any.
    pub fn put(&self, path: &str, body: &Value) -> Result<Option<Value>, CtlError> {
        self.send("PUT", path, Some(body.to_string()), &[])
    }

    /// POST a JSON body (already serialised, so a definitions file goes as it is).
    pub fn post(&self, path: &str, body: String) -> Result<Option<Value>, CtlError> {
        self.send("POST", path, Some(body), &[])
    }

    /// DELETE, with extra headers (`X-Reason` when closing a connection).
    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Result<Option<Value>, CtlError> {
        self.send("DELETE", path, None, headers)
    }

    /// One request; `Ok(None)` for a success without a body (201, 204).
    fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Result<Option<Value>, CtlError> {
        let url = format!("{}{path}", self.base);
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            // No `accept` header: RabbitMQ answers a purge that asks for JSON with 406.
            .header("authorization", &self.authorization);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let sent = match body {
            Some(body) => builder.header("content-type", "application/json").body(body).map(|r| self.agent.run(r)),
            None => builder.body(()).map(|r| self.agent.run(r)),
        };
        let mut response = sent
            .map_err(|e| CtlError::Usage(format!("cannot build a request for {url}: {e}")))?
            .map_err(|e| transport(&self.base, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| transport(&self.base, e))?;
        if status >= 400 {
            return Err(CtlError::from_answer(status, method, path, &text));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CtlError::Local(format!("{method} {path}: the broker's answer is not JSON ({e})")))
    }
}

/// A failure before an HTTP answer: everything but a malformed URI means the broker
/// could not be reached.
fn transport(base: &str, error: ureq::Error) -> CtlError {
    match error {
        ureq::Error::BadUri(e) => CtlError::Usage(format!("bad base URI {base}: {e}")),
        ureq::Error::Http(e) => CtlError::Usage(format!("bad request for {base}: {e}")),
        ureq::Error::Timeout(_) => CtlError::Unreachable { url: base.to_string(), cause: "timed out".to_string() },
        ureq::Error::HostNotFound => {
            CtlError::Unreachable { url: base.to_string(), cause: "host not found".to_string() }
        }
        other => CtlError::Unreachable { url: base.to_string(), cause: other.to_string() },
    }
}
