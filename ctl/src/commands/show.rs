//! `show overview|alarms|health`.

use serde_json::{json, Value};

use super::Context;
use crate::args::{HealthArgs, Show};
use crate::error::CtlError;
use crate::output::{self, columns};
use crate::path::api;

pub fn run(ctx: &Context, what: &Show) -> Result<(), CtlError> {
    match what {
        Show::Overview => output::record(ctx.format, columns::OVERVIEW, &ctx.client.get(&api(&["overview"]))?),
        Show::Alarms => alarms(ctx),
        Show::Health(args) => health(ctx, args),
    }
}

/// The alarms in effect, read from the alarms health check: its 503 lists them, which
/// here is an answer, not a failure.
fn alarms(ctx: &Context) -> Result<(), CtlError> {
    let answer = match ctx.client.get(&api(&["health", "checks", "alarms"])) {
        Ok(ok) => ok,
        Err(CtlError::Status { status: 503, body: Some(body), .. }) if body.get("alarms").is_some() => body,
        Err(e) => return Err(e),
    };
    let alarms = answer.get("alarms").cloned().unwrap_or_else(|| json!([]));
    output::list(ctx.format, columns::ALARMS, &alarms)
}

/// Runs each check, prints every outcome, then fails with the first failure (exit 7
/// for a 503).
fn health(ctx: &Context, args: &HealthArgs) -> Result<(), CtlError> {
    let mut outcomes = Vec::new();
    let mut first_failure = None;
    let mut checks: Vec<Vec<String>> = args.checks.iter().map(|c| vec![c.segment().to_string()]).collect();
    checks.extend(args.ports.iter().map(|port| vec!["port-listener".to_string(), port.to_string()]));
    checks.extend(args.protocols.iter().map(|protocol| vec!["protocol-listener".to_string(), protocol.clone()]));
    for check in &checks {
        let name = check.join("/");
        let mut segments = vec!["health", "checks"];
        segments.extend(check.iter().map(String::as_str));
        match ctx.client.get(&api(&segments)) {
            Ok(answer) => {
                let status = answer.get("status").cloned().unwrap_or(json!("ok"));
                outcomes.push(json!({"check": name, "status": status}));
            }
            Err(CtlError::Status { status, method, path, reason, body }) => {
                let state = body.as_ref().and_then(|b| b.get("status")).cloned().unwrap_or(json!("failed"));
                outcomes.push(json!({"check": name, "status": state, "reason": reason}));
                first_failure.get_or_insert(CtlError::Status { status, method, path, reason, body });
            }
            Err(e) => return Err(e),
        }
    }
    output::list(ctx.format, columns::HEALTH, &Value::Array(outcomes))?;
    first_failure.map_or(Ok(()), Err)
}
