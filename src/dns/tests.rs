//! The responder over real sockets against small DNS servers on loopback.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{ProjectDns, Responder, ResponderConfig};

#[tokio::test]
async fn project_names_are_forwarded_and_cached_in_any_letter_case() {
    let project = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![project.addr], vec![]).await;

    let first = ask(&responder, "node-id-13.runtime.api.zerops.", RecordType::A).await;
    let second = ask(&responder, "Node-ID-13.runtime.API.zerops.", RecordType::A).await;

    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&first), ["198.18.1.2"]);
    assert_eq!(addresses(&second), addresses(&first));
    assert_eq!(second.queries[0].name.to_ascii(), "Node-ID-13.runtime.API.zerops.");
    assert_eq!(project.count(), 1, "the second answer comes from the cache");
    let stats = responder.stats();
    assert_eq!(
        (stats.queries, stats.answered, stats.cache_hits, stats.failures),
        (2, 2, 1, 0)
    );
}

#[tokio::test]
async fn other_names_go_to_the_upstreams_or_are_refused_without_them() {
    let project = FakeDns::start(FakeDns::default()).await;
    let isp = FakeDns::start(FakeDns::default()).await;
    let with = start(vec![project.addr], vec![isp.addr]).await;
    let without = start(vec![project.addr], vec![]).await;

    let answered = ask(&with, "example.com.", RecordType::AAAA).await;
    let refused = ask(&without, "example.com.", RecordType::A).await;

    assert_eq!(answered.metadata.response_code, ResponseCode::NoError);
    assert_eq!(isp.count(), 1);
    assert_eq!(project.count(), 0);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn a_panic_under_the_lock_does_not_end_all_later_queries() {
    let project = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![project.addr], vec![]).await;

    responder.poison();
    let first = ask(&responder, "node1.db.zerops.", RecordType::A).await;
    let second = ask(&responder, "example.com.", RecordType::A).await;

    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(second.metadata.response_code, ResponseCode::Refused);
    assert_eq!(responder.stats().queries, 2);
}

#[tokio::test]
async fn a_silent_upstream_gives_servfail_within_the_bound() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_tcp = TcpListener::bind(silent.local_addr().unwrap()).await.unwrap();
    let responder = Responder::start(ResponderConfig {
        upstream_timeout: Duration::from_secs(2),
        ..config(vec![silent.local_addr().unwrap()], vec![])
    })
    .await
    .unwrap();

    let asked = Instant::now();
    let answer = ask(&responder, "api.zerops.", RecordType::A).await;

    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        asked.elapsed() <= Duration::from_millis(2100),
        "took {:?}",
        asked.elapsed()
    );
    let stats = responder.stats();
    assert_eq!(stats.failures, 1);
    assert!(stats.last_error.is_some());
    drop(silent_tcp);
}

#[tokio::test]
async fn nxdomain_keeps_its_soa_nodata_too_and_upstream_rcodes_pass_through() {
    let project = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![project.addr], vec![]).await;

    let nx = ask(&responder, "nx.api.zerops.", RecordType::A).await;
    let nodata = ask(&responder, "nodata.api.zerops.", RecordType::A).await;
    let refused = ask(&responder, "refused.api.zerops.", RecordType::A).await;
    let servfail = ask(&responder, "servfail.api.zerops.", RecordType::A).await;

    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        matches!(nx.authorities.as_slice(), [r] if matches!(r.data, RData::SOA(_))),
        "{nx:?}"
    );
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(matches!(nodata.authorities.as_slice(), [r] if matches!(r.data, RData::SOA(_))));
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(servfail.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(responder.stats().failures, 0, "an upstream's SERVFAIL is an answer");

    let again = ask(&responder, "nx.api.zerops.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(project.count(), 4, "the NXDOMAIN was cached for its SOA TTL");
}

#[tokio::test]
async fn the_do_bit_goes_upstream_and_the_ad_flag_comes_back() {
    let isp = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![], vec![isp.addr]).await;

    let mut query = message("signed.example.", RecordType::A, 9);
    query.set_edns({
        let mut edns = Edns::new();
        edns.set_max_payload(1232).set_dnssec_ok(true);
        edns
    });
    let signed = exchange_udp(&responder, &query).await;
    let plain = ask(&responder, "signed.example.", RecordType::A).await;

    assert!(signed.metadata.authentic_data, "AD from the upstream");
    assert!(signed.edns.as_ref().unwrap().flags().dnssec_ok, "DO echoed");
    assert!(!plain.metadata.authentic_data);
    assert_eq!(*isp.seen_dnssec_ok.lock().unwrap(), [true, false]);
}

#[tokio::test]
async fn a_large_answer_is_truncated_to_the_clients_payload_and_whole_over_tcp() {
    let isp = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![], vec![isp.addr]).await;

    let mut query = message("big.example.", RecordType::A, 11);
    query.set_edns({
        let mut edns = Edns::new();
        edns.set_max_payload(512);
        edns
    });
    let udp = exchange_udp(&responder, &query).await;
    let tcp = exchange_tcp(&responder, &query).await;

    assert!(udp.metadata.truncation, "TC over UDP");
    assert!(udp.to_vec().unwrap().len() <= 512);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), BIG_ANSWER);
    assert_eq!(tcp.metadata.id, 11);
}

#[tokio::test]
async fn garbage_gets_formerr_or_nothing_and_serving_goes_on() {
    let project = FakeDns::start(FakeDns::default()).await;
    let responder = start(vec![project.addr], vec![]).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(responder.local_addr()).await.unwrap();

    client.send(b"\x12\x34\x01\x00\x00\x01\xff\xff").await.unwrap();
    client
        .send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let len = timeout(Duration::from_secs(1), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let formerr = Message::from_vec(&buf[..len]).unwrap();
    let answer = ask(&responder, "api.zerops.", RecordType::A).await;

    assert_eq!(formerr.metadata.id, 0x1234);
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn several_projects_full_names_from_whoever_knows_them_bare_names_by_preference() {
    let demo = FakeDns::start(FakeDns {
        address: Ipv4Addr::new(198, 18, 1, 1),
        only: Some(
            ["node1.api.zerops.", "api.zerops.", "shared.zerops."]
                .into_iter()
                .collect(),
        ),
    })
    .await;
    let other = FakeDns::start(FakeDns {
        address: Ipv4Addr::new(198, 18, 2, 1),
        only: Some(
            ["node1.app.zerops.", "app.zerops.", "shared.zerops."]
                .into_iter()
                .collect(),
        ),
    })
    .await;
    let responder = start(vec![], vec![]).await;
    responder
        .set_projects(vec![project("demo", demo.addr, 100), project("other", other.addr, 200)])
        .unwrap();

    let full_demo = ask(&responder, "node1.api.zerops.", RecordType::A).await;
    let full_other = ask(&responder, "node1.app.zerops.", RecordType::A).await;
    let bare_demo = ask(&responder, "api.zerops.", RecordType::A).await;
    let bare_both = ask(&responder, "shared.zerops.", RecordType::A).await;
    let nobody = ask(&responder, "nothing.zerops.", RecordType::A).await;

    assert_eq!(addresses(&full_demo), ["198.18.1.1"]);
    assert_eq!(addresses(&full_other), ["198.18.2.1"]);
    assert_eq!(addresses(&bare_demo), ["198.18.1.1"]);
    assert_eq!(
        addresses(&bare_both),
        ["198.18.2.1"],
        "the most recent connection first"
    );
    assert_eq!(nobody.metadata.response_code, ResponseCode::NXDomain);

    // `other` leaves: its names are gone at once, not served from the cache.
    responder.set_projects(vec![project("demo", demo.addr, 100)]).unwrap();
    let gone = ask(&responder, "node1.app.zerops.", RecordType::A).await;
    let kept = ask(&responder, "node1.api.zerops.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(addresses(&kept), ["198.18.1.1"]);
}

fn project(id: &str, dns: SocketAddr, connected_at: u64) -> ProjectDns {
    ProjectDns {
        id: id.into(),
        name: id.into(),
        dns,
        connected_at,
        priority: 0,
    }
}

fn config(projects: Vec<SocketAddr>, upstreams: Vec<SocketAddr>) -> ResponderConfig {
    ResponderConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        projects: projects.into_iter().map(|dns| project("p", dns, 0)).collect(),
        upstreams,
        upstream_timeout: Duration::from_millis(1000),
    }
}

async fn start(projects: Vec<SocketAddr>, upstreams: Vec<SocketAddr>) -> Responder {
    Responder::start(config(projects, upstreams)).await.unwrap()
}

async fn ask(responder: &Responder, name: &str, rtype: RecordType) -> Message {
    exchange_udp(responder, &message(name, rtype, 42)).await
}

async fn exchange_udp(responder: &Responder, query: &Message) -> Message {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(responder.local_addr()).await.unwrap();
    client.send(&query.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let len = timeout(Duration::from_secs(3), client.recv(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(answer.metadata.id, query.metadata.id);
    answer
}

async fn exchange_tcp(responder: &Responder, query: &Message) -> Message {
    let mut stream = TcpStream::connect(responder.local_addr()).await.unwrap();
    write_frame(&mut stream, &query.to_vec().unwrap()).await;
    let raw = timeout(Duration::from_secs(3), read_frame(&mut stream))
        .await
        .expect("an answer in time");
    Message::from_vec(&raw).unwrap()
}

fn message(name: &str, rtype: RecordType, id: u16) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message
}

fn addresses(message: &Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await.unwrap();
}

const BIG_ANSWER: usize = 60;

/// A DNS server over UDP and TCP whose answers depend on the name's first label: `nx` NXDOMAIN,
/// `nodata` no records, `refused` and `servfail` those rcodes, `big` many records, `signed` AD
/// when asked with DO; anything else `address` (for names in `only`, when given; NXDOMAIN for
/// the rest). Counts the questions it was asked.
#[derive(Clone)]
struct FakeDns {
    address: Ipv4Addr,
    only: Option<HashSet<&'static str>>,
}

impl Default for FakeDns {
    fn default() -> FakeDns {
        FakeDns {
            address: Ipv4Addr::new(198, 18, 1, 2),
            only: None,
        }
    }
}

struct RunningDns {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
    seen_dnssec_ok: Arc<Mutex<Vec<bool>>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RunningDns {
    fn count(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

impl FakeDns {
    async fn start(self) -> RunningDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let queries = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let this = Arc::new(self);
        let (udp_this, udp_queries, udp_seen) = (this.clone(), queries.clone(), seen.clone());
        let udp = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, src) = socket.recv_from(&mut buf).await.unwrap();
                let request = Message::from_vec(&buf[..len]).unwrap();
                udp_queries.fetch_add(1, Ordering::SeqCst);
                udp_seen
                    .lock()
                    .unwrap()
                    .push(request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
                let mut response = udp_this.answer(&request);
                let limit = request.edns.as_ref().map_or(512, |e| e.max_payload() as usize);
                let mut bytes = response.to_vec().unwrap();
                if bytes.len() > limit {
                    response.answers.clear();
                    response.metadata.truncation = true;
                    bytes = response.to_vec().unwrap();
                }
                socket.send_to(&bytes, src).await.unwrap();
            }
        });
        let tcp = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let this = this.clone();
                tokio::spawn(async move {
                    let request = Message::from_vec(&read_frame(&mut stream).await).unwrap();
                    let response = this.answer(&request).to_vec().unwrap();
                    write_frame(&mut stream, &response).await;
                });
            }
        });
        RunningDns {
            addr,
            queries,
            seen_dnssec_ok: seen,
            tasks: [udp, tcp],
        }
    }

    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.queries = request.queries.clone();
        if let Some(edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(4096).set_dnssec_ok(edns.flags().dnssec_ok);
            response.set_edns(ours);
        }
        let query = &request.queries[0];
        let name = query.name.to_lowercase();
        let a = |address| Record::from_rdata(query.name.clone(), 60, RData::A(A(address)));
        let zone = name.base_name();
        let soa = Record::from_rdata(
            zone.clone(),
            30,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 3600, 600, 86400, 30)),
        );
        let known = self
            .only
            .as_ref()
            .is_none_or(|only| only.contains(name.to_ascii().as_str()));
        let first = name.iter().next().map(|l| String::from_utf8_lossy(l).into_owned());
        match first.as_deref() {
            _ if !known => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa);
            }
            Some("nx") => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa);
            }
            Some("nodata") => {
                response.add_authority(soa);
            }
            Some("refused") => response.metadata.response_code = ResponseCode::Refused,
            Some("servfail") => response.metadata.response_code = ResponseCode::ServFail,
            Some("big") => {
                for i in 0..BIG_ANSWER {
                    response.add_answer(a(Ipv4Addr::new(198, 18, 3, i as u8)));
                }
            }
            Some("signed") => {
                response.metadata.authentic_data = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                response.add_answer(a(self.address));
            }
            _ if query.query_type == RecordType::A => {
                response.add_answer(a(self.address));
            }
            _ => {}
        }
        response
    }
}

#[tokio::test]
async fn a_host_name_endpoint_is_resolved_by_the_given_nameservers() {
    let dns = FakeDns::start(FakeDns::default()).await;

    let by_name = super::upstream::resolve_endpoint("gw.example:51820", &[dns.addr])
        .await
        .unwrap();
    let literal = super::upstream::resolve_endpoint("[fd00::1]:51820", &[]).await.unwrap();
    let unknown = super::upstream::resolve_endpoint("nx.example:51820", &[dns.addr]).await;
    let no_port = super::upstream::resolve_endpoint("gw.example", &[dns.addr]).await;

    assert_eq!(by_name, "198.18.1.2:51820".parse().unwrap());
    assert_eq!(literal, "[fd00::1]:51820".parse().unwrap());
    assert!(format!("{:#}", unknown.unwrap_err()).contains("nx.example"));
    assert!(no_port.unwrap_err().to_string().contains("HOST:PORT"));
    assert!(dns.count() >= 1);
}
