//! gRPC health (`grpc.health.v1`): SERVING only while the node is registered.

use tonic_health::{ServingStatus, server::HealthReporter};

/// The health status of every hosted service (and of the server as a whole, `""`).
#[derive(Clone)]
pub(crate) struct Health {
    reporter: HealthReporter,
    services: std::sync::Arc<[String]>,
}

impl Health {
    pub(crate) fn new(reporter: HealthReporter, services: Vec<String>) -> Self {
        Health {
            reporter,
            services: services.into(),
        }
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for name in self.services.iter() {
            self.reporter.set_service_status(name, status).await;
        }
    }

    pub(crate) async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    pub(crate) async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }
}
