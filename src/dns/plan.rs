//! The resolver changes of macOS and Windows as data: the scoped resolver file's contents, the
//! NRPT rule's registry values, and the journal entries that undo them. Pure, so both platforms'
//! plans are unit-tested on any host; `dns::macos` and `dns::windows` carry them out.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::Mode;
use crate::host::Change;

use crate::host::allowed::nrpt_key;
pub use crate::host::allowed::{NRPT_GROUP_POLICY, RESOLVER_FILE, RESOLVER_MARKER, SEARCH_LIST, TCPIP_INTERFACES};
/// The namespace of our rule: a leading dot matches every name under it.
pub const NRPT_NAMESPACE: &str = ".zerops";

/// The mode on a platform whose only integration is its own per-domain resolver (`os` names the
/// platform in the error).
pub fn scoped_mode(mode: Mode, os: &str) -> Result<Mode> {
    match mode {
        Mode::Auto | Mode::Scoped => Ok(Mode::Scoped),
        Mode::Off => Ok(Mode::Off),
        Mode::Resolved => bail!("--dns resolved is for Linux; on {os} use --dns auto (or off)"),
        Mode::ResolvConf => bail!("--dns resolv-conf is for Linux; on {os} use --dns auto (or off)"),
    }
}

/// `/etc/resolver/zerops`: the responder's address and port (resolver(5) takes both).
pub fn resolver_file(responder: SocketAddr) -> String {
    format!(
        "{RESOLVER_MARKER}\nnameserver {}\nport {}\n",
        responder.ip(),
        responder.port()
    )
}

/// The journal entry recorded before the resolver file is written; undone by removing it.
pub fn resolver_change() -> Change {
    Change::CreatedFile {
        path: PathBuf::from(RESOLVER_FILE),
        marker: RESOLVER_MARKER.to_string(),
    }
}

/// A registry value of an NRPT rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    Dword(u32),
    Text(String),
    MultiText(Vec<String>),
}

/// One connection's NRPT rule: its key (under HKEY_LOCAL_MACHINE) and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NrptRule {
    pub key: String,
    pub values: Vec<(&'static str, RegValue)>,
}

/// The rule that sends `.zerops` to the responder; `owner` (the name of the journal that holds
/// it) keeps rules of different owners apart. NRPT names servers by address only, so the responder must be on
/// port 53.
pub fn nrpt_rule(owner: &str, responder: SocketAddr) -> Result<NrptRule> {
    if responder.port() != 53 {
        bail!("an NRPT rule can only name a DNS server on port 53, and the responder is on {responder}");
    }
    let server: IpAddr = responder.ip();
    Ok(NrptRule {
        key: nrpt_key(owner),
        values: vec![
            ("Comment", RegValue::Text(format!("corridor {owner}"))),
            // 0x8: the rule sets generic DNS servers.
            ("ConfigOptions", RegValue::Dword(0x8)),
            ("DisplayName", RegValue::Text(format!("corridor {owner}"))),
            ("GenericDNSServers", RegValue::Text(server.to_string())),
            ("IPSECCARestriction", RegValue::Text(String::new())),
            ("Name", RegValue::MultiText(vec![NRPT_NAMESPACE.to_string()])),
            ("Version", RegValue::Dword(0x2)),
        ],
    })
}

/// The journal entry recorded before the rule is written; undone by deleting its key.
pub fn nrpt_change(owner: &str) -> Change {
    Change::RegistryKey { key: nrpt_key(owner) }
}

// `SEARCH_LIST` adds an adapter's domains to the system's search list (as Tailscale does):
// NRPT routes `.zerops` but does not complete a bare `api`, and the global `SearchList` would
// replace the suffixes every other adapter contributes.
/// The suffix a bare name gets.
pub const SEARCH_DOMAIN: &str = "zerops";

/// The registry values that give the tunnel adapter `interface` (GUID `guid`) the search
/// domain, each with the journal entry recorded before it is set.
pub fn adapter_search_list(interface: &str, guid: &str) -> Vec<Change> {
    TCPIP_INTERFACES
        .iter()
        .map(|interfaces| Change::RegistryValue {
            key: format!("{interfaces}\\{guid}"),
            name: SEARCH_LIST.to_string(),
            interface: interface.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_file_names_the_responder_and_its_port() {
        let file = resolver_file("127.0.0.1:53053".parse().unwrap());

        assert_eq!(
            file.lines().collect::<Vec<_>>(),
            [RESOLVER_MARKER, "nameserver 127.0.0.1", "port 53053"]
        );
        assert_eq!(
            resolver_change(),
            Change::CreatedFile {
                path: "/etc/resolver/zerops".into(),
                marker: RESOLVER_MARKER.into()
            }
        );
    }

    #[test]
    fn the_resolver_file_is_undone_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("zerops");
        let theirs = dir.path().join("other");
        std::fs::write(&ours, resolver_file("127.0.0.1:53053".parse().unwrap())).unwrap();
        std::fs::write(&theirs, "nameserver 10.0.0.1\n").unwrap();
        let journal = dir.path().join("p.journal");
        let mut writer = crate::host::Journal::create(&journal).unwrap();
        for path in [&ours, &theirs] {
            writer
                .record(Change::CreatedFile {
                    path: path.clone(),
                    marker: RESOLVER_MARKER.into(),
                })
                .unwrap();
        }
        drop(writer);

        let allowed = crate::host::Allowed::for_os(crate::host::plan::Os::MacOs)
            .with_file(&ours, RESOLVER_MARKER, true)
            .with_file(&theirs, RESOLVER_MARKER, true);
        crate::host::restore_with(&journal, &allowed).unwrap();

        assert!(!ours.exists());
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "nameserver 10.0.0.1\n");
        assert!(!journal.exists());
    }

    #[test]
    fn the_nrpt_rule_sends_the_zone_to_the_responder() {
        let rule = nrpt_rule("p1", "127.0.0.153:53".parse().unwrap()).unwrap();

        assert_eq!(
            rule.key,
            r"SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig\{corridor-p1}"
        );
        let value = |name: &str| rule.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(value("Name"), Some(RegValue::MultiText(vec![".zerops".into()])));
        assert_eq!(value("GenericDNSServers"), Some(RegValue::Text("127.0.0.153".into())));
        assert_eq!(value("ConfigOptions"), Some(RegValue::Dword(8)));
        assert_eq!(value("Version"), Some(RegValue::Dword(2)));
        assert_eq!(value("IPSECCARestriction"), Some(RegValue::Text(String::new())));
        assert_eq!(nrpt_change("p1"), Change::RegistryKey { key: rule.key.clone() });
    }

    #[test]
    fn the_nrpt_rule_is_journaled_as_a_registry_key() {
        let line = serde_json::to_string(&nrpt_change("p1")).unwrap();

        assert_eq!(
            line,
            r#"{"kind":"registry_key","key":"SYSTEM\\CurrentControlSet\\Services\\Dnscache\\Parameters\\DnsPolicyConfig\\{corridor-p1}"}"#
        );
    }

    #[test]
    fn the_tunnel_adapter_carries_the_search_domain_for_both_families() {
        let changes = adapter_search_list("corridor0", "{6B29FC40-CA47-1067-B31D-00DD010662DA}");

        assert_eq!(
            serde_json::to_string(&changes).unwrap(),
            concat!(
                r#"[{"kind":"registry_value","key":"SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\{6B29FC40-CA47-1067-B31D-00DD010662DA}","name":"SearchList","interface":"corridor0"},"#,
                r#"{"kind":"registry_value","key":"SYSTEM\\CurrentControlSet\\Services\\Tcpip6\\Parameters\\Interfaces\\{6B29FC40-CA47-1067-B31D-00DD010662DA}","name":"SearchList","interface":"corridor0"}]"#
            )
        );
        assert_eq!(SEARCH_DOMAIN, "zerops");
    }

    #[test]
    fn nrpt_needs_port_53_and_modes_are_checked() {
        assert!(nrpt_rule("p1", "127.0.0.1:5353".parse().unwrap()).is_err());
        assert_eq!(scoped_mode(Mode::Auto, "macOS").unwrap(), Mode::Scoped);
        assert_eq!(scoped_mode(Mode::Off, "macOS").unwrap(), Mode::Off);
        let err = scoped_mode(Mode::ResolvConf, "Windows").unwrap_err().to_string();
        assert!(err.contains("on Windows use --dns auto"), "{err}");
    }
}
