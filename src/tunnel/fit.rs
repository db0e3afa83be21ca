//! Fitting inner packets to a path narrower than the tunnel's MTU: clamping the MSS of TCP
//! handshakes, fragmenting what may be fragmented, and the ICMP errors that tell a local sender
//! to send smaller.
//!
//! Pure functions over packet bytes, sans-IO like the session that calls them: nothing here
//! allocates, fragments are built in a stack buffer, and any input, however malformed, gives
//! `false`, `None` or an error, never a panic.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::probe::{checksum, v6_pseudo_header};

const ICMPV4: u8 = 1;
const TCP: u8 = 6;
const ICMPV6: u8 = 58;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;

const TCP_SYN: u8 = 0x02;
const TCP_MSS: u8 = 2;

/// The IPv4 flags and fragment offset word.
const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET: u16 = 0x1fff;
/// An IPv4 option with this bit is repeated in every fragment (RFC 791).
const COPIED: u8 = 0x80;

const FRAGMENT_HEADER: usize = 8;
/// IPv6 fragment header: the offset field, its M flag.
const V6_OFFSET: u16 = 0xfff8;
const V6_MORE: u16 = 0x0001;

/// The IPv6 minimum MTU, which bounds an ICMPv6 error (RFC 4443 2.4 c).
const V6_MIN_MTU: usize = 1280;

/// Extension headers walked before giving up: real packets carry one or two.
const MAX_EXTENSIONS: usize = 4;

/// The largest fragment [`fragment`] builds: more than any path MTU it is meant for.
pub const MAX_FRAGMENT: usize = 2048;

/// The MSS limits (IPv4, IPv6) for an inner MTU: the IP and TCP headers without options.
pub fn mss_for(inner_mtu: u16) -> (u16, u16) {
    (inner_mtu.saturating_sub(40), inner_mtu.saturating_sub(60))
}

/// Whether `packet` is a TCP segment with SYN set (SYN or SYN-ACK) that [`clamp_mss`] may
/// change. A few byte reads for anything else, so the caller copies only handshakes out of the
/// immutable read buffer.
pub fn is_tcp_syn(packet: &[u8]) -> bool {
    tcp_segment(packet).is_some_and(|(start, end, _)| packet[start..end].get(13).is_some_and(|f| f & TCP_SYN != 0))
}

/// Lowers the MSS option of a TCP SYN or SYN-ACK to the limit of its IP family, fixing the TCP
/// checksum incrementally (RFC 1624). Returns whether the packet changed.
///
/// A SYN without an MSS option is left alone: the default it implies (536, IPv6 1220) fits any
/// tunnel. IPv4 fragments after the first and IPv6 fragments hold no TCP header to change.
pub fn clamp_mss(packet: &mut [u8], max_mss_v4: u16, max_mss_v6: u16) -> bool {
    let Some((start, end, v6)) = tcp_segment(packet) else {
        return false;
    };
    let limit = if v6 { max_mss_v6 } else { max_mss_v4 };
    let tcp = &mut packet[start..end];
    if tcp.len() < 20 || tcp[13] & TCP_SYN == 0 {
        return false;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || header_len > tcp.len() {
        return false;
    }
    let Some(at) = mss_value(&tcp[20..header_len]).map(|at| 20 + at) else {
        return false;
    };
    let mss = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    if mss <= limit {
        return false;
    }
    tcp[at..at + 2].copy_from_slice(&limit.to_be_bytes());
    // The checksum adds 16-bit words from the start of the segment: a value at an odd offset
    // straddles two of them and counts byte-swapped.
    let (old, new) = if at % 2 == 0 {
        (mss, limit)
    } else {
        (mss.swap_bytes(), limit.swap_bytes())
    };
    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
    tcp[16..18].copy_from_slice(&adjust_checksum(sum, old, new).to_be_bytes());
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentError {
    /// IPv4 with Don't Fragment set: the sender is owed [`frag_needed_v4`] instead.
    DontFragment,
    /// Already a fragment (IPv4 MF or an offset, an IPv6 fragment header).
    AlreadyFragmented,
    /// IPv6 with a routing header, which [`fragment`] does not split around.
    Unsupported,
    /// Not a consistent IPv4 or IPv6 packet.
    Malformed,
    /// `max` is above [`MAX_FRAGMENT`].
    MaxTooLarge,
    /// `max` leaves no room for 8 bytes of data after the headers every fragment repeats.
    MaxTooSmall,
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FragmentError::DontFragment => "the packet has Don't Fragment set",
            FragmentError::AlreadyFragmented => "the packet is already a fragment",
            FragmentError::Unsupported => "IPv6 routing headers are not fragmented around",
            FragmentError::Malformed => "not a consistent IPv4 or IPv6 packet",
            FragmentError::MaxTooLarge => "fragment size above MAX_FRAGMENT",
            FragmentError::MaxTooSmall => "fragment size too small for 8 bytes of data",
        })
    }
}

impl std::error::Error for FragmentError {}

/// Splits `packet` into fragments of at most `max` bytes each, handed to `emit` in order;
/// returns how many. A packet that already fits is emitted unchanged.
///
/// IPv4 fragments keep the sender's identification (it chose one unique for the datagram,
/// RFC 6864), and later fragments carry only the options marked to be copied. IPv6 fragments
/// get a fragment header with identification `id` after the IPv6 header and any hop-by-hop
/// header. Nothing is emitted unless the whole packet can be.
pub fn fragment(packet: &[u8], max: usize, id: u32, mut emit: impl FnMut(&[u8])) -> Result<usize, FragmentError> {
    if packet.len() <= max {
        emit(packet);
        return Ok(1);
    }
    match packet.first().map(|b| b >> 4) {
        Some(4) => fragment_v4(packet, max, &mut emit),
        Some(6) => fragment_v6(packet, max, id, &mut emit),
        _ => Err(FragmentError::Malformed),
    }
}

/// Writes into `out` an ICMP "fragmentation needed" (type 3 code 4, RFC 1191) for `original`,
/// as if from the router at its destination, advertising `mtu`; returns its length. `None`
/// when no error is due (the original is an ICMP error, a later fragment, or from no single
/// host), the original is malformed, or `out` is too short.
pub fn frag_needed_v4(original: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let (ihl, total) = v4_lengths(original)?;
    let source = Ipv4Addr::new(original[12], original[13], original[14], original[15]);
    let destination = Ipv4Addr::new(original[16], original[17], original[18], original[19]);
    if u16::from_be_bytes([original[6], original[7]]) & OFFSET != 0
        || source.is_unspecified()
        || source.is_multicast()
        || source.is_broadcast()
        || destination.is_multicast()
        || destination.is_broadcast()
    {
        return None;
    }
    // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    if original[9] == ICMPV4 && matches!(original.get(ihl..total)?.first()?, 3 | 4 | 5 | 11 | 12) {
        return None;
    }
    let quoted = &original[..total.min(ihl + 8)];
    let len = 20 + 8 + quoted.len();
    let out = out.get_mut(..len)?;
    out[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, ICMPV4, 0, 0]);
    out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    out[12..16].copy_from_slice(&destination.octets());
    out[16..20].copy_from_slice(&source.octets());
    let header_sum = checksum(&[&out[..20]]);
    out[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let icmp = &mut out[20..];
    icmp[..6].copy_from_slice(&[3, 4, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(quoted);
    let sum = checksum(&[&*icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// Writes into `out` an ICMPv6 "packet too big" (type 2, RFC 4443) for `original`, as if from
/// its destination, advertising `mtu` and quoting as much of the original as fits in 1280
/// bytes (or in `out`, down to its IPv6 header); returns its length. `None` when no error is
/// due (the original is an ICMPv6 error, or from no single host) or the original is malformed.
pub fn packet_too_big_v6(original: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let end = v6_end(original)?;
    let source = Ipv6Addr::from(<[u8; 16]>::try_from(&original[8..24]).ok()?);
    if source.is_unspecified() || source.is_multicast() || is_icmpv6_error(original, end)? {
        return None;
    }
    let quoted = end.min(V6_MIN_MTU - 48).min(out.len().checked_sub(48)?);
    if quoted < 40 {
        return None;
    }
    let len = 48 + quoted;
    let out = &mut out[..len];
    out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, ICMPV6, 64]);
    out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    out[8..24].copy_from_slice(&original[24..40]);
    out[24..40].copy_from_slice(&original[8..24]);
    let (header, icmp) = out.split_at_mut(40);
    icmp[..4].copy_from_slice(&[2, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quoted]);
    let sum = checksum(&[&v6_pseudo_header(header, (len - 40) as u32, ICMPV6), &*icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

fn fragment_v4(packet: &[u8], max: usize, emit: &mut impl FnMut(&[u8])) -> Result<usize, FragmentError> {
    let (ihl, total) = v4_lengths(packet).ok_or(FragmentError::Malformed)?;
    let packet = &packet[..total];
    if total <= max {
        emit(packet);
        return Ok(1);
    }
    let flags = u16::from_be_bytes([packet[6], packet[7]]);
    if flags & DF != 0 {
        return Err(FragmentError::DontFragment);
    }
    if flags & (MF | OFFSET) != 0 {
        return Err(FragmentError::AlreadyFragmented);
    }
    if max > MAX_FRAGMENT {
        return Err(FragmentError::MaxTooLarge);
    }
    // Later fragments' headers are never longer than the first's, so they have as much room.
    let room = max.saturating_sub(ihl) & !7;
    if room == 0 {
        return Err(FragmentError::MaxTooSmall);
    }
    let (first, data) = packet.split_at(ihl);
    let mut later = [0; 60];
    let later_len = later_header(first, &mut later)?;
    let mut buf = [0; MAX_FRAGMENT];
    let (mut offset, mut count) = (0, 0);
    while offset < data.len() {
        let header = if offset == 0 { first } else { &later[..later_len] };
        let take = ((max - header.len()) & !7).min(data.len() - offset);
        let more = if offset + take < data.len() { MF } else { 0 };
        let len = header.len() + take;
        let frame = &mut buf[..len];
        frame[..header.len()].copy_from_slice(header);
        frame[header.len()..].copy_from_slice(&data[offset..offset + take]);
        frame[0] = 0x40 | (header.len() / 4) as u8;
        frame[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        frame[6..8].copy_from_slice(&(more | (offset / 8) as u16).to_be_bytes());
        frame[10..12].fill(0);
        let sum = checksum(&[&frame[..header.len()]]);
        frame[10..12].copy_from_slice(&sum.to_be_bytes());
        emit(frame);
        offset += take;
        count += 1;
    }
    Ok(count)
}

/// The header of IPv4 fragments after the first: the fixed header and the options with the
/// copied bit, padded with end-of-options to 32 bits. Returns its length.
fn later_header(first: &[u8], out: &mut [u8; 60]) -> Result<usize, FragmentError> {
    out[..20].copy_from_slice(&first[..20]);
    let options = &first[20..];
    let (mut len, mut at) = (20, 0);
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => break,
            1 => at += 1,
            _ => {
                let size = usize::from(*options.get(at + 1).ok_or(FragmentError::Malformed)?);
                let option = options
                    .get(at..at + size)
                    .filter(|_| size >= 2)
                    .ok_or(FragmentError::Malformed)?;
                if kind & COPIED != 0 {
                    out[len..len + size].copy_from_slice(option);
                    len += size;
                }
                at += size;
            }
        }
    }
    Ok((len + 3) & !3)
}

fn fragment_v6(packet: &[u8], max: usize, id: u32, emit: &mut impl FnMut(&[u8])) -> Result<usize, FragmentError> {
    let end = v6_end(packet).ok_or(FragmentError::Malformed)?;
    let packet = &packet[..end];
    if end <= max {
        emit(packet);
        return Ok(1);
    }
    // The unfragmentable part: the IPv6 header and a hop-by-hop header, and which "next
    // header" field in it is to point at the fragment header.
    let (unfragmentable, next_field) = if packet[6] == HOP_BY_HOP {
        let len = (usize::from(*packet.get(41).ok_or(FragmentError::Malformed)?) + 1) * 8;
        (40 + len, 40)
    } else {
        (40, 6)
    };
    if unfragmentable >= end {
        return Err(FragmentError::Malformed);
    }
    let next = packet[next_field];
    match next {
        FRAGMENT => return Err(FragmentError::AlreadyFragmented),
        ROUTING => return Err(FragmentError::Unsupported),
        // Destination options before a routing header would belong to the unfragmentable part.
        DEST_OPTS if matches!(packet[unfragmentable], ROUTING | FRAGMENT) => return Err(FragmentError::Unsupported),
        _ => {}
    }
    if max > MAX_FRAGMENT {
        return Err(FragmentError::MaxTooLarge);
    }
    let header = unfragmentable + FRAGMENT_HEADER;
    let room = max.saturating_sub(header) & !7;
    if room == 0 {
        return Err(FragmentError::MaxTooSmall);
    }
    let data = &packet[unfragmentable..];
    let mut buf = [0; MAX_FRAGMENT];
    let (mut offset, mut count) = (0, 0);
    while offset < data.len() {
        let take = room.min(data.len() - offset);
        let more = if offset + take < data.len() { V6_MORE } else { 0 };
        let len = header + take;
        let frame = &mut buf[..len];
        frame[..unfragmentable].copy_from_slice(&packet[..unfragmentable]);
        frame[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        frame[next_field] = FRAGMENT;
        let fragment_header = &mut frame[unfragmentable..header];
        fragment_header[..2].copy_from_slice(&[next, 0]);
        fragment_header[2..4].copy_from_slice(&((offset as u16 & V6_OFFSET) | more).to_be_bytes());
        fragment_header[4..].copy_from_slice(&id.to_be_bytes());
        frame[header..].copy_from_slice(&data[offset..offset + take]);
        emit(frame);
        offset += take;
        count += 1;
    }
    Ok(count)
}

/// Where the TCP header starts and the IP packet ends, and whether it is IPv6, for a TCP
/// segment whose header is there to read: not an IPv4 fragment after the first, not behind an
/// IPv6 fragment header.
pub(super) fn tcp_segment(packet: &[u8]) -> Option<(usize, usize, bool)> {
    match packet.first()? >> 4 {
        4 => {
            let (ihl, total) = v4_lengths(packet)?;
            let offset = u16::from_be_bytes([packet[6], packet[7]]) & OFFSET;
            (packet[9] == TCP && offset == 0).then_some((ihl, total, false))
        }
        6 => {
            let end = v6_end(packet)?;
            let (next, start) = v6_upper_layer(packet, end)?;
            (next == TCP).then_some((start, end, true))
        }
        _ => None,
    }
}

/// The IPv4 header length and total length, if consistent with each other and `packet`.
fn v4_lengths(packet: &[u8]) -> Option<(usize, usize)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    (ihl >= 20 && ihl <= total && total <= packet.len()).then_some((ihl, total))
}

/// Where the IPv6 packet ends by its payload length. A zero length (a jumbogram, or nothing
/// at all) is nothing to fit.
fn v6_end(packet: &[u8]) -> Option<usize> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    (payload != 0 && 40 + payload <= packet.len()).then_some(40 + payload)
}

/// The protocol after the hop-by-hop, routing and destination options headers, and where it
/// starts. A fragment header ends the walk like an upper layer.
fn v6_upper_layer(packet: &[u8], end: usize) -> Option<(u8, usize)> {
    let (mut next, mut at) = (packet[6], 40);
    for _ in 0..=MAX_EXTENSIONS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS) {
            return Some((next, at));
        }
        let header = packet[..end].get(at..at + 2)?;
        next = header[0];
        at += (usize::from(header[1]) + 1) * 8;
        if at > end {
            return None;
        }
    }
    None
}

/// Whether an IPv6 packet carries an ICMPv6 error (types below 128); `None` if malformed. A
/// fragment after the first cannot tell, and cannot be one: errors fit in 1280 bytes.
fn is_icmpv6_error(packet: &[u8], end: usize) -> Option<bool> {
    let packet = &packet[..end];
    let (mut next, mut at) = v6_upper_layer(packet, end)?;
    if next == FRAGMENT {
        let header = packet.get(at..at + FRAGMENT_HEADER)?;
        if u16::from_be_bytes([header[2], header[3]]) & V6_OFFSET != 0 {
            return Some(false);
        }
        (next, at) = (header[0], at + FRAGMENT_HEADER);
    }
    if next != ICMPV6 {
        return Some(false);
    }
    packet.get(at).map(|&kind| kind < 128)
}

/// Where the MSS option's value starts in TCP `options`, if there is a well-formed one.
fn mss_value(options: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return None,
            1 => at += 1,
            _ => {
                let len = usize::from(*options.get(at + 1)?);
                if kind == TCP_MSS {
                    return (len == 4 && at + 4 <= options.len()).then_some(at + 2);
                }
                if len < 2 {
                    return None;
                }
                at += len;
            }
        }
    }
    None
}

/// A checksum after one 16-bit word it covers changed from `old` to `new`: RFC 1624, eqn. 3.
fn adjust_checksum(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: [u8; 4] = [10, 0, 0, 2];
    const DST4: [u8; 4] = [10, 0, 0, 1];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    /// An IPv4 packet with `options` (a multiple of 4 bytes) and a valid header checksum.
    fn v4(proto: u8, flags: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let ihl = 20 + options.len();
        let total = (ihl + payload.len()) as u16;
        let mut p = vec![0x40 | (ihl / 4) as u8, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&SRC4);
        p.extend_from_slice(&DST4);
        p.extend_from_slice(options);
        let sum = checksum(&[&p]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// An IPv6 packet whose payload (`extensions` then `payload`) starts with `next`.
    fn v6(next: u8, extensions: &[u8], payload: &[u8]) -> Vec<u8> {
        let len = (extensions.len() + payload.len()) as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&SRC6);
        p.extend_from_slice(&DST6);
        p.extend_from_slice(extensions);
        p.extend_from_slice(payload);
        p
    }

    /// A TCP header with `flags` and `options` (a multiple of 4 bytes), zero checksum.
    fn tcp(flags: u8, options: &[u8], data: &[u8]) -> Vec<u8> {
        let mut t = vec![0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0];
        t.push((((20 + options.len()) / 4) as u8) << 4);
        t.extend_from_slice(&[flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(options);
        t.extend_from_slice(data);
        t
    }

    fn tcp_v4(flags: u8, options: &[u8]) -> Vec<u8> {
        let mut p = v4(TCP, DF, &[], &tcp(flags, options, b"x"));
        set_transport_checksum(&mut p, 20, 16);
        p
    }

    fn tcp_v6(extensions: &[u8], flags: u8, options: &[u8]) -> Vec<u8> {
        let next = if extensions.is_empty() { TCP } else { HOP_BY_HOP };
        let mut p = v6(next, extensions, &tcp(flags, options, b"x"));
        set_transport_checksum(&mut p, 40 + extensions.len(), 16);
        p
    }

    fn pseudo_header(p: &[u8], start: usize, proto: u8) -> Vec<u8> {
        let len = p.len() - start;
        if p[0] >> 4 == 4 {
            let mut pseudo = p[12..20].to_vec();
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
            pseudo
        } else {
            v6_pseudo_header(p, len as u32, proto).to_vec()
        }
    }

    fn set_transport_checksum(p: &mut [u8], start: usize, field: usize) {
        let proto = if p[0] >> 4 == 4 { p[9] } else { TCP };
        let pseudo = pseudo_header(p, start, proto);
        p[start + field..start + field + 2].fill(0);
        let sum = checksum(&[&pseudo, &p[start..]]);
        p[start + field..start + field + 2].copy_from_slice(&sum.to_be_bytes());
    }

    fn transport_checksum_verifies(p: &[u8], start: usize, proto: u8) -> bool {
        checksum(&[&pseudo_header(p, start, proto), &p[start..]]) == 0
    }

    const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];

    #[test]
    fn mss_limits_leave_room_for_the_headers() {
        assert_eq!(mss_for(1420), (1380, 1360));
        assert_eq!(mss_for(1280), (1240, 1220));
        assert_eq!(mss_for(30), (0, 0));
    }

    #[test]
    fn clamps_a_v4_syn_and_keeps_its_checksum_valid() {
        let mut p = tcp_v4(TCP_SYN, &MSS_1460);
        assert!(is_tcp_syn(&p));

        assert!(clamp_mss(&mut p, 1380, 1360));

        assert_eq!(&p[40..44], &[2, 4, 0x05, 0x64]);
        assert!(transport_checksum_verifies(&p, 20, TCP));
        assert!(!clamp_mss(&mut p, 1380, 1360), "already within the limit");
    }

    #[test]
    fn clamps_a_syn_ack_and_an_mss_at_an_odd_offset() {
        // NOP, then MSS with its value at an odd offset of the TCP header, then window scale.
        let options = [1, 2, 4, 0x23, 0x45, 3, 3, 7];
        for flags in [TCP_SYN, TCP_SYN | 0x10] {
            let mut p = tcp_v4(flags, &options);

            assert!(clamp_mss(&mut p, 1200, 1360));

            assert_eq!(&p[41..45], &[2, 4, 0x04, 0xb0]);
            assert!(transport_checksum_verifies(&p, 20, TCP));
        }
    }

    #[test]
    fn clamps_v6_past_hop_by_hop_and_destination_options() {
        let mut p = tcp_v6(&[], TCP_SYN, &MSS_1460);
        assert!(clamp_mss(&mut p, 1380, 1360));
        assert_eq!(&p[60..64], &[2, 4, 0x05, 0x50]);
        assert!(transport_checksum_verifies(&p, 40, TCP));

        let extensions = [DEST_OPTS, 0, 1, 4, 0, 0, 0, 0, TCP, 0, 1, 4, 0, 0, 0, 0];
        let mut p = tcp_v6(&extensions, TCP_SYN, &MSS_1460);
        assert!(is_tcp_syn(&p));
        assert!(clamp_mss(&mut p, 1380, 1360));
        assert_eq!(&p[76..80], &[2, 4, 0x05, 0x50]);
        assert!(transport_checksum_verifies(&p, 56, TCP));
    }

    #[test]
    fn leaves_what_has_no_mss_to_clamp() {
        let mut ack = tcp_v4(0x10, &MSS_1460);
        assert!(!is_tcp_syn(&ack));
        assert!(!clamp_mss(&mut ack, 1000, 1000), "not a SYN");

        let mut bare = tcp_v4(TCP_SYN, &[]);
        assert!(!clamp_mss(&mut bare, 1000, 1000), "no MSS option");

        let mut after_eol = tcp_v4(TCP_SYN, &[0, 0, 0, 0, 2, 4, 5, 0xb4]);
        assert!(!clamp_mss(&mut after_eol, 1000, 1000), "an MSS after end-of-options");

        let mut later_fragment = tcp_v4(TCP_SYN, &MSS_1460);
        later_fragment[6..8].copy_from_slice(&3u16.to_be_bytes());
        assert!(!is_tcp_syn(&later_fragment));
        assert!(!clamp_mss(&mut later_fragment, 1000, 1000));

        let mut udp = tcp_v4(TCP_SYN, &MSS_1460);
        udp[9] = 17;
        assert!(!clamp_mss(&mut udp, 1000, 1000));

        let fragment_header = [TCP, 0, 0, 0, 0, 0, 0, 1];
        let mut p = v6(FRAGMENT, &fragment_header, &tcp(TCP_SYN, &MSS_1460, b""));
        assert!(!clamp_mss(&mut p, 1000, 1000), "behind an IPv6 fragment header");
    }

    #[test]
    fn respects_ipv4_options_and_the_total_length() {
        let options = [0x94, 4, 0, 0]; // router alert
        let mut p = v4(TCP, DF, &options, &tcp(TCP_SYN, &MSS_1460, b""));
        set_transport_checksum(&mut p, 24, 16);
        p.extend_from_slice(&[0xee; 6]); // link padding past the total length

        assert!(clamp_mss(&mut p, 1000, 1000));

        assert_eq!(&p[44..48], &[2, 4, 0x03, 0xe8]);
        assert!(transport_checksum_verifies(&p[..p.len() - 6], 24, TCP));
    }

    fn fragments(packet: &[u8], max: usize, id: u32) -> Result<Vec<Vec<u8>>, FragmentError> {
        let mut out = Vec::new();
        let count = fragment(packet, max, id, |f| out.push(f.to_vec()))?;
        assert_eq!(count, out.len());
        Ok(out)
    }

    /// Reassembles IPv4 fragments in order, checking each on the way.
    fn reassemble_v4(fragments: &[Vec<u8>], max: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            assert!(f.len() <= max);
            let ihl = usize::from(f[0] & 0x0f) * 4;
            assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
            assert_eq!(checksum(&[&f[..ihl]]), 0, "header checksum of fragment {i}");
            assert_eq!(f[4..6], fragments[0][4..6], "one identification");
            let word = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(usize::from(word & OFFSET) * 8, data.len(), "contiguous offsets");
            assert_eq!(word & MF != 0, i + 1 < fragments.len(), "MF on all but the last");
            if word & MF != 0 {
                assert_eq!((f.len() - ihl) % 8, 0);
            }
            data.extend_from_slice(&f[ihl..]);
        }
        let first = &fragments[0];
        let ihl = usize::from(first[0] & 0x0f) * 4;
        let mut whole = first[..ihl].to_vec();
        whole.extend_from_slice(&data);
        let total = whole.len() as u16;
        whole[2..4].copy_from_slice(&total.to_be_bytes());
        whole[6..8].fill(0);
        whole[10..12].fill(0);
        let sum = checksum(&[&whole[..ihl]]);
        whole[10..12].copy_from_slice(&sum.to_be_bytes());
        whole
    }

    /// Reassembles IPv6 fragments in order, checking each on the way.
    fn reassemble_v6(fragments: &[Vec<u8>], max: usize, id: u32) -> Vec<u8> {
        let mut data = Vec::new();
        let mut unfragmentable = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            assert!(f.len() <= max);
            assert_eq!(usize::from(u16::from_be_bytes([f[4], f[5]])) + 40, f.len());
            let (at, next_field) = if f[6] == HOP_BY_HOP {
                (40 + (usize::from(f[41]) + 1) * 8, 40)
            } else {
                (40, 6)
            };
            assert_eq!(f[next_field], FRAGMENT);
            let header = &f[at..at + 8];
            assert_eq!(header[4..8], id.to_be_bytes());
            let word = u16::from_be_bytes([header[2], header[3]]);
            assert_eq!(usize::from(word & V6_OFFSET), data.len(), "contiguous offsets");
            assert_eq!(word & V6_MORE != 0, i + 1 < fragments.len(), "M on all but the last");
            if word & V6_MORE != 0 {
                assert_eq!((f.len() - at - 8) % 8, 0);
            }
            if i == 0 {
                unfragmentable = f[..at].to_vec();
                unfragmentable[next_field] = header[0];
            }
            data.extend_from_slice(&f[at + 8..]);
        }
        let mut whole = unfragmentable;
        whole.extend_from_slice(&data);
        let len = (whole.len() - 40) as u16;
        whole[4..6].copy_from_slice(&len.to_be_bytes());
        whole
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn v4_fragments_reassemble_to_the_original() {
        for (len, max) in [
            (1500, 1220),
            (1280, 1064),
            (1501, 1220),
            (1221, 1220),
            (999, 576),
            (65_535, 1500),
        ] {
            let packet = v4(17, 0, &[], &pattern(len - 20));

            let pieces = fragments(&packet, max, 0).unwrap();

            assert!(pieces.len() > 1, "{len} into {max}");
            assert_eq!(reassemble_v4(&pieces, max), packet, "{len} into {max}");
        }
    }

    #[test]
    fn a_packet_that_fits_is_emitted_unchanged() {
        let packet = v4(17, DF, &[], &pattern(1200));
        assert_eq!(fragments(&packet, 1220, 0).unwrap(), vec![packet.clone()]);
        let packet = v6(17, &[], &pattern(1180));
        assert_eq!(fragments(&packet, 1220, 0).unwrap(), vec![packet.clone()]);
    }

    #[test]
    fn later_v4_fragments_carry_only_copied_options() {
        // Router alert (copied), a record-route stub (not copied), NOP, end of options.
        let options = [0x94, 4, 0, 0, 7, 3, 4, 1, 0, 0, 0, 0];
        let packet = v4(17, 0, &options, &pattern(1001));

        let pieces = fragments(&packet, 500, 0).unwrap();

        assert_eq!(pieces[0][0] & 0x0f, 8, "the first keeps all options");
        assert!(pieces[1..]
            .iter()
            .all(|f| f[0] & 0x0f == 6 && f[20..24] == [0x94, 4, 0, 0]));
        assert_eq!(reassemble_v4(&pieces, 500), packet);
    }

    #[test]
    fn v6_fragments_reassemble_to_the_original() {
        for (len, max) in [
            (1500, 1220),
            (1280, 1064),
            (1281, 1280),
            (1221, 1220),
            (1337, 1280),
            (65_535, 1500),
        ] {
            let packet = v6(17, &[], &pattern(len - 40));

            let pieces = fragments(&packet, max, 0xdead_beef).unwrap();

            assert!(pieces.len() > 1, "{len} into {max}");
            assert_eq!(reassemble_v6(&pieces, max, 0xdead_beef), packet, "{len} into {max}");
        }
    }

    #[test]
    fn v6_fragments_repeat_a_hop_by_hop_header() {
        let hop_by_hop = [DEST_OPTS, 0, 5, 2, 0, 0, 1, 0];
        let destination = [17, 0, 1, 4, 0, 0, 0, 0];
        let packet = v6(HOP_BY_HOP, &[hop_by_hop, destination].concat(), &pattern(1443));

        let pieces = fragments(&packet, 1280, 7).unwrap();

        assert!(pieces.iter().all(|f| f[40..48] == [FRAGMENT, 0, 5, 2, 0, 0, 1, 0]));
        assert_eq!(
            pieces[0][48], DEST_OPTS,
            "destination options travel in the first fragment"
        );
        assert_eq!(reassemble_v6(&pieces, 1280, 7), packet);
    }

    #[test]
    fn refuses_what_it_must_not_or_cannot_fragment() {
        let df = v4(17, DF, &[], &pattern(1480));
        assert_eq!(fragments(&df, 1280, 0), Err(FragmentError::DontFragment));
        let more = v4(17, MF, &[], &pattern(1480));
        assert_eq!(fragments(&more, 1280, 0), Err(FragmentError::AlreadyFragmented));
        let later = v4(17, 185, &[], &pattern(1480));
        assert_eq!(fragments(&later, 1280, 0), Err(FragmentError::AlreadyFragmented));
        let v4_packet = v4(17, 0, &[], &pattern(1480));
        assert_eq!(fragments(&v4_packet, 27, 0), Err(FragmentError::MaxTooSmall));
        assert_eq!(fragments(&v4_packet, 28, 0).map(|f| f.len()), Ok(185));
        assert_eq!(fragments(&v4_packet, 1499, 0).map(|f| f.len()), Ok(2));
        let jumbo = v4(17, 0, &[], &pattern(4000));
        assert_eq!(fragments(&jumbo, MAX_FRAGMENT + 1, 0), Err(FragmentError::MaxTooLarge));

        let fragmented = v6(FRAGMENT, &[17, 0, 0, 0, 0, 0, 0, 1], &pattern(1480));
        assert_eq!(fragments(&fragmented, 1280, 0), Err(FragmentError::AlreadyFragmented));
        let routed = v6(ROUTING, &[17, 0, 0, 0, 0, 0, 0, 0], &pattern(1480));
        assert_eq!(fragments(&routed, 1280, 0), Err(FragmentError::Unsupported));
        let before_routing = v6(DEST_OPTS, &[ROUTING, 0, 1, 4, 0, 0, 0, 0], &pattern(1480));
        assert_eq!(fragments(&before_routing, 1280, 0), Err(FragmentError::Unsupported));
        let v6_packet = v6(17, &[], &pattern(1480));
        assert_eq!(fragments(&v6_packet, 55, 0), Err(FragmentError::MaxTooSmall));
        assert_eq!(fragments(&v6_packet, 56, 0).map(|f| f.len()), Ok(185));

        let mut short = v4_packet.clone();
        short.truncate(1400);
        assert_eq!(fragments(&short, 1280, 0), Err(FragmentError::Malformed));
        assert_eq!(fragments(&[0x50; 1400], 1280, 0), Err(FragmentError::Malformed));
    }

    #[test]
    fn frag_needed_quotes_the_header_and_eight_bytes() {
        let original = v4(17, DF, &[], &pattern(1472));
        let mut out = [0; 128];

        let len = frag_needed_v4(&original, 1400, &mut out).unwrap();

        let icmp = &out[..len];
        assert_eq!(len, 20 + 8 + 28);
        assert_eq!(checksum(&[&icmp[..20]]), 0, "header checksum verifies");
        assert_eq!(checksum(&[&icmp[20..]]), 0, "ICMP checksum verifies");
        assert_eq!(icmp[0], 0x45);
        assert_eq!(usize::from(u16::from_be_bytes([icmp[2], icmp[3]])), len);
        assert_eq!((icmp[8], icmp[9]), (64, ICMPV4));
        assert_eq!((&icmp[12..16], &icmp[16..20]), (&DST4[..], &SRC4[..]));
        assert_eq!((icmp[20], icmp[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[26], icmp[27]]), 1400);
        assert_eq!(&icmp[28..], &original[..28]);
        assert_eq!(frag_needed_v4(&original, 1400, &mut out[..55]), None, "out too short");
    }

    #[test]
    fn frag_needed_never_answers_an_icmp_error() {
        let mut out = [0; 128];
        let unreachable = v4(ICMPV4, DF, &[], &[3, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frag_needed_v4(&unreachable, 1400, &mut out), None);
        let echo = v4(ICMPV4, DF, &[], &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frag_needed_v4(&echo, 1400, &mut out), Some(56));
        let later_fragment = v4(17, 100, &[], &pattern(100));
        assert_eq!(frag_needed_v4(&later_fragment, 1400, &mut out), None);
        let mut broadcast = echo.clone();
        broadcast[16..20].fill(255);
        assert_eq!(frag_needed_v4(&broadcast, 1400, &mut out), None);
    }

    #[test]
    fn packet_too_big_fits_in_the_minimum_mtu() {
        let original = v6(17, &[], &pattern(1460));
        let mut out = [0; 1500];

        let len = packet_too_big_v6(&original, 1420, &mut out).unwrap();

        let icmp = &out[..len];
        assert_eq!(len, 1280);
        assert_eq!(usize::from(u16::from_be_bytes([icmp[4], icmp[5]])), len - 40);
        assert_eq!((icmp[6], icmp[7]), (ICMPV6, 64));
        assert_eq!((&icmp[8..24], &icmp[24..40]), (&DST6[..], &SRC6[..]));
        assert_eq!((icmp[40], icmp[41]), (2, 0));
        assert_eq!(u32::from_be_bytes([icmp[44], icmp[45], icmp[46], icmp[47]]), 1420);
        assert_eq!(&icmp[48..], &original[..1232]);
        assert!(transport_checksum_verifies(icmp, 40, ICMPV6));

        let small = v6(17, &[], &pattern(100));
        let len = packet_too_big_v6(&small, 1280, &mut out).unwrap();
        assert_eq!(&out[48..len], &small[..]);
        assert!(transport_checksum_verifies(&out[..len], 40, ICMPV6));
        let len = packet_too_big_v6(&original, 1280, &mut out[..100]).unwrap();
        assert_eq!(len, 100, "as much as fits in out");
        assert!(transport_checksum_verifies(&out[..len], 40, ICMPV6));
        assert_eq!(packet_too_big_v6(&original, 1280, &mut out[..87]), None);
    }

    #[test]
    fn packet_too_big_never_answers_an_icmpv6_error() {
        let mut out = [0; 1280];
        let unreachable = v6(ICMPV6, &[], &[1, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(packet_too_big_v6(&unreachable, 1280, &mut out), None);
        let behind_options = v6(HOP_BY_HOP, &[ICMPV6, 0, 1, 4, 0, 0, 0, 0], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(packet_too_big_v6(&behind_options, 1280, &mut out), None);
        let first_fragment = v6(FRAGMENT, &[ICMPV6, 0, 0, 1, 0, 0, 0, 1], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(packet_too_big_v6(&first_fragment, 1280, &mut out), None);
        let echo = v6(ICMPV6, &[], &[128, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(packet_too_big_v6(&echo, 1280, &mut out), Some(96));
        let mut unspecified = echo.clone();
        unspecified[8..24].fill(0);
        assert_eq!(packet_too_big_v6(&unspecified, 1280, &mut out), None);
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn no_input_panics() {
        let seeds = [
            tcp_v4(TCP_SYN, &MSS_1460),
            tcp_v6(
                &[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0, TCP, 0, 1, 4, 0, 0, 0, 0],
                TCP_SYN,
                &MSS_1460,
            ),
            v4(17, 0, &[0x94, 4, 0, 0, 7, 3, 4, 1], &pattern(1400)),
            v6(HOP_BY_HOP, &[17, 0, 1, 4, 0, 0, 0, 0], &pattern(1400)),
            v6(FRAGMENT, &[ICMPV6, 0, 0, 1, 0, 0, 0, 1], &[2, 0, 0, 0]),
        ];
        let mut rng = Rng(0x5eed_c0de_f00d_1234);
        let mut out = [0; 1500];
        for round in 0..20_000 {
            let mut packet = seeds[round % seeds.len()].clone();
            for _ in 0..rng.below(4) {
                let at = rng.below(packet.len().min(80));
                packet[at] = rng.next() as u8;
            }
            packet.truncate(rng.below(packet.len() + 1));
            if round % 7 == 0 {
                packet = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            }
            let max = rng.below(1600);

            let _ = is_tcp_syn(&packet);
            let _ = clamp_mss(&mut packet.clone(), rng.next() as u16, rng.next() as u16);
            let _ = fragment(&packet, max, rng.next() as u32, |f| {
                assert!(f.len() <= max.max(packet.len()))
            });
            let _ = frag_needed_v4(&packet, 1280, &mut out[..rng.below(1500)]);
            let _ = packet_too_big_v6(&packet, 1280, &mut out[..rng.below(1500)]);
        }
    }
}
