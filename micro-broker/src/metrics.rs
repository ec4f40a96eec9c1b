//! Per-topic counts of a process's events, exposed as Prometheus counters
//! `<namespace>_broker_published_total`, `_delivered_total` and `_failed_total` (label
//! `topic`).
//!
//! A publisher or subscription resolves its topic's counters once; each message is then one
//! atomic add. Topics are bounded as the call series are: the first 100 topics
//! ([`MAX_TOPICS`]) keep their name, later ones fold into `other`.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};

/// Topics with their own series; later topics fold into [`OTHER`].
pub const MAX_TOPICS: usize = 100;
/// The label value topics past the bound fold into.
pub const OTHER: &str = "other";

/// The counters of one topic.
#[derive(Debug, Default)]
pub struct TopicCounters {
    published: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl TopicCounters {
    /// A message published (the broker took it).
    pub fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }
    /// A message a subscriber handled without error.
    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
    /// A publish that failed, or a message a subscriber failed on or could not decode.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    /// (published, delivered, failed) so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The per-topic counters of a process (or a service). Clones share them.
#[derive(Clone, Debug, Default)]
pub struct BrokerMetrics {
    topics: Arc<Mutex<HashMap<Arc<str>, Arc<TopicCounters>>>>,
}

impl BrokerMetrics {
    /// No topics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `topic` (of [`OTHER`] past [`MAX_TOPICS`] topics). Resolve once per
    /// publisher or subscription, not per message.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        let mut topics = self.topics.lock();
        if let Some(counters) = topics.get(topic) {
            return counters.clone();
        }
        let named = topics.keys().filter(|t| &***t != OTHER).count();
        let key: Arc<str> = if named < MAX_TOPICS && topic != OTHER {
            topic.into()
        } else {
            OTHER.into()
        };
        topics.entry(key).or_default().clone()
    }

    /// A Prometheus collector of these counters, names under `namespace` (`micro`).
    pub fn collector(&self, namespace: &str) -> BrokerCollector {
        let name = |suffix: &str| {
            if namespace.is_empty() {
                format!("broker_{suffix}")
            } else {
                format!("{namespace}_broker_{suffix}")
            }
        };
        BrokerCollector {
            names: [name("published"), name("delivered"), name("failed")],
            metrics: self.clone(),
        }
    }
}

/// [`BrokerMetrics`] as Prometheus counters, read at each scrape.
#[derive(Debug)]
pub struct BrokerCollector {
    names: [String; 3],
    metrics: BrokerMetrics,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut topics: Vec<(Arc<str>, (u64, u64, u64))> = self
            .metrics
            .topics
            .lock()
            .iter()
            .map(|(topic, counters)| (topic.clone(), counters.get()))
            .collect();
        topics.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let helps = [
            "Messages published, by topic",
            "Messages subscribers handled without error, by topic",
            "Publishes that failed and messages a subscriber failed on or could not decode, by topic",
        ];
        for (index, (name, help)) in self.names.iter().zip(helps).enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, values) in &topics {
                let value = [values.0, values.1, values.2][index];
                let labels = [("topic", &**topic)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_past_the_bound_fold_into_other() {
        let metrics = BrokerMetrics::new();
        for n in 0..MAX_TOPICS {
            metrics.topic(&format!("t{n}")).published();
        }
        metrics.topic("late-1").published();
        metrics.topic("late-2").failed();
        metrics.topic("t0").delivered();
        assert_eq!(metrics.topic(OTHER).get(), (1, 0, 1));
        assert_eq!(metrics.topic("t0").get(), (1, 1, 0));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metrics.collector("micro")));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("micro_broker_published_total{topic=\"t0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("micro_broker_failed_total{topic=\"other\"} 1"),
            "{text}"
        );
        assert!(!text.contains("late-1"));
    }
}
