//! The responder's decisions, apart from sockets: which server a question goes to, what the cache
//! answers, which of several projects' answers wins, and the counters `vpn status` shows. Time is
//! passed in.

use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};

use super::cache::{Cache, Key};
use super::{DnsStats, PROJECT_ZONE};

const CACHE_CAPACITY: usize = 4096;
/// Firefox asks this name before it turns DNS-over-HTTPS on by itself; NXDOMAIN keeps it on the
/// system resolver, and so on us (Mozilla's documented signal for networks with their own DNS).
pub const DOH_CANARY: &str = "use-application-dns.net.";

/// A connected project whose DNS answers names under `zerops.`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectDns {
    pub id: String,
    pub name: String,
    /// The project's DNS server, reached through that project's tunnel.
    pub dns: SocketAddr,
    /// Unix milliseconds; the most recent connection answers bare names first.
    pub connected_at: u64,
    /// `vpn up --dns-priority N`: higher answers bare names first, before recency.
    pub priority: i32,
}

/// One question as the client asked it.
#[derive(Debug, Clone)]
pub struct Question {
    /// In the client's letter case, forwarded as is.
    pub query: Query,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub dnssec_ok: bool,
}

impl Question {
    fn key(&self) -> Key {
        Key::new(
            &self.query.name,
            self.query.query_type,
            self.query.query_class,
            self.dnssec_ok,
        )
    }
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    Answer(Message),
    Forward(Route),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Project DNS servers, asked at once. With `in_order`, a server's positive answer wins only
    /// once every server before it has answered without one; otherwise the first positive wins.
    Projects { servers: Vec<SocketAddr>, in_order: bool },
    /// The host's original upstreams.
    Upstream,
}

pub struct Engine {
    zone: Name,
    doh_canary: Name,
    cache: Cache,
    /// In order of preference for bare names.
    projects: Vec<ProjectDns>,
    has_upstreams: bool,
    stats: DnsStats,
}

impl Engine {
    pub fn new(projects: Vec<ProjectDns>, has_upstreams: bool) -> Engine {
        let mut engine = Engine {
            zone: Name::from_ascii(PROJECT_ZONE).expect("a valid zone name"),
            doh_canary: Name::from_ascii(DOH_CANARY).expect("a valid name"),
            cache: Cache::new(CACHE_CAPACITY),
            projects: Vec::new(),
            has_upstreams,
            stats: DnsStats::default(),
        };
        engine.set_projects(projects);
        engine
    }

    /// Replaces the project set; their cached names go, so a project that left stops answering
    /// at once.
    pub fn set_projects(&mut self, mut projects: Vec<ProjectDns>) {
        projects.sort_by(|a, b| {
            (b.priority, b.connected_at)
                .cmp(&(a.priority, a.connected_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        if projects != self.projects {
            self.cache.forget_zone(&self.zone);
        }
        self.projects = projects;
    }

    pub fn projects(&self) -> &[ProjectDns] {
        &self.projects
    }

    pub fn stats(&self) -> DnsStats {
        self.stats.clone()
    }

    /// An answer from the cache or a refusal, or where to ask.
    pub fn handle(&mut self, question: &Question, now: Instant) -> Decision {
        self.stats.queries += 1;
        if question.query.name.eq_ignore_root(&self.doh_canary) {
            self.stats.answered += 1;
            return Decision::Answer(empty_answer(question, ResponseCode::NXDomain));
        }
        if let Some(cached) = self.cache.get(&question.key(), now) {
            self.stats.answered += 1;
            self.stats.cache_hits += 1;
            return Decision::Answer(cached);
        }
        let route = if self.zone.zone_of(&question.query.name) {
            // `api.zerops.` is what the search domain makes of a bare `api`.
            let bare = question.query.name.num_labels() <= self.zone.num_labels() + 1;
            Some(Route::Projects {
                servers: self.projects.iter().map(|p| p.dns).collect(),
                in_order: bare,
            })
            .filter(|_| !self.projects.is_empty())
        } else {
            self.has_upstreams.then_some(Route::Upstream)
        };
        match route {
            Some(route) => Decision::Forward(route),
            None => {
                tracing::trace!(name = %question.query.name, "dns: refused, no server for it");
                self.stats.answered += 1;
                Decision::Answer(empty_answer(question, ResponseCode::Refused))
            }
        }
    }

    /// The answer to give for what the servers said (`Err` when none answered in time); cached
    /// when it may be.
    pub fn complete(&mut self, question: &Question, result: Result<Message, String>, now: Instant) -> Message {
        match result {
            Ok(answer) => {
                tracing::trace!(name = %question.query.name, rtype = %question.query.query_type, rcode = %answer.metadata.response_code, "dns: answered");
                self.stats.answered += 1;
                self.cache.insert(question.key(), &answer, now);
                answer
            }
            Err(error) => {
                tracing::debug!(name = %question.query.name, rtype = %question.query.query_type, %error, "dns: no answer, SERVFAIL");
                self.stats.failures += 1;
                self.stats.last_error = Some(error);
                empty_answer(question, ResponseCode::ServFail)
            }
        }
    }
}

/// A positive answer: records for the name.
pub fn is_positive(answer: &Message) -> bool {
    answer.metadata.response_code == ResponseCode::NoError && !answer.answers.is_empty()
}

/// Which of several servers' answers to give, once it is known. `answers[i]` is server i's
/// (None while it has not answered); `in_order` as in `Route::Projects`. `None`: wait for more.
pub fn settle(answers: &[Option<Result<Message, String>>], in_order: bool) -> Option<Result<Message, String>> {
    let positive = |a: &Option<Result<Message, String>>| matches!(a, Some(Ok(m)) if is_positive(m));
    if in_order {
        for answer in answers {
            match answer {
                None => return None,
                Some(_) if positive(answer) => return answer.clone(),
                Some(_) => {}
            }
        }
    } else if let Some(winner) = answers.iter().find(|a| positive(a)) {
        return winner.clone();
    } else if answers.iter().any(Option::is_none) {
        return None;
    }
    // Nobody knows the name: the first real answer (NXDOMAIN, NODATA) in order, else the errors.
    answers
        .iter()
        .flatten()
        .find(|a| matches!(a, Ok(m) if m.metadata.response_code != ResponseCode::ServFail))
        .or_else(|| answers.iter().flatten().find(|a| a.is_ok()))
        .cloned()
        .or_else(|| {
            let errors: Vec<String> = answers.iter().flatten().filter_map(|a| a.clone().err()).collect();
            Some(Err(errors.join("; ")))
        })
}

fn empty_answer(question: &Question, code: ResponseCode) -> Message {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.response_code = code;
    message.add_query(question.query.clone());
    message
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{RData, Record, RecordType};

    use super::*;

    fn question(name: &str) -> Question {
        Question {
            query: Query::query(Name::from_ascii(name).unwrap(), RecordType::A),
            recursion_desired: true,
            checking_disabled: false,
            dnssec_ok: false,
        }
    }

    fn project(id: &str, dns: &str, connected_at: u64, priority: i32) -> ProjectDns {
        ProjectDns {
            id: id.into(),
            name: id.into(),
            dns: dns.parse().unwrap(),
            connected_at,
            priority,
        }
    }

    fn positive(name: &str, ttl: u32) -> Message {
        let mut m = empty_answer(&question(name), ResponseCode::NoError);
        m.add_answer(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A::new(198, 18, 1, 2)),
        ));
        m
    }

    fn nxdomain(name: &str, soa_ttl: u32) -> Message {
        let mut m = empty_answer(&question(name), ResponseCode::NXDomain);
        let zone = Name::from_ascii("zerops.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, soa_ttl);
        m.add_authority(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        m
    }

    #[test]
    fn project_names_go_to_projects_others_upstream_and_a_cached_ttl_counts_down() {
        let mut engine = Engine::new(vec![project("demo", "10.0.0.1:53", 1, 0)], true);
        let t0 = Instant::now();
        let q = question("Node-1.API.zerops.");

        assert_eq!(
            engine.handle(&q, t0),
            Decision::Forward(Route::Projects {
                servers: vec!["10.0.0.1:53".parse().unwrap()],
                in_order: false
            })
        );
        assert_eq!(
            engine.handle(&question("example.com."), t0),
            Decision::Forward(Route::Upstream)
        );
        engine.complete(&q, Ok(positive("Node-1.API.zerops.", 60)), t0);

        let Decision::Answer(cached) = engine.handle(&question("node-1.api.ZEROPS."), t0 + Duration::from_secs(25))
        else {
            panic!("not cached")
        };
        assert_eq!(cached.answers[0].ttl, 35, "60 s less the 25 s it was kept");
        assert!(matches!(
            engine.handle(&q, t0 + Duration::from_secs(60)),
            Decision::Forward(_)
        ));
        let stats = engine.stats();
        assert_eq!((stats.queries, stats.answered, stats.cache_hits), (4, 2, 1));
    }

    #[test]
    fn a_negative_answer_is_cached_for_its_soa_ttl() {
        let mut engine = Engine::new(vec![project("demo", "10.0.0.1:53", 1, 0)], true);
        let t0 = Instant::now();
        let q = question("gone.api.zerops.");
        engine.complete(&q, Ok(nxdomain("gone.api.zerops.", 30)), t0);

        let Decision::Answer(cached) = engine.handle(&q, t0 + Duration::from_secs(10)) else {
            panic!("not cached")
        };
        assert_eq!(cached.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(cached.authorities[0].ttl, 20);
        assert!(matches!(
            engine.handle(&q, t0 + Duration::from_secs(30)),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn failures_give_servfail_uncached_and_no_server_gives_refused() {
        let mut engine = Engine::new(vec![], false);
        let t0 = Instant::now();

        let Decision::Answer(refused) = engine.handle(&question("example.com."), t0) else {
            panic!()
        };
        let Decision::Answer(no_project) = engine.handle(&question("api.zerops."), t0) else {
            panic!()
        };
        let failed = engine.complete(&question("x.zerops."), Err("silent".into()), t0);

        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        assert_eq!(no_project.metadata.response_code, ResponseCode::Refused);
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(engine.stats().failures, 1);
        assert_eq!(engine.stats().last_error.as_deref(), Some("silent"));
    }

    #[test]
    fn the_doh_canary_is_nxdomain_in_any_letter_case_and_its_neighbours_are_not() {
        let mut engine = Engine::new(vec![project("demo", "10.0.0.1:53", 1, 0)], true);
        let t0 = Instant::now();

        for name in ["use-application-dns.net.", "Use-Application-DNS.NET."] {
            let Decision::Answer(answer) = engine.handle(&question(name), t0) else {
                panic!("{name} was forwarded")
            };
            assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(answer.answers.is_empty());
        }
        for name in ["www.use-application-dns.net.", "application-dns.net.", "example.net."] {
            assert_eq!(
                engine.handle(&question(name), t0),
                Decision::Forward(Route::Upstream),
                "{name}"
            );
        }
        assert!(matches!(
            engine.handle(&question("use-application-dns.net.zerops."), t0),
            Decision::Forward(Route::Projects { .. })
        ));
        assert_eq!(engine.stats().answered, 2);
    }

    #[test]
    fn bare_names_ask_projects_in_priority_then_recency_order() {
        let mut engine = Engine::new(
            vec![
                project("old", "10.0.0.1:53", 100, 0),
                project("new", "10.0.0.2:53", 200, 0),
                project("pinned", "10.0.0.3:53", 50, 5),
            ],
            true,
        );
        let servers = |d: Decision| match d {
            Decision::Forward(Route::Projects { servers, in_order }) => (servers, in_order),
            other => panic!("{other:?}"),
        };
        let (order, in_order) = servers(engine.handle(&question("api.zerops."), Instant::now()));

        let expect: Vec<SocketAddr> = ["10.0.0.3:53", "10.0.0.2:53", "10.0.0.1:53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(order, expect);
        assert!(in_order);
        assert!(!servers(engine.handle(&question("node1.api.zerops."), Instant::now())).1);
    }

    #[test]
    fn a_project_leaving_takes_its_cached_names_along() {
        let mut engine = Engine::new(vec![project("demo", "10.0.0.1:53", 1, 0)], true);
        let t0 = Instant::now();
        let q = question("node1.app.zerops.");
        engine.complete(&q, Ok(positive("node1.app.zerops.", 60)), t0);
        engine.complete(&question("example.com."), Ok(positive("example.com.", 60)), t0);

        engine.set_projects(vec![]);

        assert!(
            matches!(engine.handle(&q, t0), Decision::Answer(m) if m.metadata.response_code == ResponseCode::Refused)
        );
        assert!(matches!(engine.handle(&question("example.com."), t0), Decision::Answer(m) if is_positive(&m)));
    }

    #[test]
    fn settling_several_projects_answers() {
        let yes = || Some(Ok(positive("api.zerops.", 60)));
        let no = || Some(Ok(nxdomain("api.zerops.", 60)));
        let failed = || Some(Err("timeout".to_string()));

        // Full names: the first positive wins, whoever it is.
        assert!(settle(&[None, yes()], false).is_some_and(|a| is_positive(&a.unwrap())));
        assert_eq!(settle(&[None, no()], false), None);
        let all_no = settle(&[failed(), no()], false).unwrap().unwrap();
        assert_eq!(all_no.metadata.response_code, ResponseCode::NXDomain);
        assert!(settle(&[failed(), failed()], false).unwrap().is_err());

        // Bare names: the preferred project's answer, unless it has none.
        assert_eq!(settle(&[None, yes()], true), None);
        assert!(settle(&[no(), yes()], true).is_some_and(|a| is_positive(&a.unwrap())));
        assert!(settle(&[failed(), yes()], true).is_some_and(|a| is_positive(&a.unwrap())));
        assert!(settle(&[yes(), None], true).is_some_and(|a| is_positive(&a.unwrap())));
    }
}
