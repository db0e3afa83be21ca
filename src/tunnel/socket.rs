//! The UDP socket to the gateway, for both shells (the TUN's `io` and the rootless mode's).
//!
//! Batched: one sendmsg carries a GSO train of equal-sized datagrams, one recvmmsg returns
//! GRO-coalesced ones (quinn-udp). Where the system refuses the batched set-up (Wine, older
//! Windows), one datagram per call. The socket is unconnected and keeps only what comes from the
//! endpoint, so the endpoint can change under it (a gateway that moved).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::family;

/// The most buffers one receive fills, each possibly a GRO train.
pub const MAX_RX_BATCH: usize = 8;
/// One receive buffer: the largest GRO train.
pub const RX_BUF: usize = 65_536;
/// Upper bound of one UDP GSO send (the IP payload limit, less headroom).
pub const GSO_BYTES: usize = 64_000;
/// Bursts of a fast sender must not overflow the default socket buffers.
const SOCKET_BUFFER: usize = 4 << 20;

/// The UDP socket to the gateway, with its receive buffers allocated once.
pub struct GatewaySocket {
    udp: UdpSocket,
    /// `None` where batching is refused: one datagram per call.
    state: Option<UdpSocketState>,
    endpoint: SocketAddr,
    rx: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// The last receive came back short: nothing was left, and the readiness is cleared.
    drained: bool,
}

impl GatewaySocket {
    /// A socket of the endpoint's family on any local address; each receive fills up to
    /// `rx_batch` buffers (at most [`MAX_RX_BATCH`]).
    pub async fn bind(endpoint: SocketAddr, rx_batch: usize) -> io::Result<GatewaySocket> {
        let udp = UdpSocket::bind(family::unspecified_for(endpoint.ip())).await?;
        Ok(GatewaySocket::new(udp, endpoint, rx_batch))
    }

    pub fn new(udp: UdpSocket, endpoint: SocketAddr, rx_batch: usize) -> GatewaySocket {
        let rx_batch = rx_batch.clamp(1, MAX_RX_BATCH);
        let state = match UdpSocketState::new((&udp).into()) {
            Ok(state) => {
                #[cfg(target_os = "linux")]
                no_unread_cmsgs(&udp);
                let _ = state.set_recv_buffer_size((&udp).into(), SOCKET_BUFFER);
                let _ = state.set_send_buffer_size((&udp).into(), SOCKET_BUFFER);
                Some(state)
            }
            Err(error) => {
                tracing::warn!(%error, "batched UDP is refused here; one datagram per send and receive");
                None
            }
        };
        GatewaySocket {
            udp,
            state,
            endpoint,
            rx: vec![vec![0; RX_BUF]; rx_batch],
            metas: vec![RecvMeta::default(); rx_batch],
            drained: false,
        }
    }

    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Sends to, and accepts only from, `endpoint` from now on.
    pub fn set_endpoint(&mut self, endpoint: SocketAddr) {
        self.endpoint = endpoint;
    }

    /// The most datagrams one [`GatewaySocket::send_train`] may carry.
    pub fn max_segments(&self) -> usize {
        self.state.as_ref().map_or(1, UdpSocketState::max_gso_segments).max(1)
    }

    pub async fn readable(&mut self) -> io::Result<()> {
        self.udp.readable().await?;
        self.drained = false;
        Ok(())
    }

    /// Sends one datagram.
    pub async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let sent = self.udp.send_to(datagram, self.endpoint).await.map(drop);
        if let Err(error) = &sent {
            // The route went, or the system is out of buffers: the session retries on its own.
            tracing::debug!(%error, "sending to the gateway");
        }
        sent
    }

    /// Sends `contents`, datagrams of `segment` bytes back to back (the last may be shorter), in
    /// one GSO send; at most [`GatewaySocket::max_segments`] of them and [`GSO_BYTES`] in all.
    pub async fn send_train(&self, contents: &[u8], segment: usize) -> io::Result<()> {
        send_train(&self.udp, self.state.as_ref(), self.endpoint, contents, segment).await
    }

    /// Sends and empties `datagrams`, runs of equal size together as they lie in its buffer;
    /// the outcome of the last send (`None`: nothing to send). A failed send is left to the
    /// session's retries.
    pub async fn send_datagrams(&mut self, datagrams: &mut Datagrams) -> Option<io::Result<()>> {
        if datagrams.is_empty() {
            return None;
        }
        let max_segments = self.max_segments();
        let (mut lens, mut bytes) = (&datagrams.lens[..], &datagrams.bytes[..]);
        let mut outcome = Ok(());
        while !lens.is_empty() {
            let (count, segment) = train(lens, max_segments, GSO_BYTES);
            let (contents, rest) = bytes.split_at(lens[..count].iter().sum());
            outcome = send_train(&self.udp, self.state.as_ref(), self.endpoint, contents, segment).await;
            (lens, bytes) = (&lens[count..], rest);
        }
        datagrams.clear();
        Some(outcome)
    }

    /// What one receive call brought from the endpoint, one datagram each (GRO trains split),
    /// others dropped; `WouldBlock` when nothing waits. Never waits itself.
    pub fn try_recv(&mut self) -> io::Result<impl Iterator<Item = &[u8]>> {
        if std::mem::take(&mut self.drained) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let received = match &self.state {
            Some(state) => {
                let (udp, metas, drained) = (&self.udp, &mut self.metas, &mut self.drained);
                let mut bufs = self.rx.iter_mut();
                let mut iovs: [IoSliceMut; MAX_RX_BATCH] = std::array::from_fn(|_| match bufs.next() {
                    Some(buf) => IoSliceMut::new(buf),
                    None => IoSliceMut::new(&mut []),
                });
                let batch = metas.len();
                let mut short = None;
                let received = udp.try_io(Interest::READABLE, || {
                    let n = state.recv(udp.into(), &mut iovs[..batch], metas)?;
                    // recvmmsg stops at the first datagram that is not there: a short batch
                    // emptied the queue, so the readiness is cleared now (WouldBlock) rather
                    // than by one more call that finds nothing.
                    if cfg!(target_os = "linux") && n < batch {
                        short = Some(n);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (received, short) {
                    (Err(_), Some(n)) => {
                        *drained = true;
                        Ok(n)
                    }
                    (received, _) => received,
                }
            }
            None => self.recv_one_by_one(),
        };
        let received = received.inspect_err(|error| {
            if error.kind() != io::ErrorKind::WouldBlock {
                tracing::debug!(%error, "receiving from the gateway");
            }
        })?;
        let endpoint = self.endpoint;
        Ok(self
            .rx
            .iter()
            .zip(&self.metas)
            .take(received)
            .filter(move |(_, meta)| {
                let known = meta.addr == endpoint;
                if !known {
                    tracing::trace!(from = %meta.addr, "datagram from an unknown address dropped");
                }
                known
            })
            .flat_map(|(buf, meta)| buf[..meta.len].chunks(meta.stride.max(1))))
    }

    /// Without batching: as many datagrams as there are buffers, one call each.
    fn recv_one_by_one(&mut self) -> io::Result<usize> {
        let mut received = 0;
        for (buf, meta) in self.rx.iter_mut().zip(&mut self.metas) {
            match self.udp.try_recv_from(buf) {
                Ok((len, addr)) => {
                    (meta.addr, meta.len, meta.stride) = (addr, len, len);
                    received += 1;
                }
                Err(error) if received == 0 => return Err(error),
                Err(_) => break,
            }
        }
        Ok(received)
    }
}

/// quinn-udp asks for control messages this socket never reads (arrival time, destination
/// address, TOS or traffic class); the kernel would build each for every datagram received.
#[cfg(target_os = "linux")]
fn no_unread_cmsgs(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Each may not apply to the socket's family: what applies is off, the rest stays as it is.
    let _ = setsockopt(udp, sockopt::ReceiveTimestampns, &false);
    let _ = setsockopt(udp, sockopt::IpRecvTos, &false);
    let _ = setsockopt(udp, sockopt::Ipv4PacketInfo, &false);
    let _ = setsockopt(udp, sockopt::Ipv6RecvPacketInfo, &false);
    let _ = setsockopt(udp, sockopt::Ipv6RecvTClass, &false);
}

async fn send_train(
    udp: &UdpSocket,
    state: Option<&UdpSocketState>,
    endpoint: SocketAddr,
    contents: &[u8],
    segment: usize,
) -> io::Result<()> {
    let Some(state) = state else {
        let mut outcome = Ok(());
        for datagram in contents.chunks(segment.max(1)) {
            outcome = udp.send_to(datagram, endpoint).await.map(drop);
            if let Err(error) = &outcome {
                tracing::debug!(%error, "sending to the gateway");
            }
        }
        return outcome;
    };
    let transmit = Transmit {
        destination: endpoint,
        ecn: None,
        contents,
        segment_size: (contents.len() > segment).then_some(segment),
        src_ip: None,
    };
    let sent = udp
        .async_io(Interest::WRITABLE, || state.try_send(udp.into(), &transmit))
        .await;
    if let Err(error) = &sent {
        // The route went, or the system is out of buffers: the session retries on its own.
        tracing::debug!(%error, bytes = contents.len(), segment, "sending to the gateway");
    }
    sent
}

/// How many datagrams from the start of `lens` (their sizes, not empty) make one GSO send, and
/// their segment size: equal sizes, of which only the last may be shorter, within the limits.
fn train(lens: &[usize], max_segments: usize, max_bytes: usize) -> (usize, usize) {
    let segment = lens[0];
    let (mut count, mut bytes) = (0, 0);
    for &len in lens {
        let fits = count == 0 || (count < max_segments && bytes + len <= max_bytes);
        if !fits || len > segment {
            break;
        }
        count += 1;
        bytes += len;
        if len < segment {
            break;
        }
    }
    (count, segment)
}

/// Datagrams back to back in one buffer: runs of equal size go out as one GSO send as they lie,
/// and once the buffer has grown, queueing one costs no allocation.
#[derive(Debug, Default)]
pub struct Datagrams {
    bytes: Vec<u8>,
    lens: Vec<usize>,
}

impl Datagrams {
    pub fn push(&mut self, datagram: &[u8]) {
        self.bytes.extend_from_slice(datagram);
        self.lens.push(datagram.len());
    }

    /// Queues what `write` writes into a space of `max` bytes, if it says it wrote something
    /// (its length).
    pub fn push_with(&mut self, max: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let start = self.bytes.len();
        self.bytes.resize(start + max, 0);
        let len = write(&mut self.bytes[start..]).map(|len| len.min(max));
        self.bytes.truncate(start + len.unwrap_or(0));
        self.lens.extend(len);
    }

    /// Moves every datagram of `other` behind these.
    pub fn append(&mut self, other: &mut Datagrams) {
        if self.is_empty() {
            std::mem::swap(self, other);
            return;
        }
        self.bytes.append(&mut other.bytes);
        self.lens.append(&mut other.lens);
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lens.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.lens.iter().scan(0, |start, &len| {
            let datagram = &self.bytes[*start..*start + len];
            *start += len;
            Some(datagram)
        })
    }
}

/// Whether the system has a route to `endpoint`, asked of a throw-away socket (the gateway's own
/// stays unconnected): a missing route is then said at once.
pub async fn check_route(endpoint: SocketAddr) -> io::Result<()> {
    let udp = UdpSocket::bind(family::unspecified_for(endpoint.ip())).await?;
    udp.connect(endpoint).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_are_equal_sizes_ending_at_most_one_shorter() {
        assert_eq!(train(&[100, 100, 60, 100], 64, 64_000), (3, 100));
        assert_eq!(train(&[60, 100], 64, 64_000), (1, 60));
        assert_eq!(train(&[100; 10], 4, 64_000), (4, 100));
        assert_eq!(train(&[100; 10], 64, 350), (3, 100));
        assert_eq!(train(&[70_000, 100], 64, 64_000), (1, 70_000));
    }

    #[test]
    fn datagrams_keep_their_order_and_sizes() {
        let mut datagrams = Datagrams::default();
        datagrams.push(&[1; 3]);
        datagrams.push_with(10, |buf| {
            buf[..2].fill(2);
            Some(2)
        });
        datagrams.push_with(10, |_| None);
        let mut later = Datagrams::default();
        later.push(&[3; 4]);
        datagrams.append(&mut later);

        let all: Vec<&[u8]> = datagrams.iter().collect();
        assert_eq!(all, [&[1; 3][..], &[2; 2][..], &[3; 4][..]]);
        assert!(later.is_empty());
    }

    async fn pair() -> (GatewaySocket, UdpSocket) {
        let gateway = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let endpoint = gateway.local_addr().unwrap();
        let socket = GatewaySocket::bind(endpoint, 4).await.unwrap();
        (socket, gateway)
    }

    #[tokio::test]
    async fn trains_and_datagrams_arrive_one_datagram_each() {
        let (mut socket, gateway) = pair().await;
        let mut datagrams = Datagrams::default();
        for (len, byte) in [(100, 1), (100, 2), (60, 3), (100, 4)] {
            datagrams.push(&vec![byte; len]);
        }
        assert!(matches!(socket.send_datagrams(&mut datagrams).await, Some(Ok(()))));
        assert!(datagrams.is_empty());
        socket.send_train(&[7; 250], 100).await.unwrap();
        let mut arrived = Vec::new();
        let mut buf = [0; 2048];
        for _ in 0..7 {
            let len = tokio::time::timeout(std::time::Duration::from_secs(2), gateway.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            arrived.push((len, buf[0]));
        }
        assert_eq!(
            arrived,
            [(100, 1), (100, 2), (60, 3), (100, 4), (100, 7), (100, 7), (50, 7)]
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn receives_carry_no_control_message_left_unread() {
        use nix::sys::socket::{getsockopt, sockopt};
        let (socket, _gateway) = pair().await;
        assert!(socket.state.is_some(), "batched UDP is available on Linux");
        assert!(!getsockopt(&socket.udp, sockopt::ReceiveTimestampns).unwrap());
        assert!(!getsockopt(&socket.udp, sockopt::IpRecvTos).unwrap());
        assert!(!getsockopt(&socket.udp, sockopt::Ipv4PacketInfo).unwrap());
    }

    #[tokio::test]
    async fn a_short_batch_ends_the_receives_and_the_next_datagram_is_heard() {
        let (mut socket, gateway) = pair().await;
        let to = SocketAddr::from(([127, 0, 0, 1], socket.udp.local_addr().unwrap().port()));
        for payload in [&b"one"[..], b"two"] {
            gateway.send_to(payload, to).await.unwrap();
        }
        let wait = std::time::Duration::from_secs(2);
        tokio::time::timeout(wait, socket.readable()).await.unwrap().unwrap();
        let mut first: Vec<Vec<u8>> = Vec::new();
        while first.len() < 2 {
            first.extend(socket.try_recv().unwrap().map(<[u8]>::to_vec));
        }
        assert_eq!(first, [b"one".to_vec(), b"two".to_vec()]);
        // Two of four buffers filled: on Linux that was the whole queue, and no call follows.
        assert_eq!(socket.drained, cfg!(target_os = "linux"));
        assert_eq!(
            socket.try_recv().err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );

        gateway.send_to(b"three", to).await.unwrap();
        tokio::time::timeout(wait, socket.readable())
            .await
            .expect("the readiness of a later datagram is not lost")
            .unwrap();
        let next: Vec<Vec<u8>> = socket.try_recv().unwrap().map(<[u8]>::to_vec).collect();
        assert_eq!(next, [b"three".to_vec()]);
    }

    #[tokio::test]
    async fn only_the_endpoint_is_heard_and_it_can_change() {
        let (mut socket, gateway) = pair().await;
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.udp.local_addr().unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], local.port()));
        stranger.send_to(b"stranger", to).await.unwrap();
        gateway.send_to(b"gateway", to).await.unwrap();
        let heard = receive_all(&mut socket).await;
        assert_eq!(heard, [b"gateway".to_vec()]);

        socket.set_endpoint(stranger.local_addr().unwrap());
        gateway.send_to(b"gateway", to).await.unwrap();
        stranger.send_to(b"stranger", to).await.unwrap();
        let heard = receive_all(&mut socket).await;
        assert_eq!(heard, [b"stranger".to_vec()]);
    }

    /// What is kept of what arrived (both senders have sent by then).
    async fn receive_all(socket: &mut GatewaySocket) -> Vec<Vec<u8>> {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut kept = Vec::new();
        while let Ok(received) = socket.try_recv() {
            kept.extend(received.map(<[u8]>::to_vec));
        }
        kept
    }
}
