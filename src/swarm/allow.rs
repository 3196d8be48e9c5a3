//! `--allow-peers CIDR[,CIDR...]`: which addresses may be peers. librqbit asks
//! [`AllowPeers`] (its `PeerFilter`, a swarmfs patch) before it reads an incoming
//! connection's handshake and before it dials an address, whoever offered it (a tracker,
//! LSD, PEX, the DHT, `--peer`): a refused address gets no byte of the release.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ipnet::IpNet;
use tracing::warn;

/// At most this many refused addresses are remembered (each is logged once); the rest
/// are counted only.
const MAX_LOGGED: usize = 4096;

/// The networks peers may come from, and what was refused.
#[derive(Debug)]
pub struct AllowPeers {
    nets: Vec<IpNet>,
    refused_incoming: AtomicU64,
    refused_outgoing: AtomicU64,
    logged: Mutex<HashSet<IpAddr>>,
}

impl AllowPeers {
    /// `10.0.0.0/8,192.168.1.7,fd00::/8`: networks in CIDR notation or single addresses,
    /// separated by commas.
    pub fn parse(list: &str) -> Result<AllowPeers, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{item:?} is not a network (CIDR such as 10.0.0.0/8 or fd00::/8) nor an address"
                    )
                })?;
            nets.push(net.trunc());
        }
        if nets.is_empty() {
            return Err("give at least one network, e.g. --allow-peers 10.0.0.0/8".into());
        }
        Ok(AllowPeers {
            nets,
            refused_incoming: AtomicU64::new(0),
            refused_outgoing: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `ip` is in one of the networks (an IPv4 address seen as IPv6, `::ffff:a.b.c.d`,
    /// as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Connections refused: (incoming, outgoing).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_incoming.load(Ordering::Relaxed),
            self.refused_outgoing.load(Ordering::Relaxed),
        )
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl librqbit::PeerFilter for AllowPeers {
    fn allow(&self, addr: SocketAddr, incoming: bool) -> bool {
        if self.contains(addr.ip()) {
            return true;
        }
        let counter = if incoming {
            &self.refused_incoming
        } else {
            &self.refused_outgoing
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            logged.len() < MAX_LOGGED && logged.insert(addr.ip().to_canonical())
        };
        if first {
            warn!(
                peer = %addr,
                "{} {addr}: outside --allow-peers (logged once per address)",
                if incoming { "refused a connection from" } else { "not dialling" }
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use librqbit::PeerFilter;

    #[test]
    fn networks_addresses_and_mapped_ipv4() {
        let a = AllowPeers::parse("10.1.0.0/16, 192.168.1.7,fd00::/8").unwrap();
        let ok = |s: &str| a.contains(s.parse().unwrap());
        assert!(ok("10.1.200.3") && ok("192.168.1.7") && ok("fd12::1") && ok("::ffff:10.1.0.9"));
        assert!(!ok("10.2.0.1") && !ok("192.168.1.8") && !ok("fe80::1") && !ok("127.0.0.1"));
        assert!(AllowPeers::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("10.0.0.0/33"));
        assert!(AllowPeers::parse(" , ").is_err());
        // Host bits are dropped, as `ip route` does.
        assert!(AllowPeers::parse("10.1.2.3/8")
            .unwrap()
            .contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn refusals_are_counted_by_direction() {
        let a = AllowPeers::parse("127.0.0.1/32").unwrap();
        assert!(a.allow("127.0.0.1:6881".parse().unwrap(), true));
        assert!(!a.allow("127.0.0.2:6881".parse().unwrap(), true));
        assert!(!a.allow("127.0.0.2:6882".parse().unwrap(), false));
        assert!(!a.allow("127.0.0.3:6881".parse().unwrap(), false));
        assert_eq!(a.refused(), (1, 2));
        assert_eq!(a.logged.lock().unwrap().len(), 2, "one line per address");
    }
}
