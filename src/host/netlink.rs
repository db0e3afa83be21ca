//! Linux's routing socket (rtnetlink) for the changes on `vpn up`'s and `vpn down`'s path: one
//! message and its acknowledgement each, where starting `ip` costs about 2 ms a run.
//! The commands a user would type for the same change stay in [`super::plan`].

use std::io;

use ipnet::IpNet;
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
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

/// Sends one request and reads its acknowledgement; the kernel's refusal is the error.
fn request(message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&bytes, 0)?;
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
