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
    /// A train copied together from separate datagrams ([`GatewaySocket::send_datagrams`]).
    train: Vec<u8>,
    rx: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
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
            train: Vec::new(),
            rx: vec![vec![0; RX_BUF]; rx_batch],
            metas: vec![RecvMeta::default(); rx_batch],
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

    pub async fn readable(&self) -> io::Result<()> {
        self.udp.readable().await
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

    /// Sends and empties `datagrams`, runs of equal size together; the outcome of the last send
    /// (`None`: nothing to send). A failed send is left to the session's retries.
    pub async fn send_datagrams(&mut self, datagrams: &mut Vec<Vec<u8>>) -> Option<io::Result<()>> {
        if datagrams.is_empty() {
            return None;
        }
        let mut outcome = Ok(());
        if self.state.is_none() {
            for datagram in datagrams.drain(..) {
                outcome = self.send(&datagram).await;
            }
            return Some(outcome);
        }
        let max_segments = self.max_segments();
        let mut rest = &datagrams[..];
        while !rest.is_empty() {
            let (count, segment) = train(rest, max_segments, GSO_BYTES);
            self.train.clear();
            for datagram in &rest[..count] {
                self.train.extend_from_slice(datagram);
            }
            rest = &rest[count..];
            outcome = send_train(&self.udp, self.state.as_ref(), self.endpoint, &self.train, segment).await;
        }
        datagrams.clear();
        Some(outcome)
    }

    /// What one receive call brought from the endpoint, one datagram each (GRO trains split),
    /// others dropped; `WouldBlock` when nothing waits. Never waits itself.
    pub fn try_recv(&mut self) -> io::Result<impl Iterator<Item = &[u8]>> {
        let received = match &self.state {
            Some(state) => {
                let (udp, metas) = (&self.udp, &mut self.metas);
                let mut bufs = self.rx.iter_mut();
                let mut iovs: [IoSliceMut; MAX_RX_BATCH] = std::array::from_fn(|_| match bufs.next() {
                    Some(buf) => IoSliceMut::new(buf),
                    None => IoSliceMut::new(&mut []),
                });
                let batch = metas.len();
                udp.try_io(Interest::READABLE, || state.recv(udp.into(), &mut iovs[..batch], metas))
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

/// How many datagrams from the start of `datagrams` (not empty) make one GSO send, and their
/// segment size: equal sizes, of which only the last may be shorter, within the limits.
fn train(datagrams: &[Vec<u8>], max_segments: usize, max_bytes: usize) -> (usize, usize) {
    let segment = datagrams[0].len();
    let (mut count, mut bytes) = (0, 0);
    for datagram in datagrams {
        let fits = count == 0 || (count < max_segments && bytes + datagram.len() <= max_bytes);
        if !fits || datagram.len() > segment {
            break;
        }
        count += 1;
        bytes += datagram.len();
        if datagram.len() < segment {
            break;
        }
    }
    (count, segment)
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

    fn sizes(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter().map(|&n| vec![0; n]).collect()
    }

    #[test]
    fn trains_are_equal_sizes_ending_at_most_one_shorter() {
        assert_eq!(train(&sizes(&[100, 100, 60, 100]), 64, 64_000), (3, 100));
        assert_eq!(train(&sizes(&[60, 100]), 64, 64_000), (1, 60));
        assert_eq!(train(&sizes(&[100; 10]), 4, 64_000), (4, 100));
        assert_eq!(train(&sizes(&[100; 10]), 64, 350), (3, 100));
        assert_eq!(train(&sizes(&[70_000, 100]), 64, 64_000), (1, 70_000));
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
        let mut datagrams = sizes(&[100, 100, 60, 100]);
        assert!(matches!(socket.send_datagrams(&mut datagrams).await, Some(Ok(()))));
        assert!(datagrams.is_empty());
        socket.send_train(&[7; 250], 100).await.unwrap();
        let mut lens = Vec::new();
        let mut buf = [0; 2048];
        for _ in 0..7 {
            let len = tokio::time::timeout(std::time::Duration::from_secs(2), gateway.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            lens.push(len);
        }
        assert_eq!(lens, [100, 100, 60, 100, 100, 100, 50]);
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
