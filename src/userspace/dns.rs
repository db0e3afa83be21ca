//! Names of a project's containers and services, asked of the project DNS: which names to try
//! for a target, the queries, and what their answers say. No sockets here.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};

/// The zone of platform names, and the search domain a bare service name lives in.
pub const ZONE: &str = "zerops";

/// What one answer said about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    /// The name does not exist, or has no record of the asked type.
    Nothing,
    /// The server failed (SERVFAIL, REFUSED, …).
    Failed(ResponseCode),
}

/// The fully qualified names to try for `target`, in order: a platform name as it is, anything
/// else first under the search domain (`api` → `api.zerops.`), then as written.
pub fn candidates(target: &str) -> Vec<String> {
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    if name == ZONE || name.ends_with(&format!(".{ZONE}")) {
        return vec![format!("{name}.")];
    }
    vec![format!("{name}.{ZONE}."), format!("{name}.")]
}

/// A recursive query for `name` (fully qualified) of type A or AAAA.
pub use crate::dns::query;

/// The answer in `packet` if it is the response with `id`.
pub fn answer(packet: &[u8], id: u16) -> Option<Answer> {
    let message = Message::from_vec(packet).ok()?;
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        return None;
    }
    Some(match message.metadata.response_code {
        ResponseCode::NoError => {
            let addresses: Vec<IpAddr> = crate::dns::addresses(&message).collect();
            if addresses.is_empty() {
                Answer::Nothing
            } else {
                Answer::Addresses(addresses)
            }
        }
        ResponseCode::NXDomain => Answer::Nothing,
        code => Answer::Failed(code),
    })
}

/// Whether `target` is an address rather than a name.
pub fn literal(target: &str) -> Option<IpAddr> {
    target.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    #[test]
    fn bare_names_are_tried_under_the_zone_first_and_platform_names_as_they_are() {
        assert_eq!(candidates("api"), vec!["api.zerops.", "api."]);
        assert_eq!(candidates("API."), vec!["api.zerops.", "api."]);
        assert_eq!(
            candidates("node-id-13.runtime.api.zerops"),
            vec!["node-id-13.runtime.api.zerops."]
        );
    }

    #[test]
    fn addresses_are_read_from_a_matching_response_only() {
        let name = Name::from_ascii("api.zerops.").unwrap();
        let mut response = Message::response(7, hickory_proto::op::OpCode::Query);
        response.add_query(Query::query(name.clone(), RecordType::A));
        response.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A::new(10, 1, 0, 13))));
        response.add_answer(Record::from_rdata(
            name,
            60,
            RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x13)),
        ));
        let packet = response.to_vec().unwrap();

        let parsed = answer(&packet, 7);
        let other_id = answer(&packet, 8);

        assert_eq!(
            parsed,
            Some(Answer::Addresses(vec![
                "10.1.0.13".parse().unwrap(),
                "fd00::13".parse().unwrap()
            ]))
        );
        assert_eq!(other_id, None);
        assert_eq!(answer(&query("api.zerops.", RecordType::A, 7).unwrap(), 7), None);
    }

    #[test]
    fn nxdomain_is_nothing_and_servfail_a_failure() {
        let mut nx = Message::response(1, hickory_proto::op::OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let mut fail = Message::response(2, hickory_proto::op::OpCode::Query);
        fail.metadata.response_code = ResponseCode::ServFail;

        assert_eq!(answer(&nx.to_vec().unwrap(), 1), Some(Answer::Nothing));
        assert_eq!(
            answer(&fail.to_vec().unwrap(), 2),
            Some(Answer::Failed(ResponseCode::ServFail))
        );
    }

    #[test]
    fn literals_are_addresses() {
        assert_eq!(literal("[fd00::1]"), Some("fd00::1".parse().unwrap()));
        assert_eq!(literal("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(literal("api"), None);
    }
}
