//! The forwarder's upstream side on hickory-resolver's `NameServerPool`: its connections (UDP,
//! TCP when an answer comes back truncated), its server order and its deadline. The pool is used
//! at its `DnsHandle::send` level rather than through `Resolver`, because the resolver turns an
//! answer into records or an error: we need the answer as the server gave it (rcode, SOA,
//! authority records, AA and AD flags) and to send the client's own RD, CD and DO bits. Even the
//! pool reports an NXDOMAIN or NODATA as a `NoRecords` error, which keeps the rcode and the
//! authority records (SOA, NSEC) but not the header: such answers lose the AD flag (positive ones
//! keep it).
//!
//! Also here: a host-name endpoint resolved by hickory's resolver rather than the system
//! resolver, which may point at a responder that is not running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, MessageType, OpCode};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts, ServerOrderingStrategy};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::engine::Question;

/// The payload we offer upstream and in our own answers' OPT record (DNS flag day 2020).
pub const UDP_PAYLOAD: u16 = 1232;

/// Servers asked as one: in order, the next one when one fails, within one deadline.
pub struct Upstream {
    pool: NameServerPool<TokioRuntimeProvider>,
    deadline: Duration,
}

impl Upstream {
    /// `deadline` bounds every question, whatever the servers and the pool's retries do.
    pub fn new(servers: &[SocketAddr], deadline: Duration) -> Result<Upstream> {
        let mut options = ResolverOpts::default();
        options.timeout = deadline;
        options.attempts = 1;
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        let configs = servers.iter().map(|s| {
            let mut config = NameServerConfig::udp_and_tcp(s.ip());
            for connection in &mut config.connections {
                connection.port = s.port();
            }
            config
        });
        let context = PoolContext::new(options, TlsConfig::new().map_err(|e| anyhow!("{e}"))?);
        Ok(Upstream {
            pool: NameServerPool::from_config(configs, Arc::new(context), TokioRuntimeProvider::default()),
            deadline,
        })
    }

    /// The servers' answer to `question`, or why there is none.
    pub async fn ask(&self, question: &Question) -> Result<Message, String> {
        let mut message = Message::new(0, MessageType::Query, OpCode::Query);
        message.add_query(question.query.clone());
        message.metadata.recursion_desired = question.recursion_desired;
        message.metadata.checking_disabled = question.checking_disabled;
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.edns_payload_len = UDP_PAYLOAD;
        options.edns_set_dnssec_ok = question.dnssec_ok;
        options.recursion_desired = question.recursion_desired;
        message
            .edns
            .get_or_insert_with(Default::default)
            .set_max_payload(UDP_PAYLOAD)
            .set_dnssec_ok(question.dnssec_ok);
        let send = self.pool.send(DnsRequest::new(message, options)).first_answer();
        match tokio::time::timeout(self.deadline, send).await {
            Ok(Ok(response)) => Ok(response.into_message()),
            Ok(Err(error)) => answer_from_error(question, error),
            Err(_) => Err(format!("no answer within {} ms", self.deadline.as_millis())),
        }
    }
}

/// The pool reports some answers as errors; they go back to the client as answers.
fn answer_from_error(question: &Question, error: NetError) -> Result<Message, String> {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.add_query(question.query.clone());
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            message.metadata.response_code = no_records.response_code;
            match (no_records.authorities, no_records.soa) {
                (Some(authorities), _) => message.authorities = authorities.to_vec(),
                (None, Some(soa)) => message.authorities = vec![soa.into_record_of_rdata()],
                (None, None) => {}
            }
            Ok(message)
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            message.metadata.response_code = code;
            Ok(message)
        }
        NetError::Timeout => Err("no answer in time".into()),
        other => Err(other.to_string()),
    }
}

/// `host:port` or `ip:port` to an address, asking `nameservers` through hickory's resolver
/// (never the system resolver, which may be pointed at a responder that is gone).
pub async fn resolve_endpoint(endpoint: &str, nameservers: &[SocketAddr]) -> Result<SocketAddr> {
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .with_context(|| format!("the endpoint {endpoint} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("the endpoint {endpoint} has no valid port"))?;
    if nameservers.is_empty() {
        bail!("the endpoint {endpoint} is a host name and this host has no nameserver to resolve it");
    }
    let servers = nameservers.iter().map(|s| {
        let mut config = NameServerConfig::udp_and_tcp(s.ip());
        for connection in &mut config.connections {
            connection.port = s.port();
        }
        config
    });
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    let resolver = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers.collect()),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .map_err(|e| anyhow!("{e}"))?;
    let lookup = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("resolving the endpoint {endpoint}"))?;
    let ip = lookup
        .iter()
        .next()
        .with_context(|| format!("the endpoint {endpoint} has no address"))?;
    Ok(SocketAddr::new(ip, port))
}
