//! The daemon: owns the tunnel interface, the UDP socket, the WireGuard session and the host
//! changes of one connected project. `vpn up` starts it and reads its progress events; `vpn
//! status` and `vpn down` talk to it over the control socket.

pub mod control;
pub mod heal;
pub mod readiness;
pub mod status;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::dns;
use crate::family;
use crate::host::{self, device, Journal};
use crate::paths::ConnectionFiles;
use crate::platform;
use crate::project_id::ProjectId;
use crate::tunnel::core::{Config as SessionConfig, Event, PathConfig, ProbeRoute, Session, Stats};
use crate::tunnel::io::{self, Request, TunShell};
use crate::tunnel::probe;
use crate::tunnel::socket::GatewaySocket;
use readiness::{Readiness, Ready, Step};

pub use status::{ConnectionState, TunnelStatus};

/// Everything the daemon needs, handed over on its stdin (the private key never appears in
/// argv or the environment).
#[derive(Clone, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub project_id: ProjectId,
    pub project_name: String,
    pub interface: Option<String>,
    pub mtu: u16,
    pub keepalive_secs: u16,
    pub handshake_timeout_secs: u64,
    #[serde(with = "crate::keys::secret")]
    pub private_key: StaticSecret,
    #[serde(with = "crate::keys::public")]
    pub server_public_key: PublicKey,
    pub endpoint: String,
    pub addresses: Vec<IpNet>,
    pub networks: Vec<IpNet>,
    pub dns: Option<IpAddr>,
    pub dns_mode: dns::Mode,
    /// Bare names go to the highest priority connection first.
    #[serde(default)]
    pub dns_priority: i32,
    /// Addresses inside the project (its gateways) to ping, tried in order; they need not answer.
    pub probe_targets: Vec<IpAddr>,
    /// Where to ask when the gateway stops answering; `None`: nobody is asked.
    #[serde(default)]
    pub platform: Option<heal::PlatformAccess>,
    /// How often the path to the gateway is measured again.
    #[serde(default = "default_reprobe")]
    pub path_reprobe_secs: u64,
}

fn default_reprobe() -> u64 {
    crate::tunnel::pmtu::REPROBE.as_secs()
}

/// Progress of a starting daemon, one JSON line each on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StartupEvent {
    Interface {
        name: String,
    },
    Handshake {
        millis: u64,
    },
    Probe {
        target: IpAddr,
        millis: u64,
    },
    /// The first path MTU search ended (`mtu`), or did not in time; `mss_ipv6` is set when the
    /// path is narrower than the interface and TCP is fitted to it.
    Path {
        mtu: Option<u16>,
        mss_ipv6: Option<u16>,
        interface_mtu: u16,
    },
    /// Nothing answered ping, but the handshake is fresh: the tunnel is up all the same.
    NoPing {
        tried: Vec<String>,
        handshake_ms_ago: u64,
    },
    /// The system resolver answered (or not) a project name through the responder.
    Dns {
        mode: dns::Mode,
        name: String,
        answer: Result<IpAddr, String>,
    },
    Ready {
        status: Box<Status>,
    },
    Failed {
        error: String,
    },
}

/// What `vpn status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub project_id: ProjectId,
    pub project_name: String,
    pub pid: u32,
    pub interface: String,
    pub addresses: Vec<IpNet>,
    pub networks: Vec<IpNet>,
    pub endpoint: String,
    pub mtu: u16,
    pub dns: Option<DnsStatus>,
    pub started_unix: u64,
    pub uptime_secs: u64,
    #[serde(flatten)]
    pub tunnel: TunnelStatus,
    /// What the platform said when the gateway stopped answering.
    #[serde(default)]
    pub platform: heal::PlatformStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsStatus {
    pub mode: dns::Mode,
    pub responder: Option<SocketAddr>,
    pub project_dns: IpAddr,
    /// The projects the host's responder serves, in the order bare names are asked.
    #[serde(default)]
    pub served: Vec<String>,
    /// The responder's counters, for every project it serves.
    #[serde(flatten)]
    pub stats: dns::DnsStats,
}

/// The longest `vpn up` waits for the first path MTU search.
const PATH_SEARCH_WAIT: Duration = Duration::from_secs(6);

/// The name the platform always serves; its answer proves project DNS works end to end.
pub const DNS_PROBE_NAME: &str = "logger.core.zerops";

/// Runs the daemon: reads the configuration from stdin, reports progress on stdout as JSON
/// lines until it is ready (or failed), then keeps running in the background. `project` is the
/// id it was started for (in its command line, so that it can be recognised).
pub fn main(project: &str) -> Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let config: DaemonConfig = serde_json::from_str(&input).context("reading the daemon configuration")?;
    if config.project_id != *project {
        bail!(
            "started for project {project} with the configuration of {}",
            config.project_id
        );
    }
    let files = ConnectionFiles::for_project(&config.project_id);
    // One thread: the data path is one task that owns the session, and the responder's work is
    // small beside it; cross-thread wakeups would cost more than they give on a laptop's cores.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stdout = std::io::stdout();
    let mut report = move |event: &StartupEvent| {
        if let Ok(line) = serde_json::to_string(event) {
            // The CLI may be gone already (interrupted); the daemon carries on regardless.
            let _ = std::io::Write::write_fmt(&mut stdout, format_args!("{line}\n"))
                .and_then(|()| std::io::Write::flush(&mut stdout));
        }
    };
    runtime.block_on(run(config, files, &mut report))
}

/// What `corridor-daemon names` is asked to register: a project's names with no tunnel.
#[derive(Debug, Clone)]
pub struct NamesOnly {
    pub project_id: ProjectId,
    pub project_name: String,
    /// The project's DNS server, reachable from this host without a tunnel.
    pub dns: SocketAddr,
}

/// `corridor-daemon names` (hidden; for the end-to-end tests of the DNS service on hosts that
/// cannot build a tunnel, such as Windows under Wine): a connection's names without its tunnel,
/// through the connection's own steps: the host's DNS service started as `vpn up` starts it,
/// the project registered as a connected daemon registers it, the service's answer printed as
/// one JSON line; then, at the end of stdin or a stop signal, the project unregistered, as a
/// connection ends. No interface is given the search domain: a connection may only change the
/// interface it made, and there is none.
pub fn names_only(names: NamesOnly) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut shutdown = platform::Shutdown::new().context("setting up the stop signals")?;
        let mut service = DnsRegistration::starting(dns::Mode::Auto);
        let project = dns::ProjectDns {
            id: names.project_id.to_string(),
            name: names.project_name.clone(),
            dns: names.dns,
            connected_at: dns::service::now_millis(),
            priority: 0,
        };
        let registered = service.register_project(dns::Mode::Auto, project, None).await;
        let result = match registered {
            Ok(status) => {
                let mut stdout = std::io::stdout();
                let line = serde_json::to_string(&status)?;
                let _ = std::io::Write::write_fmt(&mut stdout, format_args!("{line}\n"))
                    .and_then(|()| std::io::Write::flush(&mut stdout));
                // A plain thread, not the runtime's blocking pool, which would hold up its
                // shutdown while stdin stays open.
                let (closed, stdin_closed) = oneshot::channel();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                    let _ = closed.send(());
                });
                tokio::select! {
                    signal = shutdown.recv() => tracing::info!(signal, "stop signal"),
                    _ = stdin_closed => tracing::info!("stdin closed"),
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        service.end(&names.project_id).await;
        result
    })
}

/// Runs a connection until `down`, SIGINT or SIGTERM; reports progress through `events`.
/// Whatever happens, the host changes are undone before it returns.
pub async fn run(config: DaemonConfig, files: ConnectionFiles, events: &mut dyn FnMut(&StartupEvent)) -> Result<()> {
    if let Some(dir) = files.socket.parent() {
        platform::create_corridor_dir(dir, true).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A crashed predecessor's leftovers go first.
    host::restore(&files.journal)?;
    let mut journal = Journal::create(&files.journal)?;
    let mut names = DnsRegistration::start(&config);
    // Lets the service's start begin before the interface is made.
    tokio::task::yield_now().await;
    let result = serve(&config, &files, &mut journal, names.as_mut(), events).await;
    if let Some(names) = names {
        names.end(&config.project_id).await;
    }
    drop(journal);
    let restored = host::restore(&files.journal);
    platform::ipc::remove(&files.socket);
    let _ = std::fs::remove_file(&files.state);
    if let Err(e) = &result {
        events(&StartupEvent::Failed {
            error: format!("{e:#}"),
        });
    }
    result.and(restored.map(|_| ()))
}

async fn serve(
    config: &DaemonConfig,
    files: &ConnectionFiles,
    journal: &mut Journal,
    names: Option<&mut DnsRegistration>,
    events: &mut dyn FnMut(&StartupEvent),
) -> Result<()> {
    // From the first change on, a signal must lead to the cleanup, never to a plain exit.
    let mut shutdown = platform::Shutdown::new().context("setting up the stop signals")?;
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (name, dev) = create_device(config, journal)?;
    events(&StartupEvent::Interface { name: name.clone() });

    let mut endpoint = dns::resolve_endpoint(&config.endpoint).await?;
    let socket = GatewaySocket::bind(endpoint, io::RX_BATCH)
        .await
        .context("binding the WireGuard UDP socket")?;
    let session = Session::new(session_config(config, endpoint), Instant::now());
    let (req_tx, req_rx) = mpsc::channel(8);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let tunnel = TunShell::new(dev, socket, session, config.mtu, event_tx);
    let mut tunnel_events = TunnelEvents::new(event_rx);
    let mut io = tokio::spawn(tunnel.run(req_rx));
    let stats = || tunnel_stats(&req_tx);

    // Ready means: handshake done, and a ping answered through the tunnel if anything answers.
    let timeout = Duration::from_secs(config.handshake_timeout_secs);
    let ready = wait_until_ready(config, &req_tx, &mut tunnel_events, started + timeout);
    let readiness = tokio::select! {
        r = ready => r?,
        signal = shutdown.recv() => bail!("stopped by {signal} before the tunnel was ready"),
        r = &mut io => bail!("the tunnel stopped: {}", join_error(r)),
    };
    use_readiness(config, &req_tx, readiness, started, &mut tunnel_events, events).await;
    let names = register_names(config, names, &name, journal, events).await;
    // The responder is another process: its status is asked afresh each time.
    let service_status = || async {
        match &names {
            Some(_) => dns::service::request(&dns::service::Request::Status).await.ok(),
            None => None,
        }
    };

    let status = |stats: &Stats,
                  service: Option<dns::service::ServiceStatus>,
                  endpoint: SocketAddr,
                  platform: &heal::PlatformStatus| Status {
        project_id: config.project_id.clone(),
        project_name: config.project_name.clone(),
        pid: std::process::id(),
        interface: name.clone(),
        addresses: config.addresses.clone(),
        networks: config.networks.clone(),
        endpoint: endpoint.to_string(),
        mtu: config.mtu,
        dns: config.dns.map(|project_dns| DnsStatus {
            mode: names.as_ref().map_or(dns::Mode::Off, |s| s.mode),
            responder: service.as_ref().map(|s| s.listen),
            project_dns,
            served: service
                .as_ref()
                .map(|s| s.projects.iter().map(|p| p.project.name.clone()).collect())
                .unwrap_or_default(),
            stats: service.map(|s| s.stats).unwrap_or_default(),
        }),
        started_unix,
        uptime_secs: started.elapsed().as_secs(),
        tunnel: TunnelStatus::from(stats),
        platform: platform.clone(),
    };

    let mut heal = heal::Heal::default();
    let mut current = heal::Current {
        server_public_key: config.server_public_key.to_bytes(),
        endpoint: config.endpoint.clone(),
        addresses: config.addresses.clone(),
        networks: config.networks.clone(),
    };
    let mut recheck_at: Option<tokio::time::Instant> = None;
    let mut recheck: Option<tokio::task::JoinHandle<heal::Recheck>> = None;

    let mut control = control::serve(&files.socket)?;
    let ready = status(
        &stats().await.unwrap_or_default(),
        service_status().await,
        endpoint,
        &heal.status,
    );
    std::fs::write(&files.state, serde_json::to_vec(&ready)?)?;
    events(&StartupEvent::Ready {
        status: Box::new(ready),
    });
    tracing::info!(project = %config.project_name, interface = %name, "connected");

    loop {
        tokio::select! {
            r = &mut io => bail!("the tunnel stopped: {}", join_error(r)),
            signal = shutdown.recv() => {
                tracing::info!(signal, "stop signal");
                break;
            }
            Some(ask) = control.next() => {
                let now = status(&stats().await.unwrap_or_default(), service_status().await, endpoint, &heal.status);
                let _ = ask.reply.send(now);
                if ask.command == control::Command::Down {
                    break;
                }
            }
            Some(event) = tunnel_events.next() => match event {
                Event::PeerUnresponsive if config.platform.is_some() => {
                    recheck_at = Some(tokio::time::Instant::now() + heal::RECHECK_AFTER);
                }
                Event::PeerAnswersAgain if config.platform.is_some() => {
                    heal.answered();
                    recheck_at = None;
                }
                _ => {}
            },
            () = sleep_until(recheck_at), if recheck_at.is_some() && recheck.is_none() => {
                recheck_at = None;
                recheck = start_recheck(config);
            }
            answer = join_recheck(&mut recheck), if recheck.is_some() => {
                recheck = None;
                tracing::info!(?answer, "the platform answered");
                if let Some(repoint) = heal.absorb(&current, answer, &config.project_name) {
                    if let Some(resolved) = repoint_tunnel(repoint, &mut current, &req_tx).await {
                        endpoint = resolved;
                        tracing::info!(note = ?heal.status.note, %endpoint, "new session with the gateway");
                    }
                }
                if tunnel_events.unanswered {
                    recheck_at = Some(tokio::time::Instant::now() + heal.next_delay());
                }
            }
        }
    }
    tracing::info!(project = %config.project_name, "disconnecting");
    drop(req_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), io).await;
    Ok(())
}

/// The connection's tunnel interface, with its addresses and routes (journaled); its name, and
/// the device.
fn create_device(config: &DaemonConfig, journal: &mut Journal) -> Result<(String, tun_rs::AsyncDevice)> {
    let name = config.interface.clone().unwrap_or_else(device::free_name);
    let tag = format!("corridor:{}:{:016x}", config.project_id, rand_core::OsRng.next_u64());
    let device_config = device::DeviceConfig {
        name: &name,
        tag: &tag,
        mtu: config.mtu,
        addresses: &config.addresses,
        routes: &config.networks,
    };
    let dev = device::create(&device_config, journal)?;
    Ok((name, dev))
}

/// Reports how the tunnel became ready, and has the tunnel keep probing the address that
/// answered (its liveness probe).
async fn use_readiness(
    config: &DaemonConfig,
    requests: &mpsc::Sender<Request>,
    readiness: Ready,
    started: Instant,
    tunnel_events: &mut TunnelEvents,
    events: &mut dyn FnMut(&StartupEvent),
) {
    // When the (first) handshake completed, not when readiness was decided.
    let (Ready::HandshakeOnly { first_handshake, .. } | Ready::Answered { first_handshake, .. }) = readiness;
    events(&StartupEvent::Handshake {
        millis: first_handshake.saturating_duration_since(started).as_millis() as u64,
    });
    let liveness = match &readiness {
        Ready::Answered { target, .. } => ProbeRoute::from_addresses(&config.addresses, *target),
        Ready::HandshakeOnly { .. } => None,
    };
    let probing = liveness.is_some();
    let _ = requests.send(Request::LivenessProbe { route: liveness }).await;
    events(&match readiness {
        Ready::Answered { target, millis, .. } => StartupEvent::Probe { target, millis },
        Ready::HandshakeOnly {
            tried, handshake_age, ..
        } => StartupEvent::NoPing {
            tried,
            handshake_ms_ago: handshake_age.as_millis() as u64,
        },
    });
    // Connections opened before the path is known would keep a size it may not carry: ready
    // waits for the first search (one round trip on a full path, a second or two on a narrow).
    if probing {
        let _ = tokio::time::timeout(PATH_SEARCH_WAIT, tunnel_events.path_measured()).await;
        let stats = tunnel_stats(requests).await.unwrap_or_default();
        events(&StartupEvent::Path {
            mtu: stats.path_mtu,
            mss_ipv6: stats.mss_ipv6,
            interface_mtu: config.mtu,
        });
    }
}

/// Registers the project's names with the DNS service once the tunnel carries traffic, and
/// reports whether the system resolver answers one; the service's status, if it took them.
/// Names are reported separately from the tunnel: a resolver we cannot configure (no privilege
/// over /etc/resolv.conf, resolved gone) leaves a working tunnel, and says so.
async fn register_names(
    config: &DaemonConfig,
    names: Option<&mut DnsRegistration>,
    interface: &str,
    journal: &mut Journal,
    events: &mut dyn FnMut(&StartupEvent),
) -> Option<dns::service::ServiceStatus> {
    let (names, project_dns) = names.zip(config.dns)?;
    let names = names.register(config, project_dns, interface, journal).await;
    let (mode, answer) = match &names {
        Ok(service) => (service.mode, system_lookup(DNS_PROBE_NAME).await),
        Err(e) => (config.dns_mode, Err(format!("{e:#}"))),
    };
    events(&StartupEvent::Dns {
        mode,
        name: DNS_PROBE_NAME.into(),
        answer,
    });
    names.ok()
}

/// Asks the platform, through `corridor vpn recheck`, about a gateway that stopped answering;
/// `None` without platform access.
fn start_recheck(config: &DaemonConfig) -> Option<tokio::task::JoinHandle<heal::Recheck>> {
    let access = config.platform.as_ref()?;
    let request = heal::RecheckRequest {
        access: access.clone(),
        project_id: config.project_id.clone(),
        project_name: config.project_name.clone(),
        public_key: crate::keys::encode(PublicKey::from(&config.private_key).as_bytes()),
    };
    tracing::info!(project = %config.project_name, "the gateway does not answer; asking the platform");
    Some(tokio::spawn(async move { heal::ask(&request).await }))
}

/// Points the tunnel at the gateway the platform named; its endpoint, once resolved (else the
/// tunnel stays as it was).
async fn repoint_tunnel(
    repoint: heal::Repoint,
    current: &mut heal::Current,
    requests: &mpsc::Sender<Request>,
) -> Option<SocketAddr> {
    match dns::resolve_endpoint(&repoint.endpoint).await {
        Ok(endpoint) => {
            current.server_public_key = repoint.server_public_key;
            current.endpoint = repoint.endpoint;
            let peer = PublicKey::from(repoint.server_public_key);
            let _ = requests.send(Request::Repoint { peer, endpoint }).await;
            Some(endpoint)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot resolve the gateway's new endpoint");
            None
        }
    }
}

/// The tunnel's events not yet read; at most this many wait (the data path drops what does
/// not fit rather than wait).
const EVENT_QUEUE: usize = 64;

/// The tunnel's events, read by each phase of the daemon in turn: those about the peer's
/// answering are kept for the main loop, whichever phase reads them.
struct TunnelEvents {
    events: mpsc::Receiver<Event>,
    kept: VecDeque<Event>,
    /// Whether the peer has stopped answering, as of the last event read.
    unanswered: bool,
    path_mtu: Option<u16>,
}

impl TunnelEvents {
    fn new(events: mpsc::Receiver<Event>) -> TunnelEvents {
        TunnelEvents {
            events,
            kept: VecDeque::new(),
            unanswered: false,
            path_mtu: None,
        }
    }

    /// The next event as it comes (cancel-safe); `None` once the tunnel stopped.
    async fn recv(&mut self) -> Option<Event> {
        let event = self.events.recv().await?;
        match event {
            Event::PeerUnresponsive => self.unanswered = true,
            Event::PeerAnswersAgain => self.unanswered = false,
            Event::PathMeasured { mtu } => self.path_mtu = Some(mtu),
            Event::HandshakeCompleted | Event::ProbeAnswered { .. } => {}
        }
        if matches!(event, Event::PeerUnresponsive | Event::PeerAnswersAgain) {
            self.kept.push_back(event);
        }
        Some(event)
    }

    /// The next event, those kept by earlier phases first.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.kept.pop_front() {
                return Some(event);
            }
            // A kept one is taken at once, above.
            let event = self.recv().await?;
            if !matches!(event, Event::PeerUnresponsive | Event::PeerAnswersAgain) {
                return Some(event);
            }
        }
    }

    /// Until the first path MTU search has ended.
    async fn path_measured(&mut self) {
        while self.path_mtu.is_none() {
            if self.recv().await.is_none() {
                return std::future::pending().await;
            }
        }
    }
}

/// Pings the project's gateways, then (once the handshake is done) `logger.core.zerops` as the
/// platform's CLI does, until one answers; a completed handshake with no answer within
/// [`readiness::PING_GRACE`] is ready too. Fails only when no handshake completes before
/// `deadline`.
async fn wait_until_ready(
    config: &DaemonConfig,
    requests: &mpsc::Sender<Request>,
    tunnel_events: &mut TunnelEvents,
    deadline: Instant,
) -> Result<Ready> {
    let id = (std::process::id() & 0xffff) as u16;
    let name = config.dns.map(|_| DNS_PROBE_NAME);
    let mut readiness = Readiness::new(id, &config.addresses, &config.probe_targets, name, deadline);
    loop {
        match readiness.poll(Instant::now()) {
            Step::Ready(ready) => return Ok(ready),
            Step::Failed => bail!(
                "no answer through the tunnel within {}s, not even a handshake: the endpoint {} is \
                 unreachable, drops UDP, or does not know this key",
                config.handshake_timeout_secs,
                config.endpoint
            ),
            Step::Ping { route, seq } => {
                if let Some(packet) = probe::echo_request(route.source, route.target, id, seq) {
                    requests
                        .send(Request::Probe { packet, id })
                        .await
                        .context("the tunnel stopped")?;
                }
            }
            Step::LookUp => {
                let (Some(dns), Some(name)) = (config.dns, readiness.name().map(str::to_string)) else {
                    readiness.looked_up(DNS_PROBE_NAME, Vec::new());
                    continue;
                };
                let found = lookup_through_tunnel(dns, &name).await;
                tracing::debug!(?found, "probe name looked up");
                readiness.looked_up(&name, found);
            }
            Step::Wait(until) => {
                tokio::select! {
                    event = tunnel_events.recv() => {
                        let event = event.context("the tunnel stopped")?;
                        readiness.handle_event(&event, Instant::now());
                    }
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
        }
    }
}

/// The tunnel's counters as of now; `None` once it stopped.
async fn tunnel_stats(requests: &mpsc::Sender<Request>) -> Option<Stats> {
    let (reply, answer) = oneshot::channel();
    requests.send(Request::Stats { reply }).await.ok()?;
    answer.await.ok()
}

/// `name`'s addresses (A and AAAA) from the project's DNS server, asked directly: its address
/// is routed into the tunnel. Empty when it does not answer within a second.
async fn lookup_through_tunnel(dns: IpAddr, name: &str) -> Vec<IpAddr> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;
    let name = format!("{name}.");
    let Ok(socket) = tokio::net::UdpSocket::bind(family::unspecified_for(dns)).await else {
        return Vec::new();
    };
    if socket.connect((dns, 53)).await.is_err() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (n, rtype) in [RecordType::AAAA, RecordType::A].into_iter().enumerate() {
        let id = rand_core::OsRng.next_u32() as u16 ^ n as u16;
        let Some(bytes) = dns::query(&name, rtype, id) else {
            return Vec::new();
        };
        if socket.send(&bytes).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 1500];
        let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await else {
            continue;
        };
        let Ok(answer) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        found.extend(dns::addresses(&answer));
    }
    found
}

/// The project's registration with the host's DNS service, which runs in a process of its own:
/// started with the connection (it gets ready while the tunnel comes up, and changes the host only
/// when a project registers), the project registered once the tunnel carries traffic, and taken
/// off again however the connection ends.
struct DnsRegistration {
    starting: Option<tokio::task::JoinHandle<Result<dns::service::ServiceStatus>>>,
    registered: bool,
}

impl DnsRegistration {
    fn start(config: &DaemonConfig) -> Option<Self> {
        (config.dns.is_some() && config.dns_mode != dns::Mode::Off).then(|| DnsRegistration::starting(config.dns_mode))
    }

    fn starting(mode: dns::Mode) -> Self {
        DnsRegistration {
            starting: Some(tokio::spawn(dns::service::ensure_running(mode))),
            registered: false,
        }
    }

    /// Registers the project, then sets what the resolver needs on this connection's interface
    /// (`dns::configure_link`).
    async fn register(
        &mut self,
        config: &DaemonConfig,
        project_dns: IpAddr,
        interface: &str,
        journal: &mut Journal,
    ) -> Result<dns::service::ServiceStatus> {
        let project = dns::ProjectDns {
            id: config.project_id.to_string(),
            name: config.project_name.clone(),
            dns: SocketAddr::new(project_dns, 53),
            connected_at: dns::service::now_millis(),
            priority: config.dns_priority,
        };
        self.register_project(config.dns_mode, project, Some((interface, journal)))
            .await
    }

    async fn register_project(
        &mut self,
        mode: dns::Mode,
        project: dns::ProjectDns,
        link: Option<(&str, &mut Journal)>,
    ) -> Result<dns::service::ServiceStatus> {
        self.started().await;
        // Running still, or started again if it gave up waiting for a slow tunnel.
        let service = dns::service::ensure_running(mode).await?;
        let registration = dns::service::Registration {
            project,
            daemon_pid: std::process::id(),
            interface: link.as_ref().map(|(interface, _)| interface.to_string()),
        };
        let registered = dns::service::request(&dns::service::Request::Register { project: registration })
            .await
            .with_context(|| format!("registering with the DNS service (pid {})", service.pid))?;
        self.registered = true;
        if let Some((interface, journal)) = link {
            dns::configure_link(registered.mode, registered.listen, interface, journal)?;
        }
        Ok(registered)
    }

    async fn started(&mut self) {
        if let Some(starting) = self.starting.take() {
            let _ = starting.await;
        }
    }

    /// Unregisters; a service this connection started and never used goes with it.
    async fn end(mut self, project: &ProjectId) {
        self.started().await;
        let gone = dns::service::Request::Unregister {
            id: project.to_string(),
        };
        match dns::service::request(&gone).await {
            Err(e) if self.registered => {
                tracing::warn!(error = %format!("{e:#}"), "could not take the project's names off the DNS service")
            }
            _ => {}
        }
    }
}

/// A lookup through the system resolver (getaddrinfo), as any program on the host makes it.
async fn system_lookup(name: &str) -> Result<IpAddr, String> {
    let lookup = tokio::net::lookup_host((name, 0));
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()).ok_or_else(|| "no address".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

fn session_config(config: &DaemonConfig, endpoint: SocketAddr) -> SessionConfig {
    SessionConfig {
        private_key: config.private_key.clone(),
        peer_public_key: config.server_public_key,
        preshared_key: None,
        persistent_keepalive: Some(config.keepalive_secs),
        allowed_ips: config.networks.clone(),
        // Set once an address has answered the readiness ping.
        probe: None,
        path: Some(PathConfig::new(
            config.mtu,
            endpoint,
            Duration::from_secs(config.path_reprobe_secs),
        )),
    }
}

/// Sleeps until `at`; forever when there is no deadline (the select arm is disabled then).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The verdict of a running recheck; a recheck that panicked says so as an unreachable platform.
async fn join_recheck(task: &mut Option<tokio::task::JoinHandle<heal::Recheck>>) -> heal::Recheck {
    let Some(task) = task else {
        return std::future::pending().await;
    };
    task.await.unwrap_or_else(|e| heal::Recheck::Unreachable {
        problem: format!("the recheck failed: {e}"),
    })
}

fn join_error(r: Result<Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "closed".into(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}
