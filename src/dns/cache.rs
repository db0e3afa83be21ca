//! Answers kept for their TTL, with time passed in so tests can move it by hand.
//!
//! Not hickory-resolver's `ResponseCache`: it keeps a negative answer only as a `NoRecords`
//! error (the header's AD flag and the authority section's order are gone), derives a positive
//! entry's lifetime from the answer section alone (a NODATA kept as a message would live 0 s),
//! and expires entries on moka's own clock. An `lru` map evicts the least recently used entry in
//! O(1) when full.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use lru::LruCache;

/// Longest an answer is kept, whatever its TTL says: project names change as containers move.
pub const MAX_TTL: u32 = 3600;

/// What an answer depends on: the name in lower case, the type and class, and whether the
/// client asked for DNSSEC records (DO), which changes what the upstream sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: Name,
    pub rtype: RecordType,
    pub class: DNSClass,
    pub dnssec_ok: bool,
}

impl Key {
    pub fn new(name: &Name, rtype: RecordType, class: DNSClass, dnssec_ok: bool) -> Key {
        Key {
            name: name.to_lowercase(),
            rtype,
            class,
            dnssec_ok,
        }
    }
}

pub struct Cache {
    entries: LruCache<Key, Entry>,
}

struct Entry {
    response: Message,
    stored: Instant,
    expires: Instant,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1")),
        }
    }

    /// A live answer with its TTLs counted down to `now`.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Message> {
        let entry = self.entries.get(key)?;
        if entry.expires <= now {
            self.entries.pop(key);
            return None;
        }
        let age = now.duration_since(entry.stored).as_secs() as u32;
        let mut response = entry.response.clone();
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.decrement_ttl(age);
        }
        Some(response)
    }

    /// Keeps `response` if it may be cached (see `ttl`).
    pub fn insert(&mut self, key: Key, response: &Message, now: Instant) {
        let Some(ttl) = ttl(response).filter(|&t| t > 0) else {
            return;
        };
        let expires = now + Duration::from_secs(ttl.min(MAX_TTL).into());
        self.entries.put(
            key,
            Entry {
                response: response.clone(),
                stored: now,
                expires,
            },
        );
    }

    /// Forgets every answer under `zone` (a project's names once it is gone).
    pub fn forget_zone(&mut self, zone: &Name) {
        let stale: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, _)| zone.zone_of(&k.name))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.entries.pop(&key);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How long an answer may be cached: the smallest answer TTL, or for a negative answer the SOA's
/// (RFC 2308); None for failures and truncated answers.
fn ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation {
        return None;
    }
    match response.metadata.response_code {
        ResponseCode::NoError if !response.answers.is_empty() => response.answers.iter().map(|r| r.ttl).min(),
        ResponseCode::NoError | ResponseCode::NXDomain => response.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::Record;

    use super::*;

    fn answer(ttl: u32) -> Message {
        let name = Name::from_ascii("api.zerops.").unwrap();
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(name, ttl, RData::A(A::new(198, 18, 1, 2))));
        m
    }

    fn key(name: &str) -> Key {
        Key::new(&Name::from_ascii(name).unwrap(), RecordType::A, DNSClass::IN, false)
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_when_full() {
        let mut cache = Cache::new(2);
        let now = Instant::now();
        cache.insert(key("a.zerops."), &answer(60), now);
        cache.insert(key("b.zerops."), &answer(60), now);
        assert!(cache.get(&key("a.zerops."), now).is_some());

        cache.insert(key("c.zerops."), &answer(60), now);

        assert!(
            cache.get(&key("b.zerops."), now).is_none(),
            "b was the least recently used"
        );
        assert!(cache.get(&key("a.zerops."), now).is_some());
        assert!(cache.get(&key("c.zerops."), now).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn ttls_are_capped_and_failures_are_not_kept() {
        let mut cache = Cache::new(8);
        let now = Instant::now();
        cache.insert(key("long.zerops."), &answer(86_400), now);
        let mut failed = answer(60);
        failed.metadata.response_code = ResponseCode::ServFail;
        cache.insert(key("failed.zerops."), &failed, now);

        let later = now + Duration::from_secs(u64::from(MAX_TTL) - 1);
        assert!(cache.get(&key("long.zerops."), later).is_some());
        assert!(cache
            .get(&key("long.zerops."), later + Duration::from_secs(1))
            .is_none());
        assert!(cache.get(&key("failed.zerops."), now).is_none());
    }

    #[test]
    fn forgetting_a_zone_keeps_the_others() {
        let mut cache = Cache::new(8);
        let now = Instant::now();
        cache.insert(key("api.zerops."), &answer(60), now);
        cache.insert(key("example.com."), &answer(60), now);

        cache.forget_zone(&Name::from_ascii("zerops.").unwrap());

        assert!(cache.get(&key("api.zerops."), now).is_none());
        assert!(cache.get(&key("example.com."), now).is_some());
    }
}
