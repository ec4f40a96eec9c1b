//! Process metrics as Prometheus clients export them by default: `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`; read from `/proc` on each scrape (Linux;
//! elsewhere nothing is exported).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads this process's figures from `/proc` on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    /// A collector of this process.
    pub fn new() -> Self {
        ProcessCollector
    }
}

/// What `/proc` says about this process.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: f64,
    pub(crate) start_time_seconds: f64,
    pub(crate) virtual_bytes: f64,
    pub(crate) resident_bytes: f64,
    pub(crate) open_fds: f64,
    pub(crate) max_fds: f64,
}

/// Parses `/proc/self/stat` (fields after the command's closing parenthesis), the boot time
/// from `/proc/stat`, `VmRSS` from `/proc/self/status`, and the open-files limit.
pub(crate) fn parse(stat: &str, proc_stat: &str, status: &str, limits: &str) -> Option<Sample> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let boot = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(Sample {
        cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
        start_time_seconds: boot + field(22)? / TICKS_PER_SECOND,
        virtual_bytes: field(23)?,
        resident_bytes: rss_kb * 1024.0,
        open_fds: 0.0,
        max_fds,
    })
}

fn sample() -> Option<Sample> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut sample = parse(
        &read("/proc/self/stat")?,
        &read("/proc/stat")?,
        &read("/proc/self/status").unwrap_or_default(),
        &read("/proc/self/limits").unwrap_or_default(),
    )?;
    sample.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
    Some(sample)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = sample() else { return Ok(()) };
        let cpu = ConstCounter::new(s.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s.start_time_seconds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_figures() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    4 0 5000 104857600 2560 18446744073709551615";
        let s = parse(
            stat,
            "cpu 1 2 3\nbtime 1700000000\n",
            "Name:\tx\nVmRSS:\t   10240 kB\n",
            "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n",
        )
        .unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time_seconds, 1_700_000_050.0);
        assert_eq!(s.virtual_bytes, 104_857_600.0);
        assert_eq!(s.resident_bytes, 10_485_760.0);
        assert_eq!(s.max_fds, 1024.0);
        assert_eq!(parse("garbage", "", "", ""), None);
    }

    #[test]
    fn this_process_is_read() {
        let s = sample().expect("/proc is readable on Linux");
        assert!(s.resident_bytes > 0.0 && s.open_fds > 0.0 && s.start_time_seconds > 1.0e9);
    }
}
