//! The lab's address plan: every name, address and id the lab uses, derived from its prefix
//! and slot, so that two labs with different slots never collide and teardown is exact.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The WireGuard port every project gateway listens on (on its own underlay address).
pub const WG_PORT: u16 = 51820;
/// The port the control-plane API listens on (on the underlay router address).
pub const API_PORT: u16 = 8080;
/// The port sshd listens on in every container, as on the platform.
pub const SSH_PORT: u16 = 65437;
/// Container statuses, as the platform's SDK spells them (`ContainerStatusEnum`).
pub const ACTIVE: &str = "ACTIVE";
pub const STOPPED: &str = "STOPPED";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub prefix: String,
    pub slot: u8,
    /// Directory with the lab's state: plan.json, keys, configs, logs.
    pub state_dir: String,
    pub token: String,
    pub user: User,
    /// Namespace with the underlay bridge, the "ISP" resolver and the control-plane API.
    pub net_ns: String,
    /// Namespace that plays the developer's laptop.
    pub laptop_ns: String,
    pub underlay: Ipv4Net,
    /// The underlay router: API and ISP resolver live here.
    pub router_addr: Ipv4Addr,
    pub laptop_addr: Ipv4Addr,
    pub api_addr: SocketAddr,
    /// Names the ISP resolver answers (the laptop's normal DNS), each with its address.
    pub isp_names: Vec<(String, Ipv4Addr)>,
    pub projects: Vec<Project>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub full_name: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub id: String,
    pub client_id: String,
    /// Gateway namespace: wireguard-go, dnsmasq, the container bridge.
    pub gw_ns: String,
    /// wireguard-go interface name; unique across labs because its UAPI socket is global.
    pub wg_if: String,
    pub gw_underlay_addr: Ipv4Addr,
    pub endpoint: SocketAddr,
    /// Container networks (the project's), gateway = the bridge address in the gateway ns.
    pub v4_net: Ipv4Net,
    pub v4_gateway: Ipv4Addr,
    pub v6_net: Ipv6Net,
    pub v6_gateway: Ipv6Addr,
    /// VPN peer networks, gateway = the wireguard-go interface address.
    pub v4_peer_net: Ipv4Net,
    pub v4_peer_gateway: Ipv4Addr,
    pub v6_peer_net: Ipv6Net,
    pub v6_peer_gateway: Ipv6Addr,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    /// The service hostname (`api`, `db`): `<name>.zerops` resolves to all its containers.
    pub name: String,
    pub type_version: String,
    pub category: String,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub number: u32,
    /// Full DNS name, e.g. `node-id-13.runtime.api.zerops`; also the container's hostname.
    pub name: String,
    /// The platform's container status (`ACTIVE`, `STOPPED`, …: the SDK's `ContainerStatusEnum`).
    /// Only an `ACTIVE` container has a namespace, addresses and a DNS record.
    pub status: String,
    pub ns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Plan {
    pub fn new(prefix: &str, slot: u8) -> Plan {
        let s = slot;
        let underlay: Ipv4Net = format!("198.18.{s}.0/24").parse().unwrap();
        let router_addr = Ipv4Addr::new(198, 18, s, 1);
        let projects = ["demo", "other", "empty"]
            .iter()
            .enumerate()
            .map(|(p, name)| Project::new(prefix, s, p as u8, name))
            .collect();
        Plan {
            prefix: prefix.to_string(),
            slot,
            state_dir: format!("/run/corridor-lab/{prefix}"),
            token: short_id(&format!("{prefix}/token")) + &short_id(&format!("{prefix}/token2")),
            user: User {
                id: short_id(&format!("{prefix}/user")),
                email: "dev@lab.test".into(),
                full_name: "Lab Developer".into(),
                client_id: short_id(&format!("{prefix}/client")),
            },
            net_ns: format!("{prefix}-net"),
            laptop_ns: format!("{prefix}-laptop"),
            underlay,
            router_addr,
            laptop_addr: Ipv4Addr::new(198, 18, s, 2),
            api_addr: SocketAddr::new(router_addr.into(), API_PORT),
            isp_names: vec![
                ("www.isp.test".into(), Ipv4Addr::new(198, 18, s, 200)),
                ("mirror.isp.test".into(), Ipv4Addr::new(198, 18, s, 201)),
            ],
            projects,
        }
    }

    /// The running containers (those with a namespace), with their project.
    pub fn containers(&self) -> impl Iterator<Item = (&Project, &Container)> {
        self.projects
            .iter()
            .flat_map(|p| p.services.iter().flat_map(move |s| s.running().map(move |c| (p, c))))
    }

    /// The API's addresses: the default region's, then the second region's (the same API).
    pub fn api_addrs(&self) -> [SocketAddr; 2] {
        [self.api_addr, SocketAddr::new(self.api_addr.ip(), API_PORT + 1)]
    }

    /// Every namespace the lab creates, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.net_ns.clone(), self.laptop_ns.clone()];
        for p in &self.projects {
            all.push(p.gw_ns.clone());
            all.extend(p.services.iter().flat_map(|s| s.running().map(|c| c.ns.clone())));
        }
        all
    }
}

impl Project {
    fn new(prefix: &str, s: u8, p: u8, name: &str) -> Project {
        // 198.19.0.0/16: two /24s per slot, cut into /26s, two per project (containers, VPN
        // peers), so that 128 labs fit side by side.
        let v4_net = v4_quarter(s, p * 2);
        let v4_peer_net = v4_quarter(s, p * 2 + 1);
        // One ULA /48 per project: ::1:0/64 for containers, ::2:0/64 for VPN peers.
        let v6_48 = format!("fdc0:0:{:x}", u16::from(s) * 16 + u16::from(p));
        let v6_net: Ipv6Net = format!("{v6_48}:1::/64").parse().unwrap();
        let v6_peer_net: Ipv6Net = format!("{v6_48}:2::/64").parse().unwrap();
        let gw_underlay_addr = Ipv4Addr::new(198, 18, s, 10 + p);
        let id = short_id(&format!("{prefix}/project/{name}"));
        // demo: two services, one with a stopped container; other: one service; empty: none.
        let services = match p {
            0 => vec![
                service(
                    prefix,
                    name,
                    "api",
                    "nodejs@22",
                    "USER",
                    &[
                        ("node-id-13", "runtime", 13, ACTIVE),
                        ("node-id-14", "runtime", 14, ACTIVE),
                        ("node-id-15", "runtime", 15, STOPPED),
                    ],
                ),
                service(
                    prefix,
                    name,
                    "db",
                    "postgresql@16",
                    "USER",
                    &[("node1", "db", 21, ACTIVE)],
                ),
            ],
            1 => vec![service(
                prefix,
                name,
                "app",
                "ubuntu@24.04",
                "USER",
                &[("node-id-1", "runtime", 31, ACTIVE)],
            )],
            _ => vec![],
        };
        let mut project = Project {
            name: name.to_string(),
            id,
            client_id: short_id(&format!("{prefix}/client")),
            gw_ns: format!("{prefix}-{name}-gw"),
            wg_if: format!("{prefix}-g{p}"),
            gw_underlay_addr,
            endpoint: SocketAddr::new(gw_underlay_addr.into(), WG_PORT),
            v4_net,
            v4_gateway: nth_v4(v4_net, 1),
            v6_net,
            v6_gateway: nth_v6(v6_net, 1),
            v4_peer_net,
            v4_peer_gateway: nth_v4(v4_peer_net, 1),
            v6_peer_net,
            v6_peer_gateway: nth_v6(v6_peer_net, 1),
            services,
        };
        for svc in &mut project.services {
            for c in svc.containers.iter_mut().filter(|c| c.status == ACTIVE) {
                c.ns = format!("{prefix}-{name}-c{}", c.number);
                c.ipv4 = nth_v4(v4_net, c.number);
                c.ipv6 = nth_v6(v6_net, c.number);
            }
        }
        project
    }
}

/// The `n`th /26 of slot `s`'s two /24s in 198.19.0.0/16.
fn v4_quarter(s: u8, n: u8) -> Ipv4Net {
    let third = u16::from(s) * 2 + u16::from(n / 4);
    let third = u8::try_from(third).expect("slots below 128");
    Ipv4Net::new(Ipv4Addr::new(198, 19, third, (n % 4) * 64), 26).expect("a /26")
}

fn service(
    prefix: &str,
    project: &str,
    name: &str,
    type_version: &str,
    category: &str,
    nodes: &[(&str, &str, u32, &str)],
) -> Service {
    Service {
        id: short_id(&format!("{prefix}/{project}/service/{name}")),
        name: name.to_string(),
        type_version: type_version.to_string(),
        category: category.to_string(),
        containers: nodes
            .iter()
            .map(|(node, role, number, status)| Container {
                id: short_id(&format!("{prefix}/{project}/container/{number}")),
                number: *number,
                name: format!("{node}.{role}.{name}.zerops"),
                status: status.to_string(),
                ns: String::new(),
                ipv4: Ipv4Addr::UNSPECIFIED,
                ipv6: Ipv6Addr::UNSPECIFIED,
            })
            .collect(),
    }
}

impl Service {
    pub fn running(&self) -> impl Iterator<Item = &Container> {
        self.containers.iter().filter(|c| c.status == ACTIVE)
    }
}

pub fn nth_v4(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

pub fn nth_v6(net: Ipv6Net, n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + u128::from(n))
}

/// A 22-character short-UUID style id, stable for the same seed (ids survive `lab down`/`up`).
pub fn short_id(seed: &str) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    // FNV-1a, extended: enough to spread ids; nothing here is secret.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut out = String::with_capacity(22);
    for round in 0..22u64 {
        for b in seed.bytes().chain(round.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_slots_share_a_network() {
        let mut seen = std::collections::HashSet::new();
        for slot in 0..=127 {
            let plan = Plan::new("t", slot);
            let mut nets = vec![plan.underlay.to_string()];
            for p in &plan.projects {
                nets.extend([p.v4_net, p.v4_peer_net].map(|n| n.to_string()));
                nets.extend([p.v6_net, p.v6_peer_net].map(|n| n.to_string()));
            }
            for net in nets {
                assert!(seen.insert(net.clone()), "slot {slot} reuses {net}");
            }
        }
    }
}
