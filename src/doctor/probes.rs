//! The part of `doctor` with IO: what the machine, the platform and the running daemons say,
//! gathered into [`Facts`] for [`super::evaluate`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use crate::access;
use crate::api::{ApiError, Client};
use crate::daemon::{Status, DNS_PROBE_NAME};
use crate::dns::{self, Mode};
use crate::family;

use super::{ConnectionFacts, Facts, MtuProbe, Resolver, RouteClashes, MINIMUM_MTU};

/// `logged_in`: whether a token was stored (else the token check says so, and nothing is sent).
pub async fn gather(client: &Client, logged_in: bool) -> Facts {
    let connections = access::connections().await;
    let resolver = resolver(&connections);
    let mut facts = Facts {
        host: crate::host::readiness(),
        resolver,
        api_base: client.base().to_string(),
        api: match logged_in {
            true => client
                .user_info()
                .await
                .map(|u| format!("{} ({})", u.full_name, u.email)),
            false => Err(ApiError::NoToken),
        },
        clock_skew_secs: clock_skew(client).await,
        connections: Vec::new(),
    };
    for status in connections {
        let responder = match status.dns.as_ref().and_then(|d| d.responder) {
            Some(addr) => Some(ask_responder(addr).await),
            None => None,
        };
        let system = ask_system().await;
        let path_mtu = match status.dns.as_ref().map(|d| d.project_dns) {
            Some(target) => probe_mtu(target, status.mtu).await,
            None => None,
        };
        let route_clashes = match crate::host::route_clashes(&status.networks, Some(&status.interface)) {
            Ok(Some(found)) => RouteClashes::Found(found.iter().map(ToString::to_string).collect()),
            Ok(None) => RouteClashes::NotChecked,
            Err(e) => RouteClashes::Unreadable(format!("{e:#}")),
        };
        facts.connections.push(ConnectionFacts {
            status,
            responder,
            system,
            path_mtu,
            route_clashes,
        });
    }
    facts
}

/// The mode in use by a connection, else the one `vpn up` would pick, and whether this process
/// could set it up.
fn resolver(connections: &[Status]) -> Result<Resolver, String> {
    if let Some(mode) = connections.iter().find_map(|s| s.dns.as_ref().map(|d| d.mode)) {
        return Ok(Resolver::InUse(mode));
    }
    let plan = dns::plan_host(Mode::Auto, dns::DEFAULT_LISTEN).map_err(|e| format!("{e:#}"))?;
    Ok(Resolver::WouldUse {
        mode: plan.mode,
        can_apply: dns::may_configure(plan.mode),
    })
}

const NET_TIMEOUT: Duration = Duration::from_secs(3);

/// From the `Date` of the API's region list (the one call without the token).
async fn clock_skew(client: &Client) -> Option<f64> {
    let url = format!("{}/api/rest/public/region/zcli", client.base());
    let http = reqwest::Client::builder().timeout(NET_TIMEOUT).build().ok()?;
    let response = http.get(url).send().await.ok()?;
    let date = response.headers().get(reqwest::header::DATE)?.to_str().ok()?;
    let theirs = httpdate::parse_http_date(date).ok()?;
    let skew = match theirs.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    Some(skew)
}

async fn ask_responder(addr: SocketAddr) -> Result<IpAddr, String> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;

    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(family::unspecified_for(addr.ip()))
            .await
            .map_err(|e| e.to_string())?;
        let id = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
        let bytes = dns::query(DNS_PROBE_NAME, RecordType::A, id)
            .ok_or_else(|| format!("{DNS_PROBE_NAME} is not a DNS name"))?;
        socket.send_to(&bytes, addr).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
        let answer = Message::from_vec(&buf[..len]).map_err(|e| e.to_string())?;
        let found = dns::addresses(&answer).next();
        found.ok_or_else(|| format!("no address ({:?})", answer.metadata.response_code))
    };
    tokio::time::timeout(NET_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {addr} in {} s", NET_TIMEOUT.as_secs())))
}

/// `None` when `ping` cannot be run at all.
async fn probe_mtu(target: IpAddr, mtu: u16) -> Option<MtuProbe> {
    let full_size = ping_unfragmented(target, mtu).await?;
    let minimum = full_size || ping_unfragmented(target, MINIMUM_MTU).await?;
    Some(MtuProbe {
        target,
        mtu,
        full_size,
        minimum,
    })
}

/// One echo of exactly `packet` bytes (IP header included) that may not be fragmented.
async fn ping_unfragmented(target: IpAddr, packet: u16) -> Option<bool> {
    let (program, args) = crate::platform::ping_unfragmented(target, packet);
    let out = tokio::process::Command::new(program)
        .args(&args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(NET_TIMEOUT, out).await {
        Ok(Ok(out)) => Some(out.status.success()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "cannot run ping; the path MTU is not measured");
            None
        }
        Err(_) => Some(false),
    }
}

async fn ask_system() -> Result<IpAddr, String> {
    match tokio::time::timeout(NET_TIMEOUT, tokio::net::lookup_host((DNS_PROBE_NAME, 0))).await {
        Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()).ok_or_else(|| "no address".to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {} s", NET_TIMEOUT.as_secs())),
    }
}
