//! The tokio shell around the sans-IO session: TUN ⇄ session ⇄ UDP, timers on deadlines.
//! One task owns the session, so the session needs no lock.
//!
//! The data path works in batches so that a syscall moves many packets: the TUN side batches
//! where the OS can (`tun`); on the UDP side one sendmsg carries a GSO batch of equal-sized
//! datagrams and one recvmmsg returns GRO-coalesced ones. Buffers are allocated once.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, oneshot};
use tun_rs::AsyncDevice;
use x25519_dalek::PublicKey;

use super::acks::AckFilter;
use super::clock::SystemClock;
use super::core::{out_buf_len, Event, FromNetwork, ProbeRoute, Session, Stats};
use super::hold::{self, held_until};
use super::socket::{GatewaySocket, GSO_BYTES, RX_BUF};
use super::tun::{self, TunRx, TunTx, OFFSET};

/// Datagrams one recvmmsg may return (each possibly a GRO train of several): what the gateway
/// socket of a [`TunShell`] is bound with.
pub const RX_BATCH: usize = 8;
/// recvmmsg calls before the TUN and the timers get their turn.
const RX_ROUNDS: usize = 4;
/// Decrypted packets handed to the TUN in one batch, at most: more than one GRO train (44
/// segments of 64 KiB), and a bound on the buffers that coalescing fills.
const MAX_TO_TUN: usize = 64;
/// Consecutive failed TUN reads after which the interface is taken to be gone.
const MAX_READ_ERRORS: u32 = 100;
/// How long to sleep when the session has no deadline: only something arriving wakes it.
const NO_DEADLINE: Duration = Duration::from_secs(3600);

/// What the rest of the daemon can ask of a running tunnel.
pub enum Request {
    /// Inject an ICMP echo request; its reply comes back as [`Event::ProbeAnswered`], not
    /// through the TUN.
    Probe { packet: Vec<u8>, id: u16 },
    /// The session's counters as of now.
    Stats { reply: oneshot::Sender<Stats> },
    /// Where the session probes traffic that goes unanswered (see [`Session::set_probe`]).
    LivenessProbe { route: Option<ProbeRoute> },
    /// The gateway's key or address changed (or our key was registered again): a new session
    /// with it, handshaking at once.
    Repoint { peer: PublicKey, endpoint: SocketAddr },
}

/// One peer's data path: the TUN, the UDP socket, the session, and buffers allocated once.
pub struct TunShell {
    device: AsyncDevice,
    socket: GatewaySocket,
    session: Session,
    clock: SystemClock,
    mtu: u16,
    /// Encrypted datagrams of one GSO batch, back to back (also the probe's one datagram).
    gso: Vec<u8>,
    /// Decrypted packets at `OFFSET`, handed to the TUN together so it can coalesce them.
    to_tun: Vec<Vec<u8>>,
    tun_writer: TunWriter,
    /// The hold's deadline, where the TUN coalesces (which is what holding is for); made by
    /// `run`, inside the runtime.
    hold: Option<hold::Timer>,
    /// Decrypted packets at the front of `to_tun` held back for more of their burst.
    held: usize,
    /// Where the session's events go, as they come; one that does not fit is dropped (the data
    /// path never waits for the daemon).
    events: mpsc::Sender<Event>,
}

impl TunShell {
    /// `socket` bound with [`RX_BATCH`]; the session's events go to `events`.
    pub fn new(
        device: AsyncDevice,
        socket: GatewaySocket,
        session: Session,
        mtu: u16,
        events: mpsc::Sender<Event>,
    ) -> TunShell {
        TunShell {
            device,
            socket,
            session,
            clock: SystemClock,
            mtu,
            gso: vec![0; GSO_BYTES + out_buf_len(65_535)],
            to_tun: Vec::new(),
            tun_writer: TunWriter::default(),
            hold: None,
            held: 0,
            events,
        }
    }

    /// Moves packets until `requests` closes.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) -> Result<()> {
        let mut tun_rx = TunRx::new(self.mtu);
        self.hold = tun::coalesces(&self.device).then(hold::Timer::new).flatten();
        let mut read_errors = 0;
        // Handshake at once: being ready must not wait for a first packet (a project may name
        // no gateway to probe).
        self.session.initiate_handshake(Instant::now());
        self.flush().await;
        let mut deadline = self.session.poll_timeout().unwrap_or_else(far_off);
        let mut sleep = pin!(tokio::time::sleep_until(deadline.into()));
        loop {
            tokio::select! {
                read = tun_rx.read(&self.device) => {
                    match read {
                        Ok(n) => {
                            read_errors = 0;
                            let now = self.session.handle_clock(&self.clock);
                            self.outbound(&tun_rx, n, now).await;
                        }
                        Err(e) => {
                            read_errors += 1;
                            tracing::debug!(error = %e, "reading from the tunnel interface");
                            anyhow::ensure!(read_errors < MAX_READ_ERRORS, "the tunnel interface fails: {e}");
                        }
                    }
                }
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        let now = self.session.handle_clock(&self.clock);
                        self.inbound(now).await;
                    }
                }
                () = held_until(&self.hold), if self.held > 0 => {
                    let held = std::mem::take(&mut self.held);
                    self.tun_writer.write(&self.device, &mut self.to_tun[..held]).await;
                }
                () = &mut sleep => {
                    // Stays far off unless the session asks for a deadline below.
                    deadline = far_off();
                    sleep.as_mut().reset(deadline.into());
                    let now = self.session.handle_clock(&self.clock);
                    self.session.handle_timeout(now);
                    self.flush().await;
                }
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    match request {
                        Request::Probe { packet, id } => {
                            self.session.expect_echo_reply(id);
                            let now = self.session.handle_clock(&self.clock);
                            self.send_one(&packet, now).await;
                        }
                        Request::Stats { reply } => {
                            let _ = reply.send(self.session.stats());
                        }
                        Request::LivenessProbe { route } => {
                            let now = self.session.handle_clock(&self.clock);
                            self.session.set_probe(route, now);
                            self.flush().await;
                        }
                        Request::Repoint { peer, endpoint } => {
                            tracing::info!(%endpoint, "new session with the gateway");
                            self.socket.set_endpoint(endpoint);
                            let now = self.session.handle_clock(&self.clock);
                            self.session.set_peer(peer, now);
                            self.flush().await;
                        }
                    }
                }
            }
            while let Some(event) = self.session.poll_event() {
                if self.events.try_send(event).is_err() {
                    tracing::debug!(?event, "tunnel event not taken");
                }
            }
            // A deadline that went away fires once for nothing, then the sleep is far off.
            if let Some(next) = self.session.poll_timeout().filter(|next| *next != deadline) {
                deadline = next;
                sleep.as_mut().reset(deadline.into());
            }
        }
    }
}

impl TunShell {
    /// Encrypts the segments of one TUN read and sends them in as few GSO batches as possible:
    /// a batch is a run of equal-sized datagrams, of which only the last may be shorter.
    async fn outbound(&mut self, tun: &TunRx, n: usize, now: Instant) {
        let max_segments = self.socket.max_segments();
        let (mut used, mut count, mut segment) = (0usize, 0usize, 0usize);
        for packet in tun.packets(n) {
            if used + out_buf_len(packet.len()) > self.gso.len() || count == max_segments || used >= GSO_BYTES {
                self.send_batch(used, segment, count).await;
                (used, count) = (0, 0);
            }
            let Some(datagram) = self.session.handle_tun_packet(packet, &mut self.gso[used..], now) else {
                continue;
            };
            let len = datagram.len();
            if count > 0 && len > segment {
                // A larger datagram cannot join this batch: send the batch, start anew with it.
                self.send_batch(used, segment, count).await;
                self.gso.copy_within(used..used + len, 0);
                (used, count) = (0, 0);
            }
            if count == 0 {
                segment = len;
            }
            used += len;
            count += 1;
            if len < segment {
                self.send_batch(used, segment, count).await;
                (used, count) = (0, 0);
            }
        }
        if count > 0 {
            self.send_batch(used, segment, count).await;
        }
        self.flush().await;
        self.answer_locally().await;
    }

    /// Writes what the session answered itself (ICMP errors to local senders) to the TUN.
    async fn answer_locally(&mut self) {
        let mut packets = Vec::new();
        while let Some(packet) = self.session.poll_tun_packet() {
            let mut buf = vec![0; OFFSET];
            buf.extend_from_slice(&packet);
            packets.push(buf);
        }
        self.tun_writer.write(&self.device, &mut packets).await;
    }

    async fn send_batch(&mut self, used: usize, segment: usize, count: usize) {
        if count > 0 {
            // A failed send is left to the session's retries (the socket logs it).
            let _ = self.socket.send_train(&self.gso[..used], segment).await;
        }
    }

    /// Drains the UDP socket: decrypts every datagram, then writes the packets to the TUN in
    /// one batch so the kernel receives coalesced TCP segments, or holds them for the next
    /// receive ([`hold`]).
    async fn inbound(&mut self, now: Instant) {
        let held = std::mem::take(&mut self.held);
        let mut count = held;
        // Large batches let the TUN coalesce more segments per write; bounded, so memory stays
        // small and the TUN and the timers get their turn under a flood.
        for _ in 0..RX_ROUNDS {
            let Ok(received) = self.socket.try_recv() else { break };
            for datagram in received {
                if count == MAX_TO_TUN {
                    self.tun_writer.write(&self.device, &mut self.to_tun[..count]).await;
                    count = 0;
                }
                if self.to_tun.len() == count {
                    // The TUN coalesces a TCP train into the first buffer only if it has the
                    // capacity; pages are touched as they fill, so it costs no memory unused.
                    self.to_tun.push(Vec::with_capacity(2 * OFFSET + RX_BUF));
                }
                let out = &mut self.to_tun[count];
                out.resize(OFFSET + datagram.len().max(148), 0);
                let len = match self.session.handle_datagram(datagram, &mut out[OFFSET..], now) {
                    FromNetwork::Tunnel(packet) => packet.len(),
                    FromNetwork::Nothing | FromNetwork::Dropped(_) => continue,
                };
                out.truncate(OFFSET + len);
                count += 1;
            }
        }
        let packets = self.to_tun[..count].iter().map(|p| &p[OFFSET..]);
        if hold::keep(&self.hold, packets, held > 0) {
            self.held = count;
        } else {
            self.tun_writer.write(&self.device, &mut self.to_tun[..count]).await;
        }
        self.flush().await;
    }

    /// Encrypts and sends one packet that did not come from the TUN (the readiness probe).
    async fn send_one(&mut self, packet: &[u8], now: Instant) {
        if let Some(datagram) = self.session.handle_tun_packet(packet, &mut self.gso, now) {
            let _ = self.socket.send(datagram).await;
        }
        self.flush().await;
    }

    /// Sends what the session queued: handshakes, keepalives, packets held for a handshake.
    async fn flush(&mut self) {
        while let Some(datagram) = self.session.poll_datagram() {
            let _ = self.socket.send(&datagram).await;
        }
    }
}

fn far_off() -> Instant {
    Instant::now() + NO_DEADLINE
}

/// Writes packets to the TUN, less the ACKs a later one of the same batch makes stale.
#[derive(Default)]
struct TunWriter {
    tx: TunTx,
    acks: AckFilter,
}

impl TunWriter {
    async fn write(&mut self, device: &AsyncDevice, packets: &mut [Vec<u8>]) {
        let kept = self.acks.thin(packets, OFFSET);
        if kept == 0 {
            return;
        }
        if let Err(e) = self.tx.write(device, &mut packets[..kept]).await {
            tracing::debug!(error = %e, "writing to the tunnel interface");
        }
    }
}
