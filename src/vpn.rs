//! `vpn up` and `vpn recheck`: the command side of a connection (`vpn down` and `vpn status` are
//! in `connections.rs`). It talks to the platform and to daemons; it never holds a tunnel itself
//! (except with --foreground).
//! It reports through [`Report`] and returns data; rendering is the CLI's.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::account::{self, ApiSettings};
use crate::api::{self, Client};
use crate::connections;
use crate::daemon::{self, control, DaemonConfig, StartupEvent, Status};
use crate::dns;
use crate::host;
use crate::paths::ConnectionFiles;
use crate::platform::{self, Pid, Stop};
use crate::report::{Progress, Report};
use crate::store::Store;

/// What `vpn up` is asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Project name or id; `None` asks.
    pub project: Option<String>,
    pub mtu: u16,
    /// Replace a running connection to the same project without asking.
    pub auto_disconnect: bool,
    /// Serve in this process until stopped, instead of in a background daemon.
    pub foreground: bool,
    pub interface: Option<String>,
    /// Seconds to wait for the tunnel to carry traffic.
    pub timeout_secs: u64,
    pub dns: dns::Mode,
    pub keepalive_secs: u16,
    /// Bare names go to the highest priority connection first (`--dns-priority`).
    pub dns_priority: i32,
}

/// Connects; reports the connection once it carries traffic and returns its status then (with
/// `foreground`, once it has been stopped again).
pub async fn up(api: ApiSettings, options: UpOptions, report: &mut dyn Report) -> Result<Status> {
    // Cheap checks first: nothing is registered for a machine that cannot build the tunnel.
    host::preflight(false)?;
    platform::daemon_exe()?;
    connections::clean_up_crashed(report).await;
    if let Err(e) = dns::service::repair().await {
        report.progress(Progress::Warning(format!("{e:#}")));
    }
    let store = Store::open()?;
    let client = account::client(&store, api).await?;
    let project = account::choose_project(&client, options.project.as_deref(), report).await?;
    let files = ConnectionFiles::for_project(&project.id);
    if let Ok(running) = control::request(&files.socket, control::Command::Status).await {
        replace_or_refuse(&running, options.auto_disconnect, report)?;
        connections::down_one(&project.id, &files).await?;
    }

    let keys = store.project_key(&project.id)?;
    let item = account::register_key(&client, &project, &keys, "this machine's key").await?;
    report.progress(Progress::KeyRegistered { project: &project.name });
    let vpn = item.to_config().context("the platform's VPN answer")?;
    host::preflight(vpn.addresses.iter().any(|a| a.addr().is_ipv6()))?;
    report_route_clashes(&vpn.allowed_networks, item.dns_server().ok(), report);
    // The DNS address is read only to set DNS up: an answer without one still connects.
    let (dns, dns_missing) = match options.dns {
        dns::Mode::Off => (None, None),
        _ => match item.dns_server() {
            Ok(addr) => (Some(addr), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let config = DaemonConfig {
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        interface: options.interface.clone(),
        mtu: options.mtu,
        keepalive_secs: options.keepalive_secs,
        handshake_timeout_secs: options.timeout_secs,
        private_key: keys.secret.clone(),
        server_public_key: x25519_dalek::PublicKey::from(vpn.server_public_key),
        endpoint: vpn.endpoint.clone(),
        addresses: vpn.addresses.clone(),
        networks: vpn.allowed_networks.clone(),
        dns,
        dns_mode: options.dns,
        dns_priority: options.dns_priority,
        probe_targets: vpn.gateways.clone(),
        path_reprobe_secs: crate::tunnel::pmtu::reprobe_period().as_secs(),
        platform: store.token()?.map(|token| daemon::heal::PlatformAccess {
            api: client.base().to_string(),
            token,
        }),
    };
    if let Some(reason) = &dns_missing {
        report.progress(Progress::DnsSkipped { reason });
    }

    if options.foreground {
        let mut ready = None;
        let mut events = |event: &StartupEvent| match event {
            StartupEvent::Ready { status } => {
                report.progress(Progress::Connected(status));
                ready = Some((**status).clone());
            }
            other => report.progress(Progress::Connection(other)),
        };
        daemon::run(config, files, &mut events).await?;
        return ready.context("stopped before the tunnel was ready");
    }
    spawn_daemon(&config, &files, Duration::from_secs(options.timeout_secs + 10), report)
}

/// Says, before the routes are added, where the host would take project addresses elsewhere; the
/// connection goes ahead (the clash may be intended, and the rest of the project works).
fn report_route_clashes(networks: &[ipnet::IpNet], dns: Option<std::net::IpAddr>, report: &mut dyn Report) {
    match host::route_clashes(networks, None) {
        Ok(Some(clashes)) => {
            for clash in &clashes {
                tracing::warn!(%clash, "route clash");
                report.progress(Progress::RouteClash(clash));
            }
            if let Some(dns) = dns.filter(|dns| clashes.iter().any(|c| c.affected.contains(dns))) {
                report.progress(Progress::Warning(format!(
                    "the project's DNS server {dns} is among those addresses: the project's names will not resolve"
                )));
            }
        }
        Ok(None) => tracing::debug!("route clashes are not checked on this platform"),
        Err(e) => report.progress(Progress::Warning(format!("{e:#}: route clashes not checked"))),
    }
}

/// `corridor vpn recheck`, run by a daemon whose gateway stopped answering: is the key still
/// registered (else it is registered again), and what does the project's side look like now?
pub async fn recheck(request: daemon::heal::RecheckRequest) -> daemon::heal::Recheck {
    use daemon::heal::Recheck;
    let project = &request.project_name;
    let client = match Client::new(&request.access.api, Some(request.access.token.clone()))
        .and_then(|c| c.with_timeouts(api::CONNECT_TIMEOUT, Duration::from_secs(10)))
    {
        Ok(client) => client,
        Err(e) => return refusal(&e, project),
    };
    let id = &request.project_id;
    let (item, reregistered) = match client.vpn_key(id, &request.public_key).await {
        Ok(item) => (item, false),
        Err(e) if e.code() == Some("vpnPublicKeyNotFound") || (e.is_not_found() && e.code().is_none()) => {
            tracing::info!(%project, "the key is gone from the project; registering it again");
            match client.register_vpn_key(id, &request.public_key).await {
                Ok(item) => (item, true),
                Err(e) => return refusal(&e, project),
            }
        }
        Err(e) => return refusal(&e, project),
    };
    let vpn = match item.to_config() {
        Ok(vpn) => vpn,
        Err(e) => {
            return Recheck::Unreachable {
                problem: format!("the platform's VPN answer: {e}"),
            }
        }
    };
    let answer = daemon::heal::Answer {
        server_public_key: crate::keys::encode(&vpn.server_public_key),
        endpoint: vpn.endpoint,
        addresses: vpn.addresses,
        networks: vpn.allowed_networks,
    };
    match reregistered {
        true => Recheck::Reregistered { answer },
        false => Recheck::Registered { answer },
    }
}

/// What a failed call to the platform means for a running connection, with its fix.
fn refusal(e: &api::ApiError, project: &str) -> daemon::heal::Recheck {
    use daemon::heal::Recheck;
    let reconnect = format!("`sudo corridor vpn up {project} --auto-disconnect`");
    if e.is_auth() {
        return Recheck::Refused {
            problem: format!("the platform refused the token: {e}"),
            fix: format!("`corridor login --token <token>` with a new personal access token, then {reconnect}"),
        };
    }
    match e.status() {
        Some(403) => Recheck::Refused {
            problem: format!("no permission for project {project}'s VPN: {e}"),
            fix: format!("ask the project's owner for access, or log in with a token that has it, then {reconnect}"),
        },
        Some(404) => Recheck::Refused {
            problem: format!("project {project} is gone or no longer yours: {e}"),
            fix: "`sudo corridor vpn down`, then `corridor vpn up` another project".into(),
        },
        _ => Recheck::Unreachable { problem: e.to_string() },
    }
}

/// Variables the daemon must not inherit: it needs no token, and a token in a long-lived
/// process's environment is readable for its whole life.
const NOT_FOR_THE_DAEMON: [&str; 2] = [crate::store::TOKEN_ENV, crate::store::ZEROPS_TOKEN_ENV];

/// Starts the daemon in its own session and follows its progress until it is ready.
fn spawn_daemon(
    config: &DaemonConfig,
    files: &ConnectionFiles,
    timeout: Duration,
    report: &mut dyn Report,
) -> Result<Status> {
    if let Some(dir) = files.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
    let input = serde_json::to_vec(config)?;
    let args = ["--project", config.project_id.as_str()];
    let platform::Helper { mut child, stdout } =
        platform::spawn_helper(&args, Some(&input), log, &NOT_FOR_THE_DAEMON, "the corridor daemon")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<StartupEvent>(&line) {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(StartupEvent::Ready { status }) => {
                report.progress(Progress::Connected(&status));
                return Ok(*status);
            }
            Ok(StartupEvent::Failed { error }) => {
                let _ = child.wait();
                bail!("{error}\n(daemon log: {})", files.log.display());
            }
            Ok(event) => report.progress(Progress::Connection(&event)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                bail!(
                    "the daemon exited ({status}) before it was ready; its log is {}",
                    files.log.display()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // It undoes its own host changes when asked to stop.
                if let Some(pid) = Pid::new(child.id()) {
                    let _ = platform::signal_stop(pid, Stop::Gracefully);
                }
                let _ = child.wait();
                bail!(
                    "the tunnel was not ready within {}s; the daemon log is {}",
                    timeout.as_secs(),
                    files.log.display()
                );
            }
        }
    }
}

fn replace_or_refuse(running: &Status, auto_disconnect: bool, report: &mut dyn Report) -> Result<()> {
    if auto_disconnect {
        return Ok(());
    }
    let question = format!(
        "already connected to {}; disconnect and reconnect?",
        running.project_name
    );
    if report.confirm(&question) == Some(true) {
        return Ok(());
    }
    bail!(
        "already connected to {} on {}: run `corridor vpn down` first, or pass --auto-disconnect",
        running.project_name,
        running.interface
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemon::heal::Recheck;

    #[test]
    fn each_refusal_names_its_cause_and_its_fix() {
        let platform = |status: u16, code: &str| api::ApiError::Platform {
            status,
            code: code.into(),
            message: "refused".into(),
        };
        let cases = [
            (
                platform(401, "tokenExpired"),
                "refused the token",
                "corridor login --token",
            ),
            (
                platform(403, "insufficientPermissions"),
                "no permission",
                "ask the project's owner",
            ),
            (
                platform(404, "projectNotFound"),
                "project demo is gone",
                "corridor vpn down",
            ),
        ];
        for (error, problem_text, fix_text) in cases {
            let Recheck::Refused { problem, fix } = refusal(&error, "demo") else {
                panic!("{error} is a refusal");
            };
            assert!(problem.contains(problem_text), "{problem}");
            assert!(fix.contains(fix_text), "{fix}");
        }
        let timeout = api::ApiError::Timeout {
            url: "http://198.18.0.1:8080".into(),
        };
        assert!(matches!(refusal(&timeout, "demo"), Recheck::Unreachable { .. }));
        assert!(matches!(
            refusal(&platform(500, "internalServerError"), "demo"),
            Recheck::Unreachable { .. }
        ));
    }
}
