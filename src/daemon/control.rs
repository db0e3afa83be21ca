//! The control socket: one JSON request line, one JSON answer line (the daemon's status).
//! Mode 0600: only the user who started the connection (root under sudo) may talk to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Status,
    Down,
}

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn bind(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // Under sudo the connection belongs to the user who asked for it: their `corridor vpn
    // status` and `vpn down` work without sudo.
    if let Some((uid, gid)) = sudo_ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the sudo user", path.display()))?;
    }
    Ok(listener)
}

fn sudo_ids() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let id = |name| std::env::var(name).ok()?.parse().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// Answers one client with `status`; returns what it asked for. A client that sends nothing
/// sensible within the timeout gets nothing and changes nothing.
pub async fn answer(stream: UnixStream, status: Status) -> Option<Command> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, BufReader::new(read).read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    let command: Command = serde_json::from_str(line.trim()).ok()?;
    let mut answer = serde_json::to_vec(&status).ok()?;
    answer.push(b'\n');
    let _ = tokio::time::timeout(TIMEOUT, write.write_all(&answer)).await;
    Some(command)
}

/// Sends `command` to the daemon behind `path` and returns its status.
pub async fn request(path: &Path, command: Command) -> Result<Status> {
    let exchange = async {
        let stream = UnixStream::connect(path).await?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&command)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        Ok::<_, anyhow::Error>(serde_json::from_str(&answer)?)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .context("the daemon did not answer in time")?
        .with_context(|| format!("talking to the daemon at {}", path.display()))
}
