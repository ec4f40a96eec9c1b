//! The command line: go-micro's commands, argument order and registry flags.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  micro services
  micro describe greeter1
  micro call greeter1 Greeter.Hello '{\"name\": \"John\"}'
  micro call --proto proto/greeter.proto -I proto greeter2 Greeter.Test '{\"name\": \"x\"}'
  micro health greeter1
  micro watch greeter1
  micro subscribe greeter.events --proto proto/greeter.proto --message greeter.Response
  micro publish greeter.events '{\"msg\": \"hi\"}' --proto proto/greeter.proto --message greeter.Response
  MICRO_REGISTRY_ADDRESS=10.0.0.1:2379 micro services --output json";

/// The micro command: list, describe, call, health-check and watch services found in the
/// registry (etcd at 127.0.0.1:2379 unless told otherwise).
#[derive(Debug, Parser)]
#[command(name = "micro", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Registry: etcd (the default here) or memory (sees only this process).
    #[arg(long, env = "MICRO_REGISTRY", global = true)]
    pub(crate) registry: Option<String>,
    /// Comma-separated registry addresses, host:port (default 127.0.0.1:2379).
    #[arg(
        long = "registry_address",
        env = "MICRO_REGISTRY_ADDRESS",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) registry_address: Vec<String>,
    /// Output: a table for a person, or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub(crate) output: Output,
    /// TLS to the services' nodes (`--client_tls*`, as a service's).
    #[command(flatten)]
    pub(crate) client_tls: micro::ClientTlsFlags,
    /// TLS to etcd (`--registry_tls_*`, as a service's).
    #[command(flatten)]
    pub(crate) registry_tls: micro::RegistryTlsFlags,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns (colours on a terminal).
    Table,
    /// JSON (one document; one line per event for `watch`).
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Every service in the registry with its versions and node count.
    #[command(after_help = "Example:\n  micro services\n  micro services --output json")]
    Services,
    /// A service's nodes (id, address, metadata) and endpoints (request and response fields).
    #[command(
        after_help = "Examples:\n  micro describe greeter1\n  micro describe service greeter1 --output json"
    )]
    Describe(DescribeArgs),
    /// Calls an endpoint with a JSON request; prints the JSON response.
    #[command(after_help = CALL_HELP)]
    Call(CallArgs),
    /// grpc.health.v1 status of every node of a service, one line each.
    #[command(
        after_help = "Examples:\n  micro health greeter1\n  micro health --address 127.0.0.1:8081"
    )]
    Health(HealthArgs),
    /// Registry events as they happen: create, update, delete, with node and time.
    #[command(after_help = "Examples:\n  micro watch\n  micro watch greeter1 --output json")]
    Watch(WatchArgs),
    /// Publishes one message (JSON, typed by --proto/--message) to a topic on the broker.
    #[command(after_help = PUBLISH_HELP)]
    Publish(crate::commands::events::PublishArgs),
    /// Prints the messages of a topic as they arrive (one JSON line each with -o json).
    #[command(after_help = SUBSCRIBE_HELP)]
    Subscribe(crate::commands::events::SubscribeArgs),
    /// Prints a shell completion script.
    #[command(
        after_help = "Examples:\n  micro completions bash > /etc/bash_completion.d/micro\n  micro completions zsh > \"${fpath[1]}/_micro\"\n  micro completions fish > ~/.config/fish/completions/micro.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const CALL_HELP: &str = "\
The request and response schema come from the node's gRPC reflection (v1, else v1alpha);
for a node without reflection (most go-micro nodes) give the .proto with --proto.

Examples:
  micro call greeter1 Greeter.Hello '{\"name\": \"John\"}'
  micro call greeter1 Greeter.Hello '{\"name\": \"John\"}' -m user=alice --timeout 5s
  echo '{\"name\": \"John\"}' | micro call greeter1 Greeter.Hello -
  micro call --proto greeter.proto -I ./proto greeter Greeter.Hello '{\"name\": \"John\"}'
  micro call --address 127.0.0.1:8081 greeter1 Greeter.Hello '{}'";

const PUBLISH_HELP: &str = "\
The message is protobuf-encoded in go-micro's envelope ({Header, Body} JSON on NATS, headers
Content-Type: application/grpc+proto and Micro-Topic), so go-micro subscribers take it.

Examples:
  micro publish greeter.events '{\"msg\": \"hi\"}' --proto proto/greeter.proto --message greeter.Response
  micro publish greeter.events - -m user=alice --proto greeter.proto --message greeter.Response < msg.json
  micro publish orders '{}' --broker nats --broker_address 10.0.0.1:4222 --proto o.proto --message o.Order";

const SUBSCRIBE_HELP: &str = "\
Without --proto/--message the body is printed as base64.

Examples:
  micro subscribe greeter.events --proto proto/greeter.proto --message greeter.Response
  micro subscribe greeter.events -o json --count 1 --proto greeter.proto --message greeter.Response
  micro subscribe orders --queue audit --broker_address 10.0.0.1:4222";

/// `micro describe [service] <name>`.
#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// The service (go-micro's `micro describe service <name>` works too).
    #[arg(value_name = "SERVICE", num_args = 1..=2, required = true)]
    pub(crate) words: Vec<String>,
}

impl DescribeArgs {
    /// The service name, skipping go-micro's `service` word.
    pub(crate) fn service(&self) -> Result<&str, String> {
        match self.words.as_slice() {
            [name] => Ok(name),
            [kind, name] if kind == "service" => Ok(name),
            [kind, _] => Err(format!(
                "describe {kind:?}: only services can be described (micro describe service <name>)"
            )),
            _ => Err("describe: give a service name".into()),
        }
    }
}

/// `micro call <service> <Endpoint> [json]`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The service, e.g. greeter1.
    pub(crate) service: String,
    /// The endpoint, go-micro style: Greeter.Hello (or package.Greeter.Hello).
    pub(crate) endpoint: String,
    /// The request as JSON; `-` reads it from stdin.
    #[arg(default_value = "{}")]
    pub(crate) request: String,
    /// Metadata sent with the call, key=value (repeatable).
    #[arg(short = 'm', long = "metadata", value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
    /// Time for the whole call, retries included (default 30s, as any micro-rs call).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Retries on another node when a node is unavailable (default 5).
    #[arg(long)]
    pub(crate) retries: Option<u32>,
    /// Call this node (its id in the registry) only.
    #[arg(long, conflicts_with = "address")]
    pub(crate) node: Option<String>,
    /// Call this host:port directly, without the registry.
    #[arg(long)]
    pub(crate) address: Option<String>,
    /// A .proto file with the service, when the node has no reflection (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) proto: Vec<PathBuf>,
    /// Import paths for --proto (default: the directory of each file).
    #[arg(short = 'I', long = "import_path", value_name = "DIR")]
    pub(crate) import_path: Vec<PathBuf>,
}

/// `micro health <service>` or `micro health --address host:port`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The service whose nodes are checked.
    #[arg(required_unless_present = "address")]
    pub(crate) service: Option<String>,
    /// Check this host:port only, without the registry.
    #[arg(long)]
    pub(crate) address: Option<String>,
    /// Time for each node's check.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// `micro watch [service]`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Watch one service only (default: every service).
    pub(crate) service: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn go_micro_argument_order() {
        let cli = Cli::try_parse_from([
            "micro",
            "call",
            "greeter",
            "Greeter.Hello",
            r#"{"name": "John"}"#,
            "-m",
            "a=b",
            "--timeout",
            "2s",
        ])
        .unwrap();
        let Command::Call(call) = cli.command else {
            panic!("not a call")
        };
        assert_eq!(call.service, "greeter");
        assert_eq!(call.endpoint, "Greeter.Hello");
        assert_eq!(call.request, r#"{"name": "John"}"#);
        assert_eq!(call.metadata, ["a=b"]);
        assert_eq!(call.timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn describe_accepts_go_micro_service_word() {
        for args in [
            &["micro", "describe", "greeter"][..],
            &["micro", "describe", "service", "greeter"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Describe(describe) = cli.command else {
                panic!("not describe")
            };
            assert_eq!(describe.service(), Ok("greeter"));
        }
        let cli = Cli::try_parse_from(["micro", "describe", "node", "x"]).unwrap();
        let Command::Describe(describe) = cli.command else {
            panic!("not describe")
        };
        assert!(describe.service().is_err());
    }

    #[test]
    fn health_needs_a_service_or_an_address() {
        assert!(Cli::try_parse_from(["micro", "health"]).is_err());
        assert!(Cli::try_parse_from(["micro", "health", "--address", "127.0.0.1:1"]).is_ok());
    }
}
