//! The daemon: owns the tunnel interface, the UDP socket, the WireGuard session and the host
//! changes of one connected project. `vpn up` starts it and reads its progress events; `vpn
//! status` and `vpn down` talk to it over the control socket.

pub mod control;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::api::ProjectId;
use crate::dns;
use crate::host::{self, Journal};
use crate::paths::ConnectionFiles;
use crate::platform;
use crate::tunnel::core::{Config as SessionConfig, ProbeRoute, Session, Stats};
use crate::tunnel::io::{Request, Tunnel};
use crate::tunnel::{device, probe};

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
    /// Addresses answering ICMP echo inside the project (its gateways), tried in order.
    pub probe_targets: Vec<IpAddr>,
}

/// Progress of a starting daemon, one JSON line each on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsStatus {
    pub mode: dns::Mode,
    pub responder: Option<SocketAddr>,
    pub project_dns: IpAddr,
    #[serde(flatten)]
    pub stats: dns::DnsStats,
}

/// The name the platform always serves; its answer proves project DNS works end to end.
pub const DNS_PROBE_NAME: &str = "logger.core.zerops";

/// Runs a connection until `down`, SIGINT or SIGTERM; reports progress through `events`.
/// Whatever happens, the host changes are undone before it returns.
pub async fn run(config: DaemonConfig, files: ConnectionFiles, events: &mut dyn FnMut(&Event)) -> Result<()> {
    if let Some(dir) = files.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A crashed predecessor's leftovers go first.
    host::restore(&files.journal)?;
    let mut journal = Journal::create(&files.journal)?;
    let result = serve(&config, &files, &mut journal, events).await;
    drop(journal);
    let restored = host::restore(&files.journal);
    platform::ipc::remove(&files.socket);
    let _ = std::fs::remove_file(&files.state);
    if let Err(e) = &result {
        events(&Event::Failed {
            error: format!("{e:#}"),
        });
    }
    result.and(restored.map(|_| ()))
}

async fn serve(
    config: &DaemonConfig,
    files: &ConnectionFiles,
    journal: &mut Journal,
    events: &mut dyn FnMut(&Event),
) -> Result<()> {
    // From the first change on, a signal must lead to the cleanup, never to a plain exit.
    let mut shutdown = platform::Shutdown::new().context("setting up the stop signals")?;
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
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
    events(&Event::Interface { name: name.clone() });

    let endpoint = resolve(&config.endpoint).await?;
    let bind: SocketAddr = if endpoint.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let udp = tokio::net::UdpSocket::bind(bind)
        .await
        .context("binding the WireGuard UDP socket")?;
    let session = Session::new(session_config(config), Instant::now());
    let (req_tx, req_rx) = mpsc::channel(8);
    let tunnel = Tunnel::new(dev, udp, endpoint, session, config.mtu)?;
    let mut io = tokio::spawn(tunnel.run(req_rx));
    let stats = || async {
        let (reply, answer) = oneshot::channel();
        req_tx.send(Request::Stats { reply }).await.ok()?;
        answer.await.ok()
    };

    // Ready means: handshake done and a packet made the round trip through the tunnel.
    let timeout = Duration::from_secs(config.handshake_timeout_secs);
    let ready = probe_until_answered(config, &req_tx, started + timeout);
    let (target, probe_ms) = tokio::select! {
        r = ready => r?,
        signal = shutdown.recv() => bail!("stopped by {signal} before the tunnel was ready"),
        r = &mut io => bail!("the tunnel stopped: {}", join_error(r)),
    };
    events(&Event::Handshake {
        millis: started.elapsed().as_millis() as u64,
    });
    events(&Event::Probe {
        target,
        millis: probe_ms,
    });

    // Names are reported separately from the tunnel: a resolver we cannot configure (no
    // privilege over /etc/resolv.conf, resolved gone) leaves a working tunnel, and says so.
    let (responder, host_dns) = match (config.dns, config.dns_mode) {
        (Some(project_dns), mode) if mode != dns::Mode::Off => {
            let names = set_up_names(project_dns, mode, &name, journal).await;
            let (mode, answer) = match &names {
                Ok((_, plan)) => (plan.mode, system_lookup(DNS_PROBE_NAME).await),
                Err(e) => (mode, Err(format!("{e:#}"))),
            };
            events(&Event::Dns {
                mode,
                name: DNS_PROBE_NAME.into(),
                answer,
            });
            names.map_or((None, None), |(responder, plan)| (Some(responder), Some(plan)))
        }
        _ => (None, None),
    };

    let status = |stats: &Stats| Status {
        project_id: config.project_id.clone(),
        project_name: config.project_name.clone(),
        pid: std::process::id(),
        interface: name.clone(),
        addresses: config.addresses.clone(),
        networks: config.networks.clone(),
        endpoint: endpoint.to_string(),
        mtu: config.mtu,
        dns: config.dns.map(|project_dns| DnsStatus {
            mode: host_dns.as_ref().map_or(dns::Mode::Off, |h| h.mode),
            responder: responder.as_ref().map(dns::Responder::local_addr),
            project_dns,
            stats: responder.as_ref().map(dns::Responder::stats).unwrap_or_default(),
        }),
        started_unix,
        uptime_secs: started.elapsed().as_secs(),
        tunnel: TunnelStatus::from(stats),
    };

    let mut control = control::serve(&files.socket)?;
    let ready = status(&stats().await.unwrap_or_default());
    std::fs::write(&files.state, serde_json::to_vec(&ready)?)?;
    events(&Event::Ready {
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
                let _ = ask.reply.send(status(&stats().await.unwrap_or_default()));
                if ask.command == control::Command::Down {
                    break;
                }
            }
        }
    }
    tracing::info!(project = %config.project_name, "disconnecting");
    drop(req_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), io).await;
    if let Some(responder) = responder {
        responder.shutdown().await;
    }
    Ok(())
}

/// Sends echo requests to the project's gateways until one answers or `deadline` passes. Each
/// lost request is retried: the first usually waits for the handshake.
async fn probe_until_answered(
    config: &DaemonConfig,
    requests: &mpsc::Sender<Request>,
    deadline: Instant,
) -> Result<(IpAddr, u64)> {
    let id = (std::process::id() & 0xffff) as u16;
    let mut seq = 0u16;
    while Instant::now() < deadline {
        for &target in &config.probe_targets {
            let Some(src) = config
                .addresses
                .iter()
                .map(IpNet::addr)
                .find(|a| a.is_ipv4() == target.is_ipv4())
            else {
                continue;
            };
            seq = seq.wrapping_add(1);
            let Some(packet) = probe::echo_request(src, target, id, seq) else {
                continue;
            };
            let (answered, reply) = oneshot::channel();
            let sent = Instant::now();
            requests
                .send(Request::Probe { packet, id, answered })
                .await
                .context("the tunnel stopped")?;
            let wait = Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now()));
            if let Ok(Ok(())) = tokio::time::timeout(wait, reply).await {
                return Ok((target, sent.elapsed().as_millis() as u64));
            }
        }
    }
    bail!(
        "no answer through the tunnel from {} within {}s: the endpoint {} is unreachable, \
         drops UDP, or does not know this key",
        config
            .probe_targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.handshake_timeout_secs,
        config.endpoint
    )
}

/// Starts the responder and points the host's resolver at it.
async fn set_up_names(
    project_dns: IpAddr,
    mode: dns::Mode,
    interface: &str,
    journal: &mut Journal,
) -> Result<(dns::Responder, dns::HostDns)> {
    let plan = dns::plan_host(mode, dns::DEFAULT_LISTEN)?;
    let responder = dns::Responder::start(dns::ResponderConfig::new(project_dns, plan.upstreams.clone()))
        .await
        .context("starting the DNS responder")?;
    dns::configure_host(&plan, responder.local_addr(), interface, journal)?;
    Ok((responder, plan))
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

fn session_config(config: &DaemonConfig) -> SessionConfig {
    SessionConfig {
        private_key: config.private_key.clone(),
        peer_public_key: config.server_public_key,
        preshared_key: None,
        persistent_keepalive: Some(config.keepalive_secs),
        allowed_ips: config.networks.clone(),
        probe: config.probe_targets.iter().find_map(|&target| {
            let source = config
                .addresses
                .iter()
                .map(IpNet::addr)
                .find(|a| a.is_ipv4() == target.is_ipv4())?;
            Some(ProbeRoute { source, target })
        }),
    }
}

async fn resolve(endpoint: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .with_context(|| format!("resolving the endpoint {endpoint}"))?
        .next()
        .with_context(|| format!("the endpoint {endpoint} has no address"))
}

fn join_error(r: Result<Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "closed".into(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}
