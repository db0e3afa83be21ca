//! Windows: an NRPT rule sends `.zerops` to the responder; every other name keeps the system's
//! own resolvers, so no upstreams are needed. The rule is a registry key, journaled before it is
//! written and deleted on down, exit and after a crash.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use winreg::enums::HKEY_LOCAL_MACHINE;
use winreg::RegKey;

use super::plan::{self, RegValue, NRPT_GROUP_POLICY};
use super::{HostDns, Mode};
use crate::host::{Change, Journal};

/// NRPT names servers by address only, so port 53; Windows answers on all of 127.0.0.0/8.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 153)), 53);

pub fn plan(mode: Mode, _listen: SocketAddr) -> Result<HostDns> {
    Ok(HostDns {
        mode: plan::scoped_mode(mode, "Windows")?,
        upstreams: Vec::new(),
    })
}

pub fn apply(plan: &HostDns, responder: SocketAddr, journal: &mut Journal) -> Result<()> {
    if plan.mode != Mode::Scoped {
        return Ok(());
    }
    // The rule is named after the journal that undoes it.
    let owner = journal
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .context("the journal has no name")?;
    let rule = plan::nrpt_rule(&owner, responder)?;
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    if hklm.open_subkey(NRPT_GROUP_POLICY).is_ok() {
        tracing::warn!("Group Policy sets NRPT rules on this machine; Windows ignores local ones like ours");
    }
    journal.record(plan::nrpt_change(&owner))?;
    let (key, _) = hklm
        .create_subkey(&rule.key)
        .with_context(|| format!("creating the NRPT rule HKLM\\{}", rule.key))?;
    for (name, value) in &rule.values {
        match value {
            RegValue::Dword(n) => key.set_value(name, n),
            RegValue::Text(text) => key.set_value(name, text),
            RegValue::MultiText(list) => key.set_value(name, list),
        }
        .with_context(|| format!("setting {name} of the NRPT rule"))?;
    }
    // Names looked up before the rule may be cached as missing.
    let _ = Command::new("ipconfig").arg("/flushdns").output();
    tracing::info!(key = %rule.key, %responder, "NRPT sends .zerops to the responder");
    Ok(())
}

/// Gives the tunnel adapter the search domain, so a bare `api` becomes `api.zerops` (which the
/// NRPT rule sends to the responder). The values live on the adapter's own keys, beside the
/// suffixes of every other adapter.
pub fn apply_link(mode: Mode, _responder: SocketAddr, interface: &str, journal: &mut Journal) -> Result<()> {
    if mode != Mode::Scoped {
        return Ok(());
    }
    let guid = crate::host::windows::adapter_guid(interface)
        .with_context(|| format!("finding the adapter {interface} to give it the search domain"))?;
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    for change in plan::adapter_search_list(interface, &guid) {
        journal.record(change.clone())?;
        if let Change::RegistryValue { key, name, .. } = &change {
            let (handle, _) = hklm
                .create_subkey(key)
                .with_context(|| format!("opening HKLM\\{key}"))?;
            handle
                .set_value(name, &plan::SEARCH_DOMAIN)
                .with_context(|| format!("setting {name} of HKLM\\{key}"))?;
        }
    }
    // What makes the DNS client re-read adapter settings (Tailscale found the same); it can take
    // seconds, and names work by their full name meanwhile, so it is not waited for.
    // Its words must not reach our stdout: a connection's daemon reports to `vpn up` there.
    let registerdns = Command::new("ipconfig")
        .arg("/registerdns")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = registerdns {
        tracing::warn!(error = %e, "ipconfig /registerdns did not start; bare names may wait for the next DNS refresh");
    }
    tracing::info!(%interface, domain = plan::SEARCH_DOMAIN, "bare names get the zerops suffix");
    Ok(())
}

/// The system's nameservers as hickory reads them, without `ours`.
pub(crate) use super::system_nameservers as host_nameservers;

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal of its own name in a fresh state directory, so that rules of parallel runs
    /// never meet.
    fn journal(dir: &std::path::Path, name: &str) -> Journal {
        Journal::create(&dir.join(format!("{name}{}.journal", std::process::id()))).unwrap()
    }

    #[test]
    fn the_nrpt_rule_is_journaled_written_as_planned_and_undone_by_restore() {
        if !crate::platform::is_elevated() {
            eprintln!("SKIPPED: HKEY_LOCAL_MACHINE needs an elevated process");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), "nrpt");
        let path = journal.path().to_path_buf();
        let owner = path.file_stem().unwrap().to_string_lossy().into_owned();
        let host = plan(Mode::Scoped, DEFAULT_LISTEN).unwrap();

        apply(&host, DEFAULT_LISTEN, &mut journal).unwrap();
        drop(journal);

        let rule = plan::nrpt_rule(&owner, DEFAULT_LISTEN).unwrap();
        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        let key = hklm.open_subkey(&rule.key).expect("the rule's key");
        for (name, value) in &rule.values {
            match value {
                RegValue::Dword(n) => assert_eq!(key.get_value::<u32, _>(name).unwrap(), *n, "{name}"),
                RegValue::Text(text) => assert_eq!(&key.get_value::<String, _>(name).unwrap(), text, "{name}"),
                RegValue::MultiText(list) => {
                    assert_eq!(&key.get_value::<Vec<String>, _>(name).unwrap(), list, "{name}")
                }
            }
        }
        assert_eq!(key.get_value::<String, _>("GenericDNSServers").unwrap(), "127.0.0.153");
        assert_eq!(key.get_value::<Vec<String>, _>("Name").unwrap(), [".zerops"]);
        let journaled = std::fs::read_to_string(&path).unwrap();
        let change: Change = serde_json::from_str(journaled.trim()).unwrap();
        assert_eq!(change, plan::nrpt_change(&owner), "journaled before it was written");
        drop(key);

        crate::host::restore(&path).unwrap();

        assert!(hklm.open_subkey(&rule.key).is_err(), "the rule is gone");
        assert!(!path.exists(), "and its journal");
    }

    #[test]
    fn the_tunnel_adapter_gets_the_search_domain_journaled_and_loses_it_when_undone() {
        if !crate::platform::is_elevated() {
            eprintln!("SKIPPED: HKEY_LOCAL_MACHINE needs an elevated process");
            return;
        }
        // An adapter of Wine's, standing in for the tunnel's (Wine names them as Linux does);
        // none such on Windows, whose real adapters a test leaves alone.
        let Some(adapter) = ["lo", "eth0"]
            .into_iter()
            .find(|name| crate::host::windows::adapter_guid(name).is_some())
        else {
            eprintln!("SKIPPED: no adapter named as under Wine");
            return;
        };
        let guid = crate::host::windows::adapter_guid(adapter).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut journal = journal(dir.path(), "link");
        let path = journal.path().to_path_buf();

        apply_link(Mode::Scoped, DEFAULT_LISTEN, adapter, &mut journal).unwrap();
        drop(journal);

        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        let planned = plan::adapter_search_list(adapter, &guid);
        assert_eq!(planned.len(), 2, "IPv4 and IPv6");
        for change in &planned {
            let Change::RegistryValue { key, name, .. } = change else {
                panic!("{change:?}")
            };
            let value: String = hklm.open_subkey(key).unwrap().get_value(name).unwrap();
            assert_eq!(value, "zerops", "{key}");
        }
        let journaled: Vec<Change> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(journaled, planned, "each journaled before it is set");

        for change in &planned {
            crate::host::undo(change).unwrap();
            let Change::RegistryValue { key, name, .. } = change else {
                unreachable!()
            };
            let left = hklm.open_subkey(key).unwrap().get_value::<String, _>(name);
            assert!(left.is_err(), "{key}\\{name} is removed");
        }
    }
}
