//! ICMP echo packets the daemon injects into the tunnel to prove it carries traffic end to end,
//! without depending on the host's routes or on a raw socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ICMPV4: u8 = 1;
const ICMPV6: u8 = 58;
const ICMP_HEADER: usize = 8;
/// The echo data: a recognisable pattern in captures, repeated to pad sized probes.
const PATTERN: &[u8] = b"corridor-probe";

/// An echo request from `src` to `dst` (same family), identified by `id`.
pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Option<Vec<u8>> {
    let ip_header = if src.is_ipv4() { 20 } else { 40 };
    echo_request_sized(src, dst, id, seq, ip_header + ICMP_HEADER + PATTERN.len())
}

/// An echo request whose whole IP packet is `total_len` bytes, to find which sizes a path
/// carries. `None` below the IP and ICMP headers, above 65535, or for mixed families.
pub fn echo_request_sized(src: IpAddr, dst: IpAddr, id: u16, seq: u16, total_len: usize) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4_echo(s, d, id, seq, total_len),
        (IpAddr::V6(s), IpAddr::V6(d)) => v6_echo(s, d, id, seq, total_len),
        _ => None,
    }
}

/// The sequence number of `packet` if it is an echo reply to a request with `id`, so a caller
/// that sent several probes can tell which one was answered.
pub fn echo_reply_seq(packet: &[u8], id: u16) -> Option<u16> {
    let (icmp, reply_type) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 && packet[9] == ICMPV4 => {
            let ihl = Some(usize::from(packet[0] & 0x0f) * 4).filter(|&ihl| ihl >= 20)?;
            (packet.get(ihl..)?, 0)
        }
        Some(6) if packet.len() >= 40 && packet[6] == ICMPV6 => (&packet[40..], 129),
        _ => return None,
    };
    if icmp.len() < ICMP_HEADER || icmp[0] != reply_type || icmp[1] != 0 || icmp[4..6] != id.to_be_bytes() {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// Whether `packet` is the echo reply to a request with `id`.
pub fn is_echo_reply(packet: &[u8], id: u16) -> bool {
    echo_reply_seq(packet, id).is_some()
}

fn v4_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, total_len: usize) -> Option<Vec<u8>> {
    let total = u16::try_from(total_len)
        .ok()
        .filter(|&t| usize::from(t) >= 20 + ICMP_HEADER)?;
    let mut p = vec![0; total_len];
    p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, ICMPV4, 0, 0]);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let header_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let icmp = &mut p[20..];
    fill_echo(icmp, 8, id, seq);
    let sum = checksum(&[&*icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(p)
}

fn v6_echo(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, total_len: usize) -> Option<Vec<u8>> {
    if !(40 + ICMP_HEADER..=usize::from(u16::MAX)).contains(&total_len) {
        return None;
    }
    let len = (total_len - 40) as u16;
    let mut p = vec![0; total_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p[6] = ICMPV6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    let (header, icmp) = p.split_at_mut(40);
    fill_echo(icmp, 128, id, seq);
    let sum = checksum(&[&v6_pseudo_header(header, len.into(), ICMPV6), &*icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(p)
}

/// Writes an echo message with a zero checksum: the header, then the pattern over the data.
fn fill_echo(icmp: &mut [u8], kind: u8, id: u16, seq: u16) {
    icmp[..4].copy_from_slice(&[kind, 0, 0, 0]);
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (byte, pattern) in icmp[ICMP_HEADER..].iter_mut().zip(PATTERN.iter().cycle()) {
        *byte = *pattern;
    }
}

/// The pseudo-header an IPv6 upper-layer checksum covers, from the addresses of the IPv6
/// header `ip` (at least 40 bytes).
pub(crate) fn v6_pseudo_header(ip: &[u8], upper_len: u32, next_header: u8) -> [u8; 40] {
    let mut pseudo = [0; 40];
    pseudo[..32].copy_from_slice(&ip[8..40]);
    pseudo[32..36].copy_from_slice(&upper_len.to_be_bytes());
    pseudo[39] = next_header;
    pseudo
}

/// The Internet checksum over the concatenation of `parts` (each of even length but the last).
pub(crate) fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for chunk in part.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_request_has_valid_checksums_and_its_reply_matches() {
        let req = echo_request("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap(), 7, 1).unwrap();

        assert_eq!(checksum(&[&req[..20]]), 0, "header checksum verifies");
        assert_eq!(checksum(&[&req[20..]]), 0, "ICMP checksum verifies");
        let mut reply = req.clone();
        reply[20] = 0;
        assert!(is_echo_reply(&reply, 7));
        assert!(!is_echo_reply(&reply, 8));
        assert!(!is_echo_reply(&req, 7), "a request is no reply");
    }

    #[test]
    fn v6_request_checksum_covers_the_pseudo_header() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        let req = echo_request(src.into(), dst.into(), 9, 1).unwrap();

        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&((req.len() - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
        assert_eq!(checksum(&[&pseudo, &req[40..]]), 0);
        let mut reply = req.clone();
        reply[40] = 129;
        assert!(is_echo_reply(&reply, 9));
        assert!(!is_echo_reply(&reply[..30], 9), "truncated packets never match");
    }

    #[test]
    fn sized_v4_request_is_exactly_that_long_with_valid_checksums() {
        let (src, dst) = ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap());
        for len in [28, 29, 61, 576, 1280, 1420, 1500, 65_535] {
            let req = echo_request_sized(src, dst, 7, len as u16, len).unwrap();

            assert_eq!(req.len(), len);
            assert_eq!(usize::from(u16::from_be_bytes([req[2], req[3]])), len);
            assert_eq!(checksum(&[&req[..20]]), 0, "header checksum verifies at {len}");
            assert_eq!(checksum(&[&req[20..]]), 0, "ICMP checksum verifies at {len}");
            let mut reply = req.clone();
            reply[20] = 0;
            assert_eq!(echo_reply_seq(&reply, 7), Some(len as u16));
        }
        assert_eq!(echo_request_sized(src, dst, 7, 1, 27), None, "shorter than the headers");
        assert_eq!(echo_request_sized(src, dst, 7, 1, 65_536), None);
    }

    #[test]
    fn sized_v6_request_is_exactly_that_long_with_valid_checksums() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        for len in [48, 49, 1280, 1281, 1500, 65_535] {
            let req = echo_request_sized(src.into(), dst.into(), 9, 3, len).unwrap();

            assert_eq!(req.len(), len);
            assert_eq!(usize::from(u16::from_be_bytes([req[4], req[5]])), len - 40);
            let pseudo = v6_pseudo_header(&req, (len - 40) as u32, ICMPV6);
            assert_eq!(checksum(&[&pseudo, &req[40..]]), 0, "ICMPv6 checksum verifies at {len}");
        }
        assert_eq!(echo_request_sized(src.into(), dst.into(), 9, 1, 47), None);
        assert_eq!(echo_request_sized(src.into(), dst.into(), 9, 1, 65_536), None);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(echo_request_sized(src.into(), v4, 9, 1, 100), None, "mixed families");
    }

    #[test]
    fn unsized_request_is_unchanged_by_the_shared_builder() {
        let req = echo_request("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap(), 7, 1).unwrap();

        assert_eq!(req.len(), 20 + 8 + 14);
        assert_eq!(&req[28..], b"corridor-probe");
    }

    #[test]
    fn reply_seq_needs_a_reply_of_the_right_family_and_id() {
        let src: IpAddr = "10.0.0.2".parse().unwrap();
        let mut reply = echo_request_sized(src, "10.0.0.1".parse().unwrap(), 7, 42, 100).unwrap();
        reply[20] = 0;
        assert_eq!(echo_reply_seq(&reply, 7), Some(42));
        assert_eq!(echo_reply_seq(&reply, 8), None);
        assert_eq!(echo_reply_seq(&reply[..27], 7), None, "truncated");
        let mut wrong_proto = reply.clone();
        wrong_proto[9] = ICMPV6;
        assert_eq!(echo_reply_seq(&wrong_proto, 7), None);
        let mut short_ihl = reply.clone();
        short_ihl[0] = 0x44;
        assert_eq!(echo_reply_seq(&short_ihl, 7), None);
        for len in 0..reply.len() {
            let _ = echo_reply_seq(&reply[..len], 7);
        }
    }
}
