//! The embedded responder: UDP and TCP on a local address, `zerops.` forwarded to the project DNS,
//! everything else to the host's original upstreams, answers cached for their TTL, SERVFAIL when
//! no upstream answers in time. Queries go out as the client's own bytes (new id) and answers come
//! back as the upstream's own bytes, so EDNS options and record types pass through untouched.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::{DnsStats, ResponderConfig, PROJECT_ZONE};

const CACHE_CAPACITY: usize = 4096;
/// Longest an answer is kept, whatever its TTL says: project names change as containers move.
const MAX_CACHE_TTL: u32 = 3600;
const MAX_UDP_INFLIGHT: usize = 1024;
const MAX_TCP_CONNECTIONS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The payload we advertise in our own answers' OPT record.
const OUR_UDP_PAYLOAD: u16 = 1232;

/// A running responder; stops on `shutdown` or drop.
pub struct Responder {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Binds UDP and TCP on `cfg.listen` (port 0 picks one port free for both) and serves on the
    /// current tokio runtime.
    pub async fn start(cfg: ResponderConfig) -> Result<Responder> {
        let (udp, tcp) = bind(cfg.listen).await?;
        let local_addr = udp.local_addr()?;
        tracing::info!(%local_addr, project_dns = %cfg.project_dns, upstreams = ?cfg.upstreams, "dns responder listening");
        let shared = Arc::new(Shared {
            zone: Name::from_ascii(PROJECT_ZONE).expect("a valid zone name"),
            listen_ip: local_addr.ip(),
            cfg,
            cache: Mutex::new(Cache::default()),
            stats: Mutex::new(DnsStats::default()),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(shared.clone(), Arc::new(udp))),
            tokio::spawn(serve_tcp(shared.clone(), tcp)),
        ];
        Ok(Responder {
            shared,
            local_addr,
            tasks,
        })
    }

    pub fn stats(&self) -> DnsStats {
        self.shared.stats.lock().expect("stats lock").clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let hint = "(binding port 53 needs root or CAP_NET_BIND_SERVICE, and nothing else on it)";
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("listening for DNS on udp {listen} {hint}"))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The port the kernel picked for UDP may be taken for TCP: pick again.
            Err(_) if listen.port() == 0 => continue,
            Err(e) => return Err(e).with_context(|| format!("listening for DNS on tcp {addr} {hint}")),
        }
    }
    bail!("found no port free for both UDP and TCP on {}", listen.ip())
}

async fn serve_udp(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut inflight = JoinSet::new();
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // Transient (an ICMP error on some systems); never a reason to stop serving.
                tracing::debug!(error = %e, "dns: udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while inflight.try_join_next().is_some() {}
        if !shared.accepts(src.ip()) || inflight.len() >= MAX_UDP_INFLIGHT {
            tracing::trace!(%src, "dns: dropped a datagram");
            continue;
        }
        // Cached names are answered right here: no task, no wait behind forwarded queries.
        if let Some(answer) = shared.answer_from_cache(&buf[..len], Transport::Udp) {
            let _ = socket.send_to(&answer, src).await;
            continue;
        }
        let packet = buf[..len].to_vec();
        let (shared, socket) = (shared.clone(), socket.clone());
        inflight.spawn(async move {
            if let Some(answer) = shared.answer(&packet, Transport::Udp).await {
                let _ = socket.send_to(&answer, src).await;
            }
        });
    }
}

async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "dns: tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if !shared.accepts(src.ip()) || connections.len() >= MAX_TCP_CONNECTIONS {
            continue;
        }
        connections.spawn(serve_tcp_connection(shared.clone(), stream));
    }
}

async fn serve_tcp_connection(shared: Arc<Shared>, mut stream: TcpStream) {
    loop {
        let Ok(Ok(query)) = timeout(TCP_IDLE, read_frame(&mut stream)).await else {
            return;
        };
        let Some(answer) = shared.answer(&query, Transport::Tcp).await else {
            return;
        };
        if write_frame(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

struct Shared {
    cfg: ResponderConfig,
    zone: Name,
    listen_ip: IpAddr,
    cache: Mutex<Cache>,
    stats: Mutex<DnsStats>,
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

impl Shared {
    /// Only this machine: loopback sources, or ours when listening on the tunnel's address.
    fn accepts(&self, src: IpAddr) -> bool {
        src.is_loopback() || src == self.listen_ip
    }

    fn cached_reply(&self, mut cached: Message, request: &Message, limit: usize) -> Option<Vec<u8>> {
        tracing::trace!(name = ?request.queries.first().map(|q| &q.name), "dns: cache hit");
        self.count(|s| {
            s.answered += 1;
            s.cache_hits += 1;
        });
        cached.metadata.id = request.metadata.id;
        cached.metadata.recursion_desired = request.metadata.recursion_desired;
        cached.queries = request.queries.clone();
        if request.edns.is_none() {
            cached.edns = None;
        }
        let code = cached.metadata.response_code;
        fit(cached.to_vec().ok()?, code, request, limit)
    }

    /// The cached answer to a well-formed query, if there is one.
    fn answer_from_cache(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        let [query] = request.queries.as_slice() else {
            return None;
        };
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            return None;
        }
        let cached = self.cache.lock().expect("cache lock").get(query, Instant::now())?;
        self.count(|s| s.queries += 1);
        self.cached_reply(cached, &request, transport.limit(&request))
    }

    /// The answer to one packet, or None when it deserves none (not a query, or unparseable
    /// beyond its header).
    async fn answer(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(e) => {
                tracing::trace!(error = %e, len = packet.len(), "dns: malformed query");
                return format_error(packet);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        if request.metadata.op_code != OpCode::Query {
            return encode(&reply(&request, ResponseCode::NotImp));
        }
        let [query] = request.queries.as_slice() else {
            return encode(&reply(&request, ResponseCode::FormErr));
        };
        self.count(|s| s.queries += 1);
        let limit = transport.limit(&request);

        let cached = self.cache.lock().expect("cache lock").get(query, Instant::now());
        if let Some(cached) = cached {
            return self.cached_reply(cached, &request, limit);
        }

        let upstreams = if self.zone.zone_of(&query.name) {
            std::slice::from_ref(&self.cfg.project_dns)
        } else {
            self.cfg.upstreams.as_slice()
        };
        if upstreams.is_empty() {
            tracing::trace!(name = %query.name, rtype = %query.query_type, "dns: refused, no upstream for it");
            self.count(|s| s.answered += 1);
            return encode(&reply(&request, ResponseCode::Refused));
        }
        match forward(packet, query, upstreams, self.cfg.upstream_timeout).await {
            Ok((mut raw, response)) => {
                tracing::trace!(name = %query.name, rtype = %query.query_type, rcode = %response.metadata.response_code, "dns: answered");
                self.count(|s| s.answered += 1);
                let code = response.metadata.response_code;
                self.cache
                    .lock()
                    .expect("cache lock")
                    .insert(query, response, Instant::now());
                raw[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
                fit(raw, code, &request, limit)
            }
            Err(error) => {
                tracing::debug!(name = %query.name, rtype = %query.query_type, %error, "dns: no answer, SERVFAIL");
                self.count(|s| {
                    s.failures += 1;
                    s.last_error = Some(error);
                });
                encode(&reply(&request, ResponseCode::ServFail))
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut DnsStats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }
}

impl Transport {
    fn limit(self, request: &Message) -> usize {
        match self {
            Transport::Udp => request
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().clamp(512, 4096) as usize),
            Transport::Tcp => u16::MAX as usize,
        }
    }
}

/// Tries the upstreams in order within one overall budget; the first answer wins.
async fn forward(
    packet: &[u8],
    query: &Query,
    upstreams: &[SocketAddr],
    budget: Duration,
) -> std::result::Result<(Vec<u8>, Message), String> {
    let deadline = Instant::now() + budget;
    let mut errors = Vec::new();
    for (i, &upstream) in upstreams.iter().enumerate() {
        // A silent upstream must leave the later ones a share of the budget.
        let share = deadline.saturating_duration_since(Instant::now()) / (upstreams.len() - i) as u32;
        match timeout(share, exchange(packet, query, upstream)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => errors.push(format!("{upstream}: {e:#}")),
            Err(_) => errors.push(format!("{upstream}: no answer within {} ms", share.as_millis())),
        }
    }
    Err(errors.join("; "))
}

/// One query to one upstream over UDP, again over TCP when the answer is truncated.
async fn exchange(packet: &[u8], query: &Query, upstream: SocketAddr) -> Result<(Vec<u8>, Message)> {
    let id = rand_core::OsRng.next_u32() as u16;
    let mut out = packet.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("a valid address");
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(&out).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await?;
        let Some(response) = Message::from_vec(&buf[..len]).ok().filter(|r| answers(r, id, query)) else {
            continue;
        };
        if response.metadata.truncation {
            return exchange_tcp(&out, id, query, upstream).await;
        }
        return Ok((buf[..len].to_vec(), response));
    }
}

async fn exchange_tcp(out: &[u8], id: u16, query: &Query, upstream: SocketAddr) -> Result<(Vec<u8>, Message)> {
    let mut stream = TcpStream::connect(upstream).await.context("tcp")?;
    write_frame(&mut stream, out).await.context("tcp")?;
    loop {
        let raw = read_frame(&mut stream).await.context("tcp")?;
        if let Some(response) = Message::from_vec(&raw).ok().filter(|r| answers(r, id, query)) {
            return Ok((raw, response));
        }
    }
}

/// Whether `response` answers our query: a forged or stale datagram must not.
fn answers(response: &Message, id: u16, query: &Query) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && matches!(response.queries.as_slice(), [q] if q.name == query.name
            && q.query_type == query.query_type
            && q.query_class == query.query_class)
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// An answer too big for the client's UDP payload goes out truncated, so it retries over TCP.
fn fit(answer: Vec<u8>, code: ResponseCode, request: &Message, limit: usize) -> Option<Vec<u8>> {
    if answer.len() <= limit {
        return Some(answer);
    }
    let mut truncated = reply(request, code);
    truncated.metadata.truncation = true;
    encode(&truncated)
}

/// An empty answer to `request` with `code`.
fn reply(request: &Message, code: ResponseCode) -> Message {
    let mut message = Message::response(request.metadata.id, request.metadata.op_code);
    message.metadata.recursion_desired = request.metadata.recursion_desired;
    message.metadata.recursion_available = true;
    message.metadata.response_code = code;
    message.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD);
        message.set_edns(edns);
    }
    message
}

/// FORMERR for a packet with a query's header but an unreadable body; nothing for anything less.
fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr))
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    message
        .to_vec()
        .inspect_err(|e| tracing::debug!(error = %e, "dns: could not encode an answer"))
        .ok()
}

/// Answers by (name, type, class), names compared case-insensitively.
#[derive(Default)]
struct Cache {
    entries: HashMap<(Name, RecordType, DNSClass), Entry>,
}

struct Entry {
    response: Message,
    stored: Instant,
    expires: Instant,
}

impl Cache {
    /// A live answer with its TTLs counted down to now.
    fn get(&mut self, query: &Query, now: Instant) -> Option<Message> {
        let key = key(query);
        let entry = self.entries.get(&key)?;
        if entry.expires <= now {
            self.entries.remove(&key);
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

    fn insert(&mut self, query: &Query, response: Message, now: Instant) {
        let Some(ttl) = cache_ttl(&response).filter(|&t| t > 0) else {
            return;
        };
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, e| e.expires > now);
        }
        if self.entries.len() >= CACHE_CAPACITY {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            if let Some(soonest) = soonest {
                self.entries.remove(&soonest);
            }
        }
        let expires = now + Duration::from_secs(ttl.min(MAX_CACHE_TTL).into());
        self.entries.insert(
            key(query),
            Entry {
                response,
                stored: now,
                expires,
            },
        );
    }
}

fn key(query: &Query) -> (Name, RecordType, DNSClass) {
    (query.name.clone(), query.query_type, query.query_class)
}

/// How long an answer may be cached: the smallest answer TTL, or for a negative answer the SOA's
/// (RFC 2308); None for failures and truncated answers.
fn cache_ttl(response: &Message) -> Option<u32> {
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
    use std::sync::atomic::{AtomicU64, Ordering};

    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::Record;

    use super::*;

    #[tokio::test]
    async fn project_names_are_forwarded_and_cached() {
        let project = FakeDns::start(60).await;
        let responder = start(project.addr, vec![]).await;

        let first = ask(&responder, "node-id-13.runtime.api.zerops.", RecordType::A).await;
        let second = ask(&responder, "Node-ID-13.runtime.API.zerops.", RecordType::A).await;

        assert_eq!(first.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&first), vec!["198.18.1.2".to_string()]);
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
    async fn an_expired_answer_is_fetched_again() {
        let project = FakeDns::start(1).await;
        let responder = start(project.addr, vec![]).await;

        ask(&responder, "api.zerops.", RecordType::A).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = ask(&responder, "api.zerops.", RecordType::A).await;

        assert_eq!(addresses(&again), vec!["198.18.1.2".to_string()]);
        assert_eq!(project.count(), 2);
    }

    #[tokio::test]
    async fn other_names_go_to_the_upstreams_or_are_refused_without_them() {
        let project = FakeDns::start(60).await;
        let isp = FakeDns::start(60).await;
        let with = start(project.addr, vec![isp.addr]).await;
        let without = start(project.addr, vec![]).await;

        let answered = ask(&with, "example.com.", RecordType::AAAA).await;
        let bare = ask(&with, "api.", RecordType::A).await;
        let refused = ask(&without, "example.com.", RecordType::A).await;

        assert_eq!(answered.metadata.response_code, ResponseCode::NoError);
        assert_eq!(bare.metadata.response_code, ResponseCode::NoError);
        assert_eq!(isp.count(), 2);
        assert_eq!(project.count(), 0);
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    }

    #[tokio::test]
    async fn a_silent_upstream_gives_servfail_in_bounded_time() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let responder = start(silent.local_addr().unwrap(), vec![]).await;

        let asked = Instant::now();
        let answer = ask(&responder, "api.zerops.", RecordType::A).await;

        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert!(
            asked.elapsed() < Duration::from_millis(900),
            "took {:?}",
            asked.elapsed()
        );
        let stats = responder.stats();
        assert_eq!(stats.failures, 1);
        assert!(stats.last_error.unwrap().contains("no answer within"));
    }

    #[tokio::test]
    async fn tcp_queries_are_answered() {
        let project = FakeDns::start(60).await;
        let responder = start(project.addr, vec![]).await;
        let mut stream = TcpStream::connect(responder.local_addr()).await.unwrap();

        write_frame(&mut stream, &query("node1.db.postgres.zerops.", RecordType::A, 7))
            .await
            .unwrap();
        let answer = Message::from_vec(&read_frame(&mut stream).await.unwrap()).unwrap();

        assert_eq!(answer.metadata.id, 7);
        assert_eq!(addresses(&answer), vec!["198.18.1.2".to_string()]);
    }

    #[tokio::test]
    async fn garbage_gets_formerr_or_nothing_and_serving_goes_on() {
        let project = FakeDns::start(60).await;
        let responder = start(project.addr, vec![]).await;
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

    async fn start(project_dns: SocketAddr, upstreams: Vec<SocketAddr>) -> Responder {
        Responder::start(ResponderConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            project_dns,
            upstreams,
            upstream_timeout: Duration::from_millis(500),
        })
        .await
        .unwrap()
    }

    async fn ask(responder: &Responder, name: &str, rtype: RecordType) -> Message {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(responder.local_addr()).await.unwrap();
        client.send(&query(name, rtype, 42)).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let len = timeout(Duration::from_secs(3), client.recv(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let answer = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(answer.metadata.id, 42);
        answer
    }

    fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        message.to_vec().unwrap()
    }

    fn addresses(message: &Message) -> Vec<String> {
        message.answers.iter().map(|r| r.data.to_string()).collect()
    }

    /// A DNS server answering every A query with 198.18.1.2 and every other one with no
    /// records, all with one TTL; counts what it was asked.
    struct FakeDns {
        addr: SocketAddr,
        queries: Arc<AtomicU64>,
        _task: JoinHandle<()>,
    }

    impl FakeDns {
        async fn start(ttl: u32) -> FakeDns {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let queries = Arc::new(AtomicU64::new(0));
            let counter = queries.clone();
            let task = tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let (len, src) = socket.recv_from(&mut buf).await.unwrap();
                    let request = Message::from_vec(&buf[..len]).unwrap();
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut response = Message::response(request.metadata.id, OpCode::Query);
                    response.queries = request.queries.clone();
                    let q = &request.queries[0];
                    if q.query_type == RecordType::A {
                        let a = RData::A(A::new(198, 18, 1, 2));
                        response.add_answer(Record::from_rdata(q.name.clone(), ttl, a));
                    }
                    socket.send_to(&response.to_vec().unwrap(), src).await.unwrap();
                }
            });
            FakeDns {
                addr,
                queries,
                _task: task,
            }
        }

        fn count(&self) -> u64 {
            self.queries.load(Ordering::SeqCst)
        }
    }
}
