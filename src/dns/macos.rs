//! macOS: `/etc/resolver/zerops` sends the zone to the responder; every other name keeps the
//! system's own resolvers, so no upstreams are needed. The file is journaled as one we created
//! and removed on down, exit and after a crash.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::plan::{self, RESOLVER_FILE, RESOLVER_MARKER};
use super::{HostDns, Mode};
use crate::host::Journal;

/// lo0 has no loopback address but 127.0.0.1, where port 53 may be taken (and 5353 is
/// mDNSResponder's); resolver(5) takes a port, so the responder gets one of its own.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53053);

pub fn plan(mode: Mode, _listen: SocketAddr) -> Result<HostDns> {
    Ok(HostDns {
        mode: plan::scoped_mode(mode, "macOS")?,
        upstreams: Vec::new(),
    })
}

/// Refuses to replace a resolver file for the zone that is not ours: another tool sends
/// `.zerops` elsewhere, and its file is not ours to remove later.
pub fn apply(plan: &HostDns, responder: SocketAddr, journal: &mut Journal) -> Result<()> {
    if plan.mode != Mode::Scoped {
        return Ok(());
    }
    let path = Path::new(RESOLVER_FILE);
    match fs::read_to_string(path) {
        Ok(current) if !current.contains(RESOLVER_MARKER) => bail!(
            "{RESOLVER_FILE} exists and is not corridor's: another tool sends .zerops names elsewhere; \
             move it away, or connect with `--dns off`"
        ),
        _ => {}
    }
    journal.record(plan::resolver_change())?;
    fs::create_dir_all("/etc/resolver").context("creating /etc/resolver")?;
    fs::write(path, plan::resolver_file(responder)).with_context(|| format!("writing {RESOLVER_FILE}"))?;
    tracing::info!(path = RESOLVER_FILE, %responder, "the zerops zone goes to the responder");
    Ok(())
}

/// The resolver file is one per host; nothing is set per link.
pub fn apply_link(_mode: Mode, _responder: SocketAddr, _interface: &str, _journal: &mut Journal) -> Result<()> {
    Ok(())
}

/// The system's nameservers as hickory reads them, without `ours`.
pub(crate) use super::system_nameservers as host_nameservers;
