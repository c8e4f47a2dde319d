//! `haremqctl`: a command-line tool for HareMQ (and RabbitMQ) over the management HTTP
//! API, shaped like rabbitmqadmin v2: `haremqctl [global options] VERB KIND [options]`.
//! Errors go to standard error as one line; the exit code says what kind of failure it
//! was (see `haremqctl --help`).

mod args;
mod client;
mod commands;
mod error;
mod output;
mod path;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with 2 here, `--help` and `--version` with 0.
    let cli = args::Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haremqctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
