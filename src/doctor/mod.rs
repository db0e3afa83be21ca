//! `corridor doctor`: what a connection needs, checked one thing at a time, each with its fix.
//!
//! [`run`] = [`gather`], which asks the machine, the platform and the running daemons (the only
//! part with IO), then [`evaluate`], a pure function from those facts to checks.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::access;
use crate::api::{ApiError, Client};
use crate::daemon::{ConnectionState, Status, DNS_PROBE_NAME};
use crate::dns::{self, Mode};
use crate::host::Readiness;
use crate::store::Store;
use crate::vpn::{self, ApiSettings};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do about it, when it is not ok.
    pub fix: Option<String>,
}

/// What [`gather`] found out.
#[derive(Debug)]
pub struct Facts {
    /// What the tunnel needs from this OS.
    pub host: Readiness,
    /// The host resolver integration, or why `vpn up` could not plan one.
    pub resolver: Result<Resolver, String>,
    pub api_base: String,
    pub api: Result<String, ApiError>,
    /// Platform clock minus ours, in seconds; `None` when the API sent no usable `Date`.
    pub clock_skew_secs: Option<f64>,
    pub connections: Vec<ConnectionFacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// A connection uses this mode now.
    InUse(Mode),
    /// The mode `vpn up` would use, and whether this process may apply it.
    WouldUse { mode: Mode, can_apply: bool },
}

#[derive(Debug)]
pub struct ConnectionFacts {
    pub status: Status,
    /// The responder's answer for the probe name, asked directly.
    pub responder: Option<Result<IpAddr, String>>,
    /// The system resolver's answer for the same name.
    pub system: Result<IpAddr, String>,
    /// Full-size packets through the tunnel (`None`: not measured, no target or no `ping`).
    pub path_mtu: Option<MtuProbe>,
}

/// Pings with "don't fragment" through the tunnel to the project's DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuProbe {
    pub target: IpAddr,
    pub mtu: u16,
    pub full_size: bool,
    /// Whether packets of the IPv6 minimum MTU pass (asked only when full-size ones do not).
    pub minimum: bool,
}

/// IPv6's minimum link MTU: every path carries packets of this size.
pub const MINIMUM_MTU: u16 = 1280;

/// A handshake older than this means the session is gone (WireGuard rekeys every 2 minutes
/// while traffic flows, and keepalives keep it flowing).
pub const HANDSHAKE_STALE_SECS: f64 = 180.0;
/// More skew than this breaks TLS to the platform and makes logs hard to line up.
pub const CLOCK_SKEW_LIMIT_SECS: f64 = 60.0;

/// Every check, in order; the caller decides what a failed one means for the exit status.
pub async fn run(api: ApiSettings) -> Result<Vec<Check>> {
    let store = Store::open()?;
    let token = store.token()?;
    let logged_in = token.is_some();
    let client = vpn::client_with_token(&store, api, token.unwrap_or_default()).await?;
    Ok(evaluate(&gather(&client, logged_in).await))
}

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
        facts.connections.push(ConnectionFacts {
            status,
            responder,
            system,
            path_mtu,
        });
    }
    facts
}

/// Which ways in this machine allows: the tunnel needs privilege and the OS's tunnel device
/// (and IPv6 on Linux); the userspace mode needs only the API and UDP, so it is always there.
fn modes(facts: &Facts) -> Check {
    let (privileged, device, ipv6) = match &facts.host {
        Readiness::Linux { net_admin, tun, ipv6 } => (*net_admin, *tun, *ipv6),
        Readiness::MacOs { root, utun, .. } => (*root, utun.is_ok(), true),
        Readiness::Windows { elevated, wintun, .. } => (*elevated, wintun.is_ok(), true),
    };
    let tunnel = match (privileged, device, ipv6) {
        (true, true, true) => "tunnel (`vpn up`) possible",
        (true, true, false) => "tunnel (`vpn up`) not possible without IPv6",
        (true, false, _) => "tunnel (`vpn up`) not possible without the tunnel device",
        (false, _, _) => "tunnel (`vpn up`) not possible here without privilege",
    };
    check(
        "modes",
        true,
        format!("{tunnel}; userspace (`forward`, `connect`, `proxy`, `ssh-config --proxy`) possible, no root needed"),
        String::new(),
    )
}

/// The OS's own checks: what `vpn up` needs from it, each with that OS's fix.
fn host_checks(host: &Readiness) -> Vec<Check> {
    match host {
        Readiness::Linux { net_admin, tun, ipv6 } => vec![
            check(
                "privileges",
                *net_admin,
                if *net_admin {
                    "CAP_NET_ADMIN: this process can create the tunnel".into()
                } else {
                    "no CAP_NET_ADMIN: `vpn up` cannot create the tunnel".into()
                },
                format!(
                    "run `vpn up` with sudo, or once: `{}`",
                    crate::platform::grant_capabilities()
                ),
            ),
            check(
                "tun",
                *tun,
                if *tun {
                    "/dev/net/tun is there"
                } else {
                    "/dev/net/tun is missing"
                }
                .into(),
                "`sudo modprobe tun`; in a container, start it with `--device /dev/net/tun --cap-add NET_ADMIN`".into(),
            ),
            check(
                "ipv6",
                *ipv6,
                if *ipv6 {
                    "enabled"
                } else {
                    "disabled: the project network is IPv6"
                }
                .into(),
                "`sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0`".into(),
            ),
        ],
        Readiness::MacOs {
            root,
            utun,
            resolver_file,
        } => vec![
            check(
                "privileges",
                *root,
                if *root {
                    "root: this process can create the utun interface"
                } else {
                    "not root: `vpn up` cannot create the utun interface"
                }
                .into(),
                "run `vpn up` with sudo".into(),
            ),
            result_check("utun", utun, "the utun kernel control opens", "macOS builds utun in: this needs macOS 10.10 or later, outside a sandbox"),
            result_check(
                "resolver file",
                resolver_file,
                "/etc/resolver/zerops is free for corridor's",
                "move the other program's /etc/resolver/zerops aside, or connect with `--dns off` and use addresses",
            ),
        ],
        Readiness::Windows { elevated, wintun, nrpt } => vec![
            check(
                "privileges",
                *elevated,
                if *elevated {
                    "Administrator: this process can create the Wintun adapter"
                } else {
                    "not elevated: `vpn up` cannot create the Wintun adapter"
                }
                .into(),
                "run corridor from an Administrator terminal (right-click Terminal or PowerShell, \"Run as administrator\")".into(),
            ),
            result_check(
                "wintun",
                wintun,
                "wintun.dll beside corridor.exe loads",
                "download the zip from https://www.wintun.net and put its bin\\amd64\\wintun.dll beside corridor.exe",
            ),
            result_check(
                "nrpt",
                nrpt,
                "no Group Policy NRPT rules: corridor's local rule applies",
                "ask the machine's administrator to add a .zerops rule to the policy, or connect with `--dns off` and use addresses",
            ),
        ],
    }
}

/// How this OS's user gets a privileged `vpn up`.
fn elevate_hint(host: &Readiness) -> &'static str {
    match host {
        Readiness::Windows { .. } => "run `vpn up` from an Administrator terminal",
        Readiness::Linux { .. } | Readiness::MacOs { .. } => "run `vpn up` with sudo",
    }
}

fn result_check(name: &str, result: &Result<(), String>, ok: &str, fix: &str) -> Check {
    match result {
        Ok(()) => check(name, true, ok.into(), String::new()),
        Err(why) => check(name, false, why.clone(), fix.into()),
    }
}

pub fn evaluate(facts: &Facts) -> Vec<Check> {
    let mut checks = host_checks(&facts.host);
    checks.push(modes(facts));
    checks.push(match &facts.resolver {
        Ok(Resolver::InUse(mode)) => check(
            "resolver",
            true,
            format!("{} (in use)", mode_name(*mode)),
            String::new(),
        ),
        Ok(Resolver::WouldUse { mode, can_apply: true }) => check(
            "resolver",
            true,
            format!("{} (can be set up)", mode_name(*mode)),
            String::new(),
        ),
        Ok(Resolver::WouldUse { mode, can_apply: false }) => check(
            "resolver",
            false,
            format!("{}, but this process may not change it", mode_name(*mode)),
            format!("{} (or `--dns off` and use addresses)", elevate_hint(&facts.host)),
        ),
        Err(e) => check(
            "resolver",
            false,
            e.clone(),
            "see the message; `--dns off` skips it".into(),
        ),
    });
    checks.extend(api_checks(facts));
    for c in &facts.connections {
        checks.extend(connection_checks(c));
    }
    checks
}

fn api_checks(facts: &Facts) -> Vec<Check> {
    let base = &facts.api_base;
    let login = "`corridor login --token <token>` with a new personal access token".to_string();
    let mut checks = Vec::new();
    match &facts.api {
        Err(ApiError::NoToken) => checks.push(check("token", false, "not logged in".into(), login)),
        Ok(user) => {
            checks.push(check("api", true, format!("{base} answers"), String::new()));
            checks.push(check("token", true, format!("valid: {user}"), String::new()));
        }
        Err(e) if e.is_auth() => {
            checks.push(check("api", true, format!("{base} answers"), String::new()));
            checks.push(check("token", false, format!("rejected: {e}"), login));
        }
        Err(e) if e.status().is_some() => {
            checks.push(check(
                "api",
                false,
                format!("{base}: {e}"),
                "retry later; the platform reports a failure".into(),
            ));
        }
        Err(e) => checks.push(check(
            "api",
            false,
            format!("{base} unreachable: {e}"),
            "check the network, or the address (`--api`, CORRIDOR_API)".into(),
        )),
    }
    if let Some(skew) = facts.clock_skew_secs {
        checks.push(check(
            "clock",
            skew.abs() <= CLOCK_SKEW_LIMIT_SECS,
            format!("{:+} s against the platform", skew.round() as i64),
            "synchronise the clock: `sudo timedatectl set-ntp true`".into(),
        ));
    }
    checks
}

fn connection_checks(c: &ConnectionFacts) -> Vec<Check> {
    let s = &c.status;
    let name = |what: &str| format!("{what} ({})", s.project_name);
    let t = &s.tunnel;
    let fix = format!(
        "UDP to {} is blocked or the gateway is down: check firewalls, then `sudo corridor vpn up {} --auto-disconnect`",
        s.endpoint, s.project_name
    );
    let mut checks = vec![match (t.state, t.last_handshake_secs) {
        (ConnectionState::Connected, Some(age)) if age <= HANDSHAKE_STALE_SECS => check(
            &name("handshake"),
            true,
            format!("{age:.0} s ago with {}", s.endpoint),
            String::new(),
        ),
        (ConnectionState::Reconnecting, _) => check(
            &name("handshake"),
            false,
            format!(
                "{} has not answered for {:.0} s; reconnecting",
                s.endpoint,
                t.reconnecting_secs.unwrap_or_default()
            ),
            fix,
        ),
        (_, Some(age)) => check(
            &name("handshake"),
            false,
            format!("{age:.0} s ago: {} no longer answers", s.endpoint),
            fix,
        ),
        (_, None) => check(
            &name("handshake"),
            false,
            format!("never: {} does not answer", s.endpoint),
            fix,
        ),
    }];
    if let Some(probe) = &c.path_mtu {
        checks.push(mtu_check(&name("path mtu"), probe, &s.project_name));
    }
    if let Some(answer) = &c.responder {
        checks.push(dns_check(
            &name("dns responder"),
            answer,
            "the tunnel or the project's DNS does not answer: check the handshake line",
        ));
    }
    checks.push(dns_check(
        &name("dns system"),
        &c.system,
        "the system resolver does not ask corridor: reconnect with `--dns resolv-conf` (see `corridor vpn status`)",
    ));
    checks
}

fn mtu_check(name: &str, p: &MtuProbe, project: &str) -> Check {
    match (p.full_size, p.minimum) {
        (true, _) => check(
            name,
            true,
            format!("{}-byte packets reach {}", p.mtu, p.target),
            String::new(),
        ),
        (false, true) => check(
            name,
            false,
            format!(
                "{}-byte packets to {} are lost, {MINIMUM_MTU}-byte ones pass",
                p.mtu, p.target
            ),
            format!(
                "reconnect with a smaller MTU: `sudo corridor vpn up {project} --auto-disconnect --mtu {MINIMUM_MTU}`"
            ),
        ),
        (false, false) => check(
            name,
            true,
            format!("not measured: {} does not answer ping", p.target),
            String::new(),
        ),
    }
}

fn dns_check(name: &str, answer: &Result<IpAddr, String>, fix: &str) -> Check {
    match answer {
        Ok(addr) => check(name, true, format!("{DNS_PROBE_NAME} → {addr}"), String::new()),
        Err(e) => check(name, false, format!("{DNS_PROBE_NAME}: {e}"), fix.to_string()),
    }
}

fn check(name: &str, ok: bool, detail: String, fix: String) -> Check {
    Check {
        name: name.to_string(),
        ok,
        detail,
        fix: (!ok).then_some(fix),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto => "auto",
        Mode::Resolved => "systemd-resolved",
        Mode::ResolvConf => "resolv.conf",
        Mode::Scoped => "scoped",
        Mode::Off => "off",
    }
}

/// The mode in use by a connection, else the one `vpn up` would pick, and whether this process
/// could set it up.
fn resolver(connections: &[Status]) -> Result<Resolver, String> {
    if let Some(mode) = connections.iter().find_map(|s| s.dns.as_ref().map(|d| d.mode)) {
        return Ok(Resolver::InUse(mode));
    }
    let plan = dns::plan_host(Mode::Auto, dns::DEFAULT_LISTEN).map_err(|e| format!("{e:#}"))?;
    let can_apply = match plan.mode {
        // Opened for writing, not written: whether this process may rewrite it.
        Mode::ResolvConf => std::fs::OpenOptions::new().write(true).open("/etc/resolv.conf").is_ok(),
        Mode::Resolved | Mode::Scoped => crate::platform::is_elevated(),
        Mode::Off | Mode::Auto => true,
    };
    Ok(Resolver::WouldUse {
        mode: plan.mode,
        can_apply,
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
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};

    let exchange = async {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("literal");
        let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        let mut query = Message::query();
        query.metadata.id = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
        query.metadata.recursion_desired = true;
        let name = Name::from_ascii(DNS_PROBE_NAME).map_err(|e| e.to_string())?;
        query.add_query(Query::query(name, RecordType::A));
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        socket.send_to(&bytes, addr).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
        let answer = Message::from_vec(&buf[..len]).map_err(|e| e.to_string())?;
        answer
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .ok_or_else(|| format!("no address ({:?})", answer.metadata.response_code))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_machine_passes_every_check() {
        let checks = evaluate(&healthy());
        assert!(checks.iter().all(|c| c.ok && c.fix.is_none()), "{checks:#?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "privileges",
                "tun",
                "ipv6",
                "modes",
                "resolver",
                "api",
                "token",
                "clock"
            ]
        );
    }

    #[test]
    fn the_modes_line_says_what_works_without_privilege() {
        let mut facts = healthy();
        let with = evaluate(&facts);
        facts.host = linux(false, true, true);
        let without = evaluate(&facts);

        let modes = |checks: &[Check]| checks.iter().find(|c| c.name == "modes").unwrap().detail.clone();
        assert!(
            modes(&with).starts_with("tunnel (`vpn up`) possible;"),
            "{}",
            modes(&with)
        );
        assert!(
            modes(&without).contains("not possible here without privilege"),
            "{}",
            modes(&without)
        );
        assert!(modes(&without).contains("userspace (`forward`, `connect`, `proxy`, `ssh-config --proxy`) possible"));
    }

    #[test]
    fn an_expired_token_fails_only_the_token_line_and_says_to_log_in() {
        let mut facts = healthy();
        facts.api = Err(ApiError::Platform {
            status: 401,
            code: "tokenExpired".into(),
            message: "the access token has expired".into(),
        });
        let failed = failures(&facts);
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert_eq!(failed[0].name, "token");
        assert!(failed[0].detail.contains("tokenExpired"));
        assert!(failed[0].fix.as_deref().unwrap().contains("corridor login"));
    }

    #[test]
    fn missing_privileges_tun_ipv6_and_a_skewed_clock_each_name_their_fix() {
        let mut facts = healthy();
        facts.host = linux(false, false, false);
        facts.clock_skew_secs = Some(-600.0);
        let failed = failures(&facts);
        let fixes: Vec<(&str, &str)> = failed
            .iter()
            .map(|c| (c.name.as_str(), c.fix.as_deref().unwrap()))
            .collect();
        assert_eq!(fixes.len(), 4, "{fixes:?}");
        assert!(fixes[0].0 == "privileges" && fixes[0].1.contains("setcap"));
        assert!(fixes[1].0 == "tun" && fixes[1].1.contains("modprobe tun"));
        assert!(fixes[2].0 == "ipv6" && fixes[2].1.contains("disable_ipv6=0"));
        assert!(fixes[3].0 == "clock" && fixes[3].1.contains("timedatectl"));
    }

    #[test]
    fn an_unreachable_api_is_not_blamed_on_the_token() {
        let mut facts = healthy();
        facts.api = Err(ApiError::Timeout {
            url: "http://198.18.0.1:8080/api/rest/public/user/info".into(),
        });
        facts.clock_skew_secs = None;
        let failed = failures(&facts);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "api");
        assert!(!evaluate(&facts).iter().any(|c| c.name == "token"));
    }

    #[test]
    fn the_path_mtu_line_fails_only_when_small_packets_pass_and_large_ones_do_not() {
        let probe = |full_size, minimum| MtuProbe {
            target: "198.19.0.1".parse().unwrap(),
            mtu: 1420,
            full_size,
            minimum,
        };
        assert!(mtu_check("path mtu", &probe(true, true), "demo").ok);
        let narrow = mtu_check("path mtu", &probe(false, true), "demo");
        assert!(!narrow.ok && narrow.fix.unwrap().contains("vpn up demo --auto-disconnect --mtu 1280"));
        let silent = mtu_check("path mtu", &probe(false, false), "demo");
        assert!(silent.ok && silent.detail.contains("not measured"), "{silent:?}");
    }

    #[test]
    fn windows_checks_administrator_wintun_and_nrpt_and_nothing_of_linux() {
        let mut facts = healthy();
        facts.host = Readiness::Windows {
            elevated: true,
            wintun: Ok(()),
            nrpt: Ok(()),
        };
        let checks = evaluate(&facts);
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[..4], ["privileges", "wintun", "nrpt", "modes"]);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        let text = format!("{checks:?}");
        assert!(
            !text.contains("CAP_NET_ADMIN") && !text.contains("/dev/net/tun"),
            "{text}"
        );

        facts.host = Readiness::Windows {
            elevated: false,
            wintun: Err(r"C:\corridor\wintun.dll is missing".into()),
            nrpt: Err("Group Policy sets NRPT rules on this machine".into()),
        };
        facts.resolver = Ok(Resolver::WouldUse {
            mode: Mode::Scoped,
            can_apply: false,
        });
        let failed = failures(&facts);
        let fixes: Vec<(&str, &str)> = failed
            .iter()
            .map(|c| (c.name.as_str(), c.fix.as_deref().unwrap()))
            .collect();
        assert_eq!(fixes.len(), 4, "{fixes:?}");
        assert!(fixes[0].0 == "privileges" && fixes[0].1.contains("Administrator terminal"));
        assert!(fixes[1].0 == "wintun" && fixes[1].1.contains("wintun.net"));
        assert!(failed[1].detail.contains("wintun.dll is missing"));
        assert!(fixes[2].0 == "nrpt" && fixes[2].1.contains("--dns off"));
        assert!(fixes[3].0 == "resolver" && fixes[3].1.contains("Administrator terminal"));
        let modes = evaluate(&facts).into_iter().find(|c| c.name == "modes").unwrap();
        assert!(
            modes.detail.contains("not possible here without privilege"),
            "{modes:?}"
        );
    }

    #[test]
    fn macos_checks_root_utun_and_the_resolver_file_and_nothing_of_linux() {
        let mut facts = healthy();
        facts.host = Readiness::MacOs {
            root: true,
            utun: Ok(()),
            resolver_file: Ok(()),
        };
        let checks = evaluate(&facts);
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[..4], ["privileges", "utun", "resolver file", "modes"]);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert!(!format!("{checks:?}").contains("CAP_NET_ADMIN"));

        facts.host = Readiness::MacOs {
            root: false,
            utun: Err("no kernel control socket for utun".into()),
            resolver_file: Err("/etc/resolver/zerops is another program's".into()),
        };
        let failed = failures(&facts);
        let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["privileges", "utun", "resolver file"]);
        assert!(failed[0].fix.as_deref().unwrap().contains("sudo"));
        assert!(failed[2].detail.contains("another program's"));
        assert!(failed[2].fix.as_deref().unwrap().contains("aside"));
    }

    fn linux(net_admin: bool, tun: bool, ipv6: bool) -> Readiness {
        Readiness::Linux { net_admin, tun, ipv6 }
    }

    fn failures(facts: &Facts) -> Vec<Check> {
        evaluate(facts).into_iter().filter(|c| !c.ok).collect()
    }

    fn healthy() -> Facts {
        Facts {
            host: linux(true, true, true),
            resolver: Ok(Resolver::WouldUse {
                mode: Mode::ResolvConf,
                can_apply: true,
            }),
            api_base: "http://198.18.0.1:8080".into(),
            api: Ok("Lab Developer (dev@lab.test)".into()),
            clock_skew_secs: Some(0.4),
            connections: Vec::new(),
        }
    }
}
