//! Sans-IO userspace network stack: smoltcp on top of the WireGuard [`Session`].
//!
//! Datagrams from the gateway and time go in; datagrams to send come out, and TCP and UDP
//! sockets live inside. What smoltcp transmits is encrypted by the session on the spot, what
//! the session decrypts is queued for smoltcp's next poll. No sockets of the host, no clock
//! reads of our own.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::repair::Repair;
use crate::tunnel::acks::AckFilter;
use crate::tunnel::clock::Clock;
use crate::tunnel::core::{out_buf_len, Event, FromNetwork, Session, Stats, MAX_PACKET};
use crate::tunnel::socket::Datagrams;

/// TCP buffers per connection, each way: big enough for a window that fills a fast link.
pub const TCP_BUFFER: usize = 512 * 1024;
/// A connection that neither delivers nor acknowledges anything for this long is dropped.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(120);
/// Keepalives on idle connections, so a gateway's connection tracking keeps them.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(25);
const UDP_PACKETS: usize = 16;
const UDP_BUFFER: usize = 16 * 1024;
/// Local ports handed to outgoing connections (the IANA dynamic range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Decrypted packets waiting for smoltcp; the shell polls after every batch, so more would
/// mean a stalled poll, and dropping is what a full NIC queue does too.
const INBOUND_LIMIT: usize = 1024;

/// Our side of the tunnel as the platform assigned it.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// This peer's addresses (an IPv4 /32 and/or an IPv6 /128).
    pub addresses: Vec<IpNet>,
    /// The IP MTU inside the tunnel.
    pub mtu: usize,
    /// Seeds smoltcp's port and sequence-number choices.
    pub seed: u64,
}

/// smoltcp and the WireGuard session, polled together.
pub struct Stack {
    link: Link,
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: Instant,
    next_port: u16,
    /// Sockets their owner has let go of, removed once their close has completed.
    closing: Vec<SocketHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("this tunnel has no {0} address")]
    NoAddressFamily(&'static str),
    #[error("no free local port")]
    NoPort,
}

impl Stack {
    pub fn new(session: Session, config: &StackConfig, now: Instant) -> Stack {
        let mut link = Link {
            session,
            inbound: VecDeque::new(),
            outbound: Datagrams::default(),
            mtu: config.mtu,
            scratch: vec![0; out_buf_len(MAX_PACKET)].into_boxed_slice(),
            repair: Repair::default(),
            acks: AckFilter::default(),
            now,
        };
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ip);
        iface_config.random_seed = config.seed;
        let mut iface = Interface::new(iface_config, &mut link, smol_time(now, now));
        iface.update_ip_addrs(|addrs| {
            for net in &config.addresses {
                // At most one address per family (smoltcp holds two); extras are ignored.
                let _ = addrs.push(IpCidr::new(net.addr().into(), net.prefix_len()));
            }
        });
        // Everything goes into the tunnel; on an IP medium the gateway is never looked up.
        for net in &config.addresses {
            let _ = match net.addr() {
                IpAddr::V4(a) => iface.routes_mut().add_default_ipv4_route(a).map(drop),
                IpAddr::V6(a) => iface.routes_mut().add_default_ipv6_route(a).map(drop),
            };
        }
        let span = u64::from(EPHEMERAL.end() - EPHEMERAL.start());
        Stack {
            link,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch: now,
            next_port: EPHEMERAL.start() + (config.seed % span) as u16,
            closing: Vec::new(),
        }
    }

    /// Queues a handshake so the tunnel is up before the first connection needs it.
    pub fn initiate_handshake(&mut self, now: Instant) {
        self.link.session.initiate_handshake(now);
        self.link.drain_control();
    }

    /// A datagram from the gateway. Call [`Stack::poll`] after a batch of them.
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        let link = &mut self.link;
        let packet = match link.session.handle_datagram(datagram, &mut link.scratch, now) {
            FromNetwork::Tunnel(packet) if link.inbound.len() < INBOUND_LIMIT => {
                let (session, outbound) = (&mut link.session, &mut link.outbound);
                let deliver = link
                    .repair
                    .on_received(packet, now, |lost| seal(session, outbound, lost, now));
                deliver.then(|| packet.to_vec())
            }
            FromNetwork::Tunnel(_) => {
                tracing::trace!("inbound queue full, packet dropped");
                None
            }
            FromNetwork::Nothing | FromNetwork::Dropped(_) => None,
        };
        link.inbound.extend(packet);
        link.drain_control();
    }

    /// The decrypted packets waiting for smoltcp's next poll (which a [`crate::tunnel::hold`]
    /// may put off: smoltcp then takes twice the segments per poll and ACKs half as often).
    pub fn inbound(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.link.inbound.iter().map(Vec::as_slice)
    }

    /// Reads the time for the work that follows (`Session::handle_clock`): a machine that slept
    /// gets a fresh handshake at once.
    pub fn handle_clock(&mut self, clock: &dyn Clock) -> Instant {
        let now = self.link.session.handle_clock(clock);
        self.link.drain_control();
        now
    }

    /// Runs smoltcp: delivers queued packets to the sockets, lets the sockets transmit, and
    /// reaps closed connections. Returns whether a socket's state may have changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        self.link.now = now;
        self.link.repair.forget_idle(now);
        let kept = self.link.acks.thin(self.link.inbound.make_contiguous(), 0);
        self.link.inbound.truncate(kept);
        let changed = self
            .iface
            .poll(smol_time(self.epoch, now), &mut self.link, &mut self.sockets);
        self.reap();
        changed == PollResult::SocketStateChanged
    }

    /// Drives the session's timers once [`Stack::poll_timeout`] has passed, then smoltcp's.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.session.handle_timeout(now);
        self.link.drain_control();
        let Link {
            repair,
            session,
            outbound,
            ..
        } = &mut self.link;
        repair.on_timeout(now, |lost| seal(session, outbound, lost, now));
        self.poll(now);
    }

    /// Moves what is to be sent to the gateway behind what `out` holds.
    pub fn take_datagrams(&mut self, out: &mut Datagrams) {
        out.append(&mut self.link.outbound);
    }

    /// When [`Stack::handle_timeout`] should next be called; `None`: not until something
    /// arrives.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let stack = self
            .iface
            .poll_delay(smol_time(self.epoch, now), &self.sockets)
            .map(|delay| now + Duration::from_micros(delay.total_micros()));
        let repair = self.link.repair.poll_at();
        [self.link.session.poll_timeout(), stack, repair]
            .into_iter()
            .flatten()
            .min()
    }

    /// What the session says happened (`Session::poll_event`); drain after every batch.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.link.session.poll_event()
    }

    pub fn measures_path(&self) -> bool {
        self.link.session.measures_path()
    }

    pub fn is_connected(&self) -> bool {
        self.link.session.is_connected()
    }

    pub fn stats(&self) -> Stats {
        self.link.session.stats()
    }

    /// Opens a TCP connection; it proceeds on the next polls.
    pub fn connect(&mut self, remote: SocketAddr) -> Result<SocketHandle, ConnectError> {
        let family = if remote.is_ipv4() { "IPv4" } else { "IPv6" };
        if !self.has_family(remote.ip()) {
            return Err(ConnectError::NoAddressFamily(family));
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        socket.set_timeout(Some(TCP_TIMEOUT.into()));
        socket.set_keep_alive(Some(TCP_KEEPALIVE.into()));
        // Interactive traffic (ssh) must not wait for an ACK to send its next keystroke.
        socket.set_nagle_enabled(false);
        // Without congestion control a full window goes out in one burst, which the gateway's
        // queues drop, and recovery by retransmission timeout stalls the upload.
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        let port = self.free_port().ok_or(ConnectError::NoPort)?;
        socket
            .connect(self.iface.context(), remote, port)
            .map_err(|_| ConnectError::NoAddressFamily(family))?;
        Ok(self.sockets.add(socket))
    }

    /// A UDP socket bound to a free local port.
    pub fn bind_udp(&mut self) -> Result<SocketHandle, ConnectError> {
        let port = self.free_port().ok_or(ConnectError::NoPort)?;
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUFFER]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).map_err(|_| ConnectError::NoPort)?;
        Ok(self.sockets.add(socket))
    }

    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(handle)
    }

    pub fn udp(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut(handle)
    }

    /// Closes a TCP connection gracefully (what was written is still delivered) and forgets it
    /// once it has closed.
    pub fn release_tcp(&mut self, handle: SocketHandle) {
        self.tcp(handle).close();
        self.forget_when_closed(handle);
    }

    /// Resets a TCP connection and forgets it.
    pub fn abort_tcp(&mut self, handle: SocketHandle) {
        self.tcp(handle).abort();
        self.forget_when_closed(handle);
    }

    fn forget_when_closed(&mut self, handle: SocketHandle) {
        if !self.closing.contains(&handle) {
            self.closing.push(handle);
        }
    }

    pub fn release_udp(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    /// A listening TCP socket, for tests that play the far end.
    #[cfg(test)]
    pub(crate) fn listen(&mut self, port: u16) -> SocketHandle {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(tcp::CongestionControl::None);
        socket.listen(port).unwrap();
        self.sockets.add(socket)
    }

    /// Open sockets, TCP connections still closing included.
    pub fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }

    fn has_family(&self, ip: IpAddr) -> bool {
        self.iface
            .ip_addrs()
            .iter()
            .any(|cidr| IpAddr::from(cidr.address()).is_ipv4() == ip.is_ipv4())
    }

    fn reap(&mut self) {
        let sockets = &mut self.sockets;
        self.closing.retain(|&handle| {
            let done = matches!(
                sockets.get::<tcp::Socket>(handle).state(),
                tcp::State::Closed | tcp::State::TimeWait
            );
            if done {
                sockets.remove(handle);
            }
            !done
        });
    }

    fn free_port(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            if !self.port_in_use(port) {
                return Some(port);
            }
        }
        None
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Tcp(s) => s.local_endpoint().is_some_and(|e| e.port == port),
            smoltcp::socket::Socket::Udp(s) => s.endpoint().port == port,
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }
}

fn smol_time(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

/// smoltcp's device: packets the session decrypted, and a session to encrypt what it sends.
struct Link {
    session: Session,
    inbound: VecDeque<Vec<u8>>,
    outbound: Datagrams,
    mtu: usize,
    scratch: Box<[u8]>,
    /// Sent data segments until acknowledged, to fill the holes the peer reports at once.
    repair: Repair,
    /// Drops the ACKs a later one in `inbound` makes stale, before smoltcp reads them.
    acks: AckFilter,
    now: Instant,
}

impl Link {
    fn drain_control(&mut self) {
        while let Some(datagram) = self.session.poll_datagram() {
            self.outbound.push(&datagram);
        }
        while let Some(packet) = self.session.poll_tun_packet() {
            self.inbound.push_back(packet);
        }
    }
}

impl phy::Device for Link {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.inbound.pop_front()?;
        Some((
            RxToken(packet),
            TxToken {
                session: &mut self.session,
                outbound: &mut self.outbound,
                repair: &mut self.repair,
                now: self.now,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            session: &mut self.session,
            outbound: &mut self.outbound,
            repair: &mut self.repair,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // smoltcp sizes its segments (and the MSS it announces) from this on every poll, so a
        // narrower path takes effect at once, also on open connections.
        caps.max_transmission_unit = self.session.path_fit().map_or(self.mtu, |fit| fit.min(self.mtu));
        caps
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

struct TxToken<'a> {
    session: &'a mut Session,
    outbound: &'a mut Datagrams,
    repair: &'a mut Repair,
    now: Instant,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        seal(self.session, self.outbound, &packet, self.now);
        // Kept (not copied) until acknowledged if it carries data.
        self.repair.on_sent(packet, self.now);
        result
    }
}

/// Encrypts an IP packet for the gateway and queues it, with what the session has to send.
fn seal(session: &mut Session, outbound: &mut Datagrams, packet: &[u8], now: Instant) {
    outbound.push_with(out_buf_len(packet.len()), |datagram| {
        session.handle_tun_packet(packet, datagram, now).map(<[u8]>::len)
    });
    while let Some(control) = session.poll_datagram() {
        outbound.push(&control);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::clock::TestClock;
    use crate::tunnel::testing;

    /// Two stacks, each other's WireGuard peer, exchange a TCP stream entirely in memory.
    #[test]
    fn tcp_stream_crosses_two_stacks_through_wireguard() {
        let now = Instant::now();
        let (mut client, mut server) = pair(now);
        let listener = {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 4096]),
            );
            socket.listen(7000).unwrap();
            server.sockets.add(socket)
        };
        client.initiate_handshake(now);
        let conn = client.connect("10.9.0.1:7000".parse().unwrap()).unwrap();

        let mut sent = false;
        let mut got = Vec::new();
        for round in 0..200 {
            let at = now + Duration::from_millis(round);
            client.poll(at);
            server.poll(at);
            shuttle(&mut client, &mut server, at);
            if !sent && client.tcp(conn).can_send() {
                client.tcp(conn).send_slice(b"hello through the tunnel").unwrap();
                sent = true;
            }
            let socket = server.tcp(listener);
            while socket.can_recv() {
                let mut buf = [0; 64];
                let n = socket.recv_slice(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() == 24 {
                break;
            }
        }

        assert_eq!(got, b"hello through the tunnel");
        assert!(client.stats().tx_packets > 0);
    }

    #[test]
    fn connect_refuses_a_family_the_tunnel_lacks() {
        let (mut client, _server) = pair(Instant::now());

        let result = client.connect("[fd00::1]:22".parse().unwrap());

        assert_eq!(result, Err(ConnectError::NoAddressFamily("IPv6")));
    }

    #[test]
    fn released_connections_are_reaped_once_closed() {
        let now = Instant::now();
        let (mut client, _server) = pair(now);
        let conn = client.connect("10.9.0.1:7000".parse().unwrap()).unwrap();

        client.abort_tcp(conn);
        client.poll(now);

        assert_eq!(client.socket_count(), 0);
    }

    #[test]
    fn a_suspend_sends_a_fresh_handshake() {
        let now = Instant::now();
        let (mut client, mut server) = pair(now);
        client.initiate_handshake(now);
        shuttle(&mut client, &mut server, now);
        assert!(client.is_connected());
        let clock = TestClock::new(now);
        client.handle_clock(&clock);

        clock.advance(Duration::from_secs(1), Duration::from_secs(600));
        client.handle_clock(&clock);

        let mut out = Datagrams::default();
        client.take_datagrams(&mut out);
        let initiation = out.iter().next().expect("no handshake after the suspend");
        assert_eq!(initiation[0], 1, "a handshake initiation");
        assert_eq!(client.stats().sleeps_detected, 1);
    }

    fn pair(now: Instant) -> (Stack, Stack) {
        let (client, server) = testing::peer_configs(&["10.9.0.1/32"], &["10.9.0.2/32"]);
        let config = |addr: &str, seed| StackConfig {
            addresses: vec![addr.parse().unwrap()],
            mtu: 1420,
            seed,
        };
        (
            Stack::new(Session::new(client, now), &config("10.9.0.2/32", 1), now),
            Stack::new(Session::new(server, now), &config("10.9.0.1/32", 2), now),
        )
    }

    fn shuttle(a: &mut Stack, b: &mut Stack, now: Instant) {
        for _ in 0..16 {
            let moved = deliver(a, b, now) | deliver(b, a, now);
            a.poll(now);
            b.poll(now);
            if !moved {
                return;
            }
        }
    }

    /// Hands what `from` has to send to `to`; whether there was anything.
    fn deliver(from: &mut Stack, to: &mut Stack, now: Instant) -> bool {
        let mut out = Datagrams::default();
        from.take_datagrams(&mut out);
        for d in out.iter() {
            to.handle_datagram(d, now);
        }
        !out.is_empty()
    }
}
