//! Addresses picked by the family of the other end: the wildcard to bind a socket for a peer.
//! (A probe's source is `tunnel::core::ProbeRoute::from_addresses`.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    fn the_wildcard_has_the_peers_family() {
        assert_eq!(unspecified_for("198.18.0.10".parse().unwrap()).to_string(), "0.0.0.0:0");
        assert_eq!(unspecified_for("fd00::10".parse().unwrap()).to_string(), "[::]:0");
    }
}
