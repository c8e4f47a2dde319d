//! `list KIND`: a listing of one kind of object, in `--vhost` or across every vhost.

use super::Context;
use crate::args::{List, Scope};
use crate::error::CtlError;
use crate::output::{self, columns};
use crate::path::api;

pub fn run(ctx: &Context, what: &List) -> Result<(), CtlError> {
    let vhost = ctx.vhost;
    // RabbitMQ's paths: `/api/KIND` for everything, `/api/KIND/{vhost}` (or
    // `/api/vhosts/{vhost}/KIND` where the former is taken) for one vhost.
    let under_vhost = |scope: &Scope, kind: &'static str| {
        if scope.all_vhosts {
            api(&[kind])
        } else {
            api(&[kind, vhost])
        }
    };
    let in_vhost = |scope: &Scope, kind: &'static str| {
        if scope.all_vhosts {
            api(&[kind])
        } else {
            api(&["vhosts", vhost, kind])
        }
    };
    let (path, columns) = match what {
        List::Queues(scope) => (under_vhost(scope, "queues"), columns::QUEUES),
        List::Exchanges(scope) => (under_vhost(scope, "exchanges"), columns::EXCHANGES),
        List::Bindings(scope) => (under_vhost(scope, "bindings"), columns::BINDINGS),
        List::Consumers(scope) => (under_vhost(scope, "consumers"), columns::CONSUMERS),
        List::Connections(scope) => (in_vhost(scope, "connections"), columns::CONNECTIONS),
        List::Channels(scope) => (in_vhost(scope, "channels"), columns::CHANNELS),
        List::Permissions(scope) => (in_vhost(scope, "permissions"), columns::PERMISSIONS),
        List::Vhosts => (api(&["vhosts"]), columns::VHOSTS),
        List::Users => (api(&["users"]), columns::USERS),
    };
    let rows = ctx.client.get(&path)?;
    output::list(ctx.format, columns, &rows)
}
