//! ICMP echo packets the daemon injects into the tunnel to prove it carries traffic end to end,
//! without depending on the host's routes or on a raw socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ICMPV4: u8 = 1;
const ICMPV6: u8 = 58;

/// An echo request from `src` to `dst` (same family), identified by `id`.
pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(v4_echo(s, d, id, seq)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(v6_echo(s, d, id, seq)),
        _ => None,
    }
}

/// Whether `packet` is the echo reply to a request with `id`.
pub fn is_echo_reply(packet: &[u8], id: u16) -> bool {
    let (proto, reply_type, icmp) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            (packet[9], 0, packet.get(ihl..))
        }
        Some(6) if packet.len() >= 40 => (packet[6], 129, packet.get(40..)),
        _ => return false,
    };
    let Some(icmp) = icmp.filter(|i| i.len() >= 8) else {
        return false;
    };
    matches!(proto, ICMPV4 | ICMPV6) && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes()
}

fn v4_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let icmp = icmp_echo(8, id, seq);
    let total = 20 + icmp.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, ICMPV4, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let header_sum = checksum(&[&p]);
    p[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let mut icmp = icmp;
    let sum = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&icmp);
    p
}

fn v6_echo(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = icmp_echo(128, id, seq);
    let len = icmp.len() as u32;
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    let sum = checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[ICMPV6, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    p
}

fn icmp_echo(kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"corridor-probe");
    icmp
}

/// The Internet checksum over the concatenation of `parts` (each of even length but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
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
}
