//! `GET /api/definitions` (export) and `POST /api/definitions` (import, all or
//! nothing; 204 on success, as RabbitMQ). Administrators only.

use hyper::Method;

use super::{Call, Context, Reply};

pub fn definitions(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    if *call.method == Method::POST {
        let defs: crate::definitions::Definitions =
            serde_json::from_slice(call.body).map_err(|e| Reply::bad_request(format!("invalid definitions: {e}")))?;
        crate::definitions::import(&ctx.broker, &defs).map_err(|e| Reply::bad_request(e.to_string()))?;
        return Ok(Reply::empty(204));
    }
    let defs = crate::definitions::export(&ctx.broker);
    let value = serde_json::to_value(&defs)
        .map_err(|e| Reply::error(500, "internal_server_error", &format!("cannot export definitions: {e}")))?;
    Ok(Reply::json(value))
}
