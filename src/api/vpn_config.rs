//! The platform's VPN answer turned into the settings the tunnel needs, checked once, here, so
//! that the tunnel never sees an empty or malformed value.

use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;

use super::types::ProjectVpnItem;

/// What the tunnel needs from the platform, validated. MTU and keepalive are not here: the
/// platform does not send them.
#[derive(Clone, PartialEq, Eq)]
pub struct VpnConfig {
    /// This machine's interface addresses: the IPv4 one as /32 (when the platform assigned one)
    /// and the IPv6 one as /128.
    pub addresses: Vec<IpNet>,
    /// The project's and this peer's networks, without duplicates: routed into the tunnel, and
    /// the only sources accepted from it.
    pub allowed_networks: Vec<IpNet>,
    /// The gateway as `host:port`; the host may be a name that the tunnel resolves.
    pub endpoint: String,
    pub server_public_key: [u8; 32],
    /// The project's gateways (IPv6 first), for probing the tunnel: whichever the platform sent.
    pub gateways: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpnConfigError {
    #[error("the platform sent an invalid server key")]
    InvalidServerKey,
    #[error("the platform sent no {0}")]
    Missing(&'static str),
    #[error("the platform sent an invalid {field}: {value:?}")]
    Invalid { field: &'static str, value: String },
}

impl ProjectVpnItem {
    pub fn to_config(&self) -> Result<VpnConfig, VpnConfigError> {
        let project = &self.project;
        let peer = &self.peer;

        let server_public_key = decode_key(&project.public_key)?;
        // The platform's CLI takes the IPv4 one; a project without IPv4 may name only the other.
        let endpoint = match project.ipv4.shared_endpoint.trim() {
            "" if !project.ipv6.shared_endpoint.trim().is_empty() => endpoint(
                "gateway endpoint (project.ipv6.sharedEndpoint)",
                &project.ipv6.shared_endpoint,
            )?,
            _ => endpoint(
                "gateway endpoint (project.ipv4.sharedEndpoint)",
                &project.ipv4.shared_endpoint,
            )?,
        };
        let gateways = [&project.ipv6.network.gateway, &project.ipv4.network.gateway]
            .into_iter()
            .filter_map(|g| g.trim().parse().ok())
            .collect();

        let v4 = ip(
            "peer.ipv4.assignedIpAddress",
            &peer.ipv4.assigned_ip_address,
            Family::V4,
        )?;
        let v6 = ip(
            "peer.ipv6.assignedIpAddress",
            &peer.ipv6.assigned_ip_address,
            Family::V6,
        )?;
        let addresses: Vec<IpNet> = [v4, v6].into_iter().flatten().map(IpNet::from).collect();
        if addresses.is_empty() {
            return Err(VpnConfigError::Missing(
                "address for this machine (peer.ipv4/ipv6.assignedIpAddress)",
            ));
        }

        let networks = [
            (
                "project.ipv4.network.network",
                &project.ipv4.network.network,
                Family::V4,
            ),
            (
                "project.ipv6.network.network",
                &project.ipv6.network.network,
                Family::V6,
            ),
            ("peer.ipv4.network.network", &peer.ipv4.network.network, Family::V4),
            ("peer.ipv6.network.network", &peer.ipv6.network.network, Family::V6),
        ];
        let mut allowed_networks = Vec::new();
        for (field, value, family) in networks {
            let Some(net) = network(field, value, family)? else {
                continue;
            };
            if !allowed_networks.contains(&net) {
                allowed_networks.push(net);
            }
        }
        if allowed_networks.is_empty() {
            return Err(VpnConfigError::Missing("project network"));
        }

        Ok(VpnConfig {
            addresses,
            allowed_networks,
            endpoint,
            server_public_key,
            gateways,
        })
    }

    /// The project's DNS server: `project.ipv4.network.gateway` (as the platform's CLI reads
    /// it), else the IPv6 gateway for a project without IPv4. Read only to set up DNS.
    pub fn dns_server(&self) -> Result<IpAddr, VpnConfigError> {
        let project = &self.project;
        let v4 = ip(
            "DNS server (project.ipv4.network.gateway)",
            &project.ipv4.network.gateway,
            Family::V4,
        )?;
        let v6 = || {
            ip(
                "DNS server (project.ipv6.network.gateway)",
                &project.ipv6.network.gateway,
                Family::V6,
            )
        };
        match v4 {
            Some(addr) => Ok(addr),
            None => v6()?.ok_or(VpnConfigError::Missing(
                "DNS server (project.ipv4/ipv6.network.gateway)",
            )),
        }
    }
}

impl std::fmt::Debug for VpnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpnConfig")
            .field("addresses", &self.addresses)
            .field("allowed_networks", &self.allowed_networks)
            .field("endpoint", &self.endpoint)
            .field(
                "server_public_key",
                &base64::engine::general_purpose::STANDARD.encode(self.server_public_key),
            )
            .field("gateways", &self.gateways)
            .finish()
    }
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn matches(self, addr: IpAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], VpnConfigError> {
    crate::keys::decode(text).ok_or(VpnConfigError::InvalidServerKey)
}

/// `Ok(None)` for an empty value: the platform sends `""` for what it did not assign.
fn ip(field: &'static str, value: &str, family: Family) -> Result<Option<IpAddr>, VpnConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<IpAddr>() {
        Ok(addr) if family.matches(addr) => Ok(Some(addr)),
        _ => Err(invalid(field, value)),
    }
}

fn network(field: &'static str, value: &str, family: Family) -> Result<Option<IpNet>, VpnConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<IpNet>() {
        Ok(net) if family.matches(net.addr()) => Ok(Some(net.trunc())),
        _ => Err(invalid(field, value)),
    }
}

fn endpoint(field: &'static str, value: &str) -> Result<String, VpnConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(VpnConfigError::Missing(field));
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid(field, value));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    let host_ok = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains(':'),
    };
    if !(port_ok && host_ok) {
        return Err(invalid(field, value));
    }
    Ok(value.to_owned())
}

fn invalid(field: &'static str, value: &str) -> VpnConfigError {
    VpnConfigError::Invalid {
        field,
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{VpnNetwork, VpnPeer, VpnPeerNet, VpnProject, VpnProjectNet};

    #[test]
    fn full_answer_becomes_config() {
        let item = sample();

        let config = item.to_config().unwrap();

        assert_eq!(config.addresses, vec![net("198.18.1.2/32"), net("fd00:1:2::2/128")]);
        assert_eq!(
            config.allowed_networks,
            vec![
                net("198.18.0.0/24"),
                net("fd00:1::/64"),
                net("198.18.1.0/24"),
                net("fd00:1:2::/64"),
            ]
        );
        assert_eq!(config.endpoint, "gw.example:51820");
        assert_eq!(config.server_public_key, [7u8; 32]);
        assert_eq!(config.gateways, [ip("fd00:1::1"), ip("198.18.0.1")]);
        assert_eq!(item.dns_server(), Ok(ip("198.18.0.1")));
    }

    #[test]
    fn an_answer_without_ipv4_connects_over_ipv6() {
        let mut item = sample();
        item.project.ipv4.network = VpnNetwork::default();
        item.peer.ipv4 = VpnPeerNet::default();

        let config = item.to_config().unwrap();

        assert_eq!(config.addresses, vec![net("fd00:1:2::2/128")]);
        assert_eq!(config.allowed_networks, vec![net("fd00:1::/64"), net("fd00:1:2::/64")]);
        assert_eq!(config.endpoint, "gw.example:51820");
        assert_eq!(config.gateways, [ip("fd00:1::1")]);
        assert_eq!(
            item.dns_server(),
            Ok(ip("fd00:1::1")),
            "DNS falls back to the IPv6 gateway"
        );
    }

    #[test]
    fn the_ipv6_endpoint_serves_when_the_ipv4_one_is_empty() {
        let mut item = sample();
        item.project.ipv4.shared_endpoint.clear();
        item.project.ipv6.shared_endpoint = "[2001:db8::1]:51820".into();

        assert_eq!(item.to_config().unwrap().endpoint, "[2001:db8::1]:51820");
    }

    #[test]
    fn an_answer_without_gateways_connects_but_has_no_dns() {
        let mut item = sample();
        item.project.ipv4.network.gateway.clear();
        item.project.ipv6.network.gateway.clear();

        let config = item.to_config().unwrap();

        assert!(config.gateways.is_empty());
        assert!(matches!(item.dns_server(), Err(VpnConfigError::Missing(f)) if f.contains("DNS")));
    }

    #[test]
    fn empty_peer_ipv4_is_skipped() {
        let mut item = sample();
        item.peer.ipv4 = VpnPeerNet::default();

        let config = item.to_config().unwrap();

        assert_eq!(config.addresses, vec![net("fd00:1:2::2/128")]);
        assert_eq!(
            config.allowed_networks,
            vec![net("198.18.0.0/24"), net("fd00:1::/64"), net("fd00:1:2::/64")]
        );
    }

    #[test]
    fn duplicate_networks_are_listed_once() {
        let mut item = sample();
        item.peer.ipv4.network.network = item.project.ipv4.network.network.clone();

        let config = item.to_config().unwrap();

        assert_eq!(config.allowed_networks.len(), 3);
    }

    #[test]
    fn bad_server_key_is_reported() {
        for key in ["", "not base64!", "AAAA"] {
            let mut item = sample();
            item.project.public_key = key.to_owned();

            let err = item.to_config().unwrap_err();

            assert_eq!(err, VpnConfigError::InvalidServerKey);
            assert_eq!(err.to_string(), "the platform sent an invalid server key");
        }
    }

    #[test]
    fn missing_endpoint_is_reported() {
        let mut item = sample();
        item.project.ipv4.shared_endpoint = String::new();

        let err = item.to_config().unwrap_err();

        assert!(matches!(err, VpnConfigError::Missing(field) if field.contains("sharedEndpoint")));
    }

    #[test]
    fn malformed_endpoints_are_rejected() {
        for endpoint in ["gw.example", "gw.example:", ":51820", "gw:0", "::1:51820", "[x]:1"] {
            let mut item = sample();
            item.project.ipv4.shared_endpoint = endpoint.to_owned();

            let err = item.to_config().unwrap_err();

            assert!(matches!(err, VpnConfigError::Invalid { .. }), "{endpoint}: {err}");
        }
    }

    #[test]
    fn bracketed_ipv6_endpoint_is_accepted() {
        let mut item = sample();
        item.project.ipv4.shared_endpoint = "[2001:db8::1]:51820".to_owned();

        assert_eq!(item.to_config().unwrap().endpoint, "[2001:db8::1]:51820");
    }

    #[test]
    fn a_malformed_dns_server_fails_only_when_read() {
        let mut item = sample();
        item.project.ipv4.network.gateway = "dns.example".to_owned();

        assert!(item.to_config().is_ok());
        assert!(matches!(item.dns_server(), Err(VpnConfigError::Invalid { .. })));
    }

    #[test]
    fn address_of_the_wrong_family_is_rejected() {
        let mut item = sample();
        item.peer.ipv4.assigned_ip_address = "fd00::5".to_owned();

        let err = item.to_config().unwrap_err();

        assert_eq!(
            err.to_string(),
            "the platform sent an invalid peer.ipv4.assignedIpAddress: \"fd00::5\""
        );
    }

    #[test]
    fn no_address_at_all_is_reported() {
        let mut item = sample();
        item.peer.ipv4.assigned_ip_address.clear();
        item.peer.ipv6.assigned_ip_address.clear();

        let err = item.to_config().unwrap_err();

        assert!(matches!(err, VpnConfigError::Missing(_)));
    }

    #[test]
    fn debug_shows_the_server_key_as_base64() {
        let config = sample().to_config().unwrap();

        let text = format!("{config:?}");

        assert!(text.contains(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
    }

    fn sample() -> ProjectVpnItem {
        ProjectVpnItem {
            project: VpnProject {
                public_key: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
                ipv4: VpnProjectNet {
                    network: VpnNetwork {
                        network: "198.18.0.0/24".into(),
                        gateway: "198.18.0.1".into(),
                    },
                    shared_endpoint: "gw.example:51820".into(),
                    endpoint: "gw.example:51821".into(),
                },
                ipv6: VpnProjectNet {
                    network: VpnNetwork {
                        network: "fd00:1::/64".into(),
                        gateway: "fd00:1::1".into(),
                    },
                    shared_endpoint: String::new(),
                    endpoint: String::new(),
                },
            },
            peer: VpnPeer {
                public_key: base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
                ipv4: VpnPeerNet {
                    network: VpnNetwork {
                        network: "198.18.1.0/24".into(),
                        gateway: "198.18.1.1".into(),
                    },
                    assigned_ip_address: "198.18.1.2".into(),
                },
                ipv6: VpnPeerNet {
                    network: VpnNetwork {
                        network: "fd00:1:2::/64".into(),
                        gateway: "fd00:1:2::1".into(),
                    },
                    assigned_ip_address: "fd00:1:2::2".into(),
                },
                created: None,
            },
        }
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }
}
