//! `micro describe <service>`: nodes and endpoints, from the registry.

use micro::registry::{Endpoint, Service, Value};

use crate::{
    cli::Output,
    error::CliError,
    output::{Table, Tone, pairs, print, print_json},
    target::Source,
};

pub(crate) async fn run(source: &Source, service: &str, output: Output) -> Result<(), CliError> {
    let versions = source.service(service).await?;
    match output {
        // go-micro's own JSON of the service, one entry per version.
        Output::Json => print_json(&versions)?,
        Output::Table => print(&render(&versions))?,
    }
    Ok(())
}

fn render(versions: &[Service]) -> String {
    let mut out = String::new();
    for (i, service) in versions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{} {}  {} {}\n",
            Tone::Header.paint("service"),
            service.name,
            Tone::Header.paint("version"),
            service.version
        ));
        if !service.metadata.is_empty() {
            out.push_str(&format!(
                "{} {}\n",
                Tone::Header.paint("metadata"),
                pairs(&service.metadata)
            ));
        }
        out.push('\n');
        let mut nodes = Table::new(&["NODE", "ADDRESS", "METADATA"]);
        for node in &service.nodes {
            nodes.row([node.id.clone(), node.address.clone(), pairs(&node.metadata)]);
        }
        out.push_str(&nodes.render());
        out.push('\n');
        if service.endpoints.is_empty() {
            out.push_str("no endpoints listed (the node registered none)\n");
            continue;
        }
        let mut endpoints = Table::new(&["ENDPOINT", "REQUEST", "RESPONSE"]);
        for endpoint in &service.endpoints {
            endpoints.row([
                endpoint_name(endpoint),
                shape(endpoint.request.as_ref()),
                shape(endpoint.response.as_ref()),
            ]);
        }
        out.push_str(&endpoints.render());
    }
    out
}

fn endpoint_name(endpoint: &Endpoint) -> String {
    // go-micro lists a subscriber as an endpoint with the topic in its metadata.
    if endpoint.metadata.get("subscriber").map(String::as_str) == Some("true") {
        let topic = endpoint.metadata.get("topic").map_or("?", String::as_str);
        format!("{} (subscriber of {topic})", endpoint.name)
    } else if endpoint.metadata.get("stream").map(String::as_str) == Some("true") {
        format!("{} (stream)", endpoint.name)
    } else {
        endpoint.name.clone()
    }
}

/// A message shape as `Request {name string, tags []string}`.
fn shape(value: Option<&Value>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) => {
            let name = if value.kind.is_empty() {
                &value.name
            } else {
                &value.kind
            };
            format!("{name} {}", fields(&value.values))
        }
    }
}

fn fields(values: &[Value]) -> String {
    let inner: Vec<String> = values
        .iter()
        .map(|v| {
            if v.values.is_empty() {
                format!("{} {}", v.name, v.kind)
            } else {
                format!("{} {} {}", v.name, v.kind, fields(&v.values))
            }
        })
        .collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, kind: &str, values: Vec<Value>) -> Value {
        Value {
            name: name.into(),
            kind: kind.into(),
            values,
        }
    }

    #[test]
    fn shapes_show_fields_and_nesting() {
        let request = value(
            "Request",
            "Request",
            vec![
                value("name", "string", vec![]),
                value("page", "Page", vec![value("size", "int32", vec![])]),
            ],
        );
        assert_eq!(
            shape(Some(&request)),
            "Request {name string, page Page {size int32}}"
        );
        assert_eq!(shape(None), "-");
    }
}
