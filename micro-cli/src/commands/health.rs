//! `micro health <service>`: grpc.health.v1 Check of every node, one line each.

use serde::Serialize;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    cli::{Global, HealthArgs, Output},
    error::CliError,
    output::{Table, Tone, print, print_json},
    target::{self, Source},
};

/// The answer of one node.
#[derive(Debug, Serialize)]
struct NodeHealth {
    node: String,
    address: String,
    /// `SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN`, `NO_HEALTH_SERVICE` or
    /// `UNREACHABLE`.
    status: String,
    /// Why, when the check itself failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

pub(crate) async fn run(global: &Global, args: HealthArgs) -> Result<(), CliError> {
    let (service, registry, nodes) = match &args.address {
        Some(address) => {
            let service = args.service.clone().unwrap_or_else(|| address.clone());
            let registry = target::one_node(&service, address).await?;
            (service, registry, vec![(address.clone(), address.clone())])
        }
        None => {
            let service = args.service.clone().unwrap_or_default();
            let source = Source::from_flags(global)?;
            let nodes = source
                .service(&service)
                .await?
                .into_iter()
                .flat_map(|s| s.nodes)
                .map(|n| (n.id, n.address))
                .collect();
            (service, source.registry, nodes)
        }
    };
    let options = micro::client::Options {
        request_timeout: args.timeout,
        retries: 0,
        ..Default::default()
    };
    let client = target::client(registry, options, global)?;
    let checks = nodes.into_iter().map(|(id, address)| {
        let channel = client.channel(service.as_str());
        async move {
            let (status, detail) = check(channel, &id).await;
            NodeHealth {
                node: id,
                address,
                status,
                detail,
            }
        }
    });
    let results = futures::future::join_all(checks).await;
    let all_serving = results.iter().all(|r| r.status == "SERVING");
    match global.output {
        Output::Json => print_json(&results)?,
        Output::Table => {
            let mut table = Table::new(&["NODE", "ADDRESS", "STATUS", "DETAIL"]);
            for r in &results {
                let tone = match r.status.as_str() {
                    "SERVING" => Tone::Good,
                    "NO_HEALTH_SERVICE" => Tone::Note,
                    _ => Tone::Bad,
                };
                table.toned_row(vec![
                    (r.node.clone(), Tone::Plain),
                    (r.address.clone(), Tone::Plain),
                    (r.status.clone(), tone),
                    (r.detail.clone(), Tone::Plain),
                ]);
            }
            print(&table.render())?;
        }
    }
    if all_serving {
        Ok(())
    } else {
        Err(CliError::Unhealthy)
    }
}

/// One node's status and, if the check failed, why.
async fn check(channel: micro::Channel, node: &str) -> (String, String) {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.extensions_mut().insert(micro::CallOptions {
        retries: Some(0),
        filters: vec![micro::client::Filter::Node(node.to_owned())],
        ..Default::default()
    });
    match HealthClient::new(channel).check(request).await {
        Ok(response) => {
            let status = ServingStatus::try_from(response.into_inner().status)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| "UNKNOWN".to_owned());
            (status, String::new())
        }
        Err(status) if status.code() == Code::Unimplemented => (
            "NO_HEALTH_SERVICE".to_owned(),
            "the node does not serve grpc.health.v1".to_owned(),
        ),
        Err(status) => {
            let err = micro::errors::Error::from_status(&status);
            ("UNREACHABLE".to_owned(), err.detail)
        }
    }
}
