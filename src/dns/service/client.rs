//! The client side of the DNS service: daemons and `vpn up`/`down` start it, ask it, and repair
//! after one that died.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{Request, ServiceStatus, PRUNE_EVERY, SUBCOMMAND, TIMEOUT};
use crate::dns::Mode;
use crate::host;
use crate::paths;
use crate::platform::{self, ipc, Pid, Stop};

/// The running service's status, starting the service first when none runs.
pub async fn ensure_running(mode: Mode) -> Result<ServiceStatus> {
    if let Ok(status) = request(&Request::Status).await {
        return Ok(status);
    }
    let started = spawn(mode).await;
    if started.is_ok() {
        return started;
    }
    // Two connections may start a service at once: the loser's failure is no failure once the
    // winner answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(status) = request(&Request::Status).await {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return started;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one request to the service.
pub async fn request(request: &Request) -> Result<ServiceStatus> {
    let path = paths::DnsServiceFiles::get().socket;
    let exchange = async {
        let stream = ipc::connect(&path).await?;
        let (read, mut write) = tokio::io::split(stream);
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = String::new();
        tokio::io::BufReader::new(read).read_line(&mut answer).await?;
        let answer: Result<ServiceStatus, String> = serde_json::from_str(&answer)?;
        answer.map_err(|e| anyhow!(e))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .context("the DNS service did not answer in time")?
        .with_context(|| format!("talking to the DNS service at {}", path.display()))
}

/// Takes a project off the service, if one runs; afterwards, a service that is gone has its
/// host changes undone (`vpn down`, and `vpn up` before it starts anything).
pub async fn forget(id: &str) -> Result<()> {
    if request(&Request::Unregister { id: id.into() }).await.is_ok() {
        return Ok(());
    }
    repair().await
}

/// Replays the journal of a service that died. A live one holds the lock: one that cannot be
/// reached (its socket removed) is given a moment to notice its daemons are gone and restore
/// the host itself; one still serving is left alone.
pub async fn repair() -> Result<()> {
    let files = paths::DnsServiceFiles::get();
    if !files.journal.exists() || request(&Request::Status).await.is_ok() {
        return Ok(());
    }
    let deadline = Instant::now() + PRUNE_EVERY * 3;
    let _lock = loop {
        match platform::try_lock(&files.lock).with_context(|| format!("locking {}", files.lock.display()))? {
            Some(lock) => break lock,
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => {
                tracing::info!("the DNS service runs on; its journal is left to it");
                return Ok(());
            }
        }
    };
    host::restore(&files.journal).context("restoring the host after the DNS service")?;
    let _ = std::fs::remove_file(&files.pid);
    Ok(())
}

/// Starts the service in its own session and waits for its first line: ready, or why not.
async fn spawn(mode: Mode) -> Result<ServiceStatus> {
    let files = paths::DnsServiceFiles::get();
    if let Some(dir) = files.log.parent() {
        platform::create_corridor_dir(dir, true).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
    let mode = serde_json::to_value(mode)?;
    let args = [SUBCOMMAND, "--mode", mode.as_str().unwrap_or("auto")];
    let platform::Helper { mut child, stdout } = platform::spawn_helper(&args, None, log, &[], "the DNS service")?;
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = match tokio::time::timeout(Duration::from_secs(10), first_line).await {
        Ok(Ok(Ok(line))) => line,
        _ => {
            if let Some(pid) = Pid::new(child.id()) {
                let _ = platform::signal_stop(pid, Stop::Gracefully);
            }
            bail!(
                "the DNS service did not start in time; its log is {}",
                files.log.display()
            );
        }
    };
    // It runs on after this; reap it in the background so it never lingers as a zombie.
    std::thread::spawn(move || child.wait());
    let ready: Result<ServiceStatus, String> = serde_json::from_str(&line).map_err(|_| {
        anyhow!(
            "the DNS service stopped before it was ready; its log is {}",
            files.log.display()
        )
    })?;
    ready.map_err(|e| anyhow!("{e} (DNS service log: {})", files.log.display()))
}
