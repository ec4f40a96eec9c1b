//! `micro services`: every service with its versions and node count.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    cli::Output,
    error::CliError,
    output::{Table, print, print_json},
    target::Source,
};

/// One line of `micro services`.
#[derive(Debug, Default, Serialize)]
struct Summary {
    name: String,
    versions: Vec<String>,
    nodes: usize,
}

pub(crate) async fn run(source: &Source, output: Output) -> Result<(), CliError> {
    let mut by_name: BTreeMap<String, Summary> = BTreeMap::new();
    for service in source.list().await? {
        let summary = by_name.entry(service.name.clone()).or_default();
        summary.name = service.name;
        if !summary.versions.contains(&service.version) {
            summary.versions.push(service.version);
        }
        summary.nodes += service.nodes.len();
    }
    let summaries: Vec<Summary> = by_name.into_values().collect();
    match output {
        Output::Json => print_json(&summaries)?,
        Output::Table => {
            let mut table = Table::new(&["SERVICE", "VERSIONS", "NODES"]);
            for s in &summaries {
                table.row([s.name.clone(), s.versions.join(","), s.nodes.to_string()]);
            }
            print(&table.render())?;
        }
    }
    Ok(())
}
