//! `micro watch [service]`: registry events as they happen.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use micro::registry::{Event, WatchOptions};
use serde::Serialize;

use crate::{
    cli::Output,
    error::CliError,
    output::{Tone, print, print_json},
    target::Source,
};

/// Pause before watching again after the watch was lost.
const REWATCH: Duration = Duration::from_secs(1);

/// One event as printed.
#[derive(Debug, Serialize)]
struct Line {
    time: String,
    action: &'static str,
    service: String,
    version: String,
    node: String,
    address: String,
}

pub(crate) async fn run(
    source: &Source,
    service: Option<String>,
    output: Output,
) -> Result<(), CliError> {
    let what = service
        .clone()
        .unwrap_or_else(|| "every service".to_owned());
    let options = WatchOptions { service };
    let mut watcher = source
        .registry
        .watch(options.clone())
        .await
        .map_err(|err| crate::error::registry_error(err, None, &source.label))?;
    // Ready: etcd confirmed the watch; later changes are seen. On stderr, so stdout stays data.
    eprintln!(
        "micro: watching {what} in {} (Ctrl-C to stop)",
        source.label
    );
    loop {
        let next = tokio::select! {
            next = watcher.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Some(Ok(ref event)) => print_event(event, output)?,
            Some(Err(ref err)) => eprintln!("micro: watch: {err}; watching again"),
            None => eprintln!("micro: watch ended; watching again"),
        }
        if !matches!(next, Some(Ok(_))) {
            match rewatch(source, &options).await {
                Some(again) => watcher = again,
                None => return Ok(()),
            }
        }
    }
}

/// Watches again until it works; `None` on Ctrl-C.
async fn rewatch(source: &Source, options: &WatchOptions) -> Option<micro::registry::Watcher> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REWATCH) => {}
            _ = tokio::signal::ctrl_c() => return None,
        }
        match source.registry.watch(options.clone()).await {
            Ok(watcher) => {
                eprintln!("micro: watching again");
                return Some(watcher);
            }
            Err(err) => eprintln!("micro: watch: {err}"),
        }
    }
}

fn print_event(event: &Event, output: Output) -> Result<(), CliError> {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let lines = event.service.nodes.iter().map(|node| Line {
        time: time.clone(),
        action: event.action.as_str(),
        service: event.service.name.clone(),
        version: event.service.version.clone(),
        node: node.id.clone(),
        address: node.address.clone(),
    });
    for line in lines {
        match output {
            Output::Json => print_json(&line)?,
            Output::Table => {
                let tone = match event.action {
                    micro::registry::Action::Create => Tone::Good,
                    micro::registry::Action::Update => Tone::Note,
                    micro::registry::Action::Delete => Tone::Bad,
                };
                // Fixed widths: a stream cannot be aligned on what comes later.
                let action = format!("{:<6}", line.action);
                print(&format!(
                    "{}  {}  {}  {}  {}  {}\n",
                    line.time,
                    tone.paint(&action),
                    line.service,
                    line.version,
                    line.node,
                    line.address
                ))?;
            }
        }
    }
    Ok(())
}
