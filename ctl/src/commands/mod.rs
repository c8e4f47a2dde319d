//! One file per verb; each turns its arguments into API requests and prints the result.

mod close;
mod cluster;
mod declare;
mod definitions;
mod delete;
mod list;
mod messages;
mod purge;
mod show;

use std::time::Duration;

use crate::args::{Cli, Command, Format};
use crate::client::Client;
use crate::error::CtlError;

/// What every command needs: the API client, the vhost it works in, the output format.
pub struct Context<'a> {
    pub client: Client,
    pub vhost: &'a str,
    pub format: Format,
}

pub fn run(cli: &Cli) -> Result<(), CtlError> {
    let base = base_uri(cli)?;
    let client = Client::new(base, &cli.username, &cli.password, Duration::from_secs(cli.timeout.max(1)));
    let ctx = Context { client, vhost: &cli.vhost, format: cli.format };
    match &cli.command {
        Command::List(what) => list::run(&ctx, what),
        Command::Show(what) => show::run(&ctx, what),
        Command::Declare(what) => declare::run(&ctx, what),
        Command::Delete(what) => delete::run(&ctx, what),
        Command::Purge(what) => purge::run(&ctx, what),
        Command::Get(what) => messages::get(&ctx, what),
        Command::Publish(what) => messages::publish(&ctx, what),
        Command::Close(what) => close::run(&ctx, what),
        Command::Export(what) => definitions::export(&ctx, what),
        Command::Import(what) => definitions::import(&ctx, what),
        Command::Cluster(what) => cluster::run(&ctx, what),
    }
}

/// `http://host:port`, or `--base-uri` without its trailing `/`. Only plain HTTP: this
/// build has no TLS client.
fn base_uri(cli: &Cli) -> Result<String, CtlError> {
    let base = match &cli.base_uri {
        Some(uri) => uri.trim_end_matches('/').to_string(),
        // An IPv6 address goes in brackets.
        None if cli.host.contains(':') && !cli.host.starts_with('[') => format!("http://[{}]:{}", cli.host, cli.port),
        None => format!("http://{}:{}", cli.host, cli.port),
    };
    if base.starts_with("https://") {
        return Err(CtlError::Usage(format!("{base}: https is not supported by haremqctl; use plain http")));
    }
    if !base.starts_with("http://") || base.len() == "http://".len() {
        return Err(CtlError::Usage(format!("{base}: the base URI must look like http://HOST:PORT")));
    }
    Ok(base)
}
