//! Loss repair below smoltcp, from the receiver's SACK blocks.
//!
//! smoltcp's TCP sends SACK-permitted but ignores the blocks that come back: after a loss it
//! resends one segment per three duplicate ACKs, and a second hole in the same window waits
//! for its retransmission timeout (at least 1 s), after which everything unacknowledged is sent
//! again. A gateway whose socket buffer overflows under a burst drops runs of datagrams, so
//! every such burst cost the upload a second. Here the data segments smoltcp sends are kept
//! (the packet it wrote, no copy) until the peer acknowledges them, and a segment the peer's
//! SACK blocks show missing, with enough data received beyond it, is sent again at once, as a
//! kernel TCP with SACK would. smoltcp sees the cumulative ACK move on instead of a stall.
//!
//! smoltcp also cuts its congestion window at every hole: it leaves fast recovery at the first
//! ACK that moves, so a burst that lost several runs of datagrams had the window cut once per
//! run (0.7 × 0.7 × …), where a kernel TCP cuts once per window of data (RFC 6675's recovery
//! point). From the first repair until everything sent before it is acknowledged, the duplicate
//! ACKs of later holes are therefore not handed to smoltcp: the repair here resends those
//! segments, and smoltcp keeps the one cut of the episode.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// Segments received beyond a hole before it counts as lost rather than reordered (RFC 6675's
/// DupThresh).
const DUP_THRESH: u32 = 3;
/// A repaired segment is sent again no sooner than twice the smoothed RTT, and never sooner
/// than this.
const MIN_RESEND_GAP: Duration = Duration::from_millis(2);
/// Bytes kept per connection at most: more than its send buffer can have in flight.
const MAX_HELD: usize = 2 * super::stack::TCP_BUFFER;
/// No ACK this long after the last one (or the last repair) and what is unacknowledged is sent
/// again, from the oldest, at most [`PROBE_SEGMENTS`] of it: a burst lost to its end (no
/// segment beyond to be SACKed) would otherwise wait for smoltcp's timeout. At least this long,
/// and at least twice the smoothed RTT; doubled while nothing is acknowledged.
const MIN_PROBE: Duration = Duration::from_millis(5);
const MAX_PROBE: Duration = Duration::from_millis(250);
const PROBE_SEGMENTS: usize = 32;
/// A connection without an ACK for this long is forgotten (it ended, or smoltcp gave up).
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// Our address and port, the peer's address and port.
type Flow = (IpAddr, u16, IpAddr, u16);

/// Unacknowledged data segments of every connection that has some.
#[derive(Default)]
pub struct Repair {
    flows: HashMap<Flow, Held>,
}

struct Held {
    segments: VecDeque<Segment>,
    bytes: usize,
    srtt: Option<Duration>,
    last_ack: Instant,
    /// When the unacknowledged data is sent again if no ACK comes, and the wait after that.
    probe_at: Instant,
    backoff: Duration,
    /// The peer's last cumulative ACK and window, which a duplicate ACK repeats.
    last_ack_no: Option<(u32, u16)>,
    /// A loss episode: the ACK that showed its first hole, and the end of what had been sent
    /// then; it ends when that end is acknowledged.
    episode: Option<(u32, u32)>,
}

struct Segment {
    seq: u32,
    end: u32,
    /// The IP packet as smoltcp wrote it.
    packet: Vec<u8>,
    sent: Instant,
    resent: Option<Instant>,
    sacked: bool,
}

impl Repair {
    /// A packet smoltcp sent: kept if it carries new data.
    pub fn on_sent(&mut self, packet: Vec<u8>, now: Instant) {
        let Some((src, dst, tcp)) = parse(&packet) else { return };
        let Ok(tcp) = TcpPacket::new_checked(tcp) else { return };
        let flow = (src, tcp.src_port(), dst, tcp.dst_port());
        if tcp.rst() {
            self.flows.remove(&flow);
            return;
        }
        let len = tcp.payload().len() as u32;
        if len == 0 || tcp.syn() {
            return;
        }
        let seq = tcp.seq_number().0 as u32;
        let end = seq.wrapping_add(len);
        let held = self.flows.entry(flow).or_insert_with(|| Held {
            segments: VecDeque::new(),
            bytes: 0,
            srtt: None,
            last_ack: now,
            probe_at: now + MAX_PROBE,
            backoff: MAX_PROBE,
            last_ack_no: None,
            episode: None,
        });
        if held.segments.back().is_some_and(|last| !before(last.end, end)) {
            return; // smoltcp's own retransmission of what is held already
        }
        held.bytes += packet.len();
        held.segments.push_back(Segment {
            seq,
            end,
            packet,
            sent: now,
            resent: None,
            sacked: false,
        });
        while held.bytes > MAX_HELD {
            let Some(old) = held.segments.pop_front() else { break };
            held.bytes -= old.packet.len();
        }
    }

    /// A packet from the peer: drops what it acknowledges and hands the segments its SACK
    /// blocks show lost to `resend`. False when smoltcp must not see it: a duplicate ACK of a
    /// later hole in a loss episode, already repaired here.
    pub fn on_received(&mut self, packet: &[u8], now: Instant, mut resend: impl FnMut(&[u8])) -> bool {
        if self.flows.is_empty() {
            return true;
        }
        let Some((src, dst, tcp)) = parse(packet) else {
            return true;
        };
        let Ok(tcp) = TcpPacket::new_checked(tcp) else {
            return true;
        };
        let flow = (dst, tcp.dst_port(), src, tcp.src_port());
        let Some(held) = self.flows.get_mut(&flow) else {
            return true;
        };
        if tcp.rst() {
            self.flows.remove(&flow);
            return true;
        }
        if !tcp.ack() {
            return true;
        }
        let ack = tcp.ack_number().0 as u32;
        held.last_ack = now;
        let duplicate =
            tcp.payload().is_empty() && !tcp.syn() && !tcp.fin() && held.last_ack_no == Some((ack, tcp.window_len()));
        held.last_ack_no = Some((ack, tcp.window_len()));
        let deliver = match held.episode {
            Some((_, recovery_point)) if !before(ack, recovery_point) => {
                held.episode = None;
                true
            }
            Some((first_hole, _)) => !duplicate || ack == first_hole,
            None => true,
        };
        let acked = held.segments.front().is_some_and(|s| !before(ack, s.end));
        while held.segments.front().is_some_and(|s| !before(ack, s.end)) {
            let Some(done) = held.segments.pop_front() else { break };
            held.bytes -= done.packet.len();
            if done.resent.is_none() {
                let sample = now.saturating_duration_since(done.sent);
                held.srtt = Some(held.srtt.map_or(sample, |srtt| (srtt * 7 + sample) / 8));
            }
        }
        if held.segments.is_empty() {
            self.flows.remove(&flow);
            return deliver;
        }
        if acked {
            held.backoff = held.probe_wait();
            held.probe_at = now + held.backoff;
        }
        let blocks = tcp.selective_ack_ranges().unwrap_or_default();
        let Some(highest) = blocks
            .iter()
            .flatten()
            .map(|&(_, right)| right)
            .reduce(|a, b| if before(a, b) { b } else { a })
        else {
            return deliver;
        };
        for segment in &mut held.segments {
            if !before(segment.seq, highest) {
                break;
            }
            segment.sacked |= blocks
                .iter()
                .flatten()
                .any(|&(left, right)| !before(segment.seq, left) && !before(right, segment.end));
        }
        let gap = held.srtt.map_or(MIN_RESEND_GAP, |srtt| (srtt * 2).max(MIN_RESEND_GAP));
        let sent_end = held.segments.back().map(|last| last.end);
        let mut repaired = false;
        for segment in &mut held.segments {
            let len = segment.end.wrapping_sub(segment.seq);
            // Sorted by sequence: once too little lies beyond, the rest has less.
            if !before(segment.end, highest) || highest.wrapping_sub(segment.end) < DUP_THRESH * len {
                break;
            }
            if segment.sacked || segment.resent.is_some_and(|at| now.saturating_duration_since(at) < gap) {
                continue;
            }
            resend(&segment.packet);
            segment.resent = Some(now);
            repaired = true;
        }
        if repaired && held.episode.is_none() {
            held.episode = sent_end.map(|end| (ack, end));
        }
        deliver
    }

    /// When [`Repair::on_timeout`] is due.
    pub fn poll_at(&self) -> Option<Instant> {
        self.flows.values().map(|held| held.probe_at).min()
    }

    /// Sends again the oldest unacknowledged segments of connections whose ACKs stopped.
    pub fn on_timeout(&mut self, now: Instant, mut resend: impl FnMut(&[u8])) {
        for held in self.flows.values_mut() {
            if held.probe_at > now {
                continue;
            }
            let unsacked = held.segments.iter_mut().filter(|s| !s.sacked);
            for segment in unsacked.take(PROBE_SEGMENTS) {
                resend(&segment.packet);
                segment.resent = Some(now);
            }
            held.backoff = (held.backoff * 2).min(MAX_PROBE);
            held.probe_at = now + held.backoff;
        }
    }

    /// Forgets connections that have had no ACK for a long time.
    pub fn forget_idle(&mut self, now: Instant) {
        if !self.flows.is_empty() {
            self.flows
                .retain(|_, held| now.saturating_duration_since(held.last_ack) < FORGET_AFTER);
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.flows.values().map(|h| h.segments.len()).sum()
    }
}

impl Held {
    fn probe_wait(&self) -> Duration {
        self.srtt
            .map_or(MAX_PROBE, |srtt| (srtt * 2).clamp(MIN_PROBE, MAX_PROBE))
    }
}

/// `a` comes before `b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Source, destination and TCP segment of an IP packet carrying TCP.
fn parse(packet: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            Some((IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), ip.payload()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            Some((IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), ip.payload()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpRepr, Ipv4Address, TcpControl, TcpRepr, TcpSeqNumber};

    const US: Ipv4Address = Ipv4Address::new(10, 9, 0, 2);
    const PEER: Ipv4Address = Ipv4Address::new(10, 9, 0, 1);

    fn packet(from_us: bool, seq: u32, ack: Option<u32>, payload: &[u8], sack: [Option<(u32, u32)>; 3]) -> Vec<u8> {
        let (src, dst) = if from_us { (US, PEER) } else { (PEER, US) };
        let (src_port, dst_port) = if from_us { (50000, 5201) } else { (5201, 50000) };
        let tcp = TcpRepr {
            src_port,
            dst_port,
            control: TcpControl::None,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: sack,
            timestamp: None,
            payload,
        };
        let ip = IpRepr::new(
            IpAddress::Ipv4(src),
            IpAddress::Ipv4(dst),
            IpProtocol::Tcp,
            tcp.buffer_len(),
            64,
        );
        let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
        ip.emit(&mut buf[..], &ChecksumCapabilities::default());
        let mut segment = TcpPacket::new_unchecked(&mut buf[ip.header_len()..]);
        tcp.emit(
            &mut segment,
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &ChecksumCapabilities::default(),
        );
        buf
    }

    fn seq_of(packet: &[u8]) -> u32 {
        let (_, _, tcp) = parse(packet).unwrap();
        TcpPacket::new_checked(tcp).unwrap().seq_number().0 as u32
    }

    #[test]
    fn holes_the_sack_blocks_show_are_resent_once_and_acked_data_is_dropped() {
        let now = Instant::now();
        let mut repair = Repair::default();
        let data = [7u8; 100];
        for i in 0..8u32 {
            repair.on_sent(packet(true, 1000 + i * 100, Some(1), &data, [None; 3]), now);
        }
        assert_eq!(repair.held(), 8);

        // Segments 1 and 2 (1100..1300) lost; 3..8 arrived.
        let ack = packet(false, 1, Some(1100), &[], [Some((1300, 1800)), None, None]);
        let mut resent = Vec::new();
        repair.on_received(&ack, now, |p| resent.push(seq_of(p)));
        assert_eq!(resent, [1100, 1200]);
        assert_eq!(repair.held(), 7, "the acknowledged segment is let go");

        // The same ACK again right away: nothing twice within the gap.
        resent.clear();
        repair.on_received(&ack, now, |p| resent.push(seq_of(p)));
        assert!(resent.is_empty());

        // Everything acknowledged: the connection is forgotten.
        repair.on_received(&packet(false, 1, Some(1800), &[], [None; 3]), now, |_| {
            panic!("nothing to resend")
        });
        assert_eq!(repair.held(), 0);
        assert!(repair.flows.is_empty());
    }

    #[test]
    fn too_little_beyond_a_hole_is_reordering_not_loss() {
        let now = Instant::now();
        let mut repair = Repair::default();
        for i in 0..4u32 {
            repair.on_sent(packet(true, 1000 + i * 100, Some(1), &[1; 100], [None; 3]), now);
        }
        let ack = packet(false, 1, Some(1000), &[], [Some((1100, 1300)), None, None]);

        repair.on_received(&ack, now, |_| panic!("two segments beyond are not enough"));
        assert_eq!(repair.held(), 4);
    }

    /// An ACK up to `no` with one SACK block: whether smoltcp sees it, and what was resent.
    fn ack(repair: &mut Repair, no: u32, sack: Option<(u32, u32)>, now: Instant) -> (bool, Vec<u32>) {
        let mut resent = Vec::new();
        let packet = packet(false, 1, Some(no), &[], [sack, None, None]);
        let seen = repair.on_received(&packet, now, |p| resent.push(seq_of(p)));
        (seen, resent)
    }

    #[test]
    fn duplicate_acks_of_later_holes_in_one_window_are_kept_from_smoltcp() {
        let now = Instant::now();
        let mut repair = Repair::default();
        for i in 0..20u32 {
            repair.on_sent(packet(true, 1000 + i * 100, Some(1), &[3; 100], [None; 3]), now);
        }

        // The first hole (1100): its duplicate ACKs reach smoltcp, which makes its one cut.
        assert_eq!(
            ack(&mut repair, 1100, None, now),
            (true, vec![]),
            "a first ACK is no duplicate"
        );
        assert_eq!(ack(&mut repair, 1100, Some((1200, 1300)), now), (true, vec![]));
        assert_eq!(
            ack(&mut repair, 1100, Some((1200, 1500)), now),
            (true, vec![1100]),
            "repaired once three segments lie beyond"
        );
        assert_eq!(
            ack(&mut repair, 1100, Some((1200, 1600)), now),
            (true, vec![]),
            "the first hole's duplicates go on"
        );

        // A second hole (1600) in the same window: the ACK that moves is smoltcp's, the
        // duplicates are not, and the repair here resends the hole.
        assert_eq!(ack(&mut repair, 1600, None, now), (true, vec![]), "an ACK that moves");
        assert_eq!(ack(&mut repair, 1600, Some((1700, 1800)), now), (false, vec![]));
        assert_eq!(ack(&mut repair, 1600, Some((1700, 2000)), now), (false, vec![1600]));

        // Everything sent before the episode acknowledged: a later hole is a new episode, whose
        // duplicates smoltcp sees again.
        for i in 20..30u32 {
            repair.on_sent(packet(true, 1000 + i * 100, Some(1), &[3; 100], [None; 3]), now);
        }
        assert_eq!(ack(&mut repair, 3100, None, now), (true, vec![]));
        assert_eq!(ack(&mut repair, 3100, Some((3200, 3300)), now), (true, vec![]));
        assert_eq!(
            ack(&mut repair, 3100, Some((3200, 3600)), now),
            (true, vec![3100]),
            "a new episode's first hole"
        );
    }
}
