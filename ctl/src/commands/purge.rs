//! `purge queue`: DELETE of the queue's contents.

use super::Context;
use crate::args::Purge;
use crate::error::CtlError;
use crate::output;
use crate::path::api;

pub fn run(ctx: &Context, what: &Purge) -> Result<(), CtlError> {
    let Purge::Queue(q) = what;
    ctx.client.delete(&api(&["queues", ctx.vhost, &q.name, "contents"]), &[])?;
    output::done(ctx.format, &format!("purged queue '{}' in vhost '{}'", q.name, ctx.vhost))
}
