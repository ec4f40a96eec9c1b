use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

/// The labels of a call series: `service`, `endpoint`, `status`. Shares the call's strings
/// (no allocation per call).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallLabels {
    /// The micro service (server side: this service; client side: the one called).
    pub service: Arc<str>,
    /// `Greeter.Hello`, `unknown` or `other`.
    pub endpoint: Arc<str>,
    /// `success` or `fail`.
    pub status: &'static str,
}

fn label(encoder: &mut LabelSetEncoder, key: &str, value: &str) -> Result<(), std::fmt::Error> {
    EncodeLabel::encode(&(key, value), encoder.encode_label())
}

impl EncodeLabelSet for CallLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        label(encoder, "service", &self.service)?;
        label(encoder, "endpoint", &self.endpoint)?;
        label(encoder, "status", self.status)
    }
}

/// The seed's OpenCensus tags: `rpc_service`, `rpc_endpoint`, `rpc_status` (any may be
/// absent in a view).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OcLabels {
    pub(crate) service: Option<Arc<str>>,
    pub(crate) endpoint: Option<Arc<str>>,
    pub(crate) status: Option<&'static str>,
}

impl EncodeLabelSet for OcLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        if let Some(service) = &self.service {
            label(encoder, "rpc_service", service)?;
        }
        if let Some(endpoint) = &self.endpoint {
            label(encoder, "rpc_endpoint", endpoint)?;
        }
        if let Some(status) = self.status {
            label(encoder, "rpc_status", status)?;
        }
        Ok(())
    }
}
