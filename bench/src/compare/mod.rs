//! The comparison driver: etcd, one server process per scenario, interleaved rounds of load
//! processes, and a table of medians with ratios to the baseline.
//!
//! One file per job: the server and load processes (`process`), CPU pinning (`pin`), the
//! driver that starts everything and runs the rounds (`driver`), the medians per scenario
//! (`rows`), the targets (`checks`) and the markdown (`table`).

mod checks;
mod driver;
mod pin;
mod process;
mod rows;
mod table;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Scenario, load, sink::SinkReport};

pub use checks::{Check, checks, paired};
pub use driver::run;
pub use pin::Pin;
pub use process::{ServerProcess, run_load};
pub use rows::{Row, Spans, median};
pub use table::table;

/// What to compare.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bench` binary (server and load processes are spawned from it).
    pub bin: PathBuf,
    /// Interleaved rounds.
    pub rounds: usize,
    /// Calls in flight, warm-up and window of each load run.
    pub load: load::Config,
    /// The scenarios, in table order.
    pub scenarios: Vec<Scenario>,
    /// A foreign greeter server to load too (`host:port`), with its pid if known.
    pub foreign: Option<(String, Option<u32>)>,
    /// An etcd to use instead of starting one.
    pub etcd: Option<String>,
    /// Runs the servers and the load generator on separate CPUs.
    pub pin: Option<Pin>,
    /// Also loads the go-micro peers (`--foreign go-micro`), started from the binaries in this
    /// directory: rows `go-micro` (baseline `micro`) and `chain-go-micro` (baseline
    /// `chain-micro`).
    pub go_micro: Option<PathBuf>,
}
/// One scenario's result in one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// Round number, from 0.
    pub round: usize,
    /// Scenario name.
    pub scenario: String,
    /// The load process's report.
    pub report: load::Report,
    /// Peak RSS of the server process so far, KiB.
    pub server_peak_rss_kib: Option<u64>,
}
/// The whole result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// Every run, in the order made.
    pub runs: Vec<Run>,
    /// Medians per scenario.
    pub rows: Vec<Row>,
    /// Where the processes ran (`None`: sharing every CPU).
    #[serde(default)]
    pub pin: Option<Pin>,
    /// What the span sink received, when a scenario was observed.
    #[serde(default)]
    pub sink: Option<SinkReport>,
}
