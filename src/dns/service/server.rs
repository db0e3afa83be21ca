//! The service process (`corridor-daemon dns-service`): the responder, the host resolver's
//! rewrite and watch, and the registered projects, served on the control socket.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{Registry, Request, ServiceStatus, FIRST_REGISTRATION, PRUNE_EVERY, TIMEOUT};
use crate::dns::watch::Watch;
use crate::dns::{configure_host, plan_host, DnsStats, HostDns, Mode, Responder, ResponderConfig, DEFAULT_LISTEN};
use crate::host::{self, Journal};
use crate::paths;
use crate::platform::{self, ipc, Pid};

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
    let mut service = Service::start(mode, journal).await?;
    let listener = ipc::bind(&files.socket, platform::invoker().as_ref())?;
    std::fs::write(&files.pid, std::process::id().to_string())
        .with_context(|| format!("writing {}", files.pid.display()))?;
    if let Some(ready) = ready.take() {
        ready(&Ok(service.status()));
    }
    tracing::info!(mode = ?service.plan.mode, listen = %service.responder.local_addr(), "dns service ready");

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
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = &mut accept => unreachable!("accepts forever"),
            signal = shutdown.recv() => {
                tracing::info!(signal, "stop signal");
                break;
            }
            _ = tick.tick() => {
                service.watch.tick(Instant::now(), &service.registry.interfaces()).await;
                if service.prune() {
                    service.had_projects = true;
                }
                if service.registry.is_empty() && (service.had_projects || started.elapsed() > FIRST_REGISTRATION) {
                    tracing::info!("no project left");
                    break;
                }
            }
            Some(ask) = asked.recv() => {
                service.prune();
                let unregistered = matches!(ask.request, Request::Unregister { .. });
                if let Err(e) = service.apply(ask.request, journal) {
                    let _ = ask.reply.send(Err(e));
                    continue;
                }
                let current = service.status();
                // A daemon that never connected unregisters too: a service it started idle goes.
                if service.registry.is_empty() && (service.had_projects || unregistered) {
                    // The last one out gets its answer once the host is back as it was.
                    service.responder.shutdown().await;
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
    service.responder.shutdown().await;
    Ok(())
}

/// What the service holds while it runs: the responder, the host's resolver pointed at it (and
/// watched), and the projects registered with it.
struct Service {
    plan: HostDns,
    responder: Responder,
    registry: Registry,
    watch: Watch,
    /// Whether the host's resolver points at the responder yet.
    host_configured: bool,
    /// Whether a project was ever registered: the service goes when the last one has.
    had_projects: bool,
}

impl Service {
    /// Plans the host's resolver, starts the responder, and in resolved mode watches the host.
    async fn start(mode: Mode, journal: &mut Journal) -> Result<Service> {
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
        let host_configured = plan.mode == Mode::Resolved;
        let mut watch = Watch::idle();
        if host_configured {
            watch.start(&plan, responder.local_addr(), journal);
        }
        Ok(Service {
            plan,
            responder,
            registry: Registry::default(),
            watch,
            host_configured,
            had_projects: false,
        })
    }

    fn status(&self) -> ServiceStatus {
        ServiceStatus {
            pid: std::process::id(),
            mode: self.plan.mode,
            listen: self.responder.local_addr(),
            projects: self
                .responder
                .projects()
                .iter()
                .filter_map(|p| self.registry.registrations().iter().find(|r| r.project.id == p.id))
                .cloned()
                .collect(),
            stats: DnsStats {
                resolver: self.watch.status(),
                ..self.responder.stats()
            },
        }
    }

    /// Carries out one request; the first registration points the host's resolver at us.
    fn apply(&mut self, request: Request, journal: &mut Journal) -> Result<(), String> {
        match request {
            Request::Register { project } => {
                if !self.host_configured {
                    configure_host(&self.plan, self.responder.local_addr(), journal).map_err(|e| format!("{e:#}"))?;
                    self.watch.start(&self.plan, self.responder.local_addr(), journal);
                    self.host_configured = true;
                }
                tracing::info!(project = %project.project.name, dns = %project.project.dns, pid = project.daemon_pid, "project registered");
                self.registry.register(project);
                self.had_projects = true;
            }
            Request::Unregister { id } => {
                if self.registry.unregister(&id) {
                    tracing::info!(project = %id, "project unregistered");
                }
            }
            Request::Status => {}
        }
        self.responder
            .set_projects(self.registry.projects())
            .map_err(|e| format!("{e:#}"))
    }

    /// Drops projects whose daemon is gone; true if any project is registered.
    fn prune(&mut self) -> bool {
        let dropped = self.registry.prune(|r| {
            Pid::new(r.daemon_pid)
                .is_some_and(|pid| platform::process_alive(pid) && platform::process_is_daemon_of(pid, &r.project.id))
        });
        if !dropped.is_empty() {
            tracing::info!(projects = ?dropped, "dropped projects whose daemon is gone");
            if let Err(e) = self.responder.set_projects(self.registry.projects()) {
                tracing::warn!(error = %format!("{e:#}"), "updating the responder's projects");
            }
        }
        !self.registry.is_empty()
    }
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
