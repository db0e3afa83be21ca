//! The one way corridor builds a DNS query of its own (the daemon's lookups through the tunnel,
//! `doctor`'s question to the responder, the rootless mode's names) and reads the addresses out
//! of an answer.

use std::net::IpAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// A recursive query for `name` (fully qualified) of type `rtype`, with `id`; `None` when
/// `name` is not a DNS name.
pub fn query(name: &str, rtype: RecordType, id: u16) -> Option<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).ok()?, rtype));
    message.to_vec().ok()
}

/// The addresses (A and AAAA records) among `message`'s answers, in their order.
pub fn addresses(message: &Message) -> impl Iterator<Item = IpAddr> + '_ {
    message.answers.iter().filter_map(|record| match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::Record;

    #[test]
    fn a_query_asks_recursively_for_one_name_and_type() {
        let bytes = query("api.zerops.", RecordType::AAAA, 7).unwrap();
        let message = Message::from_vec(&bytes).unwrap();

        assert_eq!(message.metadata.id, 7);
        assert!(message.metadata.recursion_desired);
        assert_eq!(message.metadata.message_type, MessageType::Query);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].name().to_ascii(), "api.zerops.");
        assert_eq!(message.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(query("not a name..", RecordType::A, 1), None);
    }

    #[test]
    fn only_address_records_are_read_from_an_answer() {
        let name = Name::from_ascii("api.zerops.").unwrap();
        let mut message = Message::query();
        message.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A::new(198, 19, 0, 13))));
        message.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(name.clone())),
        ));
        message.add_answer(Record::from_rdata(
            name,
            60,
            RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 13)),
        ));

        let found: Vec<IpAddr> = addresses(&message).collect();

        assert_eq!(
            found,
            ["198.19.0.13".parse::<IpAddr>().unwrap(), "fd00::d".parse().unwrap()]
        );
    }
}
