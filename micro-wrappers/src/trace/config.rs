//! What to trace, where to export and how to propagate: from the builder, then the standard
//! `OTEL_*` variables, then the seed's defaults (parent-based 0.9 ratio, W3C + baggage).

use std::time::Duration;

/// A bad tracing setting: names the variable and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value this crate does not know.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The variable (or builder setting).
        name: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// An exporter could not be built.
    #[error("{exporter} exporter: {reason}")]
    Exporter {
        /// `otlp` or `zipkin`.
        exporter: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(name: &'static str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason,
    }
}

/// A span exporter (`OTEL_TRACES_EXPORTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP (Jaeger, the OpenTelemetry collector), over gRPC or HTTP.
    Otlp,
    /// Zipkin v2 JSON over HTTP.
    Zipkin,
}

/// How OTLP is sent (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (port 4317).
    Grpc,
    /// `http/protobuf` (port 4318).
    HttpProtobuf,
}

/// A propagation format (`OTEL_PROPAGATORS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// W3C `traceparent` / `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// B3 single header `b3`.
    B3,
    /// B3 multiple `x-b3-*` headers.
    B3Multi,
    /// Jaeger `uber-trace-id` and `uberctx-*`.
    Jaeger,
}

/// Span names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanNames {
    /// OpenTelemetry's RPC convention: `<package>.<Service>/<Method>` (the gRPC path).
    #[default]
    OpenTelemetry,
    /// The seed's OpenCensus names: `rpc/server/<service>/<endpoint>`, `rpc/client/...`.
    OpenCensus,
}

/// The sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerConfig {
    /// Sample everything.
    AlwaysOn,
    /// Sample nothing.
    AlwaysOff,
    /// Sample this fraction of trace ids.
    Ratio(f64),
    /// Follow the parent's decision; use the inner sampler for roots.
    ParentBased(Box<SamplerConfig>),
}

impl Default for SamplerConfig {
    /// The seed's sampler: parent-based, 0.9 of root traces.
    fn default() -> Self {
        SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.9)))
    }
}

impl SamplerConfig {
    /// Parses OpenTelemetry's sampler names with their argument.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, ConfigError> {
        let ratio = || -> Result<f64, ConfigError> {
            match arg {
                None => Ok(1.0),
                Some(arg) => arg
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| invalid("OTEL_TRACES_SAMPLER_ARG", arg, "want 0.0 ..= 1.0")),
            }
        };
        let parent = |inner| SamplerConfig::ParentBased(Box::new(inner));
        Ok(match name.trim() {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::Ratio(ratio()?),
            "parentbased_always_on" => parent(SamplerConfig::AlwaysOn),
            "parentbased_always_off" => parent(SamplerConfig::AlwaysOff),
            "parentbased_traceidratio" => parent(SamplerConfig::Ratio(ratio()?)),
            other => {
                return Err(invalid(
                    "OTEL_TRACES_SAMPLER",
                    other,
                    "want always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        })
    }
}

/// Tracing settings. Every field left `None` is read from its `OTEL_*` variable, then
/// defaulted; a field set here wins over the variable.
///
/// ```
/// use micro_wrappers::trace::{Exporter, TraceConfig};
/// let config = TraceConfig::default()
///     .exporters([Exporter::Zipkin])
///     .zipkin_endpoint("http://127.0.0.1:9411/api/v2/spans");
/// let resolved = config.resolve("greeter1", |_| None).unwrap();
/// assert_eq!(resolved.service_name, "greeter1");
/// assert_eq!(resolved.exporters, [Exporter::Zipkin]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TraceConfig {
    /// `OTEL_SERVICE_NAME`; default: the micro service name.
    pub service_name: Option<String>,
    /// `OTEL_TRACES_EXPORTER` (`otlp`, `zipkin`, both comma-separated, `none`); default `otlp`.
    pub exporters: Option<Vec<Exporter>>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; default `http://localhost:4317` (gRPC) or
    /// `http://localhost:4318` (HTTP).
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`; default `grpc`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `OTEL_EXPORTER_ZIPKIN_ENDPOINT`; default `http://localhost:9411/api/v2/spans`.
    pub zipkin_endpoint: Option<String>,
    /// `OTEL_TRACES_SAMPLER` / `_ARG`; default parent-based ratio 0.9.
    pub sampler: Option<SamplerConfig>,
    /// `OTEL_PROPAGATORS`; default `tracecontext,baggage`.
    pub propagators: Option<Vec<Propagation>>,
    /// Span names; default OpenTelemetry's.
    pub span_names: SpanNames,
    /// How often batches leave (`OTEL_BSP_SCHEDULE_DELAY`, ms); default 1 s, as the seed.
    pub batch_delay: Option<Duration>,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT` for OTLP); default 10 s.
    pub export_timeout: Option<Duration>,
    /// Spans held for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`); default 2048. Spans that
    /// find the queue full are dropped and counted.
    pub max_queue: Option<usize>,
    /// Spans sent in one request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`); default 512.
    pub max_batch: Option<usize>,
}

/// Settings with every value decided.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The service name spans are reported under.
    pub service_name: String,
    /// The exporters (empty: spans are made and propagated, not exported).
    pub exporters: Vec<Exporter>,
    /// OTLP endpoint.
    pub otlp_endpoint: String,
    /// OTLP protocol.
    pub otlp_protocol: OtlpProtocol,
    /// Zipkin endpoint.
    pub zipkin_endpoint: String,
    /// The sampler.
    pub sampler: SamplerConfig,
    /// Propagation formats, in extraction order.
    pub propagators: Vec<Propagation>,
    /// Span names.
    pub span_names: SpanNames,
    /// Batch delay.
    pub batch_delay: Duration,
    /// Export timeout.
    pub export_timeout: Duration,
    /// Queue bound, in spans.
    pub max_queue: usize,
    /// Batch bound, in spans.
    pub max_batch: usize,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.$field = Some(value.into());
            self
        }
    };
}

impl TraceConfig {
    setter!(
        /// Sets the service name spans are reported under.
        service_name: String => service_name);
    setter!(
        /// Sets the OTLP endpoint.
        otlp_endpoint: String => otlp_endpoint);
    setter!(
        /// Sets the OTLP protocol.
        otlp_protocol: OtlpProtocol => otlp_protocol);
    setter!(
        /// Sets the Zipkin endpoint (`http://host:9411/api/v2/spans`).
        zipkin_endpoint: String => zipkin_endpoint);
    setter!(
        /// Sets the sampler.
        sampler: SamplerConfig => sampler);
    setter!(
        /// Sets the batch delay.
        batch_delay: Duration => batch_delay);
    setter!(
        /// Sets the export timeout.
        export_timeout: Duration => export_timeout);
    setter!(
        /// Sets the export queue's bound, in spans.
        max_queue: usize => max_queue);
    setter!(
        /// Sets the largest batch, in spans.
        max_batch: usize => max_batch);

    /// Sets the exporters.
    #[must_use]
    pub fn exporters(mut self, exporters: impl IntoIterator<Item = Exporter>) -> Self {
        self.exporters = Some(exporters.into_iter().collect());
        self
    }

    /// Sets the propagation formats.
    #[must_use]
    pub fn propagators(mut self, propagators: impl IntoIterator<Item = Propagation>) -> Self {
        self.propagators = Some(propagators.into_iter().collect());
        self
    }

    /// Sets the span names.
    #[must_use]
    pub fn span_names(mut self, names: SpanNames) -> Self {
        self.span_names = names;
        self
    }

    /// Decides every value: this config first, then `env` (`std::env::var(..).ok()` in
    /// production), then the defaults.
    pub fn resolve(
        self,
        service: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, ConfigError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let exporters = match self.exporters {
            Some(list) => list,
            None => match var("OTEL_TRACES_EXPORTER") {
                Some(value) => parse_exporters(&value)?,
                None => vec![Exporter::Otlp],
            },
        };
        let otlp_protocol = match self.otlp_protocol {
            Some(p) => p,
            None => match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            {
                None => OtlpProtocol::Grpc,
                Some(v) => match v.trim() {
                    "grpc" => OtlpProtocol::Grpc,
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    other => {
                        return Err(invalid(
                            "OTEL_EXPORTER_OTLP_PROTOCOL",
                            other,
                            "want grpc or http/protobuf",
                        ));
                    }
                },
            },
        };
        let otlp_endpoint = self
            .otlp_endpoint
            .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| {
                // The generic variable names the collector; HTTP appends the signal's path.
                var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match otlp_protocol {
                    OtlpProtocol::Grpc => base,
                    OtlpProtocol::HttpProtobuf => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                })
            })
            .unwrap_or_else(|| match otlp_protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".into(),
                OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".into(),
            });
        let zipkin_endpoint = self
            .zipkin_endpoint
            .or_else(|| var("OTEL_EXPORTER_ZIPKIN_ENDPOINT"))
            .unwrap_or_else(|| "http://localhost:9411/api/v2/spans".into());
        let sampler = match self.sampler {
            Some(s) => s,
            None => match var("OTEL_TRACES_SAMPLER") {
                Some(name) => {
                    SamplerConfig::parse(&name, var("OTEL_TRACES_SAMPLER_ARG").as_deref())?
                }
                None => SamplerConfig::default(),
            },
        };
        let propagators = match self.propagators {
            Some(p) => p,
            None => match var("OTEL_PROPAGATORS") {
                Some(value) => parse_propagators(&value)?,
                None => vec![Propagation::TraceContext, Propagation::Baggage],
            },
        };
        let millis = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| invalid(name, &v, "want milliseconds"))
                })
                .transpose()
        };
        let batch_delay = match self.batch_delay {
            Some(d) => d,
            None => millis("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(Duration::from_secs(1)),
        };
        let export_timeout = match self.export_timeout {
            Some(d) => d,
            None => millis("OTEL_EXPORTER_OTLP_TIMEOUT")?.unwrap_or(Duration::from_secs(10)),
        };
        let count = |name: &'static str, set: Option<usize>, default: usize| match set {
            Some(n) => Ok(n.max(1)),
            None => var(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(name, &v, "want a positive count"))
                })
                .transpose()
                .map(|n| n.unwrap_or(default)),
        };
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", self.max_queue, 2048)?;
        let max_batch = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", self.max_batch, 512)?;
        Ok(Resolved {
            service_name: self
                .service_name
                .or_else(|| var("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| service.to_owned()),
            exporters,
            otlp_endpoint,
            otlp_protocol,
            zipkin_endpoint,
            sampler,
            propagators,
            span_names: self.span_names,
            batch_delay,
            export_timeout,
            max_queue,
            max_batch: max_batch.min(max_queue),
        })
    }
}

/// `otlp`, `zipkin`, both comma-separated, or `none`.
pub fn parse_exporters(value: &str) -> Result<Vec<Exporter>, ConfigError> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let exporter = match name {
            "none" => continue,
            "otlp" | "jaeger" => Exporter::Otlp,
            "zipkin" => Exporter::Zipkin,
            _ => {
                return Err(invalid(
                    "OTEL_TRACES_EXPORTER",
                    value,
                    "want otlp, zipkin, both comma-separated, or none",
                ));
            }
        };
        if !out.contains(&exporter) {
            out.push(exporter);
        }
    }
    Ok(out)
}

/// `tracecontext`, `baggage`, `b3`, `b3multi`, `jaeger` comma-separated, or `none`.
pub fn parse_propagators(value: &str) -> Result<Vec<Propagation>, ConfigError> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let p = match name {
            "none" => continue,
            "tracecontext" => Propagation::TraceContext,
            "baggage" => Propagation::Baggage,
            "b3" => Propagation::B3,
            "b3multi" => Propagation::B3Multi,
            "jaeger" => Propagation::Jaeger,
            _ => {
                return Err(invalid(
                    "OTEL_PROPAGATORS",
                    value,
                    "want tracecontext, baggage, b3, b3multi, jaeger (comma-separated) or none",
                ));
            }
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_the_seeds() {
        let r = TraceConfig::default()
            .resolve("greeter1", env(&[]))
            .unwrap();
        assert_eq!(r.service_name, "greeter1");
        assert_eq!(r.exporters, [Exporter::Otlp]);
        assert_eq!(r.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(r.otlp_endpoint, "http://localhost:4317");
        assert_eq!(
            r.sampler,
            SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.9)))
        );
        assert_eq!(
            r.propagators,
            [Propagation::TraceContext, Propagation::Baggage]
        );
        assert_eq!(r.batch_delay, Duration::from_secs(1));
        assert_eq!((r.max_queue, r.max_batch), (2048, 512));
    }

    #[test]
    fn standard_variables_are_read() {
        let r = TraceConfig::default()
            .resolve(
                "greeter1",
                env(&[
                    ("OTEL_SERVICE_NAME", "g1"),
                    ("OTEL_TRACES_EXPORTER", "otlp, zipkin"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318/"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    (
                        "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
                        "http://zipkin:9411/api/v2/spans",
                    ),
                    ("OTEL_TRACES_SAMPLER", "always_on"),
                    ("OTEL_PROPAGATORS", "b3,jaeger,b3multi"),
                    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ]),
            )
            .unwrap();
        assert_eq!(r.service_name, "g1");
        assert_eq!(r.exporters, [Exporter::Otlp, Exporter::Zipkin]);
        assert_eq!(r.otlp_endpoint, "http://jaeger:4318/v1/traces");
        assert_eq!(r.zipkin_endpoint, "http://zipkin:9411/api/v2/spans");
        assert_eq!(r.sampler, SamplerConfig::AlwaysOn);
        assert_eq!(
            r.propagators,
            [Propagation::B3, Propagation::Jaeger, Propagation::B3Multi]
        );
        assert_eq!(r.batch_delay, Duration::from_millis(200));
    }

    #[test]
    fn the_builder_wins_over_the_environment() {
        let r = TraceConfig::default()
            .exporters([Exporter::Zipkin])
            .sampler(SamplerConfig::AlwaysOff)
            .service_name("mine")
            .resolve(
                "greeter1",
                env(&[
                    ("OTEL_TRACES_EXPORTER", "otlp"),
                    ("OTEL_TRACES_SAMPLER", "always_on"),
                    ("OTEL_SERVICE_NAME", "theirs"),
                ]),
            )
            .unwrap();
        assert_eq!(r.exporters, [Exporter::Zipkin]);
        assert_eq!(r.sampler, SamplerConfig::AlwaysOff);
        assert_eq!(r.service_name, "mine");
    }

    #[test]
    fn none_and_ratio_arguments() {
        let r = TraceConfig::default()
            .resolve(
                "s",
                env(&[
                    ("OTEL_TRACES_EXPORTER", "none"),
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                    ("OTEL_PROPAGATORS", "none"),
                ]),
            )
            .unwrap();
        assert!(r.exporters.is_empty() && r.propagators.is_empty());
        assert_eq!(
            r.sampler,
            SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.25)))
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("OTEL_TRACES_EXPORTER", "jaeger-thrift"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_PROPAGATORS", "xray"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let err = TraceConfig::default()
                .resolve("s", env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(value), "{err}");
        }
        let err = TraceConfig::default()
            .resolve(
                "s",
                env(&[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{err}");
    }
}
