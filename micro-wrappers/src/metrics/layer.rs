use std::sync::Arc;

use tower_layer::Layer;

use super::{MetricsService, Series};

/// Records every call of the service it wraps into one side's series
/// ([`Metrics::server`](super::Metrics::server) or [`Metrics::client`](super::Metrics::client)).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    series: Arc<Series>,
}

impl MetricsLayer {
    /// A layer recording into `series`.
    pub fn new(series: Arc<Series>) -> Self {
        MetricsLayer { series }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService::new(inner, self.series.clone())
    }
}
