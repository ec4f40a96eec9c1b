//! One tonic channel (one HTTP/2 connection, multiplexed) per node address, connected lazily
//! and dropped when the node leaves the registry.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::RwLock;
use tonic::transport::{Channel, Endpoint};

/// The channels.
#[derive(Debug)]
pub(crate) struct Pool {
    channels: RwLock<HashMap<Arc<str>, Channel, foldhash::fast::RandomState>>,
    dial_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(dial_timeout: Duration) -> Self {
        Pool {
            channels: RwLock::default(),
            dial_timeout,
        }
    }

    /// The channel to `address`, created (not yet connected) on first use.
    pub(crate) fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(channel) = self.channels.read().get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(self.dial_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(self
            .channels
            .write()
            .entry(address.into())
            .or_insert(channel)
            .clone())
    }

    /// Drops the channel to `address` (its connection closes once in-flight calls end).
    pub(crate) fn remove(&self, address: &str) {
        self.channels.write().remove(address);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.channels.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_until_removed() {
        let pool = Pool::new(Duration::from_secs(1));
        pool.get("127.0.0.1:1").unwrap();
        pool.get("127.0.0.1:1").unwrap();
        pool.get("127.0.0.1:2").unwrap();
        assert_eq!(pool.len(), 2);
        pool.remove("127.0.0.1:1");
        assert_eq!(pool.len(), 1);
        assert!(pool.get("not an address at all").is_err());
    }
}
