//! `micro`: go-micro's command-line tool for micro-rs (and go-micro) services, working from
//! the registry: `services`, `describe`, `call` with JSON, `health`, `watch`; and events:
//! `publish` and `subscribe`.
//!
//! Exit codes: 0 success; 1 a failed call (go-micro's error JSON on stderr) or a node not
//! serving; 2 bad input (usage, malformed JSON, a field of the wrong type, an unknown
//! endpoint); 3 an unknown service or node; 4 the registry cannot be reached.

mod cli;
mod codec;
mod commands;
mod error;
mod output;
mod schema;
mod target;

use std::io::ErrorKind;

use clap::{CommandFactory, Parser};

use crate::{
    cli::{Cli, Command},
    error::{CliError, EXIT_FAILED},
    target::Source,
};

fn main() {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("micro: cannot start the runtime: {err}");
            std::process::exit(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for background tasks (registry watches, pooled connections).
    runtime.shutdown_background();
    match result {
        Ok(()) => {}
        Err(CliError::Io(err)) if err.kind() == ErrorKind::BrokenPipe => {}
        Err(CliError::Call(err)) => {
            // go-micro's error, as its JSON.
            eprintln!("{err}");
            std::process::exit(EXIT_FAILED);
        }
        Err(err) => {
            eprintln!("micro: {err}");
            std::process::exit(err.exit_code());
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    match cli.command {
        Command::Services => {
            commands::services::run(&Source::from_flags(&global)?, global.output).await
        }
        Command::Describe(args) => {
            let service = args.service().map_err(CliError::Input)?;
            commands::describe::run(&Source::from_flags(&global)?, service, global.output).await
        }
        Command::Call(args) => commands::call::run(&global, args).await,
        Command::Health(args) => commands::health::run(&global, args).await,
        Command::Publish(args) => commands::events::publish(args, global.output).await,
        Command::Subscribe(args) => commands::events::subscribe(args, global.output).await,
        Command::Watch(args) => {
            commands::watch::run(&Source::from_flags(&global)?, args.service, global.output).await
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "micro", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Logs to stderr, errors only unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
