//! The address other nodes reach this server at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The address to register: the advertise address if given, else the bound address, with an
/// unspecified host (`0.0.0.0`, `::`) replaced by this host's own address (the one its
/// hostname resolves to, as in a container), or loopback when there is none.
pub(crate) async fn advertised(bound: SocketAddr, advertise: Option<&str>) -> String {
    if let Some(advertise) = advertise.filter(|a| !a.is_empty()) {
        return advertise.to_owned();
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let ip = host_ip().await.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, bound.port()).to_string()
}

async fn host_ip() -> Option<IpAddr> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let addrs = tokio::net::lookup_host((hostname.trim(), 0)).await.ok()?;
    addrs
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advertise_wins_then_bound_address() {
        let bound: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(advertised(bound, Some("10.0.0.9:80")).await, "10.0.0.9:80");
        assert_eq!(advertised(bound, Some("")).await, "127.0.0.1:4000");
        assert_eq!(advertised(bound, None).await, "127.0.0.1:4000");
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert!(advertised(any, None).await.ends_with(":4000"));
        assert!(!advertised(any, None).await.starts_with("0.0.0.0"));
    }
}
