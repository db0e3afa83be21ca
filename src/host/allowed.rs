//! What corridor ever changes on a host, as a fixed list per platform: a journal is replayed
//! with privilege, so each of its entries is checked against this list before it is acted on,
//! and anything corridor would never have made is refused, never executed.

use std::path::{Path, PathBuf};

use super::plan::Os;
use super::Change;

/// The resolver file Linux's resolv-conf mode rewrites in place.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The first line of a rewritten resolv.conf; finding it anywhere else means a rewrite was never
/// restored.
pub const RESOLV_CONF_MARKER: &str =
    "# Written by corridor while a VPN is connected; `corridor vpn down` restores the original.";
/// macOS's resolver(5) file for the zone: only names under `zerops` are sent where it says.
pub const RESOLVER_FILE: &str = "/etc/resolver/zerops";
/// The first line of our resolver file: a file without it is someone else's.
pub const RESOLVER_MARKER: &str = "# Written by corridor while a VPN is connected; `corridor vpn down` removes it.";
/// Where Windows keeps local NRPT rules (under HKEY_LOCAL_MACHINE), one subkey each.
pub const NRPT_RULES: &str = r"SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig";
/// When this key exists, Group Policy's NRPT rules are in force and local ones are ignored.
pub const NRPT_GROUP_POLICY: &str = r"SOFTWARE\Policies\Microsoft\Windows NT\DNSClient\DnsPolicyConfig";
/// The per-adapter TCP/IP settings of each address family (under HKEY_LOCAL_MACHINE), one
/// subkey per adapter GUID.
pub const TCPIP_INTERFACES: [&str; 2] = [
    r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\Interfaces",
    r"SYSTEM\CurrentControlSet\Services\Tcpip6\Parameters\Interfaces",
];
/// The one value corridor sets on a key that is not its own (the tunnel adapter's).
pub const SEARCH_LIST: &str = "SearchList";

/// The NRPT rule of the journal named `owner`: each journal may only name its own.
pub fn nrpt_key(owner: &str) -> String {
    format!("{NRPT_RULES}\\{{corridor-{owner}}}")
}

/// The tag that marks a connection's interface: `corridor:<project>:<random>`.
pub fn interface_tag_prefix(project: &str) -> String {
    format!("corridor:{project}:")
}

/// The changes a platform's corridor makes.
#[derive(Debug, Clone)]
pub struct Allowed {
    os: Os,
    interface_prefix: &'static str,
    /// Files rewritten in place, with the marker our version carries.
    pub(crate) rewritten: Vec<(PathBuf, String)>,
    /// Files created where there was none, with their marker.
    pub(crate) created: Vec<(PathBuf, String)>,
}

impl Allowed {
    pub fn for_os(os: Os) -> Allowed {
        let (interface_prefix, rewritten, created) = match os {
            Os::Linux => ("corridor", vec![(RESOLV_CONF, RESOLV_CONF_MARKER)], vec![]),
            Os::MacOs => ("utun", vec![], vec![(RESOLVER_FILE, RESOLVER_MARKER)]),
            Os::Windows => ("corridor", vec![], vec![]),
        };
        let owned = |list: Vec<(&str, &str)>| {
            list.into_iter()
                .map(|(path, marker)| (PathBuf::from(path), marker.to_string()))
                .collect()
        };
        Allowed {
            os,
            interface_prefix,
            rewritten: owned(rewritten),
            created: owned(created),
        }
    }

    /// Checks each change of the journal at `journal` (named after its owner: a project id, or
    /// the DNS service's name) in order; the verdicts line up with `changes`.
    pub fn check(&self, journal: &Path, changes: &[Change]) -> Vec<Result<(), String>> {
        let owner = journal
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = journal.parent().unwrap_or(Path::new(""));
        let mut ours: Vec<&str> = Vec::new();
        changes
            .iter()
            .map(|change| {
                let verdict = self.check_one(change, &owner, dir, &ours);
                if let (Ok(()), Change::Interface { name, .. }) = (&verdict, change) {
                    ours.push(name);
                }
                verdict
            })
            .collect()
    }

    fn check_one(&self, change: &Change, owner: &str, dir: &Path, ours: &[&str]) -> Result<(), String> {
        let windows = self.os == Os::Windows;
        match change {
            Change::Interface { name, tag } => {
                if !self.is_tunnel_name(name) {
                    return Err(format!("{name} is no name corridor gives its interfaces"));
                }
                match tag {
                    Some(tag) if tag.starts_with(&interface_tag_prefix(owner)) => Ok(()),
                    _ => Err(format!("{name} carries no tag of this journal's connection")),
                }
            }
            Change::Route { interface, .. } | Change::RegistryValue { interface, .. }
                if !ours.contains(&interface.as_str()) =>
            {
                Err(format!("{interface} is no interface this journal created"))
            }
            Change::Route { .. } => Ok(()),
            Change::File { path, backup, marker } => {
                if !listed(&self.rewritten, path, marker.as_deref()) {
                    return Err(format!("{} is no file corridor rewrites", path.display()));
                }
                let named = backup
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{owner}.")));
                if backup.parent() != Some(dir) || !named {
                    return Err(format!("the backup {} is not this journal's", backup.display()));
                }
                Ok(())
            }
            Change::CreatedFile { path, marker } if listed(&self.created, path, Some(marker)) => Ok(()),
            Change::CreatedFile { path, .. } => Err(format!("{} is no file corridor creates", path.display())),
            Change::RegistryKey { key } if windows && key.eq_ignore_ascii_case(&nrpt_key(owner)) => Ok(()),
            Change::RegistryKey { key } => Err(format!("HKLM\\{key} is no registry key of this journal's")),
            Change::RegistryValue { key, name, .. } => {
                let adapter_key = TCPIP_INTERFACES.iter().any(|parent| {
                    key.len() > parent.len()
                        && key[..parent.len()].eq_ignore_ascii_case(parent)
                        && key[parent.len()..].strip_prefix('\\').is_some_and(is_guid)
                });
                if windows && adapter_key && name == SEARCH_LIST {
                    Ok(())
                } else {
                    Err(format!("{name} of HKLM\\{key} is no registry value corridor sets"))
                }
            }
        }
    }

    /// The same list with a test's own file in place of the system's resolver file.
    #[cfg(test)]
    pub(crate) fn with_file(mut self, path: &Path, marker: &str, created: bool) -> Allowed {
        let list = if created {
            &mut self.created
        } else {
            &mut self.rewritten
        };
        list.push((path.to_path_buf(), marker.to_string()));
        self
    }

    /// `corridor0`, `utun7`: the prefix and a number.
    pub fn is_tunnel_name(&self, name: &str) -> bool {
        name.strip_prefix(self.interface_prefix)
            .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

fn listed(list: &[(PathBuf, String)], path: &Path, marker: Option<&str>) -> bool {
    list.iter().any(|(p, m)| p == path && Some(m.as_str()) == marker)
}

/// `{6B29FC40-CA47-1067-B31D-00DD010662DA}`.
fn is_guid(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    let groups: Vec<&str> = inner.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "{6B29FC40-CA47-1067-B31D-00DD010662DA}";

    fn ours(name: &str) -> Change {
        Change::Interface {
            name: name.into(),
            tag: Some("corridor:p1:00ff00ff00ff00ff".into()),
        }
    }

    fn route(interface: &str) -> Change {
        Change::Route {
            destination: "fd00::/64".parse().unwrap(),
            interface: interface.into(),
        }
    }

    fn verdicts(os: Os, changes: &[Change]) -> Vec<bool> {
        Allowed::for_os(os)
            .check(Path::new("/var/lib/corridor/p1.journal"), changes)
            .iter()
            .map(Result::is_ok)
            .collect()
    }

    #[test]
    fn what_a_connection_makes_is_allowed() {
        let resolv = Change::File {
            path: RESOLV_CONF.into(),
            backup: "/var/lib/corridor/p1.resolv.conf.orig".into(),
            marker: Some(RESOLV_CONF_MARKER.into()),
        };
        assert_eq!(
            verdicts(Os::Linux, &[ours("corridor0"), route("corridor0"), resolv]),
            [true, true, true]
        );
        let search_list = |parent: &str| Change::RegistryValue {
            key: format!("{parent}\\{GUID}"),
            name: SEARCH_LIST.into(),
            interface: "corridor3".into(),
        };
        let windows = [
            ours("corridor3"),
            route("corridor3"),
            Change::RegistryKey { key: nrpt_key("p1") },
            search_list(TCPIP_INTERFACES[0]),
            search_list(TCPIP_INTERFACES[1]),
        ];
        assert_eq!(verdicts(Os::Windows, &windows), [true; 5]);
        let resolver = Change::CreatedFile {
            path: RESOLVER_FILE.into(),
            marker: RESOLVER_MARKER.into(),
        };
        assert_eq!(
            verdicts(Os::MacOs, &[ours("utun4"), route("utun4"), resolver]),
            [true; 3]
        );
    }

    #[test]
    fn interfaces_and_routes_that_are_not_ours_are_refused() {
        let untagged = Change::Interface {
            name: "corridor1".into(),
            tag: None,
        };
        let other_project = Change::Interface {
            name: "corridor2".into(),
            tag: Some("corridor:p2:00ff00ff00ff00ff".into()),
        };
        let changes = [
            ours("eth0"),
            route("eth0"),
            untagged,
            other_project,
            route("corridor2"),
            ours("corridor"),
            ours("corridor0x"),
            route("corridor9"),
        ];
        assert_eq!(verdicts(Os::Linux, &changes), [false; 8]);
        assert_eq!(
            verdicts(Os::MacOs, &[ours("corridor0")]),
            [false],
            "macOS tunnels are utun"
        );
    }

    #[test]
    fn files_outside_the_list_or_with_foreign_backups_are_refused() {
        let file = |path: &str, backup: &str, marker: Option<&str>| Change::File {
            path: path.into(),
            backup: backup.into(),
            marker: marker.map(str::to_string),
        };
        let backup = "/var/lib/corridor/p1.resolv.conf.orig";
        let changes = [
            file("/etc/shadow", backup, Some(RESOLV_CONF_MARKER)),
            file(RESOLV_CONF, backup, None),
            file(RESOLV_CONF, backup, Some("root")),
            file(RESOLV_CONF, "/etc/shadow", Some(RESOLV_CONF_MARKER)),
            file(
                RESOLV_CONF,
                "/var/lib/corridor/p2.resolv.conf.orig",
                Some(RESOLV_CONF_MARKER),
            ),
            Change::CreatedFile {
                path: "/etc/cron.d/x".into(),
                marker: RESOLVER_MARKER.into(),
            },
            Change::CreatedFile {
                path: RESOLVER_FILE.into(),
                marker: RESOLVER_MARKER.into(),
            },
        ];
        assert_eq!(verdicts(Os::Linux, &changes), [false; 7]);
        assert_eq!(verdicts(Os::Windows, &changes[..1]), [false]);
    }

    #[test]
    fn registry_changes_outside_corridors_names_are_refused() {
        let value = |key: String, name: &str| Change::RegistryValue {
            key,
            name: name.into(),
            interface: "corridor0".into(),
        };
        let changes = [
            ours("corridor0"),
            Change::RegistryKey {
                key: r"SOFTWARE\Microsoft".into(),
            },
            Change::RegistryKey { key: nrpt_key("p2") },
            Change::RegistryKey {
                key: format!("{}\\..\\..", nrpt_key("p1")),
            },
            value(format!("{}\\{GUID}", TCPIP_INTERFACES[0]), "NameServer"),
            value(format!("{}\\{GUID}\\x", TCPIP_INTERFACES[0]), SEARCH_LIST),
            value(
                r"SYSTEM\Setup\{6B29FC40-CA47-1067-B31D-00DD010662DA}".into(),
                SEARCH_LIST,
            ),
            Change::RegistryValue {
                key: format!("{}\\{GUID}", TCPIP_INTERFACES[0]),
                name: SEARCH_LIST.into(),
                interface: "Ethernet".into(),
            },
        ];
        assert_eq!(
            verdicts(Os::Windows, &changes),
            [true, false, false, false, false, false, false, false]
        );
        assert_eq!(
            verdicts(Os::Linux, &[Change::RegistryKey { key: nrpt_key("p1") }]),
            [false],
            "a Windows change in a Linux journal"
        );
    }

    #[test]
    fn guids_are_checked_by_shape() {
        assert!(is_guid(GUID));
        assert!(!is_guid("{6B29FC40-CA47-1067-B31D-00DD010662D}"));
        assert!(!is_guid("6B29FC40-CA47-1067-B31D-00DD010662DA"));
        assert!(!is_guid("{6B29FC40-CA47-1067-B31D-00DD010662DX}"));
    }
}
