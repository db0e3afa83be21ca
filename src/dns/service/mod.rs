//! One responder per host, in its own process (`corridor-daemon dns-service`), for every connected
//! project. A connection that needs names starts it as it begins, if none runs; daemons register
//! their project (id, name, DNS address, when it connected, their pid and interface) once their
//! tunnel carries traffic and unregister on the way down. The service owns the host resolver
//! rewrite (resolv-conf mode), made at the first registration, under its own journal, and puts
//! it back when another program changes it (`watch`, once a second); in resolved mode each
//! daemon points its own link at the service, and the service puts the link's settings back
//! after a reset.
//! Projects whose daemon died are dropped (checked on every request and once a second); when the
//! last one is gone the service restores the resolver and exits. A service that died leaves its
//! journal, which the next `vpn up` or `vpn down` replays.
//!
//! `client` is what daemons and `vpn up`/`down` call; `server` is the service process.

mod client;
mod server;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{DnsStats, Mode, ProjectDns};

pub use client::{ensure_running, forget, repair, request};
pub use server::main;

/// The word in the service's command line that names it (see `platform::process_is_daemon_of`).
pub const SUBCOMMAND: &str = "dns-service";
/// How long the service waits for its first project before it gives up.
const FIRST_REGISTRATION: Duration = Duration::from_secs(30);
/// How often dead daemons are looked for between requests.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(3);

/// A request on the service's control socket, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Register { project: Registration },
    Unregister { id: String },
    Status,
}

/// A project as its daemon registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    #[serde(flatten)]
    pub project: ProjectDns,
    pub daemon_pid: u32,
    /// The connection's tunnel interface, whose resolver settings (resolved mode) are watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// The answer to every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub pid: u32,
    pub mode: Mode,
    pub listen: SocketAddr,
    /// In the order bare names are asked.
    pub projects: Vec<Registration>,
    #[serde(flatten)]
    pub stats: DnsStats,
}

/// The registered projects; no I/O (liveness is asked through a closure).
#[derive(Debug, Default)]
pub struct Registry {
    entries: Vec<Registration>,
}

impl Registry {
    /// Adds a project, replacing an earlier registration of the same id.
    pub fn register(&mut self, registration: Registration) {
        self.unregister(&registration.project.id);
        self.entries.push(registration);
    }

    pub fn unregister(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.project.id != id);
        self.entries.len() != before
    }

    /// Drops the projects whose daemon is gone; returns their ids.
    pub fn prune(&mut self, alive: impl Fn(&Registration) -> bool) -> Vec<String> {
        let (kept, dropped): (Vec<_>, Vec<_>) = self.entries.drain(..).partition(|e| alive(e));
        self.entries = kept;
        dropped.into_iter().map(|e| e.project.id).collect()
    }

    pub fn projects(&self) -> Vec<ProjectDns> {
        self.entries.iter().map(|e| e.project.clone()).collect()
    }

    pub fn interfaces(&self) -> Vec<String> {
        self.entries.iter().filter_map(|e| e.interface.clone()).collect()
    }

    pub fn registrations(&self) -> &[Registration] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Unix milliseconds, for `ProjectDns::connected_at`.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(id: &str, pid: u32, connected_at: u64) -> Registration {
        Registration {
            project: ProjectDns {
                id: id.into(),
                name: id.into(),
                dns: "10.0.0.1:53".parse().unwrap(),
                connected_at,
                priority: 0,
            },
            daemon_pid: pid,
            interface: None,
        }
    }

    #[test]
    fn registering_again_replaces_and_dead_daemons_are_pruned() {
        let mut registry = Registry::default();
        registry.register(registration("demo", 10, 1));
        registry.register(registration("other", 20, 2));
        registry.register(registration("demo", 30, 3));

        assert_eq!(registry.registrations().len(), 2);
        assert_eq!(registry.projects()[1].connected_at, 3);

        let dropped = registry.prune(|r| r.daemon_pid != 20);
        assert_eq!(dropped, ["other"]);
        assert!(registry.unregister("demo"));
        assert!(!registry.unregister("demo"));
        assert!(registry.is_empty());
    }

    #[test]
    fn requests_and_answers_are_one_json_line_each() {
        let request = Request::Register {
            project: registration("demo", 42, 7),
        };
        let line = serde_json::to_string(&request).unwrap();

        assert!(!line.contains('\n'));
        assert!(line.contains(r#""op":"register""#), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Request::Register { project } if project == registration("demo", 42, 7)));
        let unregister: Request = serde_json::from_str(r#"{"op":"unregister","id":"demo"}"#).unwrap();
        assert!(matches!(unregister, Request::Unregister { id } if id == "demo"));
    }
}
