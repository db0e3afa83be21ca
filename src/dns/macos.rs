//! macOS: `/etc/resolver/zerops` sends the zone to the responder; every other name keeps the
//! system's own resolvers, so no upstreams are needed.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{HostDns, Mode};
use crate::host::{Change, Journal};

const RESOLVER_FILE: &str = "/etc/resolver/zerops";

pub fn plan(mode: Mode, _listen: SocketAddr) -> Result<HostDns> {
    let mode = match mode {
        Mode::Auto | Mode::ResolvConf => Mode::ResolvConf,
        Mode::Resolved => bail!("systemd-resolved is Linux only; use --dns auto on macOS"),
        Mode::Off => Mode::Off,
    };
    Ok(HostDns {
        mode,
        upstreams: Vec::new(),
    })
}

/// The file is journaled like any rewritten file; a file that did not exist is backed up empty,
/// and an empty resolver file sends nothing anywhere.
pub fn apply(plan: &HostDns, responder: SocketAddr, _interface: &str, journal: &mut Journal) -> Result<()> {
    if plan.mode != Mode::ResolvConf {
        return Ok(());
    }
    let path = Path::new(RESOLVER_FILE);
    let original = fs::read(path).unwrap_or_default();
    let backup = journal.path().with_extension("resolver.orig");
    fs::write(&backup, &original).with_context(|| format!("writing {}", backup.display()))?;
    journal.record(Change::File {
        path: path.to_path_buf(),
        backup,
        marker: None,
    })?;
    fs::create_dir_all("/etc/resolver").context("creating /etc/resolver")?;
    let content = format!(
        "# Written by corridor while a VPN is connected.\nnameserver {}\nport {}\n",
        responder.ip(),
        responder.port()
    );
    fs::write(path, content).with_context(|| format!("writing {RESOLVER_FILE}"))
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
