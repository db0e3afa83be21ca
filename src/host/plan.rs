//! What each platform runs to make and to undo a host change, as data from pure functions: every
//! platform's plan compiles and is unit-tested on any host (DESIGN §3a); only carrying it out
//! (`host::<os>`) needs the real OS.

use std::fmt;

use ipnet::IpNet;

use super::Change;

/// The platforms corridor changes hosts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    Windows,
}

/// The tag corridor gave a Wintun adapter, read back from the description Windows reports for
/// it: `WintunCreateAdapter` writes the tunnel type it is given (corridor's tag) as the
/// description "<type> Tunnel", and Windows numbers a description that repeats (" #2"). Any
/// other description comes back as it is, and so never matches a tag.
pub fn wintun_tag(description: &str) -> &str {
    let unnumbered = match description.rsplit_once(" #") {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => description,
    };
    unnumbered.strip_suffix(" Tunnel").unwrap_or(description)
}

/// One run of a system tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub program: &'static str,
    pub args: Vec<String>,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for arg in &self.args {
            if arg.contains(' ') {
                write!(f, " \"{arg}\"")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// One host change: its journal entry (recorded before the change is made), the run that makes
/// it, and the run that undoes it (also from the journal alone, after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub change: Change,
    pub apply: Run,
    pub undo: Run,
}

/// A connection's routes: one step per network routed into the tunnel interface.
pub fn routes(os: Os, interface: &str, networks: &[IpNet]) -> Vec<Step> {
    networks
        .iter()
        .map(|&destination| Step {
            change: Change::Route {
                destination,
                interface: interface.to_string(),
            },
            apply: add_route(os, destination, interface),
            undo: delete_route(os, destination, interface),
        })
        .collect()
}

/// Routes `destination` into the tunnel interface.
pub fn add_route(os: Os, destination: IpNet, interface: &str) -> Run {
    route(os, true, destination, interface)
}

/// Undoes [`add_route`].
pub fn delete_route(os: Os, destination: IpNet, interface: &str) -> Run {
    route(os, false, destination, interface)
}

fn route(os: Os, add: bool, destination: IpNet, interface: &str) -> Run {
    let prefix = destination.to_string();
    match os {
        Os::Linux => run(
            "ip",
            ["route", if add { "replace" } else { "del" }, &prefix, "dev", interface],
        ),
        Os::MacOs => run(
            "route",
            [
                "-n",
                if add { "add" } else { "delete" },
                inet(destination),
                &prefix,
                "-interface",
                interface,
            ],
        ),
        Os::Windows => {
            let (prefix, interface) = (format!("prefix={destination}"), format!("interface={interface}"));
            let mut args = vec![
                "interface",
                netsh_family(destination),
                if add { "add" } else { "delete" },
                "route",
                &prefix,
                &interface,
            ];
            // `store=active`: the route is gone after a reboot, as the adapter is.
            if add {
                args.push("store=active");
            }
            run("netsh", args)
        }
    }
}

/// Removes a tunnel interface by hand. macOS and Windows remove theirs with the process that
/// holds it, so there is nothing to run.
pub fn delete_interface(os: Os, name: &str) -> Option<Run> {
    match os {
        Os::Linux => Some(run("ip", ["link", "del", name])),
        Os::MacOs | Os::Windows => None,
    }
}

/// What a user runs to undo `change` by hand, when the automatic undo failed.
pub fn manual_fix(os: Os, change: &Change) -> String {
    let (admin, copy, remove) = match os {
        Os::Linux | Os::MacOs => ("sudo ", "sudo cp", "sudo rm"),
        Os::Windows => ("in an Administrator terminal: ", "copy /y", "del"),
    };
    match change {
        Change::Interface { name, .. } => match delete_interface(os, name) {
            Some(run) => format!("interface {name}: {admin}{run}"),
            None => format!("interface {name}: gone with the process that held it"),
        },
        Change::Route { destination, interface } => {
            format!(
                "route {destination}: {admin}{}",
                delete_route(os, *destination, interface)
            )
        }
        Change::File { path, backup, .. } => {
            format!("{}: {copy} {} {}", path.display(), backup.display(), path.display())
        }
        Change::CreatedFile { path, .. } => format!("{}: {remove} {}", path.display(), path.display()),
        Change::RegistryKey { key } => match os {
            Os::Windows => format!("registry key HKLM\\{key}: {admin}reg delete \"HKLM\\{key}\" /f"),
            Os::Linux | Os::MacOs => format!("registry key HKLM\\{key}: a Windows change, undone on Windows"),
        },
        Change::RegistryValue { key, name, .. } => match os {
            Os::Windows => {
                format!("registry value {name} of HKLM\\{key}: {admin}reg delete \"HKLM\\{key}\" /v {name} /f")
            }
            Os::Linux | Os::MacOs => {
                format!("registry value {name} of HKLM\\{key}: a Windows change, undone on Windows")
            }
        },
    }
}

fn inet(destination: IpNet) -> &'static str {
    match destination {
        IpNet::V4(_) => "-inet",
        IpNet::V6(_) => "-inet6",
    }
}

fn netsh_family(destination: IpNet) -> &'static str {
    match destination {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    }
}

fn run<'a>(program: &'static str, args: impl IntoIterator<Item = &'a str>) -> Run {
    Run {
        program,
        args: args.into_iter().map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn a_wintun_adapters_description_gives_back_the_tag_it_was_created_with() {
        assert_eq!(
            wintun_tag("corridor:p1:0123456789abcdef Tunnel"),
            "corridor:p1:0123456789abcdef"
        );
        assert_eq!(
            wintun_tag("corridor:p1:0123456789abcdef Tunnel #2"),
            "corridor:p1:0123456789abcdef"
        );
        assert_eq!(
            wintun_tag("Intel(R) Ethernet Connection #2"),
            "Intel(R) Ethernet Connection #2"
        );
        assert_eq!(wintun_tag("WireGuard Tunnel"), "WireGuard");
        assert_eq!(wintun_tag(""), "");
    }

    #[test]
    fn linux_routes_go_through_ip() {
        let add = add_route(Os::Linux, net("fd00:1::/64"), "corridor0");
        let del = delete_route(Os::Linux, net("fd00:1::/64"), "corridor0");

        assert_eq!(add.to_string(), "ip route replace fd00:1::/64 dev corridor0");
        assert_eq!(del.to_string(), "ip route del fd00:1::/64 dev corridor0");
        assert_eq!(
            delete_interface(Os::Linux, "corridor0").unwrap().to_string(),
            "ip link del corridor0"
        );
    }

    #[test]
    fn macos_routes_name_the_family_and_the_utun() {
        let v6 = add_route(Os::MacOs, net("fd00:1::/64"), "utun5");
        let v4 = add_route(Os::MacOs, net("10.7.0.0/16"), "utun5");
        let undo = delete_route(Os::MacOs, net("fd00:1::/64"), "utun5");

        assert_eq!(v6.to_string(), "route -n add -inet6 fd00:1::/64 -interface utun5");
        assert_eq!(v4.to_string(), "route -n add -inet 10.7.0.0/16 -interface utun5");
        assert_eq!(undo.to_string(), "route -n delete -inet6 fd00:1::/64 -interface utun5");
        assert_eq!(
            delete_interface(Os::MacOs, "utun5"),
            None,
            "a utun dies with its process"
        );
    }

    #[test]
    fn windows_routes_are_active_only_and_on_the_adapter() {
        let v6 = add_route(Os::Windows, net("fd00:1::/64"), "corridor0");
        let v4 = add_route(Os::Windows, net("10.7.0.0/16"), "corridor0");
        let undo = delete_route(Os::Windows, net("10.7.0.0/16"), "corridor0");

        assert_eq!(
            v6.args,
            [
                "interface",
                "ipv6",
                "add",
                "route",
                "prefix=fd00:1::/64",
                "interface=corridor0",
                "store=active"
            ]
        );
        assert_eq!(v4.program, "netsh");
        assert_eq!(v4.args[1], "ipv4");
        assert_eq!(
            undo.to_string(),
            "netsh interface ipv4 delete route prefix=10.7.0.0/16 interface=corridor0"
        );
        assert_eq!(delete_interface(Os::Windows, "corridor0"), None);
    }

    #[test]
    fn each_route_is_journaled_then_added_and_its_undo_follows_from_the_journal_entry() {
        let networks = [net("fd00:1::/64"), net("10.7.0.0/16")];
        for (os, interface) in [
            (Os::Linux, "corridor0"),
            (Os::MacOs, "utun5"),
            (Os::Windows, "corridor0"),
        ] {
            let steps = routes(os, interface, &networks);

            assert_eq!(steps.len(), 2);
            for (step, &destination) in steps.iter().zip(&networks) {
                let expected = Change::Route {
                    destination,
                    interface: interface.into(),
                };
                assert_eq!(step.change, expected, "{os:?}");
                assert_eq!(step.apply, add_route(os, destination, interface));
                assert_eq!(step.undo, delete_route(os, destination, interface));
                let line = serde_json::to_string(&step.change).unwrap();
                assert_eq!(
                    line,
                    format!(r#"{{"kind":"route","destination":"{destination}","interface":"{interface}"}}"#)
                );
                assert!(manual_fix(os, &step.change).ends_with(&step.undo.to_string()), "{os:?}");
            }
        }
    }

    #[test]
    fn manual_fixes_name_each_platforms_command() {
        let route = Change::Route {
            destination: net("fd00:1::/64"),
            interface: "utun5".into(),
        };
        let resolver = Change::CreatedFile {
            path: "/etc/resolver/zerops".into(),
            marker: "# ours".into(),
        };
        let rule = Change::RegistryKey {
            key: r"SYSTEM\X\{corridor-p1}".into(),
        };

        assert_eq!(
            manual_fix(Os::MacOs, &route),
            "route fd00:1::/64: sudo route -n delete -inet6 fd00:1::/64 -interface utun5"
        );
        assert_eq!(
            manual_fix(Os::MacOs, &resolver),
            "/etc/resolver/zerops: sudo rm /etc/resolver/zerops"
        );
        assert_eq!(
            manual_fix(Os::Windows, &rule),
            r#"registry key HKLM\SYSTEM\X\{corridor-p1}: in an Administrator terminal: reg delete "HKLM\SYSTEM\X\{corridor-p1}" /f"#
        );
        assert_eq!(
            manual_fix(
                Os::Windows,
                &Change::RegistryValue {
                    key: r"SYSTEM\X\{g}".into(),
                    name: "SearchList".into(),
                    interface: "corridor0".into()
                }
            ),
            r#"registry value SearchList of HKLM\SYSTEM\X\{g}: in an Administrator terminal: reg delete "HKLM\SYSTEM\X\{g}" /v SearchList /f"#
        );
        assert_eq!(
            manual_fix(
                Os::Linux,
                &Change::Interface {
                    name: "corridor0".into(),
                    tag: None
                }
            ),
            "interface corridor0: sudo ip link del corridor0"
        );
    }
}
