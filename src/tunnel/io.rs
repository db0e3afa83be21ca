//! The tokio shell around the sans-IO session: TUN ⇄ session ⇄ UDP, timers on deadlines.
//! One task owns the session, so the session needs no lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tun_rs::AsyncDevice;

use super::core::{FromNetwork, Session, Stats};
use super::probe;

/// Room for a full 64 KiB packet plus WireGuard's overhead.
const BUF: usize = 65_536 + 256;

/// What the rest of the daemon can ask of a running tunnel.
pub enum Request {
    /// Inject an ICMP echo request; answer when its reply comes back out of the tunnel.
    Probe {
        packet: Vec<u8>,
        id: u16,
        answered: oneshot::Sender<()>,
    },
    /// The session\'s counters as of now.
    Stats { reply: oneshot::Sender<Stats> },
}

pub struct Tunnel {
    pub device: Arc<AsyncDevice>,
    pub udp: UdpSocket,
    pub endpoint: SocketAddr,
    pub session: Session,
}

impl Tunnel {
    /// Moves packets until `requests` closes.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) -> Result<()> {
        let mut tun_buf = vec![0u8; BUF];
        let mut net_buf = vec![0u8; BUF];
        let mut out = vec![0u8; BUF];
        let mut probe: Option<(u16, oneshot::Sender<()>)> = None;
        loop {
            let deadline = tokio::time::Instant::from_std(self.session.poll_timeout());
            tokio::select! {
                read = self.device.recv(&mut tun_buf) => {
                    let n = read.context("reading from the tunnel interface")?;
                    self.send_packet(&tun_buf[..n], &mut out).await;
                }
                read = self.udp.recv_from(&mut net_buf) => {
                    let (n, from) = match read {
                        Ok(r) => r,
                        // ICMP errors (port unreachable) surface here; the session retries on its own.
                        Err(e) => { tracing::debug!(error = %e, "udp receive"); continue }
                    };
                    if from != self.endpoint {
                        tracing::trace!(%from, "datagram from an unknown address dropped");
                        continue;
                    }
                    match self.session.handle_datagram(&net_buf[..n], &mut out, Instant::now()) {
                        FromNetwork::Tunnel(packet) => {
                            if probe.as_ref().is_some_and(|(id, _)| probe::is_echo_reply(packet, *id)) {
                                if let Some((_, answered)) = probe.take() {
                                    let _ = answered.send(());
                                }
                            } else if let Err(e) = self.device.send(packet).await {
                                tracing::debug!(error = %e, "writing to the tunnel interface");
                            }
                        }
                        FromNetwork::Nothing | FromNetwork::Dropped(_) => {}
                    }
                    self.flush().await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.session.handle_timeout(Instant::now());
                    self.flush().await;
                }
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    match request {
                        Request::Probe { packet, id, answered } => {
                            probe = Some((id, answered));
                            self.send_packet(&packet, &mut out).await;
                        }
                        Request::Stats { reply } => {
                            let _ = reply.send(self.session.stats());
                        }
                    }
                }
            }
        }
    }

    async fn send_packet(&mut self, packet: &[u8], out: &mut [u8]) {
        if let Some(datagram) = self.session.handle_tun_packet(packet, out, Instant::now()) {
            if let Err(e) = self.udp.send_to(datagram, self.endpoint).await {
                tracing::debug!(error = %e, "udp send");
            }
        }
        self.flush().await;
    }

    /// Sends what the session queued: handshakes, keepalives, packets held for a handshake.
    async fn flush(&mut self) {
        while let Some(datagram) = self.session.poll_datagram() {
            if let Err(e) = self.udp.send_to(&datagram, self.endpoint).await {
                tracing::debug!(error = %e, "udp send");
            }
        }
    }
}
