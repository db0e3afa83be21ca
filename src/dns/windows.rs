//! Windows: an NRPT rule sends `.zerops` to the responder; every other name keeps the system's
//! own resolvers, so no upstreams are needed. The rule is a registry key, journaled before it is
//! written and deleted on down, exit and after a crash.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

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
    if let Err(e) = Command::new("ipconfig").arg("/registerdns").spawn() {
        tracing::warn!(error = %e, "ipconfig /registerdns did not start; bare names may wait for the next DNS refresh");
    }
    tracing::info!(%interface, domain = plan::SEARCH_DOMAIN, "bare names get the zerops suffix");
    Ok(())
}

/// The system's nameservers as hickory reads them, without `ours`.
pub(crate) use super::system_nameservers as host_nameservers;
