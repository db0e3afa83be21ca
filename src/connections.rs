//! The connections on this machine as their commands see them, from outside their daemons:
//! which run, their status, stopping one (or all), and cleaning up after one that crashed.
//! `vpn up` (`vpn.rs`) and the key commands (`vpn_keys.rs`) both use it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::daemon::{control, Status};
use crate::dns;
use crate::host;
use crate::paths::ConnectionFiles;
use crate::platform::{self, Pid, Stop, UntrustedServer};
use crate::project_id::ProjectId;
use crate::report::{Progress, Report};

/// Disconnects `project` (name or id), or every connection; returns the projects disconnected.
pub async fn down(project: Option<&str>, report: &mut dyn Report) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (id, files) in ConnectionFiles::all() {
        let name = saved_status(&files).map(|s| s.project_name);
        if project.is_some_and(|p| p != id.as_str() && Some(p) != name.as_deref()) {
            continue;
        }
        down_one(&id, &files).await?;
        let name = name.unwrap_or_else(|| id.to_string());
        report.progress(Progress::Disconnected { project: &name });
        done.push(name);
    }
    if done.is_empty() {
        report.progress(Progress::NotConnected { project });
    }
    // A DNS service that died with no connection left still holds the resolver.
    dns::service::repair().await?;
    Ok(done)
}

/// The status of every connection this user may see.
pub async fn status(report: &mut dyn Report) -> Result<Vec<Status>> {
    clean_up_crashed(report).await;
    let mut statuses = Vec::new();
    for (id, files) in ConnectionFiles::all() {
        match control::request(&files.socket, control::Command::Status).await {
            Ok(status) => statuses.push(status),
            Err(e) if UntrustedServer::is_cause_of(&e) => report.progress(Progress::Warning(format!(
                "connection {id}: {e:#}; corridor neither talks to it nor replays its journal"
            ))),
            Err(e) if !daemon_gone(&id, &files, &e) => report.progress(Progress::Warning(format!(
                "connection {id} is up, but its control socket is not yours: `sudo corridor vpn status` shows it"
            ))),
            Err(_) => {}
        }
    }
    Ok(statuses)
}

/// Whether a `vpn up` connection to the project runs: its daemon answers, or (its socket being
/// another user's, say root's) the pid it recorded is that project's daemon.
pub async fn connection_running(id: &ProjectId) -> bool {
    let files = ConnectionFiles::for_project(id);
    match control::request(&files.socket, control::Command::Status).await {
        Ok(_) => true,
        Err(e) => !daemon_gone(id, &files, &e),
    }
}

/// Stops one connection: asks its daemon, waits for it, then replays whatever journal is left
/// (all of it, if the daemon had crashed).
pub async fn down_one(id: &ProjectId, files: &ConnectionFiles) -> Result<()> {
    let asked = control::request(&files.socket, control::Command::Down).await;
    if let Err(e) = &asked {
        if UntrustedServer::is_cause_of(e) {
            bail!("not stopping connection {id}: {e:#}");
        }
    }
    if let Ok(status) = asked {
        // The pid comes from a socket: signal it only if it is this project's daemon.
        if let Some(pid) = Pid::new(status.pid).filter(|&pid| platform::process_is_daemon_of(pid, id.as_str())) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while platform::process_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if platform::process_alive(pid) {
                tracing::warn!(pid = pid.get(), "daemon did not stop in time; killing it");
                let _ = platform::signal_stop(pid, Stop::Now);
            }
        }
    }
    host::restore(&files.journal).with_context(|| format!("restoring the host after connection {id}"))?;
    for path in [&files.socket, &files.state] {
        let _ = std::fs::remove_file(path);
    }
    // A daemon killed before it could unregister leaves its names with the DNS service.
    dns::service::forget(id.as_str()).await
}

/// Connections whose daemon is gone (killed, crashed, rebooted) are undone quietly.
pub async fn clean_up_crashed(report: &mut dyn Report) {
    for (id, files) in ConnectionFiles::all() {
        let Err(e) = control::request(&files.socket, control::Command::Status).await else {
            continue;
        };
        if daemon_gone(&id, &files, &e) {
            match down_one(&id, &files).await {
                Ok(()) => tracing::info!(project = %id, "cleaned up after a connection that had stopped"),
                Err(e) => report.progress(Progress::Warning(format!("{e:#}"))),
            }
        }
    }
}

/// A daemon that does not answer is gone unless its socket only refused us (another user's
/// connection) or the pid it recorded is still this project's daemon: only then may its
/// journal be replayed.
fn daemon_gone(id: &ProjectId, files: &ConnectionFiles, error: &anyhow::Error) -> bool {
    let refused_us = error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    let daemon_runs = saved_status(files)
        .and_then(|s| Pid::new(s.pid))
        .is_some_and(|pid| platform::process_alive(pid) && platform::process_is_daemon_of(pid, id.as_str()));
    !refused_us && !daemon_runs
}

fn saved_status(files: &ConnectionFiles) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(&files.state).ok()?).ok()
}
