//! Route clashes: routes, policy rules and addresses of the host that would take some of a
//! project's addresses elsewhere than into the tunnel. [`clashes`] is a pure comparison of a
//! project's networks with a [`RoutingTable`]; reading the table is per platform
//! ([`super::routing_table`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The main table's id, as the kernel numbers it.
pub const MAIN_TABLE: u32 = 254;
/// The table of the host's own and broadcast addresses.
pub const LOCAL_TABLE: u32 = 255;
/// The table looked up after main by the default rules.
pub const DEFAULT_TABLE: u32 = 253;
/// The priority of the rule that looks up the main table when nothing else was set.
pub const MAIN_RULE_PRIORITY: u32 = 32766;

/// What decides where the host sends a packet: its routes, its policy rules and its own
/// addresses (each with the interface it is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    pub routes: Vec<HostRoute>,
    pub rules: Vec<HostRule>,
    pub addresses: Vec<HostAddress>,
}

/// A route that sends packets somewhere (unicast, or dropped: blackhole, unreachable, prohibit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    /// The interface's name; empty for a route that drops packets.
    pub interface: String,
    pub table: u32,
}

/// A policy rule that looks up a table (or drops packets) before or instead of main.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    pub priority: u32,
    /// `to PREFIX`; `None` matches every destination.
    pub destination: Option<IpNet>,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Lookup(u32),
    /// blackhole, unreachable or prohibit: packets matched go nowhere.
    Drop,
}

/// An address of this machine, with the length of its network (`198.18.0.2/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub address: IpNet,
    pub interface: String,
}

/// One way the host would take some of a project network's addresses elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The project's network.
    pub network: IpNet,
    /// The addresses of `network` affected.
    pub affected: IpNet,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A route of the main table more specific than the project's network.
    MoreSpecific(HostRoute),
    /// A route of the main table for the same network, on another interface.
    Equal(HostRoute),
    /// A rule looked up before the main table sends these addresses by a route of its table.
    Rule { rule: HostRule, route: HostRoute },
    /// A rule looked up before the main table drops these addresses.
    DroppingRule(HostRule),
    /// The machine has an address in the project's network on another interface.
    OwnAddress(HostAddress),
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (network, affected) = (self.network, self.affected);
        match &self.cause {
            Cause::MoreSpecific(route) => write!(
                f,
                "{route} shadows the project's {network}: {affected} is unreachable over the tunnel"
            ),
            Cause::Equal(route) => write!(
                f,
                "{route} is the project's {network} on another interface: {network} may not be reached over the tunnel"
            ),
            Cause::Rule { rule, route } => write!(
                f,
                "{rule} sends {affected} of the project's {network} by {route}: it is unreachable over the tunnel"
            ),
            Cause::DroppingRule(rule) => write!(
                f,
                "{rule} drops {affected} of the project's {network}: it is unreachable over the tunnel"
            ),
            Cause::OwnAddress(address) => write!(
                f,
                "this machine's address {} on {} overlaps the project's {network}: {affected} is reached on {} instead of over the tunnel",
                address.address, address.interface, address.interface
            ),
        }
    }
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.destination)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        match self.interface.as_str() {
            "" => write!(f, " (dropped)")?,
            interface => write!(f, " dev {interface}")?,
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: ", self.priority)?;
        match self.destination {
            Some(to) => write!(f, "to {to}")?,
            None => write!(f, "from all")?,
        }
        match self.action {
            RuleAction::Lookup(table) => write!(f, " lookup {table}"),
            RuleAction::Drop => write!(f, " drop"),
        }
    }
}

/// Every clash between the project's `networks` and the host's `table`. Routes and addresses on
/// `own_interface` (the connection's tunnel, once it exists) are the connection's own.
pub fn clashes(networks: &[IpNet], table: &RoutingTable, own_interface: Option<&str>) -> Vec<Clash> {
    let theirs = |interface: &str| Some(interface) != own_interface;
    let mut found = Vec::new();
    for &network in networks {
        for address in table.addresses.iter().filter(|a| theirs(&a.interface)) {
            let net = address.address.trunc();
            if let Some(affected) = overlap(net, network) {
                found.push(Clash {
                    network,
                    affected,
                    cause: Cause::OwnAddress(address.clone()),
                });
            }
        }
        for route in table
            .routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE && theirs(&r.interface))
        {
            // The kernel's route for an address's own network is reported as that address.
            if table
                .addresses
                .iter()
                .any(|a| a.interface == route.interface && a.address.trunc() == route.destination)
            {
                continue;
            }
            let Some(affected) = overlap(route.destination, network) else {
                continue;
            };
            let cause = match route.destination.prefix_len().cmp(&network.prefix_len()) {
                std::cmp::Ordering::Greater => Cause::MoreSpecific(route.clone()),
                std::cmp::Ordering::Equal => Cause::Equal(route.clone()),
                // Less specific: the project's route wins.
                std::cmp::Ordering::Less => continue,
            };
            found.push(Clash {
                network,
                affected,
                cause,
            });
        }
        for rule in rules_before_main(&table.rules) {
            if rule.destination.is_some_and(|to| overlap(to, network).is_none()) {
                continue;
            }
            let within = |net: IpNet| match rule.destination {
                Some(to) => overlap(to, net),
                None => Some(net),
            };
            match rule.action {
                RuleAction::Drop => {
                    if let Some(affected) = within(network) {
                        found.push(Clash {
                            network,
                            affected,
                            cause: Cause::DroppingRule(rule.clone()),
                        });
                    }
                }
                RuleAction::Lookup(id) => {
                    for route in table.routes.iter().filter(|r| r.table == id && theirs(&r.interface)) {
                        let Some(affected) = overlap(route.destination, network).and_then(within) else {
                            continue;
                        };
                        found.push(Clash {
                            network,
                            affected,
                            cause: Cause::Rule {
                                rule: rule.clone(),
                                route: route.clone(),
                            },
                        });
                    }
                }
            }
        }
    }
    found
}

/// The rules the kernel follows before it gets to the main table, other than those of the
/// local table (the host's own addresses, reported as such) and of main itself.
fn rules_before_main(rules: &[HostRule]) -> impl Iterator<Item = &HostRule> {
    let main = rules
        .iter()
        .filter(|r| r.action == RuleAction::Lookup(MAIN_TABLE))
        .map(|r| r.priority)
        .min()
        .unwrap_or(MAIN_RULE_PRIORITY);
    rules.iter().filter(move |r| {
        r.priority < main && !matches!(r.action, RuleAction::Lookup(MAIN_TABLE | LOCAL_TABLE | DEFAULT_TABLE))
    })
}

/// The smaller of two networks when one holds the other; networks are nested or apart.
fn overlap(a: IpNet, b: IpNet) -> Option<IpNet> {
    match (a.contains(&b), b.contains(&a)) {
        (true, _) => Some(b),
        (_, true) => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "198.19.0.0/26";

    #[test]
    fn a_more_specific_route_elsewhere_shadows_part_of_the_network() {
        let table = RoutingTable {
            routes: vec![route("198.19.0.0/28", Some("198.18.0.1"), "underlay", MAIN_TABLE)],
            ..lan()
        };

        let found = clashes(&[net(PROJECT)], &table, None);

        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].affected, net("198.19.0.0/28"));
        assert_eq!(
            found[0].to_string(),
            "198.19.0.0/28 via 198.18.0.1 dev underlay shadows the project's 198.19.0.0/26: \
             198.19.0.0/28 is unreachable over the tunnel"
        );
    }

    #[test]
    fn an_ordinary_host_has_no_clash() {
        let found = clashes(&[net(PROJECT), net("fdc0:0:10:1::/64")], &lan(), None);
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn the_tunnels_own_routes_and_less_specific_routes_are_no_clash() {
        let table = RoutingTable {
            routes: vec![
                route(PROJECT, None, "corridor0", MAIN_TABLE),
                route("198.19.0.0/28", None, "corridor0", MAIN_TABLE),
                route("198.16.0.0/12", Some("198.18.0.1"), "underlay", MAIN_TABLE),
            ],
            ..lan()
        };
        assert!(clashes(&[net(PROJECT)], &table, Some("corridor0")).is_empty());
    }

    #[test]
    fn an_equal_route_on_another_interface_clashes() {
        let table = RoutingTable {
            routes: vec![route(PROJECT, None, "docker0", MAIN_TABLE)],
            ..lan()
        };
        let found = clashes(&[net(PROJECT)], &table, Some("corridor0"));
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0].cause, Cause::Equal(_)));
        assert!(found[0].to_string().contains("dev docker0"), "{}", found[0]);
    }

    #[test]
    fn an_own_address_in_the_network_clashes_once_not_also_as_its_kernel_route() {
        let mut table = lan();
        table.addresses.push(HostAddress {
            address: net("198.19.0.5/24"),
            interface: "wlan0".into(),
        });
        table.routes.push(route("198.19.0.0/24", None, "wlan0", MAIN_TABLE));

        let found = clashes(&[net(PROJECT)], &table, None);

        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].affected, net(PROJECT));
        assert!(
            found[0]
                .to_string()
                .starts_with("this machine's address 198.19.0.5/24 on wlan0"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_rule_before_main_sends_addresses_by_its_table_or_drops_them() {
        let mut table = lan();
        table.rules.push(HostRule {
            priority: 5270,
            destination: None,
            action: RuleAction::Lookup(52),
        });
        table.routes.push(route("198.19.0.0/16", None, "tailscale0", 52));
        table.routes.push(route("10.0.0.0/8", None, "tailscale0", 52));
        table.rules.push(HostRule {
            priority: 100,
            destination: Some(net("198.19.0.32/27")),
            action: RuleAction::Drop,
        });
        // After main: never reached for the project's addresses.
        table.rules.push(HostRule {
            priority: 40000,
            destination: None,
            action: RuleAction::Drop,
        });

        let found = clashes(&[net(PROJECT)], &table, None);

        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found.iter().any(|c| c.to_string()
                == "rule 5270: from all lookup 52 sends 198.19.0.0/26 of the project's 198.19.0.0/26 by \
                    198.19.0.0/16 dev tailscale0 table 52: it is unreachable over the tunnel"),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|c| c.affected == net("198.19.0.32/27") && matches!(c.cause, Cause::DroppingRule(_))),
            "{found:#?}"
        );
    }

    /// A laptop on a LAN: the default route, the LAN's network and the machine's address on it.
    fn lan() -> RoutingTable {
        RoutingTable {
            routes: vec![
                route("0.0.0.0/0", Some("198.18.0.1"), "underlay", MAIN_TABLE),
                route("198.18.0.0/24", None, "underlay", MAIN_TABLE),
                route("fe80::/64", None, "underlay", MAIN_TABLE),
            ],
            rules: vec![
                HostRule {
                    priority: 0,
                    destination: None,
                    action: RuleAction::Lookup(LOCAL_TABLE),
                },
                HostRule {
                    priority: MAIN_RULE_PRIORITY,
                    destination: None,
                    action: RuleAction::Lookup(MAIN_TABLE),
                },
                HostRule {
                    priority: 32767,
                    destination: None,
                    action: RuleAction::Lookup(DEFAULT_TABLE),
                },
            ],
            addresses: vec![
                HostAddress {
                    address: net("198.18.0.2/24"),
                    interface: "underlay".into(),
                },
                HostAddress {
                    address: net("127.0.0.1/8"),
                    interface: "lo".into(),
                },
            ],
        }
    }

    fn route(destination: &str, gateway: Option<&str>, interface: &str, table: u32) -> HostRoute {
        HostRoute {
            destination: net(destination),
            gateway: gateway.map(|g| g.parse().unwrap()),
            interface: interface.into(),
            table,
        }
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }
}
