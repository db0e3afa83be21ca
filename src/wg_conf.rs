//! A standard WireGuard configuration file, the format of `wg-quick` and of the official
//! WireGuard apps: what `vpn config` writes for clients corridor does not run.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

/// The search domain that makes bare service names (`api`) resolve, as `vpn up` sets it.
pub const SEARCH_DOMAIN: &str = "zerops";

/// Everything one configuration holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConf {
    pub private_key: [u8; 32],
    pub addresses: Vec<IpNet>,
    /// The project's DNS server; `None` leaves the `DNS` line out.
    pub dns: Option<IpAddr>,
    pub mtu: u16,
    pub server_public_key: [u8; 32],
    /// `host:port`.
    pub endpoint: String,
    /// The project's networks only: the rest of the machine's traffic stays off the tunnel.
    pub allowed_ips: Vec<IpNet>,
    pub keepalive_secs: u16,
}

impl WgConf {
    /// The file's text. `DNS` and `MTU` are wg-quick's (and the apps') keys; `wg-quick strip`
    /// leaves what `wg setconf` reads.
    pub fn render(&self) -> String {
        let mut text = String::from("[Interface]\n");
        let _ = writeln!(text, "PrivateKey = {}", crate::keys::encode(&self.private_key));
        let _ = writeln!(text, "Address = {}", join(&self.addresses));
        if let Some(dns) = self.dns {
            let _ = writeln!(text, "DNS = {dns}, {SEARCH_DOMAIN}");
        }
        let _ = writeln!(text, "MTU = {}", self.mtu);
        text.push_str("\n[Peer]\n");
        let _ = writeln!(text, "PublicKey = {}", crate::keys::encode(&self.server_public_key));
        let _ = writeln!(text, "Endpoint = {}", self.endpoint);
        let _ = writeln!(text, "AllowedIPs = {}", join(&self.allowed_ips));
        let _ = writeln!(text, "PersistentKeepalive = {}", self.keepalive_secs);
        text
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_interface_and_the_peer_as_wg_quick_reads_them() {
        let conf = conf();

        let text = conf.render();

        assert_eq!(
            text,
            format!(
                "[Interface]\n\
                 PrivateKey = {}\n\
                 Address = 198.18.64.2/32, fdc0:1:2::2/128\n\
                 DNS = 198.18.32.1, zerops\n\
                 MTU = 1380\n\
                 \n\
                 [Peer]\n\
                 PublicKey = {}\n\
                 Endpoint = 198.18.0.2:51820\n\
                 AllowedIPs = 198.18.32.0/20, fdc0:1:1::/64, 198.18.64.0/20, fdc0:1:2::/64\n\
                 PersistentKeepalive = 25\n",
                crate::keys::encode(&[1; 32]),
                crate::keys::encode(&[2; 32]),
            )
        );
    }

    #[test]
    fn without_dns_there_is_no_dns_line() {
        let conf = WgConf { dns: None, ..conf() };

        let text = conf.render();

        assert!(!text.contains("DNS"), "{text}");
        assert!(text.contains("MTU = 1380\n"), "{text}");
    }

    fn conf() -> WgConf {
        WgConf {
            private_key: [1; 32],
            addresses: vec!["198.18.64.2/32".parse().unwrap(), "fdc0:1:2::2/128".parse().unwrap()],
            dns: Some("198.18.32.1".parse().unwrap()),
            mtu: 1380,
            server_public_key: [2; 32],
            endpoint: "198.18.0.2:51820".into(),
            allowed_ips: ["198.18.32.0/20", "fdc0:1:1::/64", "198.18.64.0/20", "fdc0:1:2::/64"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect(),
            keepalive_secs: 25,
        }
    }
}
