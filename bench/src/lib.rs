//! End-to-end load harness for micro-rs, measured against bare tonic in the same run (and
//! go-micro's greeter with `compare --foreign go-micro`).
//!
//! One binary, `bench`, with subcommands:
//! - `serve <scenario>`: starts a scenario's servers, prints `ready <addr>`, serves until its
//!   stdin closes or a signal;
//! - `load`: the closed-loop generator against an address (any greeter server) or a micro
//!   service found in etcd;
//! - `compare`: starts etcd and every scenario's server process, runs interleaved rounds of
//!   `load` processes and prints each scenario's medians and ratios to its baseline;
//! - `discovery`: registration, discovery and expiry latencies, idle RSS;
//! - `sink`: the observed scenarios' OTLP gRPC span sink (accepts, counts, discards), which
//!   `compare` starts on the load generator's CPUs.
//!
//! Run the whole comparison with
//! `cargo run --release -p bench -- compare --rounds 5 --duration 5s` (servers and load
//! generator on separate CPUs; `--share-cpus` to let them share); `scripts/bench-headline` runs
//! it with go-micro and adds the instruction counts.

pub mod client;
pub mod compare;
pub mod discovery;
pub mod events;
pub mod gomicro;
pub mod load;
pub mod observe;
pub mod procstat;
pub mod serve;
pub mod sink;
pub mod tls;

use serde::{Deserialize, Serialize};

/// A server setup and the client that loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A plain tonic server, a plain tonic client over one channel: the baseline.
    Tonic,
    /// [`Scenario::Tonic`] with a 30 s request timeout (`grpc-timeout`) on every call, as a
    /// micro client always sends: bare tonic doing the same deadline work as micro.
    TonicDeadline,
    /// [`Scenario::Tonic`] with the same tower timeout as [`Scenario::MicroTower`] on each side
    /// (`Server::layer`, a `ServiceBuilder` over the channel): what the middleware itself costs
    /// bare tonic.
    TonicTower,
    /// [`Scenario::TonicTower`] also sending the 30 s `grpc-timeout` of
    /// [`Scenario::TonicDeadline`]: bare tonic doing the same middleware and deadline work as
    /// [`Scenario::MicroTower`].
    TonicTowerDeadline,
    /// A micro server registered in etcd; a micro client through discovery, selector, pool.
    Micro,
    /// [`Scenario::Micro`] with a tower timeout through `wrap_handler` and `wrap_client`.
    MicroTower,
    /// [`Scenario::Micro`] with two nodes of the service (two servers in one process), the
    /// load client's selector random over them: the baseline of [`Scenario::MicroP2c`].
    MicroTwoNodes,
    /// [`Scenario::MicroTwoNodes`] with the load client's selector on p2c (peak-EWMA): what
    /// the load-aware pick of one of two ready nodes costs.
    MicroP2c,
    /// [`Scenario::Micro`] with a gobreaker on the load client (`wrap_client`).
    MicroBreaker,
    /// [`Scenario::Micro`] with a server rate limit far above the load (it never refuses).
    MicroRatelimit,
    /// [`Scenario::Micro`] observed on both sides: tracing (parent-based 0.9, OTLP gRPC to the
    /// harness's discarding sink) and metrics (an endpoint on `127.0.0.1:0`, scraped once at
    /// the end) on the server and on the load client.
    MicroObserved,
    /// [`Scenario::MicroObserved`] with a gobreaker on the load client and a server rate limit
    /// that never refuses: every wrapper together.
    MicroFull,
    /// greeter1 -> greeter2 (`Test`, no sleep) in bare tonic: the chain's baseline.
    ChainTonic,
    /// [`Scenario::ChainTonic`] with a 30 s `grpc-timeout` on both hops, as micro sends a
    /// deadline on every hop: the chain in bare tonic doing the same deadline work.
    ChainTonicDeadline,
    /// greeter1 -> greeter2 through micro (both hops discovered), the load client a micro one.
    ChainMicro,
    /// [`Scenario::Tonic`] over mutual TLS with tonic's own TLS (`ServerTlsConfig`,
    /// `ClientTlsConfig`: rustls, ring), one pooled connection: the baseline of
    /// [`Scenario::MicroTls`].
    TonicTls,
    /// [`Scenario::Micro`] over mutual TLS both sides (`ServerTls` with a client CA, the
    /// client's `ClientTls` with its certificate), pooled connections.
    MicroTls,
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 17] = [
        Scenario::Tonic,
        Scenario::TonicDeadline,
        Scenario::TonicTower,
        Scenario::TonicTowerDeadline,
        Scenario::Micro,
        Scenario::MicroTower,
        Scenario::MicroTwoNodes,
        Scenario::MicroP2c,
        Scenario::MicroBreaker,
        Scenario::MicroRatelimit,
        Scenario::MicroObserved,
        Scenario::MicroFull,
        Scenario::ChainTonic,
        Scenario::ChainTonicDeadline,
        Scenario::ChainMicro,
        Scenario::TonicTls,
        Scenario::MicroTls,
    ];

    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Tonic => "tonic",
            Scenario::TonicDeadline => "tonic-deadline",
            Scenario::TonicTower => "tonic-tower",
            Scenario::TonicTowerDeadline => "tonic-tower-deadline",
            Scenario::Micro => "micro",
            Scenario::MicroTwoNodes => "micro-two-nodes",
            Scenario::MicroTower => "micro-tower",
            Scenario::MicroP2c => "micro-p2c",
            Scenario::MicroBreaker => "micro-breaker",
            Scenario::MicroRatelimit => "micro-ratelimit",
            Scenario::MicroObserved => "micro-observed",
            Scenario::MicroFull => "micro-full",
            Scenario::ChainTonic => "chain-tonic",
            Scenario::ChainTonicDeadline => "chain-tonic-deadline",
            Scenario::ChainMicro => "chain-micro",
            Scenario::TonicTls => "tonic-tls",
            Scenario::MicroTls => "micro-tls",
        }
    }

    /// The scenario this one is compared with.
    pub fn baseline(self) -> Scenario {
        match self {
            Scenario::Tonic
            | Scenario::TonicDeadline
            | Scenario::TonicTower
            | Scenario::TonicTowerDeadline
            | Scenario::Micro
            | Scenario::MicroTower
            | Scenario::MicroTwoNodes
            | Scenario::MicroP2c
            | Scenario::MicroBreaker
            | Scenario::MicroRatelimit
            | Scenario::MicroObserved
            | Scenario::MicroFull
            | Scenario::TonicTls => Scenario::Tonic,
            Scenario::MicroTls => Scenario::TonicTls,
            Scenario::ChainTonic | Scenario::ChainTonicDeadline | Scenario::ChainMicro => {
                Scenario::ChainTonic
            }
        }
    }

    /// Whether its servers register in etcd (and its client discovers them).
    pub fn uses_micro(self) -> bool {
        matches!(
            self,
            Scenario::Micro
                | Scenario::MicroTower
                | Scenario::MicroTwoNodes
                | Scenario::MicroP2c
                | Scenario::MicroBreaker
                | Scenario::MicroRatelimit
                | Scenario::MicroObserved
                | Scenario::MicroFull
                | Scenario::ChainMicro
                | Scenario::MicroTls
        )
    }

    /// Whether its servers and load client use mutual TLS.
    pub fn tls(self) -> bool {
        matches!(self, Scenario::TonicTls | Scenario::MicroTls)
    }

    /// The service the load client calls, for micro scenarios.
    pub fn service(self) -> &'static str {
        match self {
            Scenario::Tonic
            | Scenario::TonicDeadline
            | Scenario::TonicTower
            | Scenario::TonicTowerDeadline
            | Scenario::TonicTls
            | Scenario::Micro => "greeter",
            Scenario::MicroTls => "greeter-tls",
            Scenario::MicroTower => "greeter-tower",
            Scenario::MicroTwoNodes => "greeter-two-nodes",
            Scenario::MicroP2c => "greeter-p2c",
            Scenario::MicroBreaker => "greeter-breaker",
            Scenario::MicroRatelimit => "greeter-ratelimit",
            Scenario::MicroObserved => "greeter-observed",
            Scenario::MicroFull => "greeter-full",
            Scenario::ChainTonic | Scenario::ChainTonicDeadline | Scenario::ChainMicro => {
                "greeter1"
            }
        }
    }

    /// Whether its server and load client trace (to the sink) and meter.
    pub fn observed(self) -> bool {
        matches!(self, Scenario::MicroObserved | Scenario::MicroFull)
    }

    /// Whether its load client has a gobreaker (`wrap_client`).
    pub fn client_breaker(self) -> bool {
        matches!(self, Scenario::MicroBreaker | Scenario::MicroFull)
    }

    /// Whether its server has a rate limit that never refuses (`wrap_handler`).
    pub fn server_ratelimit(self) -> bool {
        matches!(self, Scenario::MicroRatelimit | Scenario::MicroFull)
    }

    /// How many nodes of the service its server process runs.
    pub fn nodes(self) -> usize {
        match self {
            Scenario::MicroTwoNodes | Scenario::MicroP2c => 2,
            _ => 1,
        }
    }

    /// Remote hops per call (the chain has two: caller -> greeter1 -> greeter2).
    pub fn hops(self) -> u32 {
        match self {
            Scenario::ChainTonic | Scenario::ChainTonicDeadline | Scenario::ChainMicro => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
