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

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::watch::Watch;
use super::{configure_host, plan_host, DnsStats, Mode, ProjectDns, Responder, ResponderConfig, DEFAULT_LISTEN};
use crate::host::{self, Journal};
use crate::paths;
use crate::platform::{self, ipc, Pid, Stop};

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

// ---- the client side: daemons and `vpn up`/`down`

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

// ---- the service process

/// `corridor-daemon dns-service`: serves until the last project is gone (or a stop signal), then
/// restores the host. Its first stdout line says whether it is ready.
pub fn main(mode: Mode) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(mode))
}

async fn run(mode: Mode) -> Result<()> {
    let files = paths::DnsServiceFiles::get();
    for (dir, shared) in [(files.socket.parent(), true), (files.journal.parent(), false)] {
        if let Some(dir) = dir {
            platform::create_corridor_dir(dir, shared).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    // Only one service per host; it holds the lock until it exits.
    let Some(_lock) = platform::try_lock(&files.lock).with_context(|| format!("locking {}", files.lock.display()))?
    else {
        bail!("another DNS service runs");
    };
    let mut ready = Some(move |status: &Result<ServiceStatus, String>| {
        let mut stdout = std::io::stdout();
        if let Ok(line) = serde_json::to_string(status) {
            let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        }
    });
    // A dead predecessor's rewrite goes first, so the plan reads the original resolver.
    let result = match host::restore(&files.journal) {
        Ok(_) => match Journal::create(&files.journal) {
            Ok(mut journal) => {
                let served = serve(mode, &files, &mut journal, &mut ready).await;
                drop(journal);
                served
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let restored = host::restore(&files.journal);
    ipc::remove(&files.socket);
    let _ = std::fs::remove_file(&files.pid);
    if let (Err(e), Some(ready)) = (&result, ready.take()) {
        ready(&Err(format!("{e:#}")));
    }
    if let Err(e) = &restored {
        tracing::error!(error = %format!("{e:#}"), "restoring the host resolver failed");
    }
    result.and(restored.map(drop))
}

struct Ask {
    request: Request,
    reply: oneshot::Sender<Result<ServiceStatus, String>>,
}

async fn serve(
    mode: Mode,
    files: &paths::DnsServiceFiles,
    journal: &mut Journal,
    ready: &mut Option<impl FnOnce(&Result<ServiceStatus, String>)>,
) -> Result<()> {
    let mut shutdown = platform::Shutdown::new().context("setting up the stop signals")?;
    let plan = plan_host(mode, DEFAULT_LISTEN)?;
    let responder = Responder::start(ResponderConfig {
        listen: DEFAULT_LISTEN,
        projects: Vec::new(),
        upstreams: plan.upstreams.clone(),
        upstream_timeout: Duration::from_secs(2),
    })
    .await
    .context("starting the DNS responder")?;
    // Resolved mode is per link: each daemon points its own interface at us. The others
    // (resolv.conf, macOS's resolver file, Windows's NRPT rule) are one per host: ours, made
    // at the first registration, so that a service started while a tunnel comes up changes
    // nothing when the tunnel never does.
    let mut host_configured = plan.mode == Mode::Resolved;
    let mut watch = Watch::idle();
    if host_configured {
        watch.start(&plan, responder.local_addr(), journal);
    }
    let listener = ipc::bind(&files.socket, platform::invoker().as_ref())?;
    std::fs::write(&files.pid, std::process::id().to_string())
        .with_context(|| format!("writing {}", files.pid.display()))?;

    let mut registry = Registry::default();
    let status = |registry: &Registry, responder: &Responder, watch: &Watch| ServiceStatus {
        pid: std::process::id(),
        mode: plan.mode,
        listen: responder.local_addr(),
        projects: responder
            .projects()
            .iter()
            .filter_map(|p| registry.registrations().iter().find(|r| r.project.id == p.id))
            .cloned()
            .collect(),
        stats: DnsStats {
            resolver: watch.status(),
            ..responder.stats()
        },
    };
    if let Some(ready) = ready.take() {
        ready(&Ok(status(&registry, &responder, &watch)));
    }
    tracing::info!(mode = ?plan.mode, listen = %responder.local_addr(), "dns service ready");

    let (asks, mut asked) = mpsc::channel::<Ask>(16);
    // Each client task holds a clone until it has written its answer: the last answer is
    // written before the service exits.
    let (in_flight, mut all_written) = mpsc::channel::<()>(1);
    let mut accept = Box::pin(async move {
        loop {
            let stream = platform::accept_patiently(|| listener.accept()).await;
            tokio::spawn(read_request(stream, asks.clone(), in_flight.clone()));
        }
    });
    let started = Instant::now();
    let mut had_projects = false;
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = &mut accept => unreachable!("accepts forever"),
            signal = shutdown.recv() => {
                tracing::info!(signal, "stop signal");
                break;
            }
            _ = tick.tick() => {
                watch.tick(Instant::now(), &registry.interfaces()).await;
                if prune(&mut registry, &responder) {
                    had_projects = true;
                }
                if registry.is_empty() && (had_projects || started.elapsed() > FIRST_REGISTRATION) {
                    tracing::info!("no project left");
                    break;
                }
            }
            Some(ask) = asked.recv() => {
                prune(&mut registry, &responder);
                let unregistered = matches!(ask.request, Request::Unregister { .. });
                match ask.request {
                    Request::Register { project } => {
                        if !host_configured {
                            if let Err(e) = configure_host(&plan, responder.local_addr(), journal) {
                                let _ = ask.reply.send(Err(format!("{e:#}")));
                                continue;
                            }
                            watch.start(&plan, responder.local_addr(), journal);
                            host_configured = true;
                        }
                        tracing::info!(project = %project.project.name, dns = %project.project.dns, pid = project.daemon_pid, "project registered");
                        registry.register(project);
                        had_projects = true;
                    }
                    Request::Unregister { id } => {
                        if registry.unregister(&id) {
                            tracing::info!(project = %id, "project unregistered");
                        }
                    }
                    Request::Status => {}
                }
                if let Err(e) = responder.set_projects(registry.projects()) {
                    let _ = ask.reply.send(Err(format!("{e:#}")));
                    continue;
                }
                let current = status(&registry, &responder, &watch);
                // A daemon that never connected unregisters too: a service it started idle goes.
                if registry.is_empty() && (had_projects || unregistered) {
                    // The last one out gets its answer once the host is back as it was.
                    responder.shutdown().await;
                    let restored = host::restore(journal.path()).map(drop).map_err(|e| format!("{e:#}"));
                    let _ = ask.reply.send(restored.map(|()| current));
                    drop(accept);
                    let _ = tokio::time::timeout(TIMEOUT, all_written.recv()).await;
                    return Ok(());
                }
                let _ = ask.reply.send(Ok(current));
            }
        }
    }
    responder.shutdown().await;
    Ok(())
}

/// Drops projects whose daemon is gone; true if any project is registered.
fn prune(registry: &mut Registry, responder: &Responder) -> bool {
    let dropped = registry.prune(|r| {
        Pid::new(r.daemon_pid)
            .is_some_and(|pid| platform::process_alive(pid) && platform::process_is_daemon_of(pid, &r.project.id))
    });
    if !dropped.is_empty() {
        tracing::info!(projects = ?dropped, "dropped projects whose daemon is gone");
        if let Err(e) = responder.set_projects(registry.projects()) {
            tracing::warn!(error = %format!("{e:#}"), "updating the responder's projects");
        }
    }
    !registry.is_empty()
}

/// One client: one request line, one answer line; a silent client only holds its own task.
async fn read_request(stream: ipc::Stream, asks: mpsc::Sender<Ask>, _in_flight: mpsc::Sender<()>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let mut read = tokio::io::BufReader::new(read);
    if !matches!(
        tokio::time::timeout(TIMEOUT, read.read_line(&mut line)).await,
        Ok(Ok(_))
    ) {
        return;
    }
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if asks.send(Ask { request, reply }).await.is_err() {
                return;
            }
            match answer.await {
                Ok(answer) => answer,
                Err(_) => return,
            }
        }
        Err(e) => Err(format!("not a DNS service request: {e}")),
    };
    if let Ok(mut bytes) = serde_json::to_vec(&answer) {
        bytes.push(b'\n');
        let _ = tokio::time::timeout(TIMEOUT, write.write_all(&bytes)).await;
    }
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
