//! Thinning the pure ACKs of one batch before it reaches the TUN (or the rootless mode's
//! stack). While the machine uploads, one receive from the gateway often holds several
//! cumulative ACKs of the same flow, each made stale by the next; delivering only the last
//! spares a TCP receive (and the send it triggers) per ACK. The idea of Linux's sch_cake
//! ack-filter, with stricter rules: only an ACK that carries nothing else (no data, no flag but
//! ACK, no option but timestamps) goes, and only when a later one of the same flow, from the
//! same sequence number, acknowledges more. Duplicate ACKs, SACKs, window probes and anything
//! unparsed pass untouched, in their order. Also which data segments announce more of their
//! burst, so that the batch waits for it (`hold`).

use super::fit::tcp_segment;

const ACK: u8 = 0x10;
const TCP_TIMESTAMP: u8 = 8;

/// The addresses and ports of a flow, one direction, as they stand in the packet, and whether
/// it is IPv6.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Flow([u8; 37]);

/// A TCP segment that only acknowledges.
#[derive(Clone, Copy)]
struct PureAck {
    flow: Flow,
    seq: u32,
    ack: u32,
}

impl PureAck {
    fn parse(packet: &[u8]) -> Option<PureAck> {
        let (start, end, v6) = tcp_segment(packet)?;
        let tcp = packet.get(start..end)?;
        if tcp.len() < 20 || usize::from(tcp[12] >> 4) * 4 != tcp.len() || tcp[12] & 0x0f != 0 || tcp[13] != ACK {
            return None;
        }
        if !only_timestamps(&tcp[20..]) {
            return None;
        }
        let addresses = if v6 { &packet[8..40] } else { &packet[12..20] };
        let mut flow = [0; 37];
        flow[..addresses.len()].copy_from_slice(addresses);
        flow[32..36].copy_from_slice(&tcp[..4]);
        flow[36] = u8::from(v6);
        let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
        Some(PureAck {
            flow: Flow(flow),
            seq: word(4),
            ack: word(8),
        })
    }
}

/// Whether `packet` is a TCP segment with data and no flag but ACK: its sender did not push,
/// so more of the same burst follows.
pub fn more_follows(packet: &[u8]) -> bool {
    let Some((start, end, _)) = tcp_segment(packet) else {
        return false;
    };
    let Some(tcp) = packet.get(start..end) else {
        return false;
    };
    tcp.len() >= 20 && tcp[13] == ACK && usize::from(tcp[12] >> 4) * 4 < tcp.len()
}

/// Whether TCP `options` hold nothing but padding and timestamps.
fn only_timestamps(options: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return true,
            1 => at += 1,
            TCP_TIMESTAMP if options.get(at + 1) == Some(&10) => at += 10,
            _ => return false,
        }
    }
    at == options.len()
}

/// Buffers reused from batch to batch.
#[derive(Default)]
pub struct AckFilter {
    /// The last pure ACK of each flow seen so far, walking the batch from its end.
    latest: Vec<PureAck>,
    keep: Vec<bool>,
}

impl AckFilter {
    /// Moves the packets to write (each at `offset` in its buffer) to the front of `packets`,
    /// in their order, and returns how many there are.
    pub fn thin(&mut self, packets: &mut [Vec<u8>], offset: usize) -> usize {
        self.latest.clear();
        self.keep.clear();
        self.keep.resize(packets.len(), true);
        for (i, packet) in packets.iter().enumerate().rev() {
            let Some(ack) = packet.get(offset..).and_then(PureAck::parse) else {
                continue;
            };
            match self.latest.iter().find(|later| later.flow == ack.flow) {
                Some(later) => self.keep[i] = !(later.seq == ack.seq && later.ack.wrapping_sub(ack.ack) as i32 > 0),
                None => self.latest.push(ack),
            }
        }
        let mut kept = 0;
        for i in 0..packets.len() {
            if self.keep[i] {
                packets.swap(kept, i);
                kept += 1;
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = 0x02;
    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    const SACK: [u8; 12] = [1, 1, 5, 10, 0, 0, 0, 9, 0, 0, 0, 19];

    struct Segment {
        v6: bool,
        port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &'static [u8],
        data: &'static [u8],
    }

    fn ack(ack: u32) -> Segment {
        Segment {
            v6: true,
            port: 5201,
            seq: 1000,
            ack,
            flags: ACK,
            options: &TIMESTAMPS,
            data: &[],
        }
    }

    fn packet(s: &Segment) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&s.port.to_be_bytes());
        tcp.extend_from_slice(&40000u16.to_be_bytes());
        tcp.extend_from_slice(&s.seq.to_be_bytes());
        tcp.extend_from_slice(&s.ack.to_be_bytes());
        tcp.push(((20 + s.options.len()) / 4) as u8 * 16);
        tcp.push(s.flags);
        tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(s.options);
        tcp.extend_from_slice(s.data);
        let mut p = Vec::new();
        if s.v6 {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[6, 64]);
            p.extend_from_slice(&[0xfd; 16]);
            p.extend_from_slice(&[0xfe; 16]);
        } else {
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&(20 + tcp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        }
        p.extend_from_slice(&tcp);
        p
    }

    /// Which packets of the batch are kept, by their place in it.
    fn kept(mut packets: Vec<Vec<u8>>) -> Vec<usize> {
        for (i, p) in packets.iter_mut().enumerate() {
            p.splice(..0, [i as u8, 0]);
        }
        let kept = AckFilter::default().thin(&mut packets, 2);
        packets[..kept].iter().map(|p| usize::from(p[0])).collect()
    }

    fn thinned(segments: &[Segment]) -> Vec<usize> {
        kept(segments.iter().map(packet).collect())
    }

    #[test]
    fn keeps_only_the_last_of_a_run_of_cumulative_acks() {
        assert_eq!(thinned(&[ack(10), ack(20), ack(30)]), [2]);
        let v4 = |n| Segment { v6: false, ..ack(n) };
        assert_eq!(thinned(&[v4(10), v4(20)]), [1]);
    }

    #[test]
    fn thins_each_flow_apart_and_keeps_the_order() {
        let other = |n| Segment { port: 22, ..ack(n) };
        let v4 = |n| Segment { v6: false, ..ack(n) };
        assert_eq!(
            thinned(&[ack(10), other(11), v4(12), ack(20), other(21), v4(22)]),
            [3, 4, 5]
        );
    }

    #[test]
    fn an_acknowledgement_across_the_wrap_supersedes() {
        assert_eq!(thinned(&[ack(u32::MAX - 5), ack(7)]), [1]);
        assert_eq!(thinned(&[ack(7), ack(u32::MAX - 5)]), [0, 1]);
    }

    #[test]
    fn keeps_duplicate_acks_and_those_with_more_than_timestamps() {
        assert_eq!(thinned(&[ack(10), ack(10), ack(10)]), [0, 1, 2]);
        assert_eq!(
            thinned(&[
                Segment {
                    options: &SACK,
                    ..ack(10)
                },
                ack(20)
            ]),
            [0, 1]
        );
        assert_eq!(
            thinned(&[
                Segment {
                    options: &[],
                    ..ack(10)
                },
                ack(20)
            ]),
            [1]
        );
    }

    #[test]
    fn keeps_what_carries_data_or_other_flags() {
        for flags in [ACK | PSH, ACK | FIN, ACK | SYN, ACK | 0x40, ACK | 0x80] {
            assert_eq!(
                thinned(&[Segment { flags, ..ack(10) }, ack(20)]),
                [0, 1],
                "flags {flags:#x}"
            );
        }
        assert_eq!(thinned(&[Segment { data: b"x", ..ack(10) }, ack(20)]), [0, 1]);
        // A later ACK from a further sequence number (data went between) does not stand for it.
        assert_eq!(thinned(&[ack(10), Segment { seq: 1001, ..ack(20) }]), [0, 1]);
    }

    #[test]
    fn passes_what_it_cannot_parse() {
        let mut truncated = packet(&ack(10));
        truncated.truncate(50);
        let batch = vec![packet(&ack(10)), vec![0x60, 0], truncated, Vec::new(), packet(&ack(20))];
        assert_eq!(kept(batch), [1, 2, 3, 4]);
        assert_eq!(AckFilter::default().thin(&mut [], 2), 0);
    }

    #[test]
    fn data_without_push_announces_more_and_nothing_else_does() {
        let data = |flags, v6| {
            packet(&Segment {
                flags,
                v6,
                data: b"burst",
                ..ack(10)
            })
        };
        assert!(more_follows(&data(ACK, true)));
        assert!(more_follows(&data(ACK, false)));
        for flags in [ACK | PSH, ACK | FIN, ACK | SYN, ACK | 0x40, ACK | 0x80] {
            assert!(!more_follows(&data(flags, true)), "flags {flags:#x}");
        }
        assert!(!more_follows(&packet(&ack(10))), "a pure ACK");
        let mut truncated = data(ACK, true);
        truncated.truncate(50);
        assert!(!more_follows(&truncated));
        let mut udp = data(ACK, false);
        udp[9] = 17;
        assert!(!more_follows(&udp));
    }
}
