//! Userspace mode: `forward`, `connect` and `proxy` reach a project's containers through a
//! TCP/IP stack of our own (smoltcp) on the same WireGuard session core as `vpn up`. Nothing on
//! the host changes and no privilege is needed: one UDP socket to the gateway is all.
//!
//! It has its own keys per project (`<project>.userspace.key` in the store, one per running
//! process), registered like `vpn up`'s, so both modes can be up at once with different tunnel
//! addresses. A process that ends deregisters its key unless it is the first slot's
//! ([`keys::KEPT_REGISTERED`]).

pub mod dns;
pub mod keys;
pub mod net;
mod repair;
mod socks;
pub mod stack;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use boringtun::x25519::{PublicKey, StaticSecret};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::account::{self, ApiSettings};
use crate::api::{Client, ProjectId};
use crate::platform;
use crate::report::{Progress, Report};
use crate::store::Store;
use crate::tunnel::core::{Config as SessionConfig, PathConfig, ProbeRoute, Session, Stats};
use crate::tunnel::socket::{self, GatewaySocket};
use net::{DialError, Net};
use stack::{Stack, StackConfig};

/// Which project, and how the tunnel behaves.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// Project name or id; without one, the only project or a picker.
    pub project: Option<String>,
    pub mtu: u16,
    pub keepalive: u16,
    /// How long to wait for the WireGuard handshake.
    pub handshake_timeout: Duration,
    /// How long a connection through the tunnel may take to open.
    pub connect_timeout: Duration,
}

/// `forward`: local ports that lead to ports in the project.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    pub tunnel: TunnelOptions,
    pub bind: IpAddr,
    pub forwards: Vec<ForwardSpec>,
}

/// `LOCAL:TARGET:PORT`: a local port, a container, service or address, and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub local: u16,
    pub target: String,
    pub port: u16,
}

/// `connect`: one connection on stdin and stdout.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub tunnel: TunnelOptions,
    pub host: String,
    pub port: u16,
}

/// `proxy`: a SOCKS5 server into the project.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub tunnel: TunnelOptions,
    pub listen: SocketAddr,
}

/// How `forward` and `proxy` report, beyond what every command reports: their [`ForwardingEvent`]s.
pub trait Watch: Report {
    fn event(&mut self, event: &ForwardingEvent);
}

/// What a running `forward` or `proxy` reports.
#[derive(Debug, Clone)]
pub enum ForwardingEvent {
    /// The tunnel is up and the listeners accept connections.
    Ready {
        project: String,
        handshake: Duration,
        listeners: Vec<Listener>,
    },
    /// Every second while running.
    Status(Snapshot),
    /// A connection could not be opened; the others carry on.
    ConnectionFailed { listen: SocketAddr, error: String },
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub listen: SocketAddr,
    /// What it leads to, as given (`api:65437`, or `SOCKS5`).
    pub target: String,
    /// The addresses the target resolved to.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub open: u64,
    pub total: u64,
    pub failed: u64,
    pub stats: Stats,
}

/// A running userspace tunnel to one project.
pub struct Tunnel {
    pub net: Net,
    pub project: String,
    pub handshake: Duration,
    dialer: Dialer,
    driver: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Taken by [`Tunnel::close`]; dropped after it, so the slot stays ours until then.
    registration: Option<Registration>,
    _key: keys::LeasedKey,
}

/// A key registered for the life of one process, and whether it goes when the process ends.
struct Registration {
    client: Client,
    project_id: ProjectId,
    public_key: String,
    stays: bool,
}

/// Each way of a relayed connection: at 8 KiB (tokio's default) a fast download costs a write,
/// and a wake-up of the reader, per 8 KiB.
const RELAY_BUFFER: usize = 64 * 1024;

/// Copies both ways between a local connection and one through the tunnel until both end.
async fn relay<L>(local: &mut L, remote: &mut net::TcpStream) -> std::io::Result<(u64, u64)>
where
    L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(local, remote, RELAY_BUFFER, RELAY_BUFFER).await
}

/// How long an ending process waits for the platform to take its key back.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest opening waits for the first path MTU search.
const PATH_SEARCH_WAIT: Duration = Duration::from_secs(6);

impl Registration {
    /// Deregisters the key unless it stays; a failure is logged, never an error of the command
    /// (`vpn key remove --mine-unused` removes what was left).
    async fn end(self) {
        if self.stays {
            return;
        }
        let delete = self.client.delete_vpn_key(&self.project_id, &self.public_key);
        match tokio::time::timeout(DEREGISTER_TIMEOUT, delete).await {
            Ok(Ok(())) => tracing::debug!(project = %self.project_id, "userspace key deregistered"),
            Ok(Err(e)) if e.is_not_found() => {}
            Ok(Err(error)) => {
                tracing::warn!(project = %self.project_id, %error, "could not deregister the userspace key")
            }
            Err(_) => {
                tracing::warn!(project = %self.project_id, "the platform did not take the userspace key back in time")
            }
        }
    }
}

impl Tunnel {
    /// Registers this machine's userspace key with the project and completes a handshake.
    pub async fn open(api: ApiSettings, options: &TunnelOptions, report: &mut dyn Report) -> Result<Tunnel> {
        let started = Instant::now();
        let store = Store::open()?;
        let client = account::client(&store, api).await?;
        let project = account::choose_project(&client, options.project.as_deref(), report).await?;
        let lease = keys::lease(&store, &project.id)?;
        let keys = &lease.keys;
        tracing::debug!(slot = lease.slot, public_key = %keys.public_base64(), "userspace key");
        let item = account::register_key(&client, &project, keys, "this machine's userspace key").await?;
        let registration = Registration {
            client: client.clone(),
            project_id: project.id.clone(),
            public_key: keys.public_base64(),
            stays: lease.stays_registered(),
        };
        if let Err(e) = item.dns_server() {
            report.progress(Progress::Warning(format!(
                "{e}: names of project {} cannot resolve; use addresses",
                project.name
            )));
        }
        let opened = Tunnel::start(&lease, &item, options, started).await;
        let (net, mut driver, endpoint, dialer_families) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                registration.end().await;
                return Err(e);
            }
        };
        let shaking = Instant::now();
        if !net.handshake(options.handshake_timeout).await {
            // A socket that failed is said to have failed, not blamed on the network.
            let failed = if driver.is_finished() {
                match (&mut driver).await {
                    Ok(Err(error)) => Some(format!("the UDP socket to the gateway failed: {error}")),
                    _ => None,
                }
            } else {
                net.send_error()
                    .map(|error| format!("sending to the gateway {endpoint} fails: {error}"))
            };
            driver.abort();
            registration.end().await;
            if let Some(failed) = failed {
                bail!("no WireGuard handshake: {failed}");
            }
            bail!(
                "no WireGuard handshake with the gateway {endpoint} within {}s: the gateway is unreachable \
                 from here, or UDP is blocked on the way",
                options.handshake_timeout.as_secs()
            );
        }
        let handshake = shaking.elapsed();
        let path_mtu = net.path_measured(PATH_SEARCH_WAIT).await;
        tracing::debug!(?path_mtu, "path measured");
        tracing::debug!(elapsed = ?started.elapsed(), "tunnel up");
        let dialer = Dialer {
            net: net.clone(),
            timeout: options.connect_timeout,
            project: project.name.clone(),
            ipv4: dialer_families.0,
            ipv6: dialer_families.1,
        };
        Ok(Tunnel {
            net,
            project: project.name,
            handshake,
            dialer,
            driver,
            registration: Some(registration),
            _key: lease,
        })
    }

    /// Ends the tunnel and, unless its slot keeps it, deregisters its key before the slot is
    /// free for another process.
    pub async fn close(mut self) {
        self.driver.abort();
        if let Some(registration) = self.registration.take() {
            registration.end().await;
        }
    }

    /// The socket and the stack of a tunnel whose key is registered: the net, its driver, the
    /// gateway's address and the address families the tunnel carries (IPv4, IPv6).
    async fn start(
        lease: &keys::LeasedKey,
        item: &crate::api::ProjectVpnItem,
        options: &TunnelOptions,
        started: Instant,
    ) -> Result<(
        Net,
        tokio::task::JoinHandle<std::io::Result<()>>,
        SocketAddr,
        (bool, bool),
    )> {
        let keys = &lease.keys;
        let vpn = item.to_config().context("the platform's VPN answer")?;
        // Addresses work without the project's DNS server; names then fail with `NoDns`.
        let dns = item.dns_server().ok();
        tracing::debug!(elapsed = ?started.elapsed(), "key registered");

        let endpoint = tokio::net::lookup_host(&vpn.endpoint)
            .await
            .with_context(|| format!("resolving the gateway {}", vpn.endpoint))?
            .next()
            .with_context(|| format!("the gateway {} has no address", vpn.endpoint))?;
        let socket = GatewaySocket::bind(endpoint, net::RX_BATCH)
            .await
            .context("binding the WireGuard UDP socket")?;
        socket::check_route(endpoint)
            .await
            .with_context(|| format!("no route to the gateway {endpoint}"))?;

        let session = Session::new(
            SessionConfig {
                private_key: StaticSecret::from(keys.secret.to_bytes()),
                peer_public_key: PublicKey::from(vpn.server_public_key),
                preshared_key: None,
                persistent_keepalive: Some(options.keepalive),
                allowed_ips: vpn.allowed_networks.clone(),
                probe: vpn
                    .gateways
                    .iter()
                    .find_map(|&target| ProbeRoute::from_addresses(&vpn.addresses, target)),
                path: Some(PathConfig::new(
                    options.mtu,
                    endpoint,
                    crate::tunnel::pmtu::reprobe_period(),
                )),
            },
            Instant::now(),
        );
        let config = StackConfig {
            addresses: vpn.addresses.clone(),
            mtu: usize::from(options.mtu),
            seed: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
        };
        let stack = Stack::new(session, &config, Instant::now());
        let (net, driver) = Net::start(stack, socket, dns.map(|dns| SocketAddr::new(dns, 53)));
        let families = (
            vpn.addresses.iter().any(|a| a.addr().is_ipv4()),
            vpn.addresses.iter().any(|a| a.addr().is_ipv6()),
        );
        Ok((net, driver, endpoint, families))
    }

    pub fn dialer(&self) -> Dialer {
        self.dialer.clone()
    }

    /// Resolves when the driver stops (its UDP socket failed).
    async fn stopped(&mut self) -> String {
        match (&mut self.driver).await {
            Ok(Ok(())) => "the tunnel stopped".into(),
            Ok(Err(e)) => format!("the tunnel's UDP socket failed: {e}"),
            Err(e) => format!("the tunnel stopped: {e}"),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Opens connections through a tunnel; clones go to the connection tasks.
#[derive(Clone)]
pub struct Dialer {
    net: Net,
    timeout: Duration,
    project: String,
    ipv4: bool,
    ipv6: bool,
}

impl Dialer {
    /// The addresses of a container, service or address `target` that this tunnel can reach.
    pub async fn resolve(&self, target: &str) -> Result<Vec<IpAddr>> {
        let found = self
            .net
            .resolve(target)
            .await
            .with_context(|| format!("looking up {target} in project {}", self.project))?;
        let usable: Vec<IpAddr> = found
            .iter()
            .copied()
            .filter(|ip| (ip.is_ipv4() && self.ipv4) || (ip.is_ipv6() && self.ipv6))
            .collect();
        if usable.is_empty() {
            bail!(
                "{target} has only addresses of a family this tunnel does not carry: {}",
                found.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(usable)
    }

    /// Connects to one of `addresses`, starting at index `first` and trying the next one when
    /// one refuses or does not answer.
    pub async fn dial(&self, addresses: &[IpAddr], port: u16, first: usize) -> Result<net::TcpStream, DialError> {
        let mut last = DialError::Stack(stack::ConnectError::NoAddressFamily("usable"));
        for i in 0..addresses.len() {
            let addr = SocketAddr::new(addresses[(first + i) % addresses.len()], port);
            match self.net.connect(addr, self.timeout).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// Listens on the local ports and forwards every connection until Ctrl-C.
pub async fn forward(api: ApiSettings, options: ForwardOptions, report: &mut dyn Watch) -> Result<()> {
    if options.forwards.is_empty() {
        bail!("nothing to forward: give LOCAL:TARGET:PORT, e.g. 2222:api:22");
    }
    // Ports first: a taken port fails before anything is registered.
    let mut listeners = Vec::new();
    for spec in &options.forwards {
        listeners.push((spec.clone(), bind(SocketAddr::new(options.bind, spec.local)).await?));
    }
    // Before the key is registered, so that no signal ends the process with it still there.
    let shutdown = crate::platform::Shutdown::with_hangup()?;
    let mut tunnel = Tunnel::open(api, &options.tunnel, report).await?;
    let result = serve_forwards(&mut tunnel, listeners, shutdown, report).await;
    tunnel.close().await;
    result
}

async fn serve_forwards(
    tunnel: &mut Tunnel,
    listeners: Vec<(ForwardSpec, TcpListener)>,
    shutdown: crate::platform::Shutdown,
    report: &mut dyn Watch,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut ready = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, listener) in listeners {
        let addresses = tunnel.dialer.resolve(&spec.target).await?;
        ready.push(Listener {
            listen: listener.local_addr()?,
            target: format!("{}:{}", spec.target, spec.port),
            addresses: addresses.clone(),
        });
        let forward = Forward {
            spec,
            addresses,
            dialer: tunnel.dialer(),
            counters: counters.clone(),
            events: events_tx.clone(),
        };
        tasks.spawn(forward.serve(listener));
    }
    report.event(&ForwardingEvent::Ready {
        project: tunnel.project.clone(),
        handshake: tunnel.handshake,
        listeners: ready,
    });
    run_until_interrupted(tunnel, &counters, &mut events, shutdown, report).await
}

/// One `LOCAL:TARGET:PORT`, serving its listener.
struct Forward {
    spec: ForwardSpec,
    addresses: Vec<IpAddr>,
    dialer: Dialer,
    counters: Arc<Counters>,
    events: tokio::sync::mpsc::UnboundedSender<ForwardingEvent>,
}

impl Forward {
    async fn serve(self, listener: TcpListener) {
        let listen = listener
            .local_addr()
            .unwrap_or(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.spec.local));
        let (counters, events) = (self.counters.clone(), self.events.clone());
        let this = Arc::new(self);
        let mut next = 0usize;
        serve_connections(listener, listen, counters, events, move |mut local| {
            let first = next;
            next = next.wrapping_add(1);
            let this = this.clone();
            async move {
                let mut remote = this
                    .dialer
                    .dial(&this.addresses, this.spec.port, first)
                    .await
                    .map_err(|error| format!("{}:{}: {error}", this.spec.target, this.spec.port))?;
                if let Err(error) = relay(&mut local, &mut remote).await {
                    tracing::debug!(%error, "forwarded connection ended");
                }
                Ok(())
            }
        })
        .await
    }
}

/// Accepts on `listener` forever and serves each connection (Nagle off) in a task of its own,
/// counted open while it lasts; one that `serve` fails is counted and reported on `listen`.
async fn serve_connections<F, Served>(
    listener: TcpListener,
    listen: SocketAddr,
    counters: Arc<Counters>,
    events: tokio::sync::mpsc::UnboundedSender<ForwardingEvent>,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream) -> Served,
    Served: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        let (local, _) = platform::accept_patiently(|| listener.accept()).await;
        let _ = local.set_nodelay(true);
        let served = serve(local);
        let (counters, events) = (counters.clone(), events.clone());
        tokio::spawn(async move {
            let _open = counters.open();
            if let Err(error) = served.await {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(ForwardingEvent::ConnectionFailed { listen, error });
            }
        });
    }
}

/// Bridges stdin and stdout to one connection, until the remote end closes it.
pub async fn connect(api: ApiSettings, options: ConnectOptions, report: &mut dyn Report) -> Result<()> {
    // Before the key is registered, so that no signal ends the process with it still there.
    let mut shutdown = crate::platform::Shutdown::with_hangup()?;
    let tunnel = Tunnel::open(api, &options.tunnel, report).await?;
    let result = tokio::select! {
        result = bridge(&tunnel, &options) => result,
        signal = shutdown.recv() => {
            tracing::debug!(signal, "connect ends");
            Ok(())
        }
    };
    tunnel.close().await;
    result
}

async fn bridge(tunnel: &Tunnel, options: &ConnectOptions) -> Result<()> {
    let addresses = tunnel.dialer.resolve(&options.host).await?;
    let remote = tunnel
        .dialer()
        .dial(&addresses, options.port, 0)
        .await
        .with_context(|| format!("connecting to {}:{}", options.host, options.port))?;
    // The connection ends when the remote end closes it; our stdin closing only half-closes
    // it (ssh closes its end when it is done anyway).
    let (mut from_remote, mut to_remote) = tokio::io::split(remote);
    let mut stdout = tokio::io::stdout();
    let download = tokio::io::copy(&mut from_remote, &mut stdout);
    let mut stdin = stdin_chunks();
    let upload = async {
        while let Some(chunk) = stdin.recv().await {
            to_remote.write_all(&chunk?).await?;
        }
        to_remote.shutdown().await
    };
    tokio::pin!(download);
    let result = tokio::select! {
        done = &mut download => done,
        sent = upload => match sent {
            Ok(_) => download.await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(_) => Ok(()),
        // The program on our stdio (ssh) closing its end first is a normal end.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).with_context(|| format!("the connection to {}:{}", options.host, options.port)),
    }
}

/// Stdin, read on a thread of its own: a blocking read cannot be cancelled, and tokio's stdin
/// would hold the runtime's shutdown until the next line or EOF after the connection ended.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let chunk = match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// A SOCKS5 server into the project until Ctrl-C.
pub async fn proxy(api: ApiSettings, options: ProxyOptions, report: &mut dyn Watch) -> Result<()> {
    let listener = bind(options.listen).await?;
    let shutdown = crate::platform::Shutdown::with_hangup()?;
    let mut tunnel = Tunnel::open(api, &options.tunnel, report).await?;
    let result = serve_proxy(&mut tunnel, listener, shutdown, report).await;
    tunnel.close().await;
    result
}

async fn serve_proxy(
    tunnel: &mut Tunnel,
    listener: TcpListener,
    shutdown: crate::platform::Shutdown,
    report: &mut dyn Watch,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let listen = listener.local_addr()?;
    report.event(&ForwardingEvent::Ready {
        project: tunnel.project.clone(),
        handshake: tunnel.handshake,
        listeners: vec![Listener {
            listen,
            target: "SOCKS5".into(),
            addresses: Vec::new(),
        }],
    });
    let dialer = tunnel.dialer();
    let server = tokio::spawn(serve_connections(
        listener,
        listen,
        counters.clone(),
        events_tx,
        move |mut local| {
            let dialer = dialer.clone();
            async move { socks::serve(&mut local, &dialer).await.map_err(|e| format!("{e:#}")) }
        },
    ));
    let result = run_until_interrupted(tunnel, &counters, &mut events, shutdown, report).await;
    server.abort();
    result
}

const STATUS_EVERY: Duration = Duration::from_secs(1);

async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => ": the port is taken; pick another local port",
            std::io::ErrorKind::PermissionDenied => ": ports below 1024 need privilege; pick a higher one",
            std::io::ErrorKind::AddrNotAvailable => ": no such local address",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {listen}: {e}{hint}")
    })
}

/// Reports status every second and connection failures as they happen, until Ctrl-C,
/// SIGTERM, SIGHUP (the terminal closed), or the tunnel's end.
async fn run_until_interrupted(
    tunnel: &mut Tunnel,
    counters: &Counters,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ForwardingEvent>,
    mut shutdown: crate::platform::Shutdown,
    report: &mut dyn Watch,
) -> Result<()> {
    let mut status = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            why = tunnel.stopped() => bail!(why),
            Some(event) = events.recv() => report.event(&event),
            _ = status.tick() => report.event(&ForwardingEvent::Status(counters.snapshot(tunnel.net.stats()))),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    total: AtomicU64,
    failed: AtomicU64,
}

/// Counts a connection as open while it lives.
struct OpenGuard<'a>(&'a Counters);

impl Counters {
    fn open(&self) -> OpenGuard<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self)
    }

    fn snapshot(&self, stats: Stats) -> Snapshot {
        Snapshot {
            open: self.open.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            stats,
        }
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FromStr for ForwardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ForwardSpec, String> {
        let usage = || format!("{s:?} is not LOCAL:TARGET:PORT (e.g. 2222:api:22, 8080:[fd00::5]:80)");
        let (local, rest) = s.split_once(':').ok_or_else(usage)?;
        let (target, port) = rest.rsplit_once(':').ok_or_else(usage)?;
        let target = target.trim_start_matches('[').trim_end_matches(']');
        let local: u16 = local.parse().map_err(|_| usage())?;
        let port: u16 = port.parse().map_err(|_| usage())?;
        if local == 0 || port == 0 || target.is_empty() {
            return Err(usage());
        }
        Ok(ForwardSpec {
            local,
            target: target.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs_parse_names_and_bracketed_addresses() {
        assert_eq!(
            "2222:api:65437".parse(),
            Ok(ForwardSpec {
                local: 2222,
                target: "api".into(),
                port: 65437
            })
        );
        assert_eq!(
            "8080:[fd00::5]:80".parse::<ForwardSpec>().map(|s| s.target),
            Ok("fd00::5".to_string())
        );
        for bad in ["2222", "2222:api", "x:api:22", "0:api:22", "22::22", "22:api:70000"] {
            assert!(bad.parse::<ForwardSpec>().is_err(), "{bad}");
        }
    }
}
