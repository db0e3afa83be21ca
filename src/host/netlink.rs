//! Linux's routing socket (rtnetlink) for the changes on `vpn up`'s and `vpn down`'s path: one
//! message and its acknowledgement each, where starting `ip` costs about 2 ms a run.
//! The commands a user would type for the same change stay in [`super::plan`].

use std::io;

use ipnet::IpNet;
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::clash::{self, HostAddress, HostRoute, HostRule, RoutingTable};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// `ip route replace DESTINATION dev INDEX`.
pub fn replace_route(destination: IpNet, index: u32) -> io::Result<()> {
    let message = RouteNetlinkMessage::NewRoute(route(destination, index, true));
    request(message, NLM_F_CREATE | NLM_F_REPLACE)
}

/// `ip route del DESTINATION dev INDEX`.
pub fn delete_route(destination: IpNet, index: u32) -> io::Result<()> {
    request(RouteNetlinkMessage::DelRoute(route(destination, index, false)), 0)
}

/// `ip link set dev INDEX alias ALIAS`.
pub fn set_alias(index: u32, alias: &str) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    request(RouteNetlinkMessage::SetLink(link), 0)
}

/// `ip link del INDEX`.
pub fn delete_link(index: u32) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    request(RouteNetlinkMessage::DelLink(link), 0)
}

/// The routes of every table, the policy rules and the addresses of this machine, as `ip route
/// show table all`, `ip rule` and `ip addr` list them.
pub fn routing_table() -> io::Result<RoutingTable> {
    let mut table = RoutingTable::default();
    for message in dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))? {
        if let RouteNetlinkMessage::NewRoute(route) = message {
            table.routes.extend(host_route(&route));
        }
    }
    for message in dump(RouteNetlinkMessage::GetRule(RuleMessage::default()))? {
        if let RouteNetlinkMessage::NewRule(rule) = message {
            table.rules.extend(host_rule(&rule));
        }
    }
    for message in dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
        if let RouteNetlinkMessage::NewAddress(address) = message {
            table.addresses.extend(host_address(&address));
        }
    }
    Ok(table)
}

/// Routes that send packets out of an interface or drop them; local, broadcast and multicast
/// routes (the machine's own addresses, reported as addresses) are left out.
fn host_route(message: &RouteMessage) -> Option<HostRoute> {
    let header = &message.header;
    let drops = matches!(
        header.kind,
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit
    );
    if header.kind != RouteType::Unicast && !drops {
        return None;
    }
    let mut destination = None;
    let mut gateway = None;
    let mut interface = String::new();
    let mut table = u32::from(header.table);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(address) => destination = ip(address),
            RouteAttribute::Gateway(address) => gateway = ip(address),
            RouteAttribute::Oif(index) if !drops => interface = interface_name(*index),
            RouteAttribute::Table(id) => table = *id,
            _ => {}
        }
    }
    let unspecified: std::net::IpAddr = match header.address_family {
        AddressFamily::Inet => std::net::Ipv4Addr::UNSPECIFIED.into(),
        AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let destination = IpNet::new(destination.unwrap_or(unspecified), header.destination_prefix_length).ok()?;
    Some(HostRoute {
        destination,
        gateway,
        interface,
        table,
    })
}

/// Rules that apply to what this machine sends to a destination. Rules for some packets only
/// (from an address or an interface; with a mark, a user, a protocol or a port: another VPN's
/// own traffic, as Tailscale and wg-quick mark theirs) are left out, but `not fwmark …` matches
/// nearly everything and stays; so are rules that jump to other rules.
fn host_rule(message: &RuleMessage) -> Option<HostRule> {
    let header = &message.header;
    if header.src_len > 0 {
        return None;
    }
    let mut priority = 0;
    let mut destination = None;
    let mut table = u32::from(header.table);
    let mut some_packets = false;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Destination(address) => destination = IpNet::new(*address, header.dst_len).ok(),
            RuleAttribute::Table(id) => table = *id,
            RuleAttribute::Iifname(_) | RuleAttribute::Source(_) => return None,
            RuleAttribute::FwMark(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::Oifname(_) => some_packets = true,
            _ => {}
        }
    }
    let inverted = header.flags.contains(RuleFlags::Invert);
    if some_packets != inverted {
        return None;
    }
    let action = match header.action {
        RuleAction::ToTable => clash::RuleAction::Lookup(table),
        RuleAction::Blackhole | RuleAction::Unreachable | RuleAction::Prohibit => clash::RuleAction::Drop,
        _ => return None,
    };
    Some(HostRule {
        priority,
        destination,
        action,
    })
}

fn host_address(message: &AddressMessage) -> Option<HostAddress> {
    let header = &message.header;
    // IPv4 reports the peer's address as IFA_ADDRESS on point-to-point links: the local one is
    // IFA_LOCAL where there is one.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(address) => Some(*address),
        _ => None,
    });
    let address = local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        })
    })?;
    Some(HostAddress {
        address: IpNet::new(address, header.prefix_len).ok()?,
        interface: interface_name(header.index),
    })
}

fn ip(address: &RouteAddress) -> Option<std::net::IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

/// The interface's name, or its index when it has none (it went away meanwhile).
fn interface_name(index: u32) -> String {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` holds IF_NAMESIZE bytes, as if_indextoname requires; it writes a
    // NUL-terminated name into it or returns null.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return format!("if{index}");
    }
    // SAFETY: if_indextoname succeeded, so `name` holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Sends a dump request and collects the messages of every part of its answer.
fn dump(message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let socket = send(message, NLM_F_REQUEST | NLM_F_DUMP)?;
    let mut messages = Vec::new();
    // The kernel fills a part up to 32 KiB at most.
    let mut answer = Vec::with_capacity(64 * 1024);
    // A dump ends with NLMSG_DONE; the bound only guards against a kernel that never says so.
    for _ in 0..100_000 {
        answer.clear();
        let len = socket.recv(&mut answer, 0)?;
        let mut offset = 0;
        while offset < len {
            let part = NetlinkBuffer::new_checked(&answer[offset..len]).map_err(io::Error::other)?;
            let size = part.length() as usize;
            match part.message_type() {
                NLMSG_DONE => return Ok(messages),
                NLMSG_ERROR => {
                    acknowledgement(&answer[offset..len])?;
                }
                _ => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[offset..offset + size]) {
                    Ok(NetlinkMessage {
                        payload: NetlinkPayload::InnerMessage(inner),
                        ..
                    }) => messages.push(inner),
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "skipped a routing message that does not parse"),
                },
            }
            // Messages are aligned to 4 bytes.
            offset += (size + 3) & !3;
            if size == 0 {
                break;
            }
        }
    }
    Err(io::Error::other("the kernel's routing dump did not end"))
}

/// A route into an interface with no gateway, as `ip route` makes it: main table, unicast, link
/// scope for IPv4 (the kernel ignores the scope of IPv6 routes). A deletion matches any scope.
fn route(destination: IpNet, index: u32, add: bool) -> RouteMessage {
    let mut message = RouteMessage::default();
    let header = &mut message.header;
    header.address_family = match destination {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    header.destination_prefix_length = destination.prefix_len();
    header.table = RouteHeader::RT_TABLE_MAIN;
    header.kind = RouteType::Unicast;
    if add {
        header.protocol = RouteProtocol::Boot;
        header.scope = RouteScope::Link;
    } else {
        header.scope = RouteScope::NoWhere;
    }
    message
        .attributes
        .push(RouteAttribute::Destination(destination.network().into()));
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

/// A routing socket of its own that has sent `message` with `flags`; the answer is to be read.
fn send(message: RouteNetlinkMessage, flags: u16) -> io::Result<Socket> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&bytes, 0)?;
    Ok(socket)
}

/// Sends one request and reads its acknowledgement; the kernel's refusal is the error.
fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let socket = send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
    let mut answer = Vec::with_capacity(8192);
    socket.recv(&mut answer, 0)?;
    acknowledgement(&answer)
}

/// The kernel's answer to a request with `NLM_F_ACK`: its error code, 0 for success. Only the
/// code is read, from the buffer, without the parsers of every message the kernel can send.
fn acknowledgement(answer: &[u8]) -> io::Result<()> {
    let answer = NetlinkBuffer::new_checked(answer).map_err(io::Error::other)?;
    if answer.message_type() != NLMSG_ERROR {
        return Err(io::Error::other(format!(
            "unexpected answer from the kernel (message type {})",
            answer.message_type()
        )));
    }
    match ErrorBuffer::new_checked(answer.payload())
        .map_err(io::Error::other)?
        .code()
    {
        Some(code) => Err(io::Error::from_raw_os_error(code.get().abs())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NLMSG_ERROR message as the kernel sends it: header, error code, the request's header.
    fn answer(code: i32) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&36u32.to_ne_bytes());
        bytes.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&[0; 16]);
        bytes
    }

    #[test]
    fn an_acknowledgement_is_success_and_a_refusal_its_errno() {
        assert!(acknowledgement(&answer(0)).is_ok());
        let refused = acknowledgement(&answer(-libc::EEXIST)).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::EEXIST));
        assert!(
            acknowledgement(&answer(0)[..8]).is_err(),
            "a truncated answer is an error"
        );
    }

    #[test]
    fn rules_for_marked_packets_are_left_out_and_not_fwmark_rules_kept() {
        let rule = |attributes: Vec<RuleAttribute>, inverted: bool| {
            let mut message = RuleMessage::default();
            message.header.action = RuleAction::ToTable;
            if inverted {
                message.header.flags = RuleFlags::Invert;
            }
            message.attributes = attributes;
            host_rule(&message)
        };
        let tailscale = rule(
            vec![RuleAttribute::Priority(5250), RuleAttribute::FwMark(0x80000)],
            false,
        );
        let wg_quick = rule(
            vec![
                RuleAttribute::Priority(32765),
                RuleAttribute::FwMark(51820),
                RuleAttribute::Table(51820),
            ],
            true,
        );
        let everything = rule(vec![RuleAttribute::Priority(5270), RuleAttribute::Table(52)], false);

        assert_eq!(tailscale, None);
        assert_eq!(wg_quick.map(|r| r.action), Some(clash::RuleAction::Lookup(51820)));
        assert_eq!(everything.map(|r| r.priority), Some(5270));
    }

    #[test]
    fn an_ipv4_route_is_link_scope_in_the_main_table_and_a_deletion_matches_any_scope() {
        let add = route("198.19.48.0/26".parse().unwrap(), 7, true);
        assert_eq!(add.header.address_family, AddressFamily::Inet);
        assert_eq!(add.header.destination_prefix_length, 26);
        assert_eq!(add.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(add.header.scope, RouteScope::Link);
        assert_eq!(
            add.attributes,
            [
                RouteAttribute::Destination(std::net::IpAddr::from([198, 19, 48, 0]).into()),
                RouteAttribute::Oif(7)
            ]
        );
        let delete = route("fdc0:0:180:1::/64".parse().unwrap(), 7, false);
        assert_eq!(delete.header.address_family, AddressFamily::Inet6);
        assert_eq!(delete.header.scope, RouteScope::NoWhere);
    }
}
