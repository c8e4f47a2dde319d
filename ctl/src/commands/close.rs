//! `close connection NAME`: DELETE of the connection, the reason in `X-Reason`.

use super::Context;
use crate::args::Close;
use crate::error::CtlError;
use crate::output;
use crate::path::api;

pub fn run(ctx: &Context, what: &Close) -> Result<(), CtlError> {
    let Close::Connection(c) = what;
    ctx.client.delete(&api(&["connections", &c.name]), &[("x-reason", &c.reason)])?;
    output::done(ctx.format, &format!("closed connection '{}'", c.name))
}
