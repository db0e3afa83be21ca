//! Names inside the tunnel (DESIGN §5): one responder per host on a loopback address, forwarding
//! `zerops.` to the connected projects' DNS servers and everything else to the host's original
//! upstreams, and the host resolver integration that points the system at it.
//!
//! The responder runs in its own process (`service`), whose order keeps the host from pointing
//! at a responder that is not yet running and reads the original upstreams before the rewrite
//! hides them: `plan_host` (reads, changes nothing) → `Responder::start` (with the plan's
//! upstreams) → `configure_host` (journaled) → `watch` (once a second: put back what another
//! program changed, its version becoming the backup) → … → `Responder::shutdown` →
//! `host::restore`.

mod cache;
mod engine;
mod message;
pub mod plan;
mod responder;
pub mod service;
#[cfg(test)]
mod tests;
mod upstream;
pub mod watch;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as platform;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as platform;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use engine::ProjectDns;
pub use message::{addresses, query};
/// Where the responder listens by default (each platform's reason is beside its value).
pub use platform::DEFAULT_LISTEN;
pub use responder::Responder;

use crate::host::Journal;

/// The zone served by the project's DNS.
pub const PROJECT_ZONE: &str = "zerops.";

pub struct ResponderConfig {
    /// A local address only (loopback, or the tunnel's own address); queries from other sources
    /// are dropped.
    pub listen: SocketAddr,
    /// The projects whose DNS servers (`project.ipv4.network.gateway`, port 53, reached
    /// through their tunnels) answer names under `zerops.`.
    pub projects: Vec<ProjectDns>,
    /// Where names outside `zerops.` go, tried in order; empty answers them REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// How long a query may wait for upstreams in total before it is answered SERVFAIL.
    pub upstream_timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStats {
    /// Well-formed queries received.
    pub queries: u64,
    /// Queries answered with an upstream's (or the cache's) answer, REFUSED included.
    pub answered: u64,
    /// Queries answered SERVFAIL because no upstream answered in time.
    pub failures: u64,
    pub cache_hits: u64,
    pub last_error: Option<String>,
    /// The host resolver's watch (the service's, not the responder's).
    #[serde(flatten)]
    pub resolver: watch::WatchStatus,
}

/// How the host's resolver is pointed at the responder (`--dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Mode {
    /// systemd-resolved when /etc/resolv.conf points at it, else resolv-conf (Linux); the
    /// platform's own split DNS elsewhere.
    #[default]
    Auto,
    /// Per-link DNS on the tunnel interface with the routing domain `~zerops`.
    Resolved,
    /// /etc/resolv.conf rewritten in place; the responder forwards every other name.
    ResolvConf,
    /// The platform's own per-domain resolver: `/etc/resolver/zerops` on macOS, an NRPT rule
    /// on Windows.
    Scoped,
    /// Leave the host's resolver alone.
    Off,
}

/// What the host integration will do; from `plan_host`, before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDns {
    /// The mode to use; never `Auto`.
    pub mode: Mode,
    /// The host's original nameservers, for `ResponderConfig::upstreams` (resolv-conf mode only;
    /// empty otherwise, since the host's resolver keeps handling every other name itself).
    pub upstreams: Vec<SocketAddr>,
}

/// Resolves `Auto` and reads the original upstreams; changes nothing. `listen` is the responder's
/// address, never taken as an upstream. Fails when the resolver still carries corridor's own
/// rewrite (a crash whose journal was lost), since backing that up would make it permanent.
pub fn plan_host(mode: Mode, listen: SocketAddr) -> Result<HostDns> {
    platform::plan(mode, listen)
}

/// Whether this process may point the host's resolver at the responder in `mode` (`doctor` asks
/// before `vpn up` would try).
pub fn may_configure(mode: Mode) -> bool {
    match mode {
        // Opened for writing, not written: whether this process may rewrite it.
        Mode::ResolvConf => std::fs::OpenOptions::new()
            .write(true)
            .open(crate::host::allowed::RESOLV_CONF)
            .is_ok(),
        Mode::Resolved | Mode::Scoped => crate::platform::is_elevated(),
        Mode::Off | Mode::Auto => true,
    }
}

/// Points the host's resolver at the running responder; every change is journaled before it is
/// made, so `host::restore` undoes it.
pub fn configure_host(plan: &HostDns, responder: SocketAddr, journal: &mut Journal) -> Result<()> {
    platform::apply(plan, responder, journal)
}

/// What the resolver needs on each tunnel interface (`interface`) in `mode`: systemd-resolved's
/// link DNS on Linux, the adapter's search domain on Windows, nothing on macOS. Journaled where
/// it outlives the interface.
pub fn configure_link(mode: Mode, responder: SocketAddr, interface: &str, journal: &mut Journal) -> Result<()> {
    platform::apply_link(mode, responder, interface, journal)
}

/// The system's nameservers as hickory's system-config reader finds them, without `ours` (the
/// responder's address). macOS and Windows use it; Linux reads resolv.conf itself.
#[cfg(not(target_os = "linux"))]
pub(crate) fn system_nameservers(ours: std::net::IpAddr) -> Vec<SocketAddr> {
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| {
            config
                .name_servers()
                .iter()
                .filter(|ns| ns.ip != ours)
                .map(|ns| SocketAddr::new(ns.ip, 53))
                .collect()
        })
        .unwrap_or_default()
}

/// The host's own nameservers, for what the responder must not answer itself: the original
/// ones when corridor's rewrite is in place, never the responder.
pub fn host_nameservers() -> Vec<SocketAddr> {
    platform::host_nameservers(DEFAULT_LISTEN.ip())
}

/// `host:port` or `ip:port` to an address without the system resolver, which may point at a
/// responder that is not running (a crashed connection's leftover rewrite).
pub async fn resolve_endpoint(endpoint: &str) -> Result<SocketAddr> {
    upstream::resolve_endpoint(endpoint, &host_nameservers()).await
}
