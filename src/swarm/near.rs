//! `mount --local-net`: which peers are this host's neighbours (its subnet, or its rack).
//! A rack's uplink carries a quarter of its hosts' links or less; a piece already in the
//! rack should not cross it again. The picker tells librqbit (`PiecePicker::is_neighbour`):
//! a piece wanted soon or in the background that a neighbour which unchoked us has is not
//! asked of a peer farther away, and neighbours' addresses are dialled first. A standard
//! tracker hands out a random sample of the fleet; LSD (BEP 14, on by default) and PEX
//! find the neighbours it leaves out.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// What `--local-net` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalNet {
    /// This host's own /24 (IPv4) or /64 (IPv6).
    #[default]
    Auto,
    /// No peer is preferred.
    Off,
    /// These networks.
    Nets(Vec<IpNet>),
}

/// The prefix `auto` takes of the host's own address.
pub const AUTO_PREFIX_V4: u8 = 24;
pub const AUTO_PREFIX_V6: u8 = 64;

impl FromStr for LocalNet {
    type Err = String;

    fn from_str(s: &str) -> Result<LocalNet, String> {
        match s.trim() {
            "auto" => return Ok(LocalNet::Auto),
            "off" | "none" => return Ok(LocalNet::Off),
            _ => {}
        }
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item.parse::<IpNet>().map_err(|_| {
                format!(
                    "{item:?} is not a network: give CIDRs such as 10.2.3.0/26,fd00:0:0:3::/64, \
                     or auto (this host's /24 or /64) or off"
                )
            })?;
            nets.push(net.trunc());
        }
        if nets.is_empty() {
            return Err("give a network (e.g. 10.2.3.0/26), auto or off".into());
        }
        Ok(LocalNet::Nets(nets))
    }
}

impl LocalNet {
    /// The networks this means for a host known by `own` (`auto` without an address of
    /// its own: none).
    pub fn resolve(&self, own: Option<IpAddr>) -> Neighbours {
        let nets = match self {
            LocalNet::Off => vec![],
            LocalNet::Nets(n) => n.clone(),
            LocalNet::Auto => own
                .map(|ip| {
                    let ip = ip.to_canonical();
                    let prefix = if ip.is_ipv4() {
                        AUTO_PREFIX_V4
                    } else {
                        AUTO_PREFIX_V6
                    };
                    IpNet::new(ip, prefix).map(|n| n.trunc())
                })
                .into_iter()
                .flatten()
                .collect(),
        };
        Neighbours(nets)
    }
}

/// The networks whose peers are neighbours (none: no peer is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours(Vec<IpNet>);

impl Neighbours {
    /// Whether `ip` is a neighbour's address (`::ffff:a.b.c.d` as `a.b.c.d`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

impl std::fmt::Display for Neighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let list: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn auto_is_the_hosts_own_24_or_64_and_off_is_nobody() {
        let auto = LocalNet::Auto.resolve(Some(ip("10.2.3.77")));
        assert_eq!(auto.to_string(), "10.2.3.0/24");
        assert!(auto.contains(ip("10.2.3.1")) && auto.contains(ip("::ffff:10.2.3.200")));
        assert!(!auto.contains(ip("10.2.4.1")));
        let v6 = LocalNet::Auto.resolve(Some(ip("fd00:0:0:3::9")));
        assert!(v6.contains(ip("fd00:0:0:3:ffff::1")) && !v6.contains(ip("fd00:0:0:4::1")));
        assert!(LocalNet::Auto.resolve(None).is_empty());
        let off = LocalNet::Off.resolve(Some(ip("10.2.3.77")));
        assert!(off.is_empty() && !off.contains(ip("10.2.3.1")));
    }

    #[test]
    fn networks_parse_and_bad_ones_are_named() {
        assert_eq!("auto".parse::<LocalNet>(), Ok(LocalNet::Auto));
        assert_eq!("off".parse::<LocalNet>(), Ok(LocalNet::Off));
        let n: LocalNet = "10.2.3.64/26, fd00::/8".parse().unwrap();
        let n = n.resolve(Some(ip("192.0.2.1")));
        assert!(n.contains(ip("10.2.3.100")) && !n.contains(ip("10.2.3.1")));
        assert!(n.contains(ip("fd12::1")) && !n.contains(ip("192.0.2.2")));
        let e = "10.2.3.0/33".parse::<LocalNet>().unwrap_err();
        assert!(e.contains("10.2.3.0/33") && e.contains("auto"), "{e}");
        assert!(" , ".parse::<LocalNet>().is_err());
    }
}
