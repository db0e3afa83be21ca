//! `corridor doctor`: what a connection needs, checked one thing at a time, each with its fix.
//!
//! [`run`] = [`gather`], which asks the machine, the platform and the running daemons (the only
//! part with IO), then [`evaluate`], a pure function from those facts to checks.

mod checks;
mod probes;

use std::net::IpAddr;

use anyhow::Result;
use serde::Serialize;

use crate::account::{self, ApiSettings};
use crate::api::ApiError;
use crate::daemon::Status;
use crate::dns::Mode;
use crate::host::Readiness;
use crate::store::Store;

pub use checks::evaluate;
pub use probes::gather;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about it, when it is not ok.
    pub fix: Option<String>,
}

/// What [`gather`] found out.
#[derive(Debug)]
pub struct Facts {
    /// What the tunnel needs from this OS.
    pub host: Readiness,
    /// The host resolver integration, or why `vpn up` could not plan one.
    pub resolver: Result<Resolver, String>,
    pub api_base: String,
    pub api: Result<String, ApiError>,
    /// Platform clock minus ours, in seconds; `None` when the API sent no usable `Date`.
    pub clock_skew_secs: Option<f64>,
    pub connections: Vec<ConnectionFacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// A connection uses this mode now.
    InUse(Mode),
    /// The mode `vpn up` would use, and whether this process may apply it.
    WouldUse { mode: Mode, can_apply: bool },
}

#[derive(Debug)]
pub struct ConnectionFacts {
    pub status: Status,
    /// The responder's answer for the probe name, asked directly.
    pub responder: Option<Result<IpAddr, String>>,
    /// The system resolver's answer for the same name.
    pub system: Result<IpAddr, String>,
    /// Full-size packets through the tunnel (`None`: not measured, no target or no `ping`).
    pub path_mtu: Option<MtuProbe>,
    /// Routes, rules and addresses of the host that take project addresses elsewhere.
    pub route_clashes: RouteClashes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteClashes {
    /// Each clash, as `vpn up` words it; none is a pass.
    Found(Vec<String>),
    /// This platform's routing table is not read yet.
    NotChecked,
    Unreadable(String),
}

/// Pings with "don't fragment" through the tunnel to the project's DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuProbe {
    pub target: IpAddr,
    pub mtu: u16,
    pub full_size: bool,
    /// Whether packets of the IPv6 minimum MTU pass (asked only when full-size ones do not).
    pub minimum: bool,
}

/// IPv6's minimum link MTU: every path carries packets of this size.
pub const MINIMUM_MTU: u16 = 1280;

/// A handshake older than this means the session is gone (WireGuard rekeys every 2 minutes
/// while traffic flows, and keepalives keep it flowing).
pub const HANDSHAKE_STALE_SECS: f64 = 180.0;
/// More skew than this breaks TLS to the platform and makes logs hard to line up.
pub const CLOCK_SKEW_LIMIT_SECS: f64 = 60.0;

/// Every check, in order; the caller decides what a failed one means for the exit status.
pub async fn run(api: ApiSettings) -> Result<Vec<Check>> {
    let store = Store::open()?;
    let token = store.token()?;
    let logged_in = token.is_some();
    let client = account::client_with_token(&store, api, token.unwrap_or_default()).await?;
    Ok(evaluate(&gather(&client, logged_in).await))
}
