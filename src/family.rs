//! Addresses picked by the family of the other end: our address to send from to a target (the
//! readiness and liveness probes), and the wildcard to bind a socket for a peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The first of `addresses` of `target`'s family: the source of a packet to `target`.
pub fn source_for(addresses: &[IpNet], target: IpAddr) -> Option<IpAddr> {
    addresses
        .iter()
        .map(IpNet::addr)
        .find(|a| a.is_ipv4() == target.is_ipv4())
}

/// Any address and port of `peer`'s family: where a socket that talks to `peer` is bound.
pub fn unspecified_for(peer: IpAddr) -> SocketAddr {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(any, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_the_first_address_of_the_targets_family() {
        let addresses: Vec<IpNet> = ["fd00::2/128", "198.19.0.2/32", "198.19.0.3/32"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();

        assert_eq!(
            source_for(&addresses, "198.19.0.1".parse().unwrap()),
            Some("198.19.0.2".parse().unwrap())
        );
        assert_eq!(
            source_for(&addresses, "fd00::1".parse().unwrap()),
            Some("fd00::2".parse().unwrap())
        );
        assert_eq!(source_for(&addresses[..1], "198.19.0.1".parse().unwrap()), None);
    }

    #[test]
    fn the_wildcard_has_the_peers_family() {
        assert_eq!(unspecified_for("198.18.0.10".parse().unwrap()).to_string(), "0.0.0.0:0");
        assert_eq!(unspecified_for("fd00::10".parse().unwrap()).to_string(), "[::]:0");
    }
}
