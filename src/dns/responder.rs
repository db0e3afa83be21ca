//! The responder: hickory-server's `Server` owns the UDP and TCP listeners (framing, truncation
//! to the client's payload, REFUSED for sources that are not this machine); our `RequestHandler`
//! asks `Engine` what to do with each question and asks the chosen servers through `Upstream`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};

use super::engine::{settle, Decision, Engine, ProjectDns, Question, Route};
use super::upstream::{Upstream, UDP_PAYLOAD};
use super::{DnsStats, ResponderConfig};

const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_RESPONSE_BUFFER: usize = 64;

/// A running responder; stops on `shutdown` or drop.
pub struct Responder {
    handler: Arc<Shared>,
    local_addr: SocketAddr,
    server: Server<Handler>,
}

impl Responder {
    /// Binds UDP and TCP on `cfg.listen` (port 0 picks one port free for both) and serves on the
    /// current tokio runtime.
    pub async fn start(cfg: ResponderConfig) -> Result<Responder> {
        let (udp, tcp) = bind(cfg.listen).await?;
        let local_addr = udp.local_addr()?;
        tracing::info!(%local_addr, projects = ?cfg.projects.iter().map(|p| p.dns).collect::<Vec<_>>(), upstreams = ?cfg.upstreams, "dns responder listening");
        let upstream = if cfg.upstreams.is_empty() {
            None
        } else {
            Some(Arc::new(Upstream::new(&cfg.upstreams, cfg.upstream_timeout)?))
        };
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(Vec::new(), upstream.is_some())),
            projects: Mutex::new(HashMap::new()),
            upstream,
            timeout: cfg.upstream_timeout,
        });
        shared.set_projects(cfg.projects)?;
        // Only this machine: loopback, or the address we listen on (the tunnel's own).
        let allowed: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().expect("a network"),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpNet::from(local_addr.ip()),
        ];
        let mut server = Server::with_access(Handler(shared.clone()), [], allowed);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        Ok(Responder {
            handler: shared,
            local_addr,
            server,
        })
    }

    pub fn stats(&self) -> DnsStats {
        lock(&self.handler.engine).stats()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the projects whose names are served.
    pub fn set_projects(&self, projects: Vec<ProjectDns>) -> Result<()> {
        self.handler.set_projects(projects)
    }

    pub fn projects(&self) -> Vec<ProjectDns> {
        lock(&self.handler.engine).projects().to_vec()
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "dns responder stopped with an error");
        }
    }
}

#[cfg(test)]
impl Responder {
    /// Panics a thread while it holds the cache's lock, as a bug in a query's handling would.
    pub(super) fn poison(&self) {
        let shared = self.handler.clone();
        let panicked = std::thread::spawn(move || {
            let _held = shared.engine.lock();
            panic!("a query's handling panicked");
        })
        .join();
        assert!(panicked.is_err() && self.handler.engine.is_poisoned());
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
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

/// A lock whose holder panicked is taken over: the cache and the project table stay usable
/// (at worst an entry is stale), where a panic on every later query would end all names.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        tracing::error!("a DNS task panicked while holding a lock; going on with what it left");
        mutex.clear_poison();
        PoisonError::into_inner(poisoned)
    })
}

struct Shared {
    engine: Mutex<Engine>,
    /// One pool per project DNS server, so each keeps its own connections and statistics.
    projects: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    upstream: Option<Arc<Upstream>>,
    timeout: Duration,
}

impl Shared {
    fn set_projects(&self, projects: Vec<ProjectDns>) -> Result<()> {
        let mut pools = lock(&self.projects);
        let mut kept = HashMap::new();
        for project in &projects {
            let pool = match pools.remove(&project.dns) {
                Some(pool) => pool,
                None => Arc::new(Upstream::new(&[project.dns], self.timeout)?),
            };
            kept.insert(project.dns, pool);
        }
        *pools = kept;
        lock(&self.engine).set_projects(projects);
        Ok(())
    }

    async fn forward(&self, question: &Question, route: Route) -> Result<Message, String> {
        let (servers, in_order) = match route {
            Route::Upstream => {
                let upstream = self.upstream.as_ref().ok_or("no upstream")?;
                return upstream.ask(question).await;
            }
            Route::Projects { servers, in_order } => (servers, in_order),
        };
        let pools: Vec<Option<Arc<Upstream>>> = {
            let pools = lock(&self.projects);
            servers.iter().map(|s| pools.get(s).cloned()).collect()
        };
        if let [Some(only)] = pools.as_slice() {
            return only.ask(question).await;
        }
        let mut answers: Vec<Option<Result<Message, String>>> = vec![None; pools.len()];
        let mut asking: FuturesUnordered<_> = pools
            .into_iter()
            .enumerate()
            .map(|(i, pool)| async move {
                match pool {
                    Some(pool) => (i, pool.ask(question).await),
                    None => (i, Err("the project left".to_string())),
                }
            })
            .collect();
        // Each ask is bounded by the same deadline, so this loop is too.
        while let Some((i, answer)) = asking.next().await {
            answers[i] = Some(answer);
            if let Some(settled) = settle(&answers, in_order) {
                return settled;
            }
        }
        Err("no project answered".into())
    }
}

struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let shared = &self.0;
        let client_edns = request.edns.as_ref();
        // Our OPT record carries the client's payload limit (never more than ours), which is
        // also where hickory-server truncates a UDP answer.
        let edns = client_edns.map(|client| {
            let mut edns = Edns::new();
            edns.set_max_payload(client.max_payload().clamp(512, UDP_PAYLOAD))
                .set_dnssec_ok(client.flags().dnssec_ok);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        let info = match request.request_info() {
            Err(_) => Err(ResponseCode::FormErr),
            Ok(_) if request.metadata.op_code != OpCode::Query => Err(ResponseCode::NotImp),
            Ok(info) => Ok(Question {
                query: info.query.original().clone(),
                recursion_desired: request.metadata.recursion_desired,
                checking_disabled: request.metadata.checking_disabled,
                dnssec_ok: client_edns.is_some_and(|e| e.flags().dnssec_ok),
            }),
        };
        let question = match info {
            Ok(question) => question,
            Err(code) => {
                metadata.response_code = code;
                return send(&mut response, builder.build_no_records(metadata), request).await;
            }
        };

        let decision = lock(&shared.engine).handle(&question, Instant::now());
        let answer = match decision {
            Decision::Answer(answer) => answer,
            Decision::Forward(route) => {
                let result = shared.forward(&question, route).await;
                lock(&shared.engine).complete(&question, result, Instant::now())
            }
        };
        metadata.response_code = answer.metadata.response_code;
        metadata.authoritative = answer.metadata.authoritative;
        metadata.authentic_data = answer.metadata.authentic_data;
        let reply = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        send(&mut response, reply, request).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    let id = request.metadata.id;
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, id, "dns: could not send an answer");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}
