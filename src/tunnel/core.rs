//! Sans-IO WireGuard peer session around `boringtun::noise::Tunn`.
//!
//! IP packets from the TUN and datagrams from the network go in, time is passed in, and what
//! has to be sent or written comes out. No sockets, no tasks, no clock reads of our own.
//!
//! Time decides three things here, all on the caller's clock: when boringtun's timers must run
//! (only when one of them can be due, so an idle connection sleeps), the persistent keepalive,
//! and recovery: data went out, nothing authenticated came back, a probe got no answer either,
//! so the peer must have lost the session and a fresh handshake is forced at once instead of
//! after WireGuard's 15 s. A suspend seen on the clock forces one too.
//!
//! The data path borrows caller-provided buffers and never allocates; only the rare control
//! datagrams (handshakes, cookie replies, keepalives, probes, packets that waited for a
//! handshake) go through an internal queue drained with [`Session::poll_datagram`].
//!
//! What happened that the shells (and the daemon behind them) care about comes out as [`Event`]s,
//! drained with [`Session::poll_event`] after each batch.
//!
//! Buffer sizes: [`Session::handle_tun_packet`] needs `out_buf_len(packet.len())` bytes and
//! [`Session::handle_datagram`] needs `max(datagram.len(), MIN_OUT_BUF)`; a buffer of
//! `out_buf_len(mtu)` serves both for traffic within the MTU. A shorter buffer is refused and
//! counted, never a panic inside boringtun.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use rand_core::{OsRng, RngCore};

use super::clock::Clock;
use super::pmtu::{PathMtu, Probe};
use super::{fit, probe};

/// Bytes WireGuard adds to every IP packet it encrypts (16 header + 16 tag).
pub const DATA_OVERHEAD: usize = 32;

/// The shortest out buffer any call accepts: a handshake initiation is 148 bytes.
pub const MIN_OUT_BUF: usize = 148;

/// The largest IP packet accepted from the TUN (the IPv4/IPv6 length fields are 16 bits).
pub const MAX_PACKET: usize = u16::MAX as usize;

/// Data went out and nothing authenticated came back for this long: probe the peer. Far above
/// any round trip, so a healthy connection has answered by then.
pub const PROBE_AFTER: Duration = Duration::from_secs(1);

/// The probe got no answer for this long either: the peer lost the session, handshake again.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The out buffer length needed to encrypt packets of up to `max_packet` bytes.
pub const fn out_buf_len(max_packet: usize) -> usize {
    let needed = max_packet + DATA_OVERHEAD;
    if needed > MIN_OUT_BUF {
        needed
    } else {
        MIN_OUT_BUF
    }
}

/// One peer: our key, theirs, and the sources we accept from them.
#[derive(Clone)]
pub struct Config {
    pub private_key: StaticSecret,
    pub peer_public_key: PublicKey,
    pub preshared_key: Option<[u8; 32]>,
    /// Seconds without any packet either way after which a keepalive goes out; `None` disables
    /// them.
    pub persistent_keepalive: Option<u16>,
    /// Prefixes the inner source address of every decrypted packet must fall in.
    pub allowed_ips: Vec<IpNet>,
    /// Our address and one of the peer's that answers ICMP echo: how an unanswered connection
    /// is probed. Without it, a fresh handshake is the probe.
    pub probe: Option<ProbeRoute>,
    /// How the path to the peer is measured and traffic fitted to it; `None`: sent as it comes.
    /// Discovery needs `probe` too: its echoes are the path probes.
    pub path: Option<PathConfig>,
}

/// The sizes path discovery works between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathConfig {
    /// The largest inner packet: the interface MTU.
    pub mtu: u16,
    /// What the tunnel adds to an inner packet on the way to the peer: outer IP and UDP
    /// headers and WireGuard's.
    pub overhead: u16,
    /// How often a path is searched again, which is how a widened path is found.
    pub reprobe: Duration,
}

impl PathConfig {
    pub fn new(mtu: u16, endpoint: SocketAddr, reprobe: Duration) -> PathConfig {
        let ip = if endpoint.is_ipv6() { 40 } else { 20 };
        PathConfig {
            mtu,
            overhead: ip + 8 + DATA_OVERHEAD as u16,
            reprobe,
        }
    }
}

/// Where an echo request goes through the tunnel, and which of our addresses it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRoute {
    pub source: IpAddr,
    pub target: IpAddr,
}

impl ProbeRoute {
    /// To `target` from the first of our `addresses` of its family; `None` without one.
    pub fn from_addresses(addresses: &[IpNet], target: IpAddr) -> Option<ProbeRoute> {
        let source = addresses
            .iter()
            .map(IpNet::addr)
            .find(|a| a.is_ipv4() == target.is_ipv4())?;
        Some(ProbeRoute { source, target })
    }
}

/// Counters since the session was created; they survive session rebuilds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inner IP bytes encrypted and handed out to be sent.
    pub tx_bytes: u64,
    /// Inner IP bytes decrypted and delivered to the TUN.
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    /// Decrypted packets whose source is outside `allowed_ips`.
    pub dropped_not_allowed: u64,
    /// Datagrams that failed to parse, authenticate or decrypt (including replays).
    pub dropped_invalid: u64,
    /// Decrypted packets with an inconsistent IP header, and oversized TUN packets.
    pub dropped_malformed: u64,
    /// Calls refused because the out buffer was shorter than required.
    pub dropped_small_buffer: u64,
    /// TUN packets to a destination outside `allowed_ips`: the peer would drop them.
    pub dropped_no_route: u64,
    /// Age of the current session's handshake, if there is a session.
    pub last_handshake: Option<Duration>,
    /// Times the boringtun tunnel was replaced after its connection expired.
    pub sessions_rebuilt: u64,
    pub state: LinkState,
    /// Echo requests sent because traffic went unanswered.
    pub probes_sent: u64,
    /// Times the peer stopped answering (or the machine slept) and a fresh handshake was forced.
    pub reconnects: u64,
    /// Handshake initiations sent by force, retries included.
    pub handshakes_forced: u64,
    /// Suspends seen on the clock.
    pub sleeps_detected: u64,
    /// The largest outer datagram (IP header included) known to reach the peer and come back.
    pub path_mtu: Option<u16>,
    /// The TCP MSS that SYNs crossing the tunnel are clamped to, while the path is narrower
    /// than the interface.
    pub mss_ipv4: Option<u16>,
    pub mss_ipv6: Option<u16>,
    pub syns_clamped: u64,
    /// Inner packets too large for the path, sent as fragments that fit.
    pub packets_fragmented: u64,
    /// Inner IPv4 packets too large for the path and not to be fragmented, answered with an
    /// ICMP "fragmentation needed" to their sender.
    pub too_big_sent: u64,
    pub path_probes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkState {
    /// No answer from the peer yet.
    #[default]
    Connecting,
    /// The peer's last word was authenticated and nothing sent since waits for an answer.
    Connected,
    /// The peer stopped answering at `since`; handshakes are being forced.
    Reconnecting { since: Instant },
}

/// What the session says happened, in order; drained with [`Session::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A handshake with the peer completed (the first, and every renewal after it).
    HandshakeCompleted,
    /// The peer stopped answering; handshakes are being forced.
    PeerUnresponsive,
    /// The peer answers again after [`Event::PeerUnresponsive`].
    PeerAnswersAgain,
    /// The echo reply registered with [`Session::expect_echo_reply`] came back (and was kept
    /// from the TUN).
    ProbeAnswered { id: u16 },
    /// A path MTU search found a size other than the last one's.
    PathMeasured { mtu: u16 },
}

/// What a datagram from the network turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum FromNetwork<'a> {
    /// A decrypted IP packet to write to the TUN.
    Tunnel(&'a [u8]),
    /// Nothing for the TUN (handshake, keepalive, cookie, probe reply); check
    /// [`Session::poll_datagram`].
    Nothing,
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The inner source address is outside the peer's allowed IPs.
    NotAllowed(IpAddr),
    /// The datagram is not a valid WireGuard message for this session.
    Invalid,
    /// The decrypted packet is not a consistent IPv4 or IPv6 packet.
    Malformed,
    /// The out buffer is too short for this datagram.
    BufferTooSmall,
}

/// A WireGuard session with one peer.
pub struct Session {
    tunn: Tunn,
    config: Config,
    control: VecDeque<Vec<u8>>,
    /// Room for anything boringtun emits outside the data path (timers, queue flushes).
    scratch: Box<[u8]>,
    times: Times,
    recovery: Recovery,
    probe_id: u16,
    probe_seq: u16,
    /// Last observed connection state, only to log its transitions.
    connected: bool,
    stats: Stats,
    path: Option<PathMtu>,
    /// Set while the path is narrower than the interface: what packets must fit.
    fit: Option<Fit>,
    /// Packets for the TUN that the session made itself (ICMP errors to local senders).
    to_tun: VecDeque<Vec<u8>>,
    fragment_id: u32,
    events: VecDeque<Event>,
    /// The id of an echo request injected from outside whose reply is reported, not delivered.
    echo: Option<u16>,
    /// The path MTU last reported.
    reported_path: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fit {
    /// The largest inner packet that crosses the path in one datagram.
    max: u16,
    mss_ipv4: u16,
    mss_ipv6: u16,
}

impl Session {
    pub fn new(config: Config, now: Instant) -> Session {
        Session {
            tunn: new_tunn(&config),
            control: VecDeque::new(),
            scratch: vec![0; out_buf_len(MAX_PACKET)].into_boxed_slice(),
            times: Times::new(now),
            recovery: Recovery::default(),
            probe_id: (OsRng.next_u32() & 0xffff) as u16,
            probe_seq: 0,
            connected: false,
            stats: Stats::default(),
            path: config.path.map(|p| PathMtu::new(p.mtu, p.overhead, p.reprobe)),
            fit: None,
            to_tun: VecDeque::new(),
            fragment_id: OsRng.next_u32(),
            events: VecDeque::new(),
            echo: None,
            reported_path: None,
            config,
        }
    }

    /// Reads the time for the calls that follow, once per batch of work. A machine that slept
    /// gets a fresh handshake at once: the peer has likely dropped the session meanwhile.
    pub fn handle_clock(&mut self, clock: &dyn Clock) -> Instant {
        let now = clock.now();
        let asleep = clock.asleep();
        let slept = self.times.asleep.map(|before| asleep.saturating_sub(before));
        self.times.asleep = Some(asleep);
        // Before the timers run: after a long sleep they may expire the connection entirely.
        let had_session = self.times.established.is_some();
        if now.saturating_duration_since(self.times.timers_ran) >= STAMP_RESOLUTION {
            self.run_timers(now);
        }
        if let Some(slept) = slept.filter(|slept| *slept >= SLEEP_JUMP) {
            self.stats.sleeps_detected += 1;
            tracing::info!(slept_secs = slept.as_secs(), "the machine slept; handshaking again");
            if had_session {
                self.recovery = Recovery {
                    unanswered_since: Some(now),
                    last_traffic: Some(now),
                    step: Step::Waiting,
                };
                self.force_handshake(now);
            }
        }
        now
    }

    /// Queues a handshake initiation unless one is already in progress, so a caller can connect
    /// before it has traffic (with only a persistent keepalive, the first handshake would wait a
    /// whole keepalive interval).
    pub fn initiate_handshake(&mut self, now: Instant) {
        let initiation = to_send(self.tunn.format_handshake_initiation(&mut self.scratch, false));
        self.send(initiation, "handshake initiation", now);
    }

    /// Encrypts an IP packet from the TUN and returns the datagram to send. Without a session,
    /// boringtun keeps the packet and a handshake initiation goes to the control queue; the
    /// packet follows once the handshake completes.
    pub fn handle_tun_packet<'a>(&mut self, packet: &[u8], out: &'a mut [u8], now: Instant) -> Option<&'a [u8]> {
        if packet.len() > MAX_PACKET {
            self.stats.dropped_malformed += 1;
            tracing::trace!(len = packet.len(), "dropped oversized tun packet");
            return None;
        }
        if out.len() < out_buf_len(packet.len()) {
            self.stats.dropped_small_buffer += 1;
            tracing::trace!(len = packet.len(), out = out.len(), "out buffer too small");
            return None;
        }
        // Cryptokey routing, as WireGuard does it: what the peer may not send from, it would
        // drop coming in. Here that is the kernel's link-local chatter on the new interface
        // (router solicitations, MLD reports), which would also look unanswered.
        if !self.routes_to_peer(packet) {
            self.stats.dropped_no_route += 1;
            tracing::trace!(
                len = packet.len(),
                "dropped tun packet to a destination outside allowed ips"
            );
            return None;
        }
        self.recovery.traffic_sent(now);
        if let Some(fit) = self.fit {
            if packet.len() > usize::from(fit.max) {
                self.send_too_big(packet, fit, now);
                return None;
            }
            if fit::is_tcp_syn(packet) {
                return self.encapsulate_clamped(packet, fit, out, now);
            }
        }
        self.encapsulate(packet, out, now)
    }

    fn encapsulate<'a>(&mut self, packet: &[u8], out: &'a mut [u8], now: Instant) -> Option<&'a [u8]> {
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(datagram) if is_handshake_initiation(datagram) => {
                let initiation = datagram.to_vec();
                self.push_control(initiation, now);
                None
            }
            TunnResult::WriteToNetwork(datagram) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += packet.len() as u64;
                self.times.sent(now, true);
                tracing::trace!(len = packet.len(), "encrypted packet");
                Some(datagram)
            }
            TunnResult::Done => {
                tracing::trace!(len = packet.len(), "packet queued until handshake");
                None
            }
            TunnResult::Err(error) => {
                tracing::debug!(?error, "encapsulate failed");
                None
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => None,
        }
    }

    /// Decrypts a datagram from the network. Replies and packets released by a completed
    /// handshake go to the control queue; a decrypted packet is returned only if its source is
    /// in the allowed IPs.
    pub fn handle_datagram<'a>(&mut self, datagram: &[u8], out: &'a mut [u8], now: Instant) -> FromNetwork<'a> {
        // boringtun reads an empty datagram as "flush your queue", not as a message.
        if datagram.is_empty() {
            return self.drop_invalid(datagram, None);
        }
        if out.len() < datagram.len().max(MIN_OUT_BUF) {
            self.stats.dropped_small_buffer += 1;
            tracing::trace!(len = datagram.len(), out = out.len(), "out buffer too small");
            return FromNetwork::Dropped(DropReason::BufferTooSmall);
        }
        let kind = message_type(datagram);
        // No source address: boringtun then never answers with cookies, it refuses handshakes
        // while over its rate limit (10 per second, plenty for a single gateway).
        let result = self.tunn.decapsulate(None, datagram, out);
        if !matches!(result, TunnResult::Err(_)) && kind != Some(COOKIE_REPLY) {
            self.answered(kind, now);
        }
        match result {
            TunnResult::Done => FromNetwork::Nothing,
            TunnResult::WriteToNetwork(reply) => {
                let reply = reply.to_vec();
                self.push_control(reply, now);
                self.flush_queued(now);
                FromNetwork::Nothing
            }
            TunnResult::WriteToTunnelV4(packet, source) => self.admit(packet, source.into(), now),
            TunnResult::WriteToTunnelV6(packet, source) => self.admit(packet, source.into(), now),
            TunnResult::Err(error) => self.drop_invalid(datagram, Some(error)),
        }
    }

    /// Does what is due by `now`: boringtun's timers (retransmits, rekeys, its keepalives), the
    /// persistent keepalive, the next recovery step. An expired connection gets a fresh tunnel.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
        if self.keepalive_due().is_some_and(|due| due <= now) {
            self.send_keepalive(now);
        }
        if self.recovery_due().is_some_and(|due| due <= now) {
            self.recover(now);
        }
        if self.path_due().is_some_and(|due| due <= now) {
            let probe = self.path.as_mut().and_then(|p| p.handle_timeout(now));
            self.after_path_change(probe, now);
        }
        self.note_connection_state();
    }

    /// The next control datagram to send. Drain after every `handle_*` call.
    pub fn poll_datagram(&mut self) -> Option<Vec<u8>> {
        self.control.pop_front()
    }

    /// The next packet the session made for the TUN (an ICMP error to a local sender). Drain
    /// after every [`Session::handle_tun_packet`] batch.
    pub fn poll_tun_packet(&mut self) -> Option<Vec<u8>> {
        self.to_tun.pop_front()
    }

    /// The next thing that happened. Drain after every batch; the queue is bounded, the oldest
    /// going first when it is full.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Reports the next echo reply with `id` as [`Event::ProbeAnswered`] instead of handing it
    /// to the TUN: the answer to an echo request the caller injected (the readiness ping).
    pub fn expect_echo_reply(&mut self, id: u16) {
        self.echo = Some(id);
    }

    /// The largest inner packet that crosses the path in one datagram, once a search found the
    /// path narrower than the interface.
    pub fn path_fit(&self) -> Option<usize> {
        self.fit.map(|fit| usize::from(fit.max))
    }

    /// Whether the path is measured: there is a search and an address to probe.
    pub fn measures_path(&self) -> bool {
        self.path.is_some() && self.config.probe.is_some()
    }

    /// The largest outer datagram known to cross the path, once a search has ended.
    pub fn path_mtu(&self) -> Option<u16> {
        self.path.as_ref().and_then(PathMtu::confirmed)
    }

    /// When [`Session::handle_timeout`] should next be called; `None`: not until something
    /// else happens.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers_due(),
            self.keepalive_due(),
            self.recovery_due(),
            self.path_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Where unanswered traffic is probed: an address that answered ICMP echo through the
    /// tunnel; `None` when none does, and a handshake is the probe.
    pub fn set_probe(&mut self, probe: Option<ProbeRoute>, now: Instant) {
        self.config.probe = probe;
        if self.stats.state == LinkState::Connected {
            self.start_path_search(now);
        }
    }

    /// The peer was replaced (the gateway redeployed with a new key, or the same key registered
    /// again): a session with the new peer, the counters kept, and its handshake at once.
    pub fn set_peer(&mut self, peer_public_key: PublicKey, now: Instant) {
        self.config.peer_public_key = peer_public_key;
        self.rebuild();
        self.initiate_handshake(now);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            last_handshake: self.tunn.time_since_last_handshake(),
            path_mtu: self.path_mtu(),
            mss_ipv4: self.fit.map(|f| f.mss_ipv4),
            mss_ipv6: self.fit.map(|f| f.mss_ipv6),
            path_probes: self.path.as_ref().map_or(0, |p| p.probes_sent),
            ..self.stats.clone()
        }
    }

    /// A handshake has completed and its session has not expired.
    pub fn is_connected(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some() && !self.tunn.is_expired()
    }

    /// Checks a packet boringtun decrypted: a consistent IP header, and a source the peer may
    /// use (boringtun checks neither the header's consistency fully nor the source at all).
    fn admit<'a>(&mut self, packet: &'a mut [u8], source: IpAddr, now: Instant) -> FromNetwork<'a> {
        self.times.data_received = Some(now);
        if !is_well_formed(packet) {
            self.stats.dropped_malformed += 1;
            tracing::trace!(len = packet.len(), "dropped malformed inner packet");
            return FromNetwork::Dropped(DropReason::Malformed);
        }
        if !self.config.allowed_ips.iter().any(|net| net.contains(&source)) {
            self.stats.dropped_not_allowed += 1;
            tracing::trace!(%source, "dropped packet from a source outside allowed ips");
            return FromNetwork::Dropped(DropReason::NotAllowed(source));
        }
        if probe::is_echo_reply(packet, self.probe_id) {
            tracing::debug!("probe answered");
            // The gateway answers a small packet but not the traffic: perhaps the path
            // narrowed under it.
            if let Some(path) = &mut self.path {
                // Before the first search ends there is nothing to search again.
                if path.confirmed().is_some() {
                    path.stalled(now);
                }
                let probe = path.poll_probe(now);
                self.after_path_change(probe, now);
            }
            return FromNetwork::Nothing;
        }
        if let Some(seq) = probe::echo_reply_seq(packet, self.path_probe_id()) {
            if let Some(path) = &mut self.path {
                path.answered(seq, now);
                let probe = path.poll_probe(now);
                self.after_path_change(probe, now);
            }
            return FromNetwork::Nothing;
        }
        if let Some(fit) = self.fit {
            if fit::clamp_mss(packet, fit.mss_ipv4, fit.mss_ipv6) {
                self.stats.syns_clamped += 1;
            }
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += packet.len() as u64;
        tracing::trace!(len = packet.len(), %source, "decrypted packet");
        if let Some(id) = self.echo.filter(|id| probe::is_echo_reply(packet, *id)) {
            self.echo = None;
            self.push_event(Event::ProbeAnswered { id });
            return FromNetwork::Nothing;
        }
        FromNetwork::Tunnel(packet)
    }

    fn drop_invalid<'a>(&mut self, datagram: &[u8], error: Option<WireGuardError>) -> FromNetwork<'a> {
        self.stats.dropped_invalid += 1;
        tracing::trace!(len = datagram.len(), ?error, "dropped invalid datagram");
        FromNetwork::Dropped(DropReason::Invalid)
    }

    fn routes_to_peer(&self, packet: &[u8]) -> bool {
        Tunn::dst_address(packet).is_some_and(|dst| self.config.allowed_ips.iter().any(|net| net.contains(&dst)))
    }

    /// The peer said something authenticated: whatever waited is answered.
    fn answered(&mut self, kind: Option<u32>, now: Instant) {
        self.times.received = Some(now);
        self.times.traversal = now;
        if matches!(kind, Some(HANDSHAKE_INITIATION | HANDSHAKE_RESPONSE)) {
            if let (Some(sent), Some(path)) = (self.times.initiation, &mut self.path) {
                path.observe_rtt(now.saturating_duration_since(sent));
            }
            self.times.established = Some(now);
            self.times.initiation = None;
            self.push_event(Event::HandshakeCompleted);
        }
        self.recovery = Recovery::default();
        match self.stats.state {
            LinkState::Connected => {}
            LinkState::Reconnecting { since } => {
                tracing::info!(
                    after_ms = now.saturating_duration_since(since).as_millis() as u64,
                    "the peer answers again"
                );
                self.stats.state = LinkState::Connected;
                self.push_event(Event::PeerAnswersAgain);
            }
            LinkState::Connecting => {
                self.stats.state = LinkState::Connected;
                self.start_path_search(now);
            }
        }
    }

    /// The first search, once the peer answers and there is an address to probe.
    fn start_path_search(&mut self, now: Instant) {
        let Some(path) = self.path.as_mut().filter(|p| p.confirmed().is_none()) else {
            return;
        };
        if self.config.probe.is_some() {
            path.start();
            let probe = path.poll_probe(now);
            self.after_path_change(probe, now);
        }
    }

    fn path_probe_id(&self) -> u16 {
        self.probe_id ^ 0x8000
    }

    /// When the path search next needs the clock: only while the session is up, so an idle
    /// machine is not woken to probe a path nobody uses.
    fn path_due(&self) -> Option<Instant> {
        let path = self.path.as_ref()?;
        self.config.probe?;
        (path.is_searching() || self.is_connected())
            .then(|| path.poll_timeout())
            .flatten()
    }

    /// Sends the path probe a search asked for, and fits traffic to what the path carries.
    fn after_path_change(&mut self, probe: Option<Probe>, now: Instant) {
        if let (Some(probe), Some(route), Some(path)) = (probe, self.config.probe, self.config.path) {
            let inner = usize::from(probe.size.saturating_sub(path.overhead));
            if let Some(packet) =
                probe::echo_request_sized(route.source, route.target, self.path_probe_id(), probe.seq, inner)
            {
                let datagram = to_send(self.tunn.encapsulate(&packet, &mut self.scratch));
                self.send(datagram, "path probe", now);
            }
        }
        let fit = self.path.as_ref().zip(self.config.path).and_then(|(path, config)| {
            let found = path.confirmed()?;
            (found < path.ceiling()).then(|| {
                let max = found.saturating_sub(config.overhead);
                let (mss_ipv4, mss_ipv6) = fit::mss_for(max);
                Fit {
                    max,
                    mss_ipv4,
                    mss_ipv6,
                }
            })
        });
        let measured = self.path_mtu();
        if measured != self.reported_path {
            self.reported_path = measured;
            if let Some(mtu) = measured {
                self.push_event(Event::PathMeasured { mtu });
            }
        }
        if fit != self.fit {
            tracing::info!(
                fit = fit.map(|f| f.max),
                mss_ipv6 = fit.map(|f| f.mss_ipv6),
                "traffic fitted to the path"
            );
            self.fit = fit;
        }
    }

    /// An inner packet larger than the path: as fragments that each fit, or, for IPv4 that
    /// must not be fragmented, an ICMP error that makes its sender send smaller ones.
    fn send_too_big(&mut self, packet: &[u8], fit: Fit, now: Instant) {
        self.fragment_id = self.fragment_id.wrapping_add(1);
        let mut pieces = Vec::new();
        match fit::fragment(packet, usize::from(fit.max), self.fragment_id, |piece| {
            pieces.push(piece.to_vec())
        }) {
            Ok(_) => {
                self.stats.packets_fragmented += 1;
                for piece in pieces {
                    let datagram = to_send(self.tunn.encapsulate(&piece, &mut self.scratch));
                    self.send(datagram, "fragment", now);
                }
            }
            Err(fit::FragmentError::DontFragment) => {
                let mut icmp = vec![0; 576];
                if let Some(len) = fit::frag_needed_v4(packet, fit.max, &mut icmp) {
                    icmp.truncate(len);
                    self.stats.too_big_sent += 1;
                    self.to_tun.push_back(icmp);
                }
            }
            Err(error) => {
                self.stats.dropped_malformed += 1;
                tracing::trace!(?error, len = packet.len(), "packet too large for the path dropped");
            }
        }
    }

    /// A TCP SYN, copied so its MSS can be lowered to what fits the path.
    fn encapsulate_clamped<'a>(
        &mut self,
        packet: &[u8],
        fit: Fit,
        out: &'a mut [u8],
        now: Instant,
    ) -> Option<&'a [u8]> {
        let mut syn = packet.to_vec();
        if fit::clamp_mss(&mut syn, fit.mss_ipv4, fit.mss_ipv6) {
            self.stats.syns_clamped += 1;
        }
        self.encapsulate(&syn, out, now)
    }

    /// Sends what boringtun held back while it had no session: after it emits a datagram for
    /// a network message it must be asked again, with an empty datagram, until it is done.
    fn flush_queued(&mut self, now: Instant) {
        // boringtun holds at most 256 packets; the bound only guards against a loop.
        for _ in 0..FLUSH_LIMIT {
            match to_send(self.tunn.decapsulate(None, &[], &mut self.scratch)) {
                Ok(Some(datagram)) => self.push_control(datagram, now),
                done => return self.send(done, "flushing queued packets", now),
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        self.times.timers_ran = now;
        match to_send(self.tunn.update_timers(&mut self.scratch)) {
            Err(WireGuardError::ConnectionExpired) => self.rebuild(),
            result => self.send(result, "timer update", now),
        }
    }

    /// The earliest moment one of boringtun's timers can be due, from what happened since they
    /// last ran. boringtun stamps events with the time of that run, earlier than they happened,
    /// so running at the real event time plus the timeout is never too early for it.
    fn timers_due(&self) -> Option<Instant> {
        let t = &self.times;
        let after = |at: Instant, timeout: Duration| Some(at + timeout + TIMER_SLACK);
        let retransmit = t.initiation.and_then(|at| after(at, REKEY_TIMEOUT));
        let passive_keepalive = t
            .data_received
            .filter(|received| *received > t.sent)
            .and_then(|_| after(t.sent, KEEPALIVE_TIMEOUT));
        let unanswered = match (t.data_sent, t.received) {
            (Some(sent), Some(received)) if sent > received => after(received, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
            _ => None,
        };
        let session_age = t.established.and_then(|established| {
            SESSION_MILESTONES
                .iter()
                .map(|age| established + *age + TIMER_SLACK)
                .find(|due| *due > t.timers_ran)
        });
        [retransmit, passive_keepalive, unanswered, session_age]
            .into_iter()
            .flatten()
            .filter(|due| *due > t.timers_ran)
            .min()
    }

    fn keepalive_due(&self) -> Option<Instant> {
        let interval = self.config.persistent_keepalive.filter(|secs| *secs > 0)?;
        Some(self.times.traversal + Duration::from_secs(interval.into()))
    }

    fn send_keepalive(&mut self, now: Instant) {
        let keepalive = to_send(self.tunn.encapsulate(&[], &mut self.scratch));
        self.send(keepalive, "keepalive", now);
        // Without a session boringtun queued it behind a handshake: the interval starts anew.
        self.times.traversal = now;
    }

    /// The next recovery step, only while traffic waits for an answer: an idle connection
    /// sends nothing extra.
    fn recovery_due(&self) -> Option<Instant> {
        let r = &self.recovery;
        let due = match r.step {
            // A lone last packet (the final ACK of a connection) is never answered: probe only
            // when the sender tried again, as TCP does after 200 ms at the earliest.
            Step::Waiting if r.last_traffic? < r.unanswered_since? + SENT_AGAIN => return None,
            Step::Waiting => r.unanswered_since? + PROBE_AFTER,
            Step::Probed { at } => at + PROBE_TIMEOUT,
            Step::Forced { at, attempts } => at + retry_interval(attempts),
        };
        (due <= r.last_traffic? + TRAFFIC_WINDOW).then_some(due)
    }

    fn recover(&mut self, now: Instant) {
        match (self.recovery.step, self.config.probe) {
            (Step::Waiting, Some(route)) => self.send_probe(route, now),
            (Step::Waiting, None) | (Step::Probed { .. } | Step::Forced { .. }, _) => self.force_handshake(now),
        }
    }

    fn send_probe(&mut self, route: ProbeRoute, now: Instant) {
        self.probe_seq = self.probe_seq.wrapping_add(1);
        self.recovery.step = Step::Probed { at: now };
        let Some(packet) = probe::echo_request(route.source, route.target, self.probe_id, self.probe_seq) else {
            return;
        };
        self.stats.probes_sent += 1;
        tracing::debug!(target = %route.target, "no answer to recent traffic; probing");
        let probe = to_send(self.tunn.encapsulate(&packet, &mut self.scratch));
        self.send(probe, "probe", now);
    }

    fn force_handshake(&mut self, now: Instant) {
        let attempts = match self.recovery.step {
            Step::Forced { attempts, .. } => attempts + 1,
            Step::Waiting | Step::Probed { .. } => 1,
        };
        self.recovery.step = Step::Forced { at: now, attempts };
        // Before the first answer the connection is still connecting, not reconnecting.
        if self.stats.state == LinkState::Connected {
            let since = self.recovery.unanswered_since.unwrap_or(now);
            self.stats.state = LinkState::Reconnecting { since };
            self.stats.reconnects += 1;
            tracing::info!("no answer from the peer; handshaking again");
            self.push_event(Event::PeerUnresponsive);
        }
        self.stats.handshakes_forced += 1;
        let initiation = to_send(self.tunn.format_handshake_initiation(&mut self.scratch, true));
        self.send(initiation, "forced handshake initiation", now);
    }

    /// Queues what boringtun produced outside the data path, if anything.
    fn send(&mut self, result: Result<Option<Vec<u8>>, WireGuardError>, what: &str, now: Instant) {
        match result {
            Ok(Some(datagram)) => self.push_control(datagram, now),
            Ok(None) => {}
            Err(error) => tracing::debug!(?error, what, "boringtun refused"),
        }
    }

    fn push_control(&mut self, datagram: Vec<u8>, now: Instant) {
        if self.control.len() >= CONTROL_QUEUE_LIMIT {
            tracing::debug!(len = datagram.len(), "control queue full, datagram dropped");
            return;
        }
        match message_type(&datagram) {
            Some(HANDSHAKE_INITIATION) => {
                tracing::debug!("sending handshake initiation");
                self.times.initiation = Some(now);
                self.times.sent(now, false);
            }
            Some(HANDSHAKE_RESPONSE) => {
                tracing::debug!("sending handshake response");
                self.times.sent(now, false);
            }
            Some(COOKIE_REPLY) => tracing::debug!("sending cookie reply"),
            Some(TRANSPORT_DATA) if datagram.len() == DATA_OVERHEAD => {
                tracing::trace!("sending keepalive");
                self.times.sent(now, false);
            }
            Some(TRANSPORT_DATA) => {
                let inner = (datagram.len() - DATA_OVERHEAD) as u64;
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += inner;
                self.times.sent(now, true);
                tracing::trace!(len = inner, "sending packet from the control queue");
            }
            _ => tracing::debug!(len = datagram.len(), "sending unknown message"),
        }
        self.control.push_back(datagram);
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= EVENT_QUEUE_LIMIT {
            tracing::debug!(?event, "event queue full, the oldest event dropped");
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn note_connection_state(&mut self) {
        let connected = self.is_connected();
        if connected != self.connected {
            self.connected = connected;
            tracing::debug!(connected, "connection state changed");
        }
    }

    fn rebuild(&mut self) {
        self.tunn = new_tunn(&self.config);
        // Whatever the expired tunnel queued belongs to indices nobody will answer.
        self.control.clear();
        self.times.initiation = None;
        self.times.established = None;
        self.stats.sessions_rebuilt += 1;
        tracing::debug!(
            rebuilt = self.stats.sessions_rebuilt,
            "connection expired, session rebuilt with a new index"
        );
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("private_key", &"<redacted>")
            .field("peer_public_key", &self.peer_public_key)
            .field("preshared_key", &self.preshared_key.map(|_| "<redacted>"))
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .field("probe", &self.probe)
            .field("path", &self.path)
            .finish()
    }
}

/// When things last happened, on the caller's clock: what the deadlines are computed from.
struct Times {
    timers_ran: Instant,
    /// Any authenticated datagram either way; the persistent keepalive counts from here.
    traversal: Instant,
    /// Any datagram we sent (handshake, keepalive, data).
    sent: Instant,
    data_sent: Option<Instant>,
    /// Anything authenticated from the peer.
    received: Option<Instant>,
    data_received: Option<Instant>,
    /// The handshake in progress was (re)sent.
    initiation: Option<Instant>,
    established: Option<Instant>,
    /// The clock's time asleep at the last reading.
    asleep: Option<Duration>,
}

impl Times {
    fn new(now: Instant) -> Times {
        Times {
            timers_ran: now,
            traversal: now,
            sent: now,
            data_sent: None,
            received: None,
            data_received: None,
            initiation: None,
            established: None,
            asleep: None,
        }
    }

    fn sent(&mut self, now: Instant, data: bool) {
        self.sent = now;
        self.traversal = now;
        if data {
            self.data_sent = Some(now);
        }
    }
}

/// Traffic that waits for the peer's answer, and how far the recovery has gone.
#[derive(Debug, Default)]
struct Recovery {
    /// The first packet sent since the peer last said anything authenticated.
    unanswered_since: Option<Instant>,
    /// The latest packet from the TUN: recovery acts only while there is traffic to answer.
    last_traffic: Option<Instant>,
    step: Step,
}

impl Recovery {
    fn traffic_sent(&mut self, now: Instant) {
        let quiet = self.last_traffic.map(|last| now.saturating_duration_since(last));
        match (self.unanswered_since, self.step, quiet) {
            (None, ..) => self.unanswered_since = Some(now),
            // After a pause the earlier unanswered packet was a connection's final ACK, not a
            // sender still waiting (TCP's first retransmissions come sooner): start afresh.
            (Some(_), Step::Waiting, Some(quiet)) if quiet > NEW_EPISODE_AFTER => self.unanswered_since = Some(now),
            (Some(_), ..) => {}
        }
        self.last_traffic = Some(now);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Waiting,
    Probed {
        at: Instant,
    },
    Forced {
        at: Instant,
        attempts: u32,
    },
}

/// Forced initiations repeat quickly a few times (a restarting peer is back within seconds),
/// then at WireGuard's own pace.
fn retry_interval(attempts: u32) -> Duration {
    if attempts < FAST_RETRIES {
        Duration::from_secs(1)
    } else {
        REKEY_TIMEOUT
    }
}

const FAST_RETRIES: u32 = 10;
/// Traffic this long after the first unanswered packet shows the sender still waits.
const SENT_AGAIN: Duration = Duration::from_millis(200);
/// A pause in traffic this long ends what waited before it.
const NEW_EPISODE_AFTER: Duration = Duration::from_secs(2);
/// Recovery steps stop this long after the last packet from the TUN: nobody waits any more.
const TRAFFIC_WINDOW: Duration = Duration::from_secs(15);
/// Growth of the time asleep beyond this between two readings means a suspend.
const SLEEP_JUMP: Duration = Duration::from_secs(1);
/// boringtun stamps events with the time its timers last ran: before a batch of work they run
/// again when older than this, so its stamps stay close to the truth.
const STAMP_RESOLUTION: Duration = Duration::from_millis(100);
/// boringtun reads its own clock a moment after ours: run its timers a little late, never early.
const TIMER_SLACK: Duration = Duration::from_millis(10);

/// WireGuard's timeouts (whitepaper §6.1), as boringtun applies them.
const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ages of a session at which boringtun rekeys (initiator, on send), rekeys (on receive),
/// drops it, and wipes the keys.
const SESSION_MILESTONES: [Duration; 4] = [
    Duration::from_secs(120),
    Duration::from_secs(165),
    Duration::from_secs(180),
    Duration::from_secs(540),
];

const FLUSH_LIMIT: usize = 512;
const CONTROL_QUEUE_LIMIT: usize = 1024;
/// Events the shell has not drained; it drains after every batch, so this is never reached.
const EVENT_QUEUE_LIMIT: usize = 64;

const HANDSHAKE_INITIATION: u32 = 1;
const HANDSHAKE_RESPONSE: u32 = 2;
const COOKIE_REPLY: u32 = 3;
const TRANSPORT_DATA: u32 = 4;

fn new_tunn(config: &Config) -> Tunn {
    // boringtun shifts the index left by 8 and counts sessions in the low byte; a random one
    // keeps a rebuilt tunnel from answering to the indices of the expired one.
    let index = OsRng.next_u32() >> 8;
    // The persistent keepalive is ours: boringtun's fires on its own clock, every interval
    // even when traffic flows.
    Tunn::new(
        config.private_key.clone(),
        config.peer_public_key,
        config.preshared_key,
        None,
        index,
        None,
    )
}

/// A datagram boringtun wrote to its scratch buffer, copied out so the session can queue it.
fn to_send(result: TunnResult<'_>) -> Result<Option<Vec<u8>>, WireGuardError> {
    match result {
        TunnResult::WriteToNetwork(datagram) => Ok(Some(datagram.to_vec())),
        TunnResult::Err(error) => Err(error),
        TunnResult::Done | TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => Ok(None),
    }
}

fn message_type(datagram: &[u8]) -> Option<u32> {
    let header = datagram.get(..4)?;
    Some(u32::from_le_bytes(header.try_into().ok()?))
}

fn is_handshake_initiation(datagram: &[u8]) -> bool {
    message_type(datagram) == Some(HANDSHAKE_INITIATION)
}

/// boringtun has already cut the packet to its length field but lets through an IPv4 header
/// length below 20 bytes or beyond that cut.
fn is_well_formed(packet: &[u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    match first >> 4 {
        4 => {
            let header_len = usize::from(first & 0x0f) * 4;
            header_len >= 20 && packet.len() >= header_len
        }
        6 => packet.len() >= 40,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::clock::TestClock;
    use crate::tunnel::testing;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn handshake_completes() {
        let (mut client, mut gateway) = pair(None);
        client.initiate_handshake(Instant::now());

        shuttle(&mut client, &mut gateway);

        assert!(client.is_connected());
        assert!(gateway.is_connected());
        assert!(client.stats().last_handshake.is_some());
        assert!(gateway.stats().last_handshake.is_some());
    }

    #[test]
    fn ipv4_packets_flow_both_ways() {
        let (mut client, mut gateway) = connected_pair(None);
        let up = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"ping");
        let down = ipv4_packet(GATEWAY_V4, CLIENT_V4, b"pong");

        let at_gateway = transmit(&mut client, &mut gateway, &up);
        let at_client = transmit(&mut gateway, &mut client, &down);

        assert_eq!(at_gateway, Received::Packet(up.clone()));
        assert_eq!(at_client, Received::Packet(down.clone()));
        let client_stats = client.stats();
        assert_eq!(client_stats.tx_packets, 1);
        assert_eq!(client_stats.tx_bytes, up.len() as u64);
        assert_eq!(client_stats.rx_packets, 1);
        assert_eq!(client_stats.rx_bytes, down.len() as u64);
    }

    #[test]
    fn ipv6_packets_flow_both_ways() {
        let (mut client, mut gateway) = connected_pair(None);
        let up = ipv6_packet(CLIENT_V6, GATEWAY_V6, b"ping6");
        let down = ipv6_packet(GATEWAY_V6, CLIENT_V6, b"pong6");

        let at_gateway = transmit(&mut client, &mut gateway, &up);
        let at_client = transmit(&mut gateway, &mut client, &down);

        assert_eq!(at_gateway, Received::Packet(up));
        assert_eq!(at_client, Received::Packet(down));
    }

    #[test]
    fn spoofed_ipv4_source_is_dropped_and_counted() {
        let (mut client, mut gateway) = connected_pair(None);
        let spoofed = Ipv4Addr::new(192, 0, 2, 66);
        let packet = ipv4_packet(spoofed, CLIENT_V4, b"spoof");

        let received = transmit(&mut gateway, &mut client, &packet);

        assert_eq!(received, Received::Dropped(DropReason::NotAllowed(spoofed.into())));
        assert_eq!(client.stats().dropped_not_allowed, 1);
        assert_eq!(client.stats().rx_packets, 0);
    }

    #[test]
    fn spoofed_ipv6_source_is_dropped_and_counted() {
        let (mut client, mut gateway) = connected_pair(None);
        let spoofed: Ipv6Addr = "2001:db8::66".parse().unwrap();
        let packet = ipv6_packet(spoofed, CLIENT_V6, b"spoof");

        let received = transmit(&mut gateway, &mut client, &packet);

        assert_eq!(received, Received::Dropped(DropReason::NotAllowed(spoofed.into())));
        assert_eq!(client.stats().dropped_not_allowed, 1);
    }

    #[test]
    fn malformed_inner_packet_is_dropped_and_counted() {
        let (mut client, mut gateway) = connected_pair(None);
        let mut packet = ipv4_packet(GATEWAY_V4, CLIENT_V4, b"short");
        packet[0] = 0x44; // a header length of 16 bytes, below the IPv4 minimum

        let received = transmit(&mut gateway, &mut client, &packet);

        assert_eq!(received, Received::Dropped(DropReason::Malformed));
        assert_eq!(client.stats().dropped_malformed, 1);
    }

    #[test]
    fn packets_sent_before_the_handshake_are_delivered_after_it() {
        let (mut client, mut gateway) = pair(None);
        let first = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"first");
        let second = ipv6_packet(CLIENT_V6, GATEWAY_V6, b"second");
        let mut out = vec![0; BUF];

        let sent_first = client.handle_tun_packet(&first, &mut out, Instant::now()).is_some();
        let sent_second = client.handle_tun_packet(&second, &mut out, Instant::now()).is_some();
        let delivered = shuttle(&mut client, &mut gateway);

        assert!(!sent_first && !sent_second);
        assert_eq!(delivered.to_gateway, vec![first, second]);
        assert_eq!(client.stats().tx_packets, 2);
    }

    #[test]
    fn short_out_buffers_are_refused_without_panic() {
        let (mut client, mut gateway) = connected_pair(None);
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, &[7; 200]);
        let mut sealed = vec![0; BUF];
        let datagram = client
            .handle_tun_packet(&packet, &mut sealed, Instant::now())
            .unwrap()
            .to_vec();
        let mut short_sealed = vec![0; packet.len()];
        let mut short_opened = vec![0; packet.len()];

        let encrypted = client.handle_tun_packet(&packet, &mut short_sealed, Instant::now());
        let decrypted = gateway.handle_datagram(&datagram, &mut short_opened, Instant::now());

        assert_eq!(encrypted, None);
        assert_eq!(decrypted, FromNetwork::Dropped(DropReason::BufferTooSmall));
        assert_eq!(client.stats().dropped_small_buffer, 1);
        assert_eq!(gateway.stats().dropped_small_buffer, 1);
    }

    #[test]
    fn short_out_buffer_before_handshake_is_refused_without_panic() {
        let (mut client, _gateway) = pair(None);
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"x");
        let mut short = vec![0; MIN_OUT_BUF - 1];

        let encrypted = client.handle_tun_packet(&packet, &mut short, Instant::now());

        assert_eq!(encrypted, None);
        assert_eq!(client.stats().dropped_small_buffer, 1);
        assert_eq!(client.poll_datagram(), None);
    }

    #[test]
    fn garbage_datagrams_are_counted_and_the_session_survives() {
        let (mut client, mut gateway) = connected_pair(None);
        let mut fake_data = vec![0; 64];
        fake_data[0] = 4;
        let mut fake_initiation = vec![0; 148];
        fake_initiation[0] = 1;
        let garbage: [&[u8]; 5] = [&[], &[0xff; 3], &[0xab; 100], &fake_data, &fake_initiation];
        let mut out = vec![0; BUF];
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"still here");

        let results: Vec<_> = garbage
            .iter()
            .map(|datagram| {
                gateway.handle_datagram(datagram, &mut out, Instant::now()) == FromNetwork::Dropped(DropReason::Invalid)
            })
            .collect();
        let after = transmit(&mut client, &mut gateway, &packet);

        assert_eq!(results, vec![true; garbage.len()]);
        assert_eq!(gateway.stats().dropped_invalid, garbage.len() as u64);
        assert_eq!(after, Received::Packet(packet));
        assert!(gateway.is_connected());
    }

    #[test]
    fn replayed_datagram_is_invalid() {
        let (mut client, mut gateway) = connected_pair(None);
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"once");
        let mut sealed = vec![0; BUF];
        let datagram = client
            .handle_tun_packet(&packet, &mut sealed, Instant::now())
            .unwrap()
            .to_vec();
        let mut out = vec![0; BUF];
        gateway.handle_datagram(&datagram, &mut out, Instant::now());

        let replayed = gateway.handle_datagram(&datagram, &mut out, Instant::now());

        assert_eq!(replayed, FromNetwork::Dropped(DropReason::Invalid));
        assert_eq!(gateway.stats().rx_packets, 1);
    }

    #[test]
    fn idle_connection_without_keepalive_sends_nothing_and_sleeps() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(None, start);

        let client_run = drive(&mut client, start, start + Duration::from_secs(100));
        let gateway_run = drive(&mut gateway, start, start + Duration::from_secs(100));

        assert_eq!(client_run.sent, Vec::<Vec<u8>>::new());
        assert_eq!(gateway_run.sent, Vec::<Vec<u8>>::new());
        assert_eq!(client_run.wakeups + gateway_run.wakeups, 0);
    }

    #[test]
    fn idle_connection_sends_only_its_persistent_keepalives() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);

        let run = drive(&mut client, start, start + Duration::from_secs(100));

        assert_eq!(run.sent.len(), 4, "one keepalive per 25 s");
        assert!(run
            .sent
            .iter()
            .all(|d| d.len() == DATA_OVERHEAD && message_type(d) == Some(TRANSPORT_DATA)));
        assert_eq!(run.wakeups, 4);
        let mut out = vec![0; BUF];
        for keepalive in &run.sent {
            assert_eq!(
                gateway.handle_datagram(keepalive, &mut out, start),
                FromNetwork::Nothing
            );
        }
        assert_eq!(gateway.stats().dropped_invalid, 0);
        assert_eq!(client.stats().probes_sent, 0);
    }

    #[test]
    fn keepalive_waits_for_a_quiet_interval() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let up = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"request");
        let down = ipv4_packet(GATEWAY_V4, CLIENT_V4, b"response");

        let at = start + Duration::from_secs(20);
        transmit_at(&mut client, &mut gateway, &up, at);
        transmit_at(&mut gateway, &mut client, &down, at);

        assert_eq!(client.poll_timeout(), Some(at + Duration::from_secs(25)));
    }

    #[test]
    fn answered_traffic_needs_no_probe() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let up = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"request");
        let down = ipv4_packet(GATEWAY_V4, CLIENT_V4, b"response");

        let mut now = start;
        for _ in 0..20 {
            now += Duration::from_millis(500);
            transmit_at(&mut client, &mut gateway, &up, now);
            transmit_at(&mut gateway, &mut client, &down, now + Duration::from_millis(20));
        }
        let run = drive(&mut client, now, now + Duration::from_secs(10));

        assert_eq!(client.stats().probes_sent, 0);
        assert_eq!(client.stats().handshakes_forced, 0);
        assert!(run.sent.is_empty(), "nothing extra: {:?}", run.sent);
        assert_eq!(client.stats().state, LinkState::Connected);
    }

    #[test]
    fn one_way_traffic_to_a_live_peer_costs_a_probe_not_a_handshake() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let up = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"one way");
        let sent_at = start + Duration::from_secs(1);
        transmit_at(&mut client, &mut gateway, &up, sent_at);
        transmit_at(&mut client, &mut gateway, &up, sent_at + Duration::from_millis(500));

        let outcome = exchange(&mut client, &mut gateway, sent_at, Duration::from_secs(5), |_| false);

        assert_eq!(outcome.probes_answered, 1);
        let stats = client.stats();
        assert_eq!(stats.probes_sent, 1);
        assert_eq!(stats.handshakes_forced, 0);
        assert_eq!(stats.state, LinkState::Connected);
        assert_eq!(stats.rx_packets, 0, "the probe's reply is not delivered to the TUN");
    }

    #[test]
    fn a_new_connection_after_a_lone_last_packet_needs_no_probe() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let final_ack = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"ack");
        let syn = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"syn");
        let syn_ack = ipv4_packet(GATEWAY_V4, CLIENT_V4, b"syn-ack");
        let closed_at = start + Duration::from_secs(1);
        let opened_at = closed_at + Duration::from_secs(3);

        transmit_at(&mut client, &mut gateway, &final_ack, closed_at);
        transmit_at(&mut client, &mut gateway, &syn, opened_at);
        let before_answer = client.poll_timeout();
        transmit_at(
            &mut gateway,
            &mut client,
            &syn_ack,
            opened_at + Duration::from_millis(10),
        );
        let run = drive(&mut client, opened_at, opened_at + Duration::from_secs(10));

        assert!(
            before_answer.is_some_and(|due| due > opened_at),
            "no probe at once: {before_answer:?}"
        );
        assert!(run.sent.is_empty(), "{:?}", run.sent);
        assert_eq!(client.stats().probes_sent, 0);
    }

    #[test]
    fn a_lone_last_packet_needs_no_probe() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let final_ack = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"ack");
        let sent_at = start + Duration::from_secs(1);

        transmit_at(&mut client, &mut gateway, &final_ack, sent_at);
        let run = drive(&mut client, sent_at, sent_at + Duration::from_secs(10));

        assert!(run.sent.is_empty(), "{:?}", run.sent);
        assert_eq!(client.stats().probes_sent, 0);
    }

    #[test]
    fn packets_the_peer_would_drop_stay_here_and_need_no_probe() {
        let start = Instant::now();
        let (mut client, _gateway) = connected_pair_at(Some(25), start);
        let router_solicitation = ipv6_packet("fe80::2".parse().unwrap(), "ff02::2".parse().unwrap(), b"rs");
        let sent_at = start + Duration::from_secs(1);
        let mut out = vec![0; BUF];

        let sent: Vec<bool> = (0..3)
            .map(|n| {
                let at = sent_at + Duration::from_secs(n);
                client.handle_tun_packet(&router_solicitation, &mut out, at).is_some()
            })
            .collect();
        let run = drive(&mut client, sent_at, sent_at + Duration::from_secs(10));

        assert_eq!(sent, vec![false; 3]);
        assert_eq!(client.stats().dropped_no_route, 3);
        assert_eq!(client.stats().tx_packets, 0);
        assert!(run.sent.is_empty(), "{:?}", run.sent);
        assert_eq!(client.stats().probes_sent, 0);
    }

    #[test]
    fn gateway_that_lost_its_session_is_reconnected_within_the_bound() {
        let start = Instant::now();
        let (client_config, gateway_config) = configs(Some(25));
        let mut client = Session::new(client_config, start);
        let mut gateway = Session::new(gateway_config.clone(), start);
        connect(&mut client, &mut gateway, start);
        let mut restarted = Session::new(gateway_config, start);
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"anyone there?");
        let sent_at = start + Duration::from_secs(30);

        let lost = transmit_at(&mut client, &mut restarted, &packet, sent_at);
        // As TCP retransmits a SYN: a second later.
        let retransmitted = transmit_at(&mut client, &mut restarted, &packet, sent_at + Duration::from_secs(1));
        let outcome = exchange(&mut client, &mut restarted, sent_at, Duration::from_secs(10), |o| {
            o.reconnected_at.is_some()
        });
        let after = transmit_at(&mut client, &mut restarted, &packet, outcome.at);

        assert_eq!(lost, Received::Dropped(DropReason::Invalid));
        assert_eq!(retransmitted, Received::Dropped(DropReason::Invalid));
        let recovered_in = outcome.reconnected_at.expect("never reconnected") - sent_at;
        assert!(
            recovered_in <= PROBE_AFTER + PROBE_TIMEOUT + Duration::from_millis(100),
            "reconnected after {recovered_in:?}"
        );
        assert_eq!(
            outcome.seen_reconnecting,
            Some(LinkState::Reconnecting { since: sent_at })
        );
        assert_eq!(after, Received::Packet(packet));
        let stats = client.stats();
        assert_eq!(
            (stats.probes_sent, stats.reconnects, stats.handshakes_forced),
            (1, 1, 1)
        );
        assert_eq!(stats.state, LinkState::Connected);
        assert_eq!(
            std::iter::from_fn(|| client.poll_event()).collect::<Vec<_>>(),
            [
                Event::HandshakeCompleted,
                Event::PeerUnresponsive,
                Event::HandshakeCompleted,
                Event::PeerAnswersAgain
            ]
        );
    }

    #[test]
    fn the_reply_to_an_injected_echo_is_reported_once_and_kept_from_the_tun() {
        let now = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(None, now);
        while client.poll_event().is_some() {}
        let request = probe::echo_request(CLIENT_V4.into(), GATEWAY_V4.into(), 4242, 1).unwrap();
        let reply = echo_reply(&request).unwrap();
        let other = echo_reply(&probe::echo_request(CLIENT_V4.into(), GATEWAY_V4.into(), 4243, 1).unwrap()).unwrap();
        client.expect_echo_reply(4242);

        let unrelated = transmit_at(&mut gateway, &mut client, &other, now);
        let expected = transmit_at(&mut gateway, &mut client, &reply, now);
        let again = transmit_at(&mut gateway, &mut client, &reply, now);

        assert_eq!(unrelated, Received::Packet(other));
        assert_eq!(expected, Received::Nothing);
        assert_eq!(again, Received::Packet(reply), "only the one reply is kept");
        assert_eq!(client.poll_event(), Some(Event::ProbeAnswered { id: 4242 }));
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn forced_handshakes_stop_when_traffic_stops() {
        let start = Instant::now();
        let (mut client, _gateway) = connected_pair_at(None, start);
        let packet = ipv4_packet(CLIENT_V4, GATEWAY_V4, b"into the void");
        let sent_at = start + Duration::from_secs(1);
        let mut out = vec![0; BUF];
        client.handle_tun_packet(&packet, &mut out, sent_at);
        client.handle_tun_packet(&packet, &mut out, sent_at + Duration::from_secs(1));

        let run = drive(&mut client, sent_at, sent_at + Duration::from_secs(100));

        let initiations = run.sent.iter().filter(|d| is_handshake_initiation(d)).count();
        assert_eq!(client.stats().handshakes_forced, initiations as u64);
        assert!((5..=14).contains(&initiations), "{initiations} initiations");
        assert!(run.wakeups <= 20, "{} wakeups", run.wakeups);
        assert!(matches!(client.stats().state, LinkState::Reconnecting { since } if since == sent_at));
    }

    #[test]
    fn suspend_forces_a_handshake_at_once() {
        let start = Instant::now();
        let (mut client, mut gateway) = connected_pair_at(Some(25), start);
        let clock = TestClock::new(start);
        client.handle_clock(&clock);

        clock.advance(Duration::from_secs(2), Duration::from_millis(500));
        client.handle_clock(&clock);
        let after_short_blip = client.poll_datagram();
        clock.advance(Duration::from_secs(1), Duration::from_secs(600));
        let now = client.handle_clock(&clock);
        let initiation = client.poll_datagram();

        assert_eq!(after_short_blip, None, "half a second is no suspend");
        let initiation = initiation.expect("no handshake after the suspend");
        assert!(is_handshake_initiation(&initiation));
        let stats = client.stats();
        assert_eq!((stats.sleeps_detected, stats.handshakes_forced), (1, 1));
        assert_eq!(stats.state, LinkState::Reconnecting { since: now });
        let mut out = vec![0; BUF];
        gateway.handle_datagram(&initiation, &mut out, now);
        forward(&mut gateway, &mut client, &mut Vec::new(), now);
        assert_eq!(client.stats().state, LinkState::Connected);
    }

    #[test]
    fn suspend_before_any_session_forces_nothing() {
        let start = Instant::now();
        let (mut client, _gateway) = pair_at(None, start);
        let clock = TestClock::new(start);
        client.handle_clock(&clock);

        clock.advance(Duration::from_secs(1), Duration::from_secs(600));
        client.handle_clock(&clock);

        assert_eq!(client.stats().sleeps_detected, 1);
        assert_eq!(client.stats().handshakes_forced, 0);
        assert_eq!(client.poll_datagram(), None);
    }

    // Expiry (ConnectionExpired → rebuild) needs boringtun's clock to pass 90 s without an
    // answer; boringtun offers no clock injection outside its own `mock-instant` feature, so
    // it is not unit tested here.

    const BUF: usize = out_buf_len(1500);
    const MAX_ROUNDS: usize = 16;
    const MAX_WAKEUPS: usize = 1000;
    /// RFC 3692 protocol number for experiments: the packets need no valid payload header.
    const EXPERIMENT_PROTOCOL: u8 = 253;
    const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

    #[derive(Debug, PartialEq)]
    enum Received {
        Packet(Vec<u8>),
        Nothing,
        Dropped(DropReason),
    }

    #[derive(Default)]
    struct Delivered {
        to_client: Vec<Vec<u8>>,
        to_gateway: Vec<Vec<u8>>,
    }

    /// A client that accepts the project prefixes and a gateway that accepts only the client.
    #[test]
    fn a_gateway_redeployed_with_a_new_key_is_reached_once_the_client_adopts_it() {
        let now = Instant::now();
        let (client_config, old_gateway_config) = configs(None);
        let mut client = Session::new(client_config, now);
        connect(&mut client, &mut Session::new(old_gateway_config.clone(), now), now);
        let new_key = StaticSecret::random_from_rng(OsRng);
        let mut redeployed = Session::new(
            Config {
                private_key: new_key.clone(),
                ..old_gateway_config
            },
            now,
        );

        client.set_peer(PublicKey::from(&new_key), now);
        shuttle_at(&mut client, &mut redeployed, now);

        assert!(client.is_connected() && redeployed.is_connected());
        assert_eq!(client.stats().sessions_rebuilt, 1, "the counters survive");
    }

    #[test]
    fn a_probe_comes_from_the_first_address_of_the_targets_family() {
        let addresses: Vec<IpNet> = ["fd00::2/128", "198.19.0.2/32", "198.19.0.3/32"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let source = |target: &str| ProbeRoute::from_addresses(&addresses, target.parse().unwrap()).map(|r| r.source);

        assert_eq!(source("198.19.0.1"), Some("198.19.0.2".parse().unwrap()));
        assert_eq!(source("fd00::1"), Some("fd00::2".parse().unwrap()));
        assert_eq!(
            ProbeRoute::from_addresses(&addresses[..1], "198.19.0.1".parse().unwrap()),
            None
        );
    }

    fn pair(client_keepalive: Option<u16>) -> (Session, Session) {
        pair_at(client_keepalive, Instant::now())
    }

    fn pair_at(client_keepalive: Option<u16>, now: Instant) -> (Session, Session) {
        let (client, gateway) = configs(client_keepalive);
        (Session::new(client, now), Session::new(gateway, now))
    }

    fn configs(client_keepalive: Option<u16>) -> (Config, Config) {
        let (mut client, mut gateway) =
            testing::peer_configs(&["10.0.0.0/24", "fd00::/64"], &["10.0.0.2/32", "fd00::2/128"]);
        let preshared_key = Some([9; 32]);
        client.preshared_key = preshared_key;
        client.persistent_keepalive = client_keepalive;
        client.probe = Some(ProbeRoute {
            source: CLIENT_V4.into(),
            target: GATEWAY_V4.into(),
        });
        gateway.preshared_key = preshared_key;
        (client, gateway)
    }

    fn connected_pair(client_keepalive: Option<u16>) -> (Session, Session) {
        connected_pair_at(client_keepalive, Instant::now())
    }

    fn connected_pair_at(client_keepalive: Option<u16>, now: Instant) -> (Session, Session) {
        let (mut client, mut gateway) = pair_at(client_keepalive, now);
        connect(&mut client, &mut gateway, now);
        (client, gateway)
    }

    fn connect(client: &mut Session, gateway: &mut Session, now: Instant) {
        client.initiate_handshake(now);
        shuttle_at(client, gateway, now);
        assert!(client.is_connected() && gateway.is_connected());
    }

    /// What a session did on its own between two moments.
    struct Run {
        wakeups: usize,
        sent: Vec<Vec<u8>>,
    }

    /// Calls `handle_timeout` at every deadline the session asks for until `end`; nobody answers.
    fn drive(session: &mut Session, start: Instant, end: Instant) -> Run {
        let mut run = Run {
            wakeups: 0,
            sent: Vec::new(),
        };
        let mut last = start;
        for _ in 0..MAX_WAKEUPS {
            let Some(due) = session.poll_timeout().filter(|due| *due <= end) else {
                return run;
            };
            let now = due.max(last);
            session.handle_timeout(now);
            last = now;
            run.wakeups += 1;
            while let Some(datagram) = session.poll_datagram() {
                run.sent.push(datagram);
            }
        }
        panic!("more than {MAX_WAKEUPS} wakeups: a busy loop");
    }

    struct Outcome {
        at: Instant,
        reconnected_at: Option<Instant>,
        seen_reconnecting: Option<LinkState>,
        probes_answered: usize,
    }

    /// Lets the client run on its deadlines for `limit`, the gateway answering everything
    /// instantly (its IP stack answers echo requests), until `done`.
    fn exchange(
        client: &mut Session,
        gateway: &mut Session,
        start: Instant,
        limit: Duration,
        done: impl Fn(&Outcome) -> bool,
    ) -> Outcome {
        let mut outcome = Outcome {
            at: start,
            reconnected_at: None,
            seen_reconnecting: None,
            probes_answered: 0,
        };
        for _ in 0..MAX_WAKEUPS {
            let Some(due) = client.poll_timeout().filter(|due| *due <= start + limit) else {
                break;
            };
            let now = due.max(outcome.at);
            outcome.at = now;
            client.handle_timeout(now);
            if let state @ LinkState::Reconnecting { .. } = client.stats().state {
                outcome.seen_reconnecting.get_or_insert(state);
            }
            let delivered = shuttle_at(client, gateway, now);
            for request in delivered.to_gateway.iter().filter_map(|p| echo_reply(p)) {
                outcome.probes_answered += 1;
                transmit_at(gateway, client, &request, now);
            }
            if outcome.seen_reconnecting.is_some() && client.stats().state == LinkState::Connected {
                outcome.reconnected_at.get_or_insert(now);
            }
            if done(&outcome) {
                break;
            }
        }
        outcome
    }

    const ENDPOINT_V4: &str = "192.0.2.1:51820";

    /// A client measuring its path, connected to a gateway whose IP stack answers echoes.
    fn measuring_pair(now: Instant) -> (Session, Session) {
        let (mut client, gateway) = configs(None);
        client.path = Some(PathConfig::new(
            1420,
            ENDPOINT_V4.parse().unwrap(),
            Duration::from_secs(300),
        ));
        (Session::new(client, now), Session::new(gateway, now))
    }

    /// Delivers what each side sends through a path that drops every datagram whose outer IPv4
    /// packet is larger than `path` (no ICMP); the gateway answers echoes. Returns the packets
    /// the gateway received.
    fn narrow_shuttle(client: &mut Session, gateway: &mut Session, path: usize, now: Instant) -> Vec<Vec<u8>> {
        let fits = |datagram: &Vec<u8>| datagram.len() + 28 <= path;
        let mut out = vec![0; BUF];
        let mut received = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            while let Some(datagram) = client.poll_datagram() {
                moved = true;
                if !fits(&datagram) {
                    continue;
                }
                if let FromNetwork::Tunnel(packet) = gateway.handle_datagram(&datagram, &mut out, now) {
                    received.push(packet.to_vec());
                    if let Some(reply) = echo_reply(packet) {
                        let mut sealed = vec![0; BUF];
                        if let Some(datagram) = gateway.handle_tun_packet(&reply, &mut sealed, now) {
                            let datagram = datagram.to_vec();
                            if fits(&datagram) {
                                let _ = client.handle_datagram(&datagram, &mut vec![0; BUF], now);
                            }
                        }
                    }
                }
            }
            while let Some(datagram) = gateway.poll_datagram() {
                moved = true;
                if fits(&datagram) {
                    let _ = client.handle_datagram(&datagram, &mut out, now);
                }
            }
            if !moved {
                return received;
            }
        }
        panic!("peers still talking after {MAX_ROUNDS} rounds");
    }

    /// Runs the client on its deadlines over a path of `path` bytes until `done` or `limit`;
    /// the time it stopped at.
    fn run_narrow(
        client: &mut Session,
        gateway: &mut Session,
        path: usize,
        start: Instant,
        limit: Duration,
        done: impl Fn(&Session) -> bool,
    ) -> Instant {
        let mut at = start;
        narrow_shuttle(client, gateway, path, at);
        for _ in 0..MAX_WAKEUPS {
            if done(client) {
                return at;
            }
            let Some(due) = client.poll_timeout().filter(|due| *due <= start + limit) else {
                return at;
            };
            at = due.max(at);
            client.handle_timeout(at);
            narrow_shuttle(client, gateway, path, at);
        }
        panic!("more than {MAX_WAKEUPS} wakeups: a busy loop");
    }

    /// A TCP SYN (IPv6) announcing `mss`.
    fn ipv6_syn(mss: u16) -> Vec<u8> {
        let mut tcp = vec![0; 24];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&22u16.to_be_bytes());
        tcp[12] = 6 << 4; // 24 bytes of header
        tcp[13] = 0x02; // SYN
        tcp[20] = 2; // MSS option
        tcp[21] = 4;
        tcp[22..24].copy_from_slice(&mss.to_be_bytes());
        let mut packet = ipv6_packet(CLIENT_V6, GATEWAY_V6, &tcp);
        packet[6] = 6; // TCP
        packet
    }

    fn announced_mss(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[40 + 22], packet[40 + 23]])
    }

    #[test]
    fn a_full_path_is_measured_with_one_probe_and_nothing_is_fitted() {
        let now = Instant::now();
        let (mut client, mut gateway) = measuring_pair(now);
        client.initiate_handshake(now);
        let end = run_narrow(&mut client, &mut gateway, 1500, now, Duration::from_secs(5), |c| {
            c.path_mtu().is_some()
        });
        assert_eq!(
            client.path_mtu(),
            Some(1468),
            "the interface MTU (in steps of WireGuard's padding) plus 60 bytes of tunnel"
        );
        assert_eq!(client.stats().path_probes, 1);
        assert!(std::iter::from_fn(|| client.poll_event()).any(|e| e == Event::PathMeasured { mtu: 1468 }));
        assert!(end - now < Duration::from_millis(100));
        assert_eq!(client.path_fit(), None);
        let syn = ipv6_syn(1380);
        assert_eq!(
            announced_mss(&transmit_packet(&mut client, &mut gateway, &syn, now)),
            1380
        );
    }

    #[test]
    fn a_narrow_path_is_measured_within_seconds_and_traffic_fitted_to_it() {
        let now = Instant::now();
        let (mut client, mut gateway) = measuring_pair(now);
        client.initiate_handshake(now);
        let end = run_narrow(&mut client, &mut gateway, 1280, now, Duration::from_secs(10), |c| {
            c.path_mtu().is_some()
        });
        let found = client.path_mtu().expect("the path was measured");
        assert_eq!(found, 1276, "the largest size WireGuard sends unpadded within 1280");
        assert!(end - now < Duration::from_secs(3), "took {:?}", end - now);
        let fit = client.path_fit().unwrap();
        assert_eq!(fit, usize::from(found) - 60);

        // SYNs in both directions announce what fits.
        let syn = ipv6_syn(1380);
        let through = transmit_packet(&mut client, &mut gateway, &syn, now);
        assert_eq!(usize::from(announced_mss(&through)), fit - 60);
        let mut answer = ipv6_syn(1440);
        answer[8..24].copy_from_slice(&GATEWAY_V6.octets());
        answer[24..40].copy_from_slice(&CLIENT_V6.octets());
        let back = transmit_packet(&mut gateway, &mut client, &answer, now);
        assert_eq!(usize::from(announced_mss(&back)), fit - 60);
        assert_eq!(client.stats().syns_clamped, 2);

        // A larger IPv6 packet crosses as fragments that each fit.
        let big = ipv6_packet(CLIENT_V6, GATEWAY_V6, &[7; 1360]);
        let mut sealed = vec![0; BUF];
        assert!(client.handle_tun_packet(&big, &mut sealed, now).is_none());
        let received = narrow_shuttle(&mut client, &mut gateway, usize::from(found), now);
        assert!(received.len() >= 2, "{} fragments", received.len());
        assert!(
            received.iter().all(|f| f.len() <= fit && f[6] == 44),
            "IPv6 fragments that fit"
        );
        assert_eq!(client.stats().packets_fragmented, 1);

        // IPv4 that must not be fragmented is answered locally instead.
        let mut df = ipv4_packet(CLIENT_V4, GATEWAY_V4, &[1; 1300]);
        df[6] = 0x40;
        df[10..12].copy_from_slice(&[0, 0]);
        let checksum = ipv4_header_checksum(&df[..20]);
        df[10..12].copy_from_slice(&checksum.to_be_bytes());
        assert!(client.handle_tun_packet(&df, &mut sealed, now).is_none());
        let icmp = client.poll_tun_packet().expect("fragmentation needed, to the sender");
        assert_eq!((icmp[9], icmp[20], icmp[21]), (1, 3, 4));
        assert_eq!(usize::from(u16::from_be_bytes([icmp[26], icmp[27]])), fit);
        assert_eq!(client.stats().too_big_sent, 1);
    }

    #[test]
    fn a_path_that_narrows_under_traffic_is_measured_again_within_seconds() {
        let now = Instant::now();
        let (mut client, mut gateway) = measuring_pair(now);
        client.initiate_handshake(now);
        run_narrow(&mut client, &mut gateway, 1500, now, Duration::from_secs(5), |c| {
            c.path_mtu().is_some()
        });
        assert_eq!(client.path_mtu(), Some(1468));

        // Full-size packets now vanish; the sender keeps retransmitting.
        let narrowed = now + Duration::from_secs(30);
        let big = ipv4_packet(CLIENT_V4, GATEWAY_V4, &[3; 1400]);
        let mut at = narrowed;
        let mut sealed = vec![0; BUF];
        for _ in 0..40 {
            if client.path_mtu().is_some_and(|mtu| mtu <= 1280) {
                break;
            }
            let _ = client.handle_tun_packet(&big, &mut sealed, at);
            at = run_narrow(&mut client, &mut gateway, 1280, at, Duration::from_millis(300), |_| {
                false
            });
            at += Duration::from_millis(300);
        }
        let found = client.path_mtu().unwrap();
        assert_eq!(found, 1276);
        assert!(at - narrowed < Duration::from_secs(6), "took {:?}", at - narrowed);
    }

    /// Sends a packet from the TUN of `from` and returns what comes out of the TUN of `to`.
    fn transmit_packet(from: &mut Session, to: &mut Session, packet: &[u8], now: Instant) -> Vec<u8> {
        match transmit_at(from, to, packet, now) {
            Received::Packet(packet) => packet,
            other => panic!("not delivered: {other:?}"),
        }
    }

    /// The gateway's answer to an ICMP echo request, as its IP stack would give it.
    fn echo_reply(packet: &[u8]) -> Option<Vec<u8>> {
        let is_echo_request = packet.len() >= 28 && packet[0] == 0x45 && packet[9] == 1 && packet[20] == 8;
        if !is_echo_request {
            return None;
        }
        let mut reply = packet.to_vec();
        reply[12..16].copy_from_slice(&packet[16..20]);
        reply[16..20].copy_from_slice(&packet[12..16]);
        reply[20] = 0;
        Some(reply)
    }

    /// Moves control datagrams between the peers until both are quiet.
    fn shuttle(client: &mut Session, gateway: &mut Session) -> Delivered {
        shuttle_at(client, gateway, Instant::now())
    }

    fn shuttle_at(client: &mut Session, gateway: &mut Session, now: Instant) -> Delivered {
        let mut delivered = Delivered::default();
        for _ in 0..MAX_ROUNDS {
            let up = forward(client, gateway, &mut delivered.to_gateway, now);
            let down = forward(gateway, client, &mut delivered.to_client, now);
            if !up && !down {
                return delivered;
            }
        }
        panic!("peers still talking after {MAX_ROUNDS} rounds");
    }

    fn forward(from: &mut Session, to: &mut Session, delivered: &mut Vec<Vec<u8>>, now: Instant) -> bool {
        let mut out = vec![0; BUF];
        let mut moved = false;
        while let Some(datagram) = from.poll_datagram() {
            moved = true;
            if let FromNetwork::Tunnel(packet) = to.handle_datagram(&datagram, &mut out, now) {
                delivered.push(packet.to_vec());
            }
        }
        moved
    }

    fn transmit(from: &mut Session, to: &mut Session, packet: &[u8]) -> Received {
        transmit_at(from, to, packet, Instant::now())
    }

    fn transmit_at(from: &mut Session, to: &mut Session, packet: &[u8], now: Instant) -> Received {
        let mut sealed = vec![0; BUF];
        let mut opened = vec![0; BUF];
        let datagram = from
            .handle_tun_packet(packet, &mut sealed, now)
            .expect("sender has no session");
        match to.handle_datagram(datagram, &mut opened, now) {
            FromNetwork::Tunnel(packet) => Received::Packet(packet.to_vec()),
            FromNetwork::Nothing => Received::Nothing,
            FromNetwork::Dropped(reason) => Received::Dropped(reason),
        }
    }

    fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total_len = u16::try_from(20 + payload.len()).unwrap();
        let mut packet = vec![0; 20];
        packet[0] = 0x45; // version 4, 5 words of header
        packet[2..4].copy_from_slice(&total_len.to_be_bytes());
        packet[8] = 64; // TTL
        packet[9] = EXPERIMENT_PROTOCOL;
        packet[12..16].copy_from_slice(&source.octets());
        packet[16..20].copy_from_slice(&destination.octets());
        let checksum = ipv4_header_checksum(&packet);
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    fn ipv4_header_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ipv6_packet(source: Ipv6Addr, destination: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let payload_len = u16::try_from(payload.len()).unwrap();
        let mut packet = vec![0; 40];
        packet[0] = 0x60; // version 6
        packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
        packet[6] = EXPERIMENT_PROTOCOL;
        packet[7] = 64; // hop limit
        packet[8..24].copy_from_slice(&source.octets());
        packet[24..40].copy_from_slice(&destination.octets());
        packet.extend_from_slice(payload);
        packet
    }
}
