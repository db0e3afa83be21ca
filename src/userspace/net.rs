//! The tokio shell around [`Stack`]: one UDP socket to the gateway, one task that polls the
//! stack on its deadlines, and TCP connections and DNS lookups for the commands on top.
//!
//! The stack sits behind a mutex held only for short, non-blocking calls; connections register
//! smoltcp wakers and nudge the driver through a `Notify` whenever they change a socket.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

use super::dns::{self, Answer};
use super::stack::{ConnectError, Stack};
use crate::tunnel::clock::SystemClock;
use crate::tunnel::core::{Event, Stats};
use crate::tunnel::hold::{self, held_until};
use crate::tunnel::socket::{Datagrams, GatewaySocket};

/// Buffers of one recvmmsg, each possibly a GRO train (what the gateway socket of [`Net::start`]
/// is bound with), and recvmmsg calls before the stack is polled again.
pub const RX_BATCH: usize = 8;
const RX_ROUNDS: usize = 4;
/// How long a DNS query waits before it is sent again, and how often.
const DNS_RETRY: Duration = Duration::from_millis(700);
const DNS_TRIES: usize = 3;
/// WireGuard drops a session this long after its handshake (Reject-After-Time); with traffic
/// or keepalives a new handshake comes well before.
const SILENT_AFTER: Duration = Duration::from_secs(180);

/// A handle on the running stack; clones share it.
#[derive(Clone)]
pub struct Net {
    shared: Arc<Shared>,
    connected: watch::Receiver<bool>,
    path_mtu: watch::Receiver<Option<u16>>,
}

struct Shared {
    stack: Mutex<Stack>,
    wake: Notify,
    /// The project's DNS server; `None` when the platform's answer names none.
    dns: Option<SocketAddr>,
    /// Why the last send to the gateway failed, while sends fail: a handshake that never comes
    /// is then blamed on it rather than on the network.
    send_error: Mutex<Option<String>>,
}

/// Why a connection through the tunnel did not open.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0} refused the connection")]
    Refused(SocketAddr),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0} did not answer: the tunnel is silent (no handshake with the gateway for {1} s); check the network, or restart to register again")]
    Silent(SocketAddr, u64),
    #[error(transparent)]
    Stack(#[from] ConnectError),
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no container or service named {0:?} in this project")]
    NotFound(String),
    #[error(
        "cannot resolve {0:?}: the project's VPN answer names no DNS server, so names cannot resolve; use an address"
    )]
    NoDns(String),
    #[error("the project DNS {0} did not answer through the tunnel")]
    NoAnswer(SocketAddr),
    #[error("the project DNS {0} failed to answer for {1:?}: {2}")]
    Failed(SocketAddr, String, String),
    #[error(transparent)]
    Stack(#[from] ConnectError),
}

impl Net {
    /// Starts the driver task on `socket` (bound with [`RX_BATCH`]). The task ends with an error
    /// only if the UDP socket fails; dropping its handle does not stop it, aborting does.
    pub fn start(
        mut stack: Stack,
        socket: GatewaySocket,
        dns: Option<SocketAddr>,
    ) -> (Net, tokio::task::JoinHandle<io::Result<()>>) {
        stack.initiate_handshake(Instant::now());
        let shared = Arc::new(Shared {
            stack: Mutex::new(stack),
            wake: Notify::new(),
            dns,
            send_error: Mutex::new(None),
        });
        let (connected_tx, connected) = watch::channel(false);
        let (path_tx, path_mtu) = watch::channel(None);
        let driver = tokio::spawn(drive(shared.clone(), socket, connected_tx, path_tx));
        (
            Net {
                shared,
                connected,
                path_mtu,
            },
            driver,
        )
    }

    /// Waits for the first path MTU search to end, at most `timeout`: connections opened before
    /// would keep a size the path may not carry.
    pub async fn path_measured(&self, timeout: Duration) -> Option<u16> {
        if !self.shared.lock().measures_path() {
            return None;
        }
        let mut path_mtu = self.path_mtu.clone();
        let measured = tokio::time::timeout(timeout, path_mtu.wait_for(Option::is_some)).await;
        measured.ok().and_then(|r| r.ok().and_then(|mtu| *mtu))
    }

    /// Waits for the WireGuard handshake.
    pub async fn handshake(&self, timeout: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Why sending to the gateway fails, if it does.
    pub fn send_error(&self) -> Option<String> {
        self.shared
            .send_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Opens a TCP connection through the tunnel.
    pub async fn connect(&self, remote: SocketAddr, timeout: Duration) -> Result<TcpStream, DialError> {
        let handle = self.shared.lock().connect(remote)?;
        self.shared.wake.notify_one();
        let stream = TcpStream {
            shared: self.shared.clone(),
            handle,
        };
        let established = poll_fn(|cx| {
            let mut stack = self.shared.lock();
            let socket = stack.tcp(handle);
            match socket.state() {
                tcp::State::Established | tcp::State::CloseWait => Poll::Ready(true),
                tcp::State::Closed => Poll::Ready(false),
                _ => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
            }
        });
        match tokio::time::timeout(timeout, established).await {
            Ok(true) => Ok(stream),
            Ok(false) => Err(DialError::Refused(remote)),
            Err(_) => {
                stream.abort();
                let since = self.stats().last_handshake;
                Err(match since {
                    Some(age) if age < SILENT_AFTER => DialError::Timeout(remote, timeout),
                    age => DialError::Silent(remote, age.unwrap_or(SILENT_AFTER).as_secs()),
                })
            }
        }
    }

    /// The addresses of a container or service (or of the address `target` itself), those of
    /// the families this tunnel carries first.
    pub async fn resolve(&self, target: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ip) = dns::literal(target) {
            return Ok(vec![ip]);
        }
        let Some(server) = self.shared.dns else {
            return Err(ResolveError::NoDns(target.to_string()));
        };
        for name in dns::candidates(target) {
            let addresses = self.lookup(server, &name).await?;
            if !addresses.is_empty() {
                return Ok(addresses);
            }
        }
        Err(ResolveError::NotFound(target.to_string()))
    }

    /// A and AAAA of one fully qualified name, asked at once; IPv6 first.
    async fn lookup(&self, server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let udp = UdpGuard {
            handle: self.shared.lock().bind_udp()?,
            shared: &self.shared,
        };
        let base: u16 = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
        let kinds = [RecordType::AAAA, RecordType::A];
        let mut answers: [Option<Answer>; 2] = [None, None];
        for _ in 0..DNS_TRIES {
            {
                let mut stack = self.shared.lock();
                for (i, kind) in kinds.iter().enumerate() {
                    if answers[i].is_some() {
                        continue;
                    }
                    let id = base.wrapping_add(i as u16);
                    let packet = dns::query(name, *kind, id).ok_or_else(|| ResolveError::NotFound(name.into()))?;
                    if let Err(error) = stack.udp(udp.handle).send_slice(&packet, server) {
                        tracing::debug!(%error, "dns query not queued");
                    }
                }
            }
            self.shared.wake.notify_one();
            let all = poll_fn(|cx| {
                let mut stack = self.shared.lock();
                let socket = stack.udp(udp.handle);
                let mut buf = [0; 4096];
                while let Ok((len, meta)) = socket.recv_slice(&mut buf) {
                    if SocketAddr::from((meta.endpoint.addr, meta.endpoint.port)) != server {
                        continue;
                    }
                    for (i, slot) in answers.iter_mut().enumerate() {
                        if slot.is_none() {
                            *slot = dns::answer(&buf[..len], base.wrapping_add(i as u16));
                        }
                    }
                }
                if answers.iter().all(Option::is_some) {
                    return Poll::Ready(());
                }
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            });
            if tokio::time::timeout(DNS_RETRY, all).await.is_ok() {
                break;
            }
        }
        let mut addresses = Vec::new();
        for answer in &answers {
            match answer {
                Some(Answer::Addresses(found)) => addresses.extend(found),
                Some(Answer::Nothing) => {}
                Some(Answer::Failed(code)) => return Err(ResolveError::Failed(server, name.into(), code.to_string())),
                None if addresses.is_empty() => return Err(ResolveError::NoAnswer(server)),
                None => {}
            }
        }
        Ok(addresses)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Stack> {
        self.stack.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct UdpGuard<'a> {
    handle: SocketHandle,
    shared: &'a Shared,
}

impl Drop for UdpGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().release_udp(self.handle);
    }
}

/// Polls the stack when a datagram arrives, a connection changed a socket, or a deadline of
/// the stack passes; sends what the stack queued.
async fn drive(
    shared: Arc<Shared>,
    mut gateway: GatewaySocket,
    connected: watch::Sender<bool>,
    path_mtu: watch::Sender<Option<u16>>,
) -> io::Result<()> {
    let mut out = Datagrams::default();
    let timer = hold::Timer::new();
    // Received packets are waiting for the next receive, smoltcp not yet polled for them.
    let mut holding = false;
    loop {
        let deadline = {
            let mut stack = shared.lock();
            let now = stack.handle_clock(&SystemClock);
            if !holding {
                stack.poll(now);
            }
            stack.take_datagrams(&mut out);
            let up = stack.is_connected();
            connected.send_if_modified(|was| std::mem::replace(was, up) != up);
            while let Some(event) = stack.poll_event() {
                if let Event::PathMeasured { mtu } = event {
                    path_mtu.send_replace(Some(mtu));
                }
            }
            stack.poll_timeout(now)
        };
        let sent = gateway.send_datagrams(&mut out).await;
        if let Some(result) = sent {
            let mut error = shared.send_error.lock().unwrap_or_else(PoisonError::into_inner);
            *error = result.err().map(|e| e.to_string());
        }
        tokio::select! {
            ready = gateway.readable() => {
                ready?;
                let mut stack = shared.lock();
                receive(&mut gateway, &mut stack);
                holding = hold::keep(&timer, stack.inbound(), holding);
            }
            () = shared.wake.notified() => holding = false,
            () = held_until(&timer), if holding => holding = false,
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                shared.lock().handle_timeout(Instant::now());
                holding = false;
            }
        }
    }
}

/// Hands what has arrived to the stack, a bounded amount so the rest gets its turn.
fn receive(gateway: &mut GatewaySocket, stack: &mut Stack) {
    let now = Instant::now();
    for _ in 0..RX_ROUNDS {
        let Ok(received) = gateway.try_recv() else { return };
        for datagram in received {
            stack.handle_datagram(datagram, now);
        }
    }
}

/// A TCP connection through the tunnel. Dropping it closes it gracefully.
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl TcpStream {
    /// Resets the connection instead of closing it.
    pub fn abort(self) {
        self.shared.lock().abort_tcp(self.handle);
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.lock().release_tcp(self.handle);
        self.shared.wake.notify_one();
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut stack = self.shared.lock();
        let socket = stack.tcp(self.handle);
        if socket.can_recv() {
            let read = socket.recv_slice(buf.initialize_unfilled());
            drop(stack);
            // Reading opens the window: the peer may have to be told.
            self.shared.wake.notify_one();
            return Poll::Ready(match read {
                Ok(n) => {
                    buf.advance(n);
                    Ok(())
                }
                Err(tcp::RecvError::Finished) => Ok(()),
                Err(tcp::RecvError::InvalidState) => Err(io::ErrorKind::ConnectionReset.into()),
            });
        }
        if !socket.may_recv() {
            return Poll::Ready(Ok(()));
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut stack = self.shared.lock();
        let socket = stack.tcp(self.handle);
        if socket.can_send() {
            let sent = socket.send_slice(data);
            drop(stack);
            self.shared.wake.notify_one();
            return Poll::Ready(sent.map_err(|_| io::ErrorKind::BrokenPipe.into()));
        }
        if !socket.may_send() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        socket.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().tcp(self.handle).close();
        self.shared.wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::core::{Config, Session};
    use crate::tunnel::testing;
    use crate::userspace::stack::StackConfig;
    use tokio::io::AsyncReadExt;

    fn stack(session: Config, address: &str, now: Instant) -> Stack {
        let config = StackConfig {
            addresses: vec![address.parse().unwrap()],
            mtu: 1420,
            seed: 1,
        };
        Stack::new(Session::new(session, now), &config, now)
    }

    /// The driver holds unpushed TCP data for the next receive; a flight whose pushed last
    /// segment never comes must still reach the reader, released by the hold's own timer.
    #[tokio::test]
    async fn a_flight_that_never_pushes_still_reaches_the_reader() {
        let now = Instant::now();
        let (client, server) = testing::peer_configs(&["10.9.0.1/32"], &["10.9.0.2/32"]);
        let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = GatewaySocket::bind(gateway.local_addr().unwrap(), RX_BATCH)
            .await
            .unwrap();
        let mut server = stack(server, "10.9.0.1/32", now);
        let listener = server.listen(7000);
        let (net, driver) = Net::start(stack(client, "10.9.0.2/32", now), socket, None);
        let dial = tokio::spawn({
            let net = net.clone();
            async move {
                net.connect("10.9.0.1:7000".parse().unwrap(), Duration::from_secs(5))
                    .await
            }
        });

        // The far end, played here: it answers until the connection is up.
        let mut laptop = None;
        let mut buf = vec![0; 65_536];
        let mut out = Datagrams::default();
        for _ in 0..500 {
            if dial.is_finished() && server.tcp(listener).state() == tcp::State::Established {
                break;
            }
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(10), gateway.recv_from(&mut buf)).await
            {
                laptop = Some(from);
                server.handle_datagram(&buf[..n], Instant::now());
            }
            server.poll(Instant::now());
            server.take_datagrams(&mut out);
            for datagram in out.iter() {
                gateway.send_to(datagram, laptop.unwrap()).await.unwrap();
            }
            out.clear();
        }
        let mut stream = dial.await.unwrap().expect("connected");

        // Five full segments and one byte: smoltcp pushes only the last, which is withheld.
        const MSS: usize = 1380;
        server.tcp(listener).send_slice(&[7; 5 * MSS + 1]).unwrap();
        for _ in 0..6 {
            server.poll(Instant::now());
        }
        server.take_datagrams(&mut out);
        let flight: Vec<&[u8]> = out.iter().collect();
        assert_eq!(flight.len(), 6, "one segment per datagram");
        for datagram in &flight[..5] {
            gateway.send_to(datagram, laptop.unwrap()).await.unwrap();
        }

        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            while got.len() < 5 * MSS {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection ended");
                got.extend_from_slice(&buf[..n]);
            }
        });
        assert!(read.await.is_ok(), "{} of {} bytes arrived", got.len(), 5 * MSS);
        assert_eq!(got, [7; 5 * MSS]);
        driver.abort();
    }
}
