//! `micro publish TOPIC '<json>'` and `micro subscribe TOPIC`: events on the broker services
//! use (NATS by default here, as etcd is the registry's default), in go-micro's envelope, the
//! message type given as `--proto FILE --message NAME`.

use std::{path::PathBuf, sync::Arc};

use clap::Args;
use futures::StreamExt as _;
use micro::broker::{
    self, Broker, CONTENT_TYPE, DEFAULT_CONTENT_TYPE, MICRO_TOPIC, Message, Nats, SubscribeOptions,
};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::{
    cli::Output,
    error::CliError,
    output::{print, print_json},
    schema,
};

/// Which broker, as services take it.
#[derive(Debug, Args)]
pub(crate) struct BrokerFlags {
    /// Broker: nats (the default here) or memory (sees only this process).
    #[arg(long, env = "MICRO_BROKER", default_value = "nats")]
    pub(crate) broker: String,
    /// Comma-separated broker addresses, host:port (default 127.0.0.1:4222).
    #[arg(
        long = "broker_address",
        env = "MICRO_BROKER_ADDRESS",
        value_delimiter = ','
    )]
    pub(crate) broker_address: Vec<String>,
}

/// The message type of the events.
#[derive(Debug, Args)]
pub(crate) struct MessageFlags {
    /// A .proto file declaring the message (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) proto: Vec<PathBuf>,
    /// Import paths for --proto (default: the directory of each file).
    #[arg(short = 'I', long = "import_path", value_name = "DIR")]
    pub(crate) import_path: Vec<PathBuf>,
    /// The message's full name, e.g. greeter.Response.
    #[arg(long, value_name = "NAME")]
    pub(crate) message: Option<String>,
}

/// `micro publish <topic> [json]`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The topic, e.g. greeter.events.
    pub(crate) topic: String,
    /// The message as JSON; `-` reads it from stdin.
    #[arg(default_value = "{}")]
    pub(crate) json: String,
    /// Metadata sent as message headers, key=value (repeatable).
    #[arg(short = 'm', long = "metadata", value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
    #[command(flatten)]
    pub(crate) message: MessageFlags,
    #[command(flatten)]
    pub(crate) broker: BrokerFlags,
}

/// `micro subscribe <topic>`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// The topic, e.g. greeter.events.
    pub(crate) topic: String,
    /// Join this queue group (its members share the messages).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Exit after this many messages (default: run until interrupted).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    #[command(flatten)]
    pub(crate) message: MessageFlags,
    #[command(flatten)]
    pub(crate) broker: BrokerFlags,
}

/// The descriptor of `--message` in the `--proto` files.
fn descriptor(flags: &MessageFlags, required: bool) -> Result<Option<MessageDescriptor>, CliError> {
    let Some(name) = &flags.message else {
        if required || !flags.proto.is_empty() {
            return Err(CliError::Input(
                "give the message type: --proto FILE --message NAME (e.g. --proto \
                 proto/greeter.proto --message greeter.Response)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if flags.proto.is_empty() {
        return Err(CliError::Input(format!(
            "--message {name}: give the .proto that declares it with --proto FILE"
        )));
    }
    let pool = schema::compile(&flags.proto, &flags.import_path)?;
    find_message(&pool, name).map(Some)
}

fn find_message(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor, CliError> {
    let name = name.trim_start_matches('.');
    pool.get_message_by_name(name)
        .or_else(|| {
            // A short name (Response) when it is unique.
            let mut matches = pool.all_messages().filter(|m| m.name() == name);
            match (matches.next(), matches.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
        .ok_or_else(|| {
            let known: Vec<String> = pool
                .all_messages()
                .map(|m| m.full_name().to_owned())
                .collect();
            CliError::Input(format!(
                "message {name:?} is not in the --proto files (messages: {})",
                known.join(", ")
            ))
        })
}

async fn connect(flags: &BrokerFlags) -> Result<Arc<dyn Broker>, CliError> {
    let failed = |err: broker::Error| CliError::Registry(format!("broker: {err}"));
    broker::check_name(&flags.broker).map_err(|e| CliError::Input(e.to_string()))?;
    if flags.broker == "nats" {
        Ok(Arc::new(
            Nats::connect(&flags.broker_address).await.map_err(failed)?,
        ))
    } else {
        broker::connect(&flags.broker, &flags.broker_address)
            .await
            .map_err(failed)
    }
}

/// Publishes one message.
pub(crate) async fn publish(args: PublishArgs, output: Output) -> Result<(), CliError> {
    let descriptor = descriptor(&args.message, true)?.ok_or_else(|| {
        CliError::Input("give the message type: --proto FILE --message NAME".into())
    })?;
    let json = super::call::read_request(&args.json)?;
    let message = DynamicMessage::deserialize(descriptor.clone(), json).map_err(|err| {
        CliError::Input(format!(
            "the message does not fit {}: {err}",
            descriptor.full_name()
        ))
    })?;
    let mut envelope = Message::new(message.encode_to_vec());
    for pair in &args.metadata {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("metadata {pair:?}: want key=value")))?;
        envelope.header.insert(key.to_owned(), value.to_owned());
    }
    envelope
        .header
        .insert(CONTENT_TYPE.into(), DEFAULT_CONTENT_TYPE.into());
    envelope
        .header
        .insert(MICRO_TOPIC.into(), args.topic.clone());
    let bytes = envelope.body.len();
    let failed = |err: broker::Error| CliError::Registry(format!("broker: {err}"));
    if args.broker.broker == "nats" {
        // Flushed before exiting, so the message leaves this process.
        let nats = Nats::connect(&args.broker.broker_address)
            .await
            .map_err(failed)?;
        nats.publish(&args.topic, envelope).await.map_err(failed)?;
        nats.flush().await.map_err(failed)?;
    } else {
        let broker = connect(&args.broker).await?;
        broker
            .publish(&args.topic, envelope)
            .await
            .map_err(failed)?;
    }
    match output {
        Output::Json => print_json(&serde_json::json!({
            "topic": args.topic,
            "message": descriptor.full_name(),
            "bytes": bytes,
        }))?,
        Output::Table => print(&format!(
            "published {} ({bytes} bytes) to {}\n",
            descriptor.full_name(),
            args.topic
        ))?,
    }
    Ok(())
}

/// Prints each message of the topic as it arrives.
pub(crate) async fn subscribe(args: SubscribeArgs, output: Output) -> Result<(), CliError> {
    let descriptor = descriptor(&args.message, false)?;
    let broker = connect(&args.broker).await?;
    let options = SubscribeOptions {
        queue: args.queue.clone(),
        ..Default::default()
    };
    let mut subscription = broker
        .subscribe(&args.topic, options)
        .await
        .map_err(|e| CliError::Registry(format!("broker: {e}")))?;
    let mut seen = 0u64;
    while args.count.is_none_or(|count| seen < count) {
        let delivery = tokio::select! {
            delivery = subscription.next() => delivery,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(delivery) = delivery else { break };
        seen += 1;
        let message = match delivery.message {
            Ok(message) => message,
            Err(err) => {
                eprintln!(
                    "micro: a message on {} does not decode: {err}",
                    delivery.topic
                );
                continue;
            }
        };
        let body = match &descriptor {
            Some(descriptor) => match decode(descriptor, &message) {
                Ok(json) => json,
                Err(err) => {
                    eprintln!("micro: a message on {}: {err}", delivery.topic);
                    continue;
                }
            },
            None => {
                use base64::Engine as _;
                serde_json::Value::String(
                    base64::engine::general_purpose::STANDARD.encode(&message.body),
                )
            }
        };
        match output {
            Output::Json => print_json(&serde_json::json!({
                "topic": &*delivery.topic,
                "header": message.header,
                "message": body,
            }))?,
            Output::Table => {
                let metadata = crate::output::pairs(
                    message
                        .header
                        .iter()
                        .filter(|(k, _)| !broker::context::is_envelope_header(k)),
                );
                print(&format!("{}  {body}  {metadata}\n", delivery.topic).replace("  \n", "\n"))?
            }
        }
    }
    Ok(())
}

/// The body as JSON, decoded as `descriptor` says (protobuf content types only).
fn decode(descriptor: &MessageDescriptor, message: &Message) -> Result<serde_json::Value, String> {
    let content_type = message.get(CONTENT_TYPE).unwrap_or(DEFAULT_CONTENT_TYPE);
    let decoded = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" | "application/grpc+json" => {
            let value: serde_json::Value = serde_json::from_slice(&message.body)
                .map_err(|e| format!("{content_type} body is not JSON: {e}"))?;
            DynamicMessage::deserialize(descriptor.clone(), value).map_err(|e| {
                format!("the JSON body does not fit {}: {e}", descriptor.full_name())
            })?
        }
        _ => DynamicMessage::decode(descriptor.clone(), message.body.as_ref())
            .map_err(|e| format!("decoding the body as {}: {e}", descriptor.full_name()))?,
    };
    let options = SerializeOptions::new().skip_default_fields(false);
    decoded
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| e.to_string())
}
