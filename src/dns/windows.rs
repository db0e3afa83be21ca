//! Windows: an NRPT rule for `.zerops`, tagged with our comment so it can always be found and
//! removed (`remove_rules`); every other name keeps the system's own resolvers.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{HostDns, Mode};
use crate::host::Journal;

const TAG: &str = "corridor";

pub fn plan(mode: Mode, _listen: SocketAddr) -> Result<HostDns> {
    let mode = match mode {
        Mode::Auto | Mode::ResolvConf => Mode::ResolvConf,
        Mode::Resolved => bail!("systemd-resolved is Linux only; use --dns auto on Windows"),
        Mode::Off => Mode::Off,
    };
    Ok(HostDns {
        mode,
        upstreams: Vec::new(),
    })
}

/// NRPT only takes port-53 servers. The rule is not a file, so the journal has no record for it:
/// the daemon calls `remove_rules` on exit and before connecting.
pub fn apply(plan: &HostDns, responder: SocketAddr, _interface: &str, _journal: &mut Journal) -> Result<()> {
    if plan.mode != Mode::ResolvConf {
        return Ok(());
    }
    remove_rules()?;
    powershell(&format!(
        "Add-DnsClientNrptRule -Namespace '.zerops' -NameServers '{}' -Comment '{TAG}'",
        responder.ip()
    ))
}

pub fn remove_rules() -> Result<()> {
    powershell(&format!(
        "Get-DnsClientNrptRule | Where-Object {{ $_.Comment -eq '{TAG}' }} | Remove-DnsClientNrptRule -Force"
    ))
}

fn powershell(script: &str) -> Result<()> {
    let out = Command::new("powershell")
        .args(["-NoProfile", "-NonInteractive", "-Command", script])
        .output()
        .context("running powershell")?;
    if !out.status.success() {
        bail!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The system's nameservers as hickory reads them, without `ours`.
pub fn host_nameservers(ours: std::net::IpAddr) -> Vec<std::net::SocketAddr> {
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| {
            config
                .name_servers()
                .iter()
                .filter(|ns| ns.ip != ours)
                .map(|ns| std::net::SocketAddr::new(ns.ip, 53))
                .collect()
        })
        .unwrap_or_default()
}
