//! `export definitions` and `import definitions`: RabbitMQ's definitions JSON, the
//! whole broker's, to a file or standard output and back.

use std::fs;

use serde_json::Value;

use super::Context;
use crate::args::{Export, Import};
use crate::error::CtlError;
use crate::output;
use crate::path::api;

pub fn export(ctx: &Context, what: &Export) -> Result<(), CtlError> {
    let Export::Definitions(e) = what;
    let definitions = ctx.client.get(&api(&["definitions"]))?;
    match &e.file {
        None => output::json(&definitions),
        Some(file) => {
            fs::write(file, output::pretty(&definitions))
                .map_err(|err| CtlError::Local(format!("cannot write {}: {err}", file.display())))?;
            output::done(ctx.format, &format!("exported definitions to {}", file.display()))
        }
    }
}

pub fn import(ctx: &Context, what: &Import) -> Result<(), CtlError> {
    let Import::Definitions(i) = what;
    let text = fs::read_to_string(&i.file)
        .map_err(|err| CtlError::Local(format!("cannot read {}: {err}", i.file.display())))?;
    // Checked here so that a broken file is reported as such, not as the broker's 400.
    serde_json::from_str::<Value>(&text)
        .map_err(|err| CtlError::Local(format!("{} is not JSON: {err}", i.file.display())))?;
    ctx.client.post(&api(&["definitions"]), text)?;
    output::done(ctx.format, &format!("imported definitions from {}", i.file.display()))
}
