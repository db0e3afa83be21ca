//! From facts to checks: each line of `doctor`'s report with its fix, a pure function of what
//! [`super::gather`] found out.

use std::net::IpAddr;

use crate::api::ApiError;
use crate::daemon::{ConnectionState, TunnelStatus, DNS_PROBE_NAME};
use crate::dns::Mode;
use crate::host::Readiness;

use super::{
    Check, ConnectionFacts, Facts, MtuProbe, Resolver, RouteClashes, CLOCK_SKEW_LIMIT_SECS, HANDSHAKE_STALE_SECS,
    MINIMUM_MTU,
};

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
    if let Ok(Resolver::InUse(mode)) = facts.resolver {
        checks.extend(browsers(mode));
    }
    checks.extend(api_checks(facts));
    for c in &facts.connections {
        checks.extend(connection_checks(c));
    }
    checks
}

/// Browsers with DNS-over-HTTPS ask their own server, never the system resolver corridor set
/// up. Informational: nothing here tells whether one is set that way.
fn browsers(mode: Mode) -> Option<Check> {
    let detail = match mode {
        Mode::Off | Mode::Auto => return None,
        // Every name reaches the responder, the canary included.
        Mode::ResolvConf => {
            "Firefox keeps to the system resolver (use-application-dns.net is NXDOMAIN here); a \
             browser with DNS-over-HTTPS forced on (Secure DNS, Max Protection) bypasses .zerops names: \
             turn it off there"
        }
        _ => {
            "a browser with DNS-over-HTTPS on (Secure DNS; Firefox's by default in some regions) \
             bypasses the system resolver and .zerops names: turn it off there"
        }
    };
    Some(check("browsers", true, detail.into(), String::new()))
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
    let handshake = match (t.state, t.last_handshake_secs) {
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
    };
    // The platform, asked by the daemon, knows better than a guess about the network.
    let handshake = match (&s.platform.problem, handshake.ok) {
        (Some(problem), false) => check(
            &name("handshake"),
            false,
            format!("{}: {}", handshake.detail, problem.what),
            problem.fix.clone(),
        ),
        _ => handshake,
    };
    let mut checks = vec![handshake];
    checks.push(routes_check(
        &name("routes"),
        &c.route_clashes,
        &s.project_name,
        &s.interface,
    ));
    checks.push(mtu_check(&name("path mtu"), &s.tunnel, s.mtu, c.path_mtu.as_ref()));
    if let Some(answer) = &c.responder {
        checks.push(dns_check(
            &name("dns responder"),
            answer,
            "the tunnel or the project's DNS does not answer: check the handshake line",
        ));
    }
    let backed_off = s.dns.as_ref().and_then(|d| d.stats.resolver.backed_off.as_deref());
    checks.push(dns_check(&name("dns system"), &c.system, &system_dns_fix(backed_off)));
    checks
}

fn routes_check(name: &str, clashes: &RouteClashes, project: &str, interface: &str) -> Check {
    match clashes {
        RouteClashes::Found(found) if found.is_empty() => check(
            name,
            true,
            format!("every project address is routed into {interface}"),
            String::new(),
        ),
        RouteClashes::Found(found) => check(
            name,
            false,
            found.join("; "),
            format!(
                "that route, rule or address belongs to another network (a LAN, Docker, another VPN): remove it or \
                 move that network, or reach those containers by their other addresses (`corridor ls {}`)",
                project
            ),
        ),
        RouteClashes::NotChecked => check(
            name,
            true,
            "not checked: this platform's routing table is not read yet".into(),
            String::new(),
        ),
        RouteClashes::Unreadable(e) => check(name, true, format!("not checked: {e}"), String::new()),
    }
}

/// A resolver another program took over (the watch backed off) is fixed by stopping that
/// program, not by another mode.
fn system_dns_fix(backed_off: Option<&str>) -> String {
    match backed_off {
        Some(why) => format!("{why}; stop that program (or configure it to leave the resolver alone)"),
        None => {
            "the system resolver does not ask corridor: reconnect with `--dns resolv-conf` (see `corridor vpn status`)"
                .into()
        }
    }
}

/// What the connection measured of its path, and whether full-size packets really cross the
/// tunnel (a don't-fragment ping of the interface's size, which corridor fits to the path).
fn mtu_check(name: &str, t: &TunnelStatus, interface_mtu: u16, ping: Option<&MtuProbe>) -> Check {
    let measured = match (t.path_mtu, t.mss_ipv6) {
        (None, _) => "not measured (no gateway answers ping through the tunnel)".to_string(),
        (Some(mtu), None) => format!("{mtu} measured: full-size packets cross the path"),
        (Some(mtu), Some(mss)) => format!(
            "{mtu} measured, narrower than the interface ({interface_mtu} + tunnel): TCP fitted (mss {mss}), \
             {} SYNs clamped, {} packets fragmented",
            t.syns_clamped, t.packets_fragmented
        ),
    };
    match ping {
        Some(p) if !p.full_size && p.minimum => check(
            name,
            false,
            format!(
                "{measured}; yet {}-byte packets to {} are lost, {MINIMUM_MTU}-byte ones pass",
                p.mtu, p.target
            ),
            format!(
                "something on the way drops what corridor sends: reconnect with a smaller MTU \
                 (`--mtu {MINIMUM_MTU}`) and report it with `corridor vpn status --json`"
            ),
        ),
        _ => check(name, true, measured, String::new()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Status;

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
    fn dns_over_https_is_mentioned_only_where_corridor_answers_the_system_resolver() {
        let browsers = |resolver: Resolver| {
            let mut facts = healthy();
            facts.resolver = Ok(resolver);
            evaluate(&facts).into_iter().find(|c| c.name == "browsers")
        };

        let resolv_conf = browsers(Resolver::InUse(Mode::ResolvConf)).expect("a browsers line");
        assert!(resolv_conf.ok && resolv_conf.fix.is_none());
        assert!(resolv_conf.detail.contains("DNS-over-HTTPS"), "{}", resolv_conf.detail);
        assert!(resolv_conf.detail.contains("use-application-dns.net is NXDOMAIN"));
        let resolved = browsers(Resolver::InUse(Mode::Resolved)).expect("a browsers line");
        assert!(resolved.detail.contains("DNS-over-HTTPS") && !resolved.detail.contains("use-application-dns"));
        assert_eq!(browsers(Resolver::InUse(Mode::Off)), None);
        let not_connected = Resolver::WouldUse {
            mode: Mode::ResolvConf,
            can_apply: true,
        };
        assert_eq!(browsers(not_connected), None);
    }

    #[test]
    fn a_resolver_taken_over_by_another_program_is_blamed_on_it() {
        let taken = system_dns_fix(Some(
            "/etc/resolv.conf was changed by another program 6 times within 60 s",
        ));
        assert!(taken.starts_with("/etc/resolv.conf was changed") && taken.contains("stop that program"));
        assert!(system_dns_fix(None).contains("--dns resolv-conf"));
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
    fn the_path_mtu_line_says_what_was_measured_and_fails_only_when_fitted_packets_are_lost() {
        let probe = |full_size, minimum| MtuProbe {
            target: "198.19.0.1".parse().unwrap(),
            mtu: 1420,
            full_size,
            minimum,
        };
        let full = TunnelStatus {
            path_mtu: Some(1468),
            ..TunnelStatus::default()
        };
        let narrow = TunnelStatus {
            path_mtu: Some(1276),
            mss_ipv4: Some(1176),
            mss_ipv6: Some(1156),
            syns_clamped: 3,
            ..TunnelStatus::default()
        };

        let ok = mtu_check("path mtu", &full, 1420, Some(&probe(true, true)));
        assert!(ok.ok && ok.detail.contains("1468 measured: full-size"), "{ok:?}");
        let fitted = mtu_check("path mtu", &narrow, 1420, Some(&probe(true, true)));
        assert!(fitted.ok, "{fitted:?}");
        assert!(fitted
            .detail
            .contains("1276 measured, narrower than the interface (1420"));
        assert!(fitted.detail.contains("mss 1156") && fitted.detail.contains("3 SYNs clamped"));
        let lost = mtu_check("path mtu", &narrow, 1420, Some(&probe(false, true)));
        assert!(!lost.ok && lost.fix.unwrap().contains("--mtu 1280"));
        let silent = mtu_check("path mtu", &TunnelStatus::default(), 1420, Some(&probe(false, false)));
        assert!(silent.ok && silent.detail.starts_with("not measured"), "{silent:?}");
    }

    #[test]
    fn the_routes_line_fails_naming_each_clash_and_passes_where_not_checked() {
        let shadow = "198.19.0.0/28 via 198.18.0.1 dev underlay shadows the project's 198.19.0.0/26: \
                      198.19.0.0/28 is unreachable over the tunnel";
        let found = RouteClashes::Found(vec![shadow.into()]);

        let failed = routes_check("routes (demo)", &found, "demo", "corridor0");
        let clean = routes_check("routes (demo)", &RouteClashes::Found(Vec::new()), "demo", "corridor0");
        let unknown = routes_check("routes (demo)", &RouteClashes::NotChecked, "demo", "corridor0");

        assert!(!failed.ok);
        assert_eq!(failed.detail, shadow);
        assert!(failed.fix.unwrap().contains("corridor ls demo"));
        assert!(clean.ok && clean.detail.contains("corridor0"), "{clean:?}");
        assert!(unknown.ok && unknown.detail.starts_with("not checked"), "{unknown:?}");
    }

    #[test]
    fn a_silent_gateway_with_a_refused_token_names_the_token_not_udp() {
        let mut status: Status = serde_json::from_value(serde_json::json!({
            "project_id": "demoProjectId1234567890", "project_name": "demo", "pid": 1,
            "interface": "corridor0", "addresses": [], "networks": [], "endpoint": "198.18.0.10:51820",
            "mtu": 1420, "dns": null, "started_unix": 0, "uptime_secs": 30,
            "state": "reconnecting", "reconnecting_secs": 12.0, "last_handshake_secs": 20.0,
        }))
        .unwrap();
        let connection = |status: Status| ConnectionFacts {
            status,
            responder: None,
            system: Ok("198.19.0.13".parse().unwrap()),
            path_mtu: None,
            route_clashes: RouteClashes::Found(Vec::new()),
        };
        let blamed_on_udp = connection_checks(&connection(status.clone()));
        status.platform.problem = Some(crate::daemon::heal::Problem {
            what: "the platform refused the token: tokenExpired".into(),
            fix: "`corridor login --token <token>`".into(),
        });

        let checks = connection_checks(&connection(status));

        assert!(blamed_on_udp[0].fix.as_deref().unwrap().contains("UDP"));
        let handshake = &checks[0];
        assert!(
            !handshake.ok && handshake.detail.contains("refused the token"),
            "{handshake:?}"
        );
        let fix = handshake.fix.as_deref().unwrap();
        assert!(fix.contains("corridor login") && !fix.contains("UDP"), "{fix}");
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
