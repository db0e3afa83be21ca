//! `lab up`, `lab down` and `lab status`: building and removing the simulated project.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::api::Mode;
use crate::netns::{self, in_ns, ip, run, spawn, wait_for};
use crate::path;
use crate::plan::{Plan, Project, ACTIVE, SSH_PORT, WG_PORT};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn up(plan: &Plan) -> Result<()> {
    if is_up(plan) {
        println!(
            "lab {} is already up (`lab status` shows it, `lab down` removes it)",
            plan.prefix
        );
        return Ok(());
    }
    // Leftovers of a half-built or crashed lab would collide with the new one.
    remove_all(plan, false)?;
    eprintln!("lab {}: building namespaces, gateways and containers", plan.prefix);
    if let Err(e) = build(plan) {
        eprintln!("lab {}: failed, removing what was built", plan.prefix);
        remove_all(plan, false)?;
        return Err(e);
    }
    fs::write(state(plan, "up"), "")?;
    println!(
        "lab {} is up: API {} (laptop namespace {})",
        plan.prefix,
        api_url(plan),
        plan.laptop_ns
    );
    Ok(())
}

pub fn down(plan: &Plan) -> Result<()> {
    remove_all(plan, true)?;
    println!("lab {} is down", plan.prefix);
    Ok(())
}

pub fn status(plan: &Plan, as_json: bool) -> Result<()> {
    let up = is_up(plan);
    if !as_json {
        if !up {
            println!("lab {} is down", plan.prefix);
            return Ok(());
        }
        println!(
            "lab {} is up\n  API      {}\n  token    {}\n  laptop   ip netns exec {} …",
            plan.prefix,
            api_url(plan),
            plan.token,
            plan.laptop_ns
        );
        if let Some(n) = path::current(plan) {
            println!("  path     {n} bytes between the laptop and the gateways (`lab path-mtu off` restores)");
        }
        for p in &plan.projects {
            for c in p.services.iter().flat_map(|s| &s.containers) {
                let addresses = match c.status.as_str() {
                    ACTIVE => format!("{:<16} {}", c.ipv4, c.ipv6),
                    status => status.to_string(),
                };
                println!("  {:<8} {:<32} {addresses}", p.name, c.name);
            }
            if p.services.is_empty() {
                println!("  {:<8} (no services)", p.name);
            }
        }
        return Ok(());
    }
    let projects: Vec<_> = plan
        .projects
        .iter()
        .map(|p| {
            let containers: Vec<_> = p
                .services
                .iter()
                .flat_map(|s| {
                    s.containers.iter().map(move |c| {
                        let running = c.status == ACTIVE;
                        json!({
                            "name": c.name, "service": s.name, "status": c.status,
                            "ns": running.then_some(&c.ns),
                            "ipv6": running.then_some(c.ipv6), "ipv4": running.then_some(c.ipv4),
                        })
                    })
                })
                .collect();
            json!({
                "name": p.name, "id": p.id, "dns": p.v4_gateway, "dns6": p.v6_gateway,
                "endpoint": std::net::SocketAddr::new(p.endpoint.ip(), listen_port(plan, p)), "gateway_ns": p.gw_ns, "wg_interface": p.wg_if,
                "services": p.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
                "containers": containers,
            })
        })
        .collect();
    let status = json!({
        "up": up,
        "prefix": plan.prefix,
        "slot": plan.slot,
        "laptop_ns": plan.laptop_ns,
        "api_url": api_url(plan),
        "region_url": format!("{}/api/rest/public/region/zcli", api_url(plan)),
        "regions": [
            {"name": "prg1", "isDefault": true, "address": format!("http://{}", plan.api_addrs()[0])},
            {"name": crate::api::SECOND_REGION, "isDefault": false, "address": format!("http://{}", plan.api_addrs()[1])},
        ],
        "token": plan.token,
        "isp_dns": plan.router_addr,
        "isp_names": plan.isp_names.iter().map(|(n, a)| json!({"name": n, "ipv4": a})).collect::<Vec<_>>(),
        "isp_large_answer": {"name": LARGE_ANSWER_NAME, "txt_records": LARGE_ANSWER_RECORDS},
        "path_mtu": path::current(plan).filter(|_| up),
        "ssh_port": SSH_PORT,
        "ssh_host_key": host_key_fingerprint(plan).ok(),
        "state_dir": plan.state_dir,
        "projects": projects,
    });
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

fn is_up(plan: &Plan) -> bool {
    let Ok(existing) = netns::list_namespaces() else {
        return false;
    };
    state(plan, "up").exists() && plan.namespaces().iter().all(|ns| existing.contains(ns))
}

fn api_url(plan: &Plan) -> String {
    format!("http://{}", plan.api_addr)
}

fn state(plan: &Plan, name: &str) -> PathBuf {
    Path::new(&plan.state_dir).join(name)
}

fn build(plan: &Plan) -> Result<()> {
    fs::create_dir_all(&plan.state_dir).with_context(|| format!("creating {}", plan.state_dir))?;
    // A new lab has the full path, whatever an earlier `path-mtu` left in a reused state dir.
    let _ = fs::remove_file(state(plan, path::STATE));
    fs::write(state(plan, "plan.json"), serde_json::to_string_pretty(plan)?)?;
    for ns in plan.namespaces() {
        run("ip", &["netns", "add", &ns])?;
        ip(&ns, &["link", "set", "lo", "up"])?;
    }
    build_underlay(plan)?;
    ensure_ssh_material(plan)?;
    for p in &plan.projects {
        build_project(plan, p)?;
    }
    start_isp_resolver(plan)?;
    start_api(plan)?;
    wait_ready(plan)
}

/// The underlay: a bridge in the router namespace, the laptop and every gateway on it.
fn build_underlay(plan: &Plan) -> Result<()> {
    let net = &plan.net_ns;
    let router = format!("{}/24", plan.router_addr);
    ip(net, &["link", "add", "br0", "type", "bridge"])?;
    ip(net, &["addr", "add", &router, "dev", "br0"])?;
    ip(net, &["link", "set", "br0", "up"])?;
    let laptop = format!("{}/24", plan.laptop_addr);
    let via = plan.router_addr.to_string();
    veth(&plan.laptop_ns, "underlay", net, "laptop", Some("br0"))?;
    ip(&plan.laptop_ns, &["addr", "add", &laptop, "dev", "underlay"])?;
    ip(&plan.laptop_ns, &["route", "add", "default", "via", &via])?;
    // The laptop's own resolver: the ISP's, as on any network.
    let etc = format!("/etc/netns/{}", plan.laptop_ns);
    fs::create_dir_all(&etc)?;
    fs::write(
        format!("{etc}/resolv.conf"),
        format!(
            "# lab {}: the ISP resolver\nnameserver {}\n",
            plan.prefix, plan.router_addr
        ),
    )?;
    Ok(())
}

fn build_project(plan: &Plan, p: &Project) -> Result<()> {
    let gw = &p.gw_ns;
    let uplink = format!("gw-{}", p.name);
    veth(gw, "underlay", &plan.net_ns, &uplink, Some("br0"))?;
    ip(
        gw,
        &["addr", "add", &format!("{}/24", p.gw_underlay_addr), "dev", "underlay"],
    )?;
    ip(gw, &["route", "add", "default", "via", &plan.router_addr.to_string()])?;
    in_ns(
        gw,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ],
    )?;
    // Containers reach the underlay (another project's endpoint, the API) as the gateway, so the
    // underlay never learns a route into a project that bypasses WireGuard.
    let nat = state(plan, &format!("{}-nat.nft", p.name));
    fs::write(&nat, "table ip lab {\n  chain post {\n    type nat hook postrouting priority 100;\n    oifname \"underlay\" masquerade\n  }\n}\n")?;
    in_ns(gw, &["nft", "-f", &nat.to_string_lossy()])?;

    ip(gw, &["link", "add", "br0", "type", "bridge"])?;
    ip(
        gw,
        &[
            "addr",
            "add",
            &format!("{}/{}", p.v4_gateway, p.v4_net.prefix_len()),
            "dev",
            "br0",
        ],
    )?;
    ip(
        gw,
        &[
            "addr",
            "add",
            &format!("{}/{}", p.v6_gateway, p.v6_net.prefix_len()),
            "dev",
            "br0",
            "nodad",
        ],
    )?;
    ip(gw, &["link", "set", "br0", "up"])?;
    for svc in &p.services {
        for c in svc.running() {
            let port = format!("c{}", c.number);
            veth(&c.ns, "eth0", gw, &port, Some("br0"))?;
            ip(
                &c.ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/{}", c.ipv4, p.v4_net.prefix_len()),
                    "dev",
                    "eth0",
                ],
            )?;
            ip(
                &c.ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/{}", c.ipv6, p.v6_net.prefix_len()),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            )?;
            ip(&c.ns, &["route", "add", "default", "via", &p.v4_gateway.to_string()])?;
            ip(
                &c.ns,
                &["-6", "route", "add", "default", "via", &p.v6_gateway.to_string()],
            )?;
            let etc = format!("/etc/netns/{}", c.ns);
            fs::create_dir_all(&etc)?;
            fs::write(
                format!("{etc}/resolv.conf"),
                format!("nameserver {}\nsearch zerops\n", p.v4_gateway),
            )?;
            start_container(plan, c)?;
        }
    }
    start_wireguard(plan, p)?;
    start_project_dns(plan, p)
}

/// A veth pair created directly inside the two namespaces, so no name ever appears on the host.
fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str, bridge_b: Option<&str>) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
        ],
    )?;
    ip(ns_a, &["link", "set", name_a, "up"])?;
    if let Some(br) = bridge_b {
        ip(ns_b, &["link", "set", name_b, "master", br])?;
    }
    ip(ns_b, &["link", "set", name_b, "up"])?;
    Ok(())
}

fn start_wireguard(plan: &Plan, p: &Project) -> Result<()> {
    let key = state(plan, &format!("{}.key", p.wg_if));
    let private = run("wg", &["genkey"])?;
    fs::write(&key, &private)?;
    let public = pipe_to("wg", &["pubkey"], &private)?;
    fs::write(state(plan, &format!("{}.pub", p.wg_if)), public.trim())?;
    // A new lab listens where the plan says, whatever an earlier `gateway-rekey --port` set.
    let _ = fs::remove_file(state(plan, &format!("{}.port", p.wg_if)));
    spawn_wireguard(plan, p)?;
    let key_path = key.to_string_lossy();
    let port = WG_PORT.to_string();
    run("wg", &["set", &p.wg_if, "private-key", &key_path, "listen-port", &port])?;
    address_wireguard(p)
}

/// A started wireguard-go, answering on its socket. Under load, one sometimes fails to listen
/// on its socket and exits with an error; a second start then succeeds.
fn spawn_wireguard(plan: &Plan, p: &Project) -> Result<()> {
    let log = state(plan, &format!("{}.log", p.wg_if));
    for attempt in 1.. {
        let _ = fs::remove_file(&log);
        spawn(
            &p.gw_ns,
            &["wireguard-go", "-f", &p.wg_if],
            &[("LOG_LEVEL", "error")],
            &log,
        )?;
        // The socket's file appears at bind(), a moment before it accepts: only an answered `wg
        // show` proves that `wg set` will reach it (else wg falls back to the kernel and fails).
        let failed = || fs::read_to_string(&log).is_ok_and(|l| l.contains("ERROR"));
        wait_for(&format!("wireguard-go on {}", p.wg_if), READY_TIMEOUT, || {
            failed() || run("wg", &["show", &p.wg_if]).is_ok()
        })?;
        if !failed() {
            return Ok(());
        }
        let said = fs::read_to_string(&log).unwrap_or_default();
        let said = said
            .lines()
            .filter(|l| l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("; ");
        anyhow::ensure!(attempt < 3, "wireguard-go on {} exited: {said}", p.wg_if);
        eprintln!(
            "lab {}: wireguard-go on {} exited ({said}); starting it again",
            plan.prefix, p.wg_if
        );
        wait_for("the failed wireguard-go to exit", READY_TIMEOUT, || {
            wireguard_pids(p).is_empty()
        })?;
        let _ = fs::remove_file(wg_socket(p));
    }
    unreachable!("the loop returns")
}

fn wg_socket(p: &Project) -> String {
    format!("/var/run/wireguard/{}.sock", p.wg_if)
}

/// The gateway interface's addresses in the VPN peer networks, MTU, link up.
fn address_wireguard(p: &Project) -> Result<()> {
    let gw = &p.gw_ns;
    ip(
        gw,
        &[
            "addr",
            "add",
            &format!("{}/{}", p.v4_peer_gateway, p.v4_peer_net.prefix_len()),
            "dev",
            &p.wg_if,
        ],
    )?;
    ip(
        gw,
        &[
            "addr",
            "add",
            &format!("{}/{}", p.v6_peer_gateway, p.v6_peer_net.prefix_len()),
            "dev",
            &p.wg_if,
            "nodad",
        ],
    )?;
    ip(gw, &["link", "set", &p.wg_if, "mtu", "1420", "up"])?;
    Ok(())
}

/// Restarts a project's gateway as a platform restart looks to a client: the wireguard-go
/// process dies and a new one comes up with the same private key, listen port and peers (allowed
/// IPs), but no sessions and no peer endpoints. Returns once `wg show` reports the restored
/// configuration.
pub fn restart_gateway(plan: &Plan, project: &str) -> Result<()> {
    let p = plan
        .projects
        .iter()
        .find(|p| p.name == project)
        .with_context(|| format!("no project {project} in the lab (`lab status` lists them)"))?;
    anyhow::ensure!(is_up(plan), "lab {} is not up (`lab up` first)", plan.prefix);
    let before = wg_dump(p)?;
    // The configuration a control plane would push again: no endpoints, no handshakes.
    let conf: String = in_ns(&p.gw_ns, &["wg", "showconf", &p.wg_if])?
        .lines()
        .filter(|l| !l.starts_with("Endpoint"))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf_path = state(plan, &format!("{}.conf", p.wg_if));
    fs::write(&conf_path, conf)?;

    let old = wireguard_pids(p);
    anyhow::ensure!(!old.is_empty(), "no wireguard-go runs in {}", p.gw_ns);
    for pid in &old {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL)
            .with_context(|| format!("killing wireguard-go {pid}"))?;
    }
    wait_for("the old wireguard-go to die", READY_TIMEOUT, || {
        wireguard_pids(p).is_empty() && ip(&p.gw_ns, &["link", "show", &p.wg_if]).is_err()
    })?;
    // A killed wireguard-go leaves its socket behind.
    let _ = fs::remove_file(wg_socket(p));

    spawn_wireguard(plan, p)?;
    run("wg", &["setconf", &p.wg_if, &conf_path.to_string_lossy()])?;
    address_wireguard(p)?;
    wait_for("the new gateway in `wg show`", READY_TIMEOUT, || {
        wg_dump(p).is_ok_and(|now| now == before) && netns::listening(&p.gw_ns, true, listen_port(plan, p))
    })?;
    let peers = before.len() - 1;
    println!(
        "gateway of {} restarted: wireguard-go pid {:?}, {peers} peers, listening on {}",
        p.name,
        wireguard_pids(p),
        p.endpoint
    );
    Ok(())
}

/// Redeploys a project's gateway as the platform might: a new private key, and with `port` a new
/// listen port, on the running wireguard-go, so every session is lost while the peers stay. The
/// API answers the new key and endpoint from then on (it reads both from the state dir).
pub fn rekey_gateway(plan: &Plan, project: &str, port: Option<u16>) -> Result<()> {
    let p = plan
        .projects
        .iter()
        .find(|p| p.name == project)
        .with_context(|| format!("no project {project} in the lab (`lab status` lists them)"))?;
    anyhow::ensure!(is_up(plan), "lab {} is not up (`lab up` first)", plan.prefix);
    let key = state(plan, &format!("{}.key", p.wg_if));
    let private = run("wg", &["genkey"])?;
    fs::write(&key, &private)?;
    let public = pipe_to("wg", &["pubkey"], &private)?;
    let mut args = vec![
        "set".to_string(),
        p.wg_if.clone(),
        "private-key".into(),
        key.to_string_lossy().into_owned(),
    ];
    if let Some(port) = port {
        args.extend(["listen-port".into(), port.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("wg", &args)?;
    // The API reads these on every answer.
    fs::write(state(plan, &format!("{}.pub", p.wg_if)), public.trim())?;
    if let Some(port) = port {
        fs::write(state(plan, &format!("{}.port", p.wg_if)), port.to_string())?;
    }
    let port = listen_port(plan, p);
    wait_for("the gateway on its port", READY_TIMEOUT, || {
        netns::listening(&p.gw_ns, true, port)
    })?;
    println!(
        "gateway of {} rekeyed: public key {}, listening on {}:{port}",
        p.name,
        public.trim(),
        p.gw_underlay_addr
    );
    Ok(())
}

/// The port a project's gateway listens on: `WG_PORT` until `gateway-rekey --port` moves it.
fn listen_port(plan: &Plan, p: &Project) -> u16 {
    fs::read_to_string(state(plan, &format!("{}.port", p.wg_if)))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(WG_PORT)
}

/// Sets the lab's misbehaviour: the API reads `mode` from the state dir on every request; `no-icmp`
/// also makes every project gateway drop ICMP and ICMPv6 echo requests (to itself and to the
/// containers behind it). Any other mode removes that rule again.
pub fn misbehave(plan: &Plan, mode: Mode, text: &str) -> Result<()> {
    anyhow::ensure!(is_up(plan), "lab {} is not up (`lab up` first)", plan.prefix);
    for p in &plan.projects {
        // Declaring then deleting the table removes it whether or not it exists.
        let mut rules = format!("table inet {NO_ICMP} {{}}\ndelete table inet {NO_ICMP}\n");
        if mode == Mode::NoIcmp {
            rules.push_str(&format!(
                "table inet {NO_ICMP} {{\n\
                 \x20 chain input {{ type filter hook input priority 0; icmp type echo-request drop; icmpv6 type echo-request drop; }}\n\
                 \x20 chain forward {{ type filter hook forward priority 0; icmp type echo-request drop; icmpv6 type echo-request drop; }}\n\
                 }}\n"
            ));
        }
        let file = state(plan, &format!("{}-icmp.nft", p.name));
        fs::write(&file, rules)?;
        in_ns(&p.gw_ns, &["nft", "-f", &file.to_string_lossy()])?;
    }
    let path = state(plan, "misbehave");
    fs::write(&path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "lab {}: misbehave {}",
        plan.prefix,
        if text.is_empty() { "ok" } else { text }
    );
    Ok(())
}

/// `lab path-mtu N|off` (see path.rs).
pub fn path_mtu(plan: &Plan, mtu: Option<u16>) -> Result<()> {
    anyhow::ensure!(is_up(plan), "lab {} is not up (`lab up` first)", plan.prefix);
    path::set(plan, mtu)?;
    match mtu {
        Some(n) => println!(
            "lab {}: packets over {n} bytes between the laptop and the gateways are dropped, without ICMP",
            plan.prefix
        ),
        None => println!("lab {}: the full path between the laptop and the gateways", plan.prefix),
    }
    Ok(())
}

/// The nftables table `no-icmp` adds in each gateway namespace.
const NO_ICMP: &str = "lab_no_icmp";

/// `wg show IF dump` without what a restart changes: per line the interface's public key and
/// port, then each peer's public key and allowed IPs.
fn wg_dump(p: &Project) -> Result<Vec<String>> {
    let dump = in_ns(&p.gw_ns, &["wg", "show", &p.wg_if, "dump"])?;
    let mut lines = dump.lines().map(|l| l.split('\t').collect::<Vec<_>>());
    let interface = lines.next().context("empty `wg show dump`")?;
    let mut out = vec![format!(
        "{} {}",
        interface.get(1).unwrap_or(&""),
        interface.get(2).unwrap_or(&"")
    )];
    let mut peers: Vec<String> = lines
        .map(|peer| format!("{} {}", peer[0], peer.get(3).unwrap_or(&"")))
        .collect();
    // wireguard-go lists peers in no particular order.
    peers.sort();
    out.extend(peers);
    Ok(out)
}

/// wireguard-go processes in the project's gateway namespace (a zombie counts as gone).
fn wireguard_pids(p: &Project) -> Vec<i32> {
    netns::pids(&p.gw_ns)
        .into_iter()
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
            alive && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "wireguard-go")
        })
        .collect()
}

/// dnsmasq on the project's IPv4 gateway: the zone `zerops.` for this project.
fn start_project_dns(plan: &Plan, p: &Project) -> Result<()> {
    let mut hosts = String::new();
    for svc in &p.services {
        for c in svc.running() {
            for addr in [c.ipv4.to_string(), c.ipv6.to_string()] {
                writeln!(hosts, "{addr} {} {}.zerops", c.name, svc.name)?;
            }
        }
    }
    writeln!(hosts, "{} logger.core.zerops", p.v4_gateway)?;
    writeln!(hosts, "{} logger.core.zerops", p.v6_gateway)?;
    let hosts_file = state(plan, &format!("{}-hosts", p.name));
    fs::write(&hosts_file, hosts)?;
    dnsmasq(
        plan,
        &p.gw_ns,
        &format!("dns-{}", p.name),
        &[
            format!("--listen-address={}", p.v4_gateway),
            format!("--listen-address={}", p.v6_gateway),
            format!("--addn-hosts={}", hosts_file.display()),
            "--local=/zerops/".into(),
            // Answers that may be cached for a while, as a platform's DNS gives them.
            "--local-ttl=30".into(),
            "--domain-needed".into(),
        ],
    )
}

/// A TXT name on the ISP resolver with `LARGE_ANSWER_RECORDS` records (about 1.4 kB).
pub const LARGE_ANSWER_NAME: &str = "large.isp.test";
pub const LARGE_ANSWER_RECORDS: usize = 40;

/// The "ISP" resolver on the underlay router: the laptop's normal DNS.
fn start_isp_resolver(plan: &Plan) -> Result<()> {
    let mut args = vec![format!("--listen-address={}", plan.router_addr), "--local=/#/".into()];
    args.extend(
        plan.isp_names
            .iter()
            .map(|(name, addr)| format!("--address=/{name}/{addr}")),
    );
    // A name whose answer does not fit in 512 bytes, for truncation and DNS over TCP.
    args.extend(
        (0..LARGE_ANSWER_RECORDS).map(|i| format!("--txt-record={LARGE_ANSWER_NAME},large-answer-record-{i:02}")),
    );
    dnsmasq(plan, &plan.net_ns, "isp-dns", &args)
}

fn dnsmasq(plan: &Plan, ns: &str, name: &str, extra: &[String]) -> Result<()> {
    let pid = state(plan, &format!("{name}.pid"));
    let mut args: Vec<String> = vec![
        "dnsmasq".into(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--bind-interfaces".into(),
        "--user=root".into(),
        "--log-facility=-".into(),
        format!("--pid-file={}", pid.display()),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(ns, &args, &[], &state(plan, &format!("{name}.log")))
}

/// Host key, sshd config and a private copy of /etc in which root has an empty password: each
/// container's sshd gets the copy by a bind mount over /etc in its own mount namespace, so the
/// host's accounts are never touched. The whole directory, not /etc/shadow alone: when the host
/// replaces a file by rename (useradd, passwd, a package adding a system user), the kernel drops
/// every mount on that file in all namespaces, and sshd would see the host's `root:*` again.
fn ensure_ssh_material(plan: &Plan) -> Result<()> {
    let key = state(plan, "ssh_host_ed25519_key");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "corridor-lab",
            "-f",
            &key.to_string_lossy(),
        ],
    )?;
    let etc = state(plan, "etc");
    if etc.exists() {
        fs::remove_dir_all(&etc)?;
    }
    // /etc/netns is left out: other labs and tests add and remove entries there while this
    // copies, and `cp` fails on an entry that vanished between listing and copying it.
    fs::create_dir(&etc)?;
    let mut args = vec!["-a".to_string()];
    for entry in fs::read_dir("/etc").context("listing /etc")? {
        let path = entry?.path();
        if path != Path::new("/etc/netns") {
            args.push(path.to_string_lossy().into_owned());
        }
    }
    args.push(etc.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("cp", &args)?;
    let shadow_path = etc.join("shadow");
    let shadow = fs::read_to_string(&shadow_path).context("reading the copy of /etc/shadow")?;
    let lab_shadow: String = shadow
        .lines()
        .map(|line| match line.strip_prefix("root:") {
            Some(rest) => format!("root::{}\n", rest.split_once(':').map_or("", |(_, tail)| tail)),
            None => format!("{line}\n"),
        })
        .collect();
    // Written in place: the copy keeps the host's owner and mode (0640 root:shadow).
    fs::write(&shadow_path, lab_shadow)?;
    // Each container's own resolv.conf (from /etc/netns) is mounted here at its start; the
    // host's may be a symlink into /run or a bind mount, neither of which can take it.
    let resolv = etc.join("resolv.conf");
    if resolv.symlink_metadata().is_ok() {
        fs::remove_file(&resolv)?;
    }
    fs::write(&resolv, "")?;
    // Platform containers let root in with no key and no password: the tunnel is the boundary.
    let config = format!(
        "Port {SSH_PORT}\nHostKey {}\nPermitRootLogin yes\nPermitEmptyPasswords yes\nPasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\n\
         PidFile none\nSubsystem sftp internal-sftp\n",
        key.display()
    );
    fs::write(state(plan, "sshd_config"), config)?;
    fs::create_dir_all("/run/sshd")?;
    Ok(())
}

fn host_key_fingerprint(plan: &Plan) -> Result<String> {
    let out = run(
        "ssh-keygen",
        &[
            "-l",
            "-E",
            "sha256",
            "-f",
            &state(plan, "ssh_host_ed25519_key.pub").to_string_lossy(),
        ],
    )?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .context("unexpected ssh-keygen output")
}

/// sshd and iperf3 in a container, in a UTS namespace of its own so `hostname` answers the
/// container's name.
fn start_container(plan: &Plan, c: &crate::plan::Container) -> Result<()> {
    // `ip netns exec` has put the container's resolv.conf over /etc/resolv.conf; it moves into
    // the private /etc before that covers the host's.
    let etc = state(plan, "etc");
    let script = format!(
        "mount --bind /etc/resolv.conf {etc}/resolv.conf && mount --rbind {etc} /etc && hostname {} && \
         exec /usr/sbin/sshd -D -e -f {}",
        c.name,
        state(plan, "sshd_config").display(),
        etc = etc.display(),
    );
    let log = state(plan, &format!("c{}.log", c.number));
    spawn(&c.ns, &["unshare", "--mount", "--uts", "sh", "-c", &script], &[], &log)?;
    spawn(
        &c.ns,
        &["iperf3", "-s"],
        &[],
        &state(plan, &format!("c{}-iperf3.log", c.number)),
    )
}

fn start_api(plan: &Plan) -> Result<()> {
    let exe = std::env::current_exe().context("locating the lab binary")?;
    let exe = exe.to_string_lossy();
    let prefix = plan.prefix.clone();
    let slot = plan.slot.to_string();
    spawn(
        &plan.net_ns,
        &[&exe, "--prefix", &prefix, "--slot", &slot, "api"],
        &[],
        &state(plan, "api.log"),
    )
}

fn wait_ready(plan: &Plan) -> Result<()> {
    for addr in plan.api_addrs() {
        wait_for(&format!("the control-plane API on {addr}"), READY_TIMEOUT, || {
            netns::listening(&plan.net_ns, false, addr.port())
        })?;
    }
    wait_for("the ISP resolver", READY_TIMEOUT, || {
        netns::listening(&plan.net_ns, true, 53)
    })?;
    for p in &plan.projects {
        wait_for(&format!("{} DNS", p.name), READY_TIMEOUT, || {
            netns::listening(&p.gw_ns, true, 53)
        })?;
        wait_for(&format!("{} WireGuard", p.name), READY_TIMEOUT, || {
            netns::listening(&p.gw_ns, true, WG_PORT)
        })?;
    }
    for (p, c) in plan.containers() {
        wait_for(&format!("sshd in {}", c.name), READY_TIMEOUT, || {
            netns::listening(&c.ns, false, SSH_PORT)
        })?;
        wait_for(&format!("iperf3 in {}", c.name), READY_TIMEOUT, || {
            netns::listening(&c.ns, false, 5201)
        })?;
        // A platform network is warm: neighbour and bridge tables already know every container,
        // so the first connection through the lab must not pay for learning them.
        for gateway in [p.v4_gateway.to_string(), p.v6_gateway.to_string()] {
            in_ns(&c.ns, &["ping", "-c", "1", "-W", "1", "-q", &gateway])?;
        }
    }
    Ok(())
}

/// Removes every namespace (and so every process and link in it), `/etc/netns` entry,
/// wireguard-go socket and state file carrying the lab's prefix. Safe to run any number of times.
fn remove_all(plan: &Plan, report: bool) -> Result<()> {
    let mine = |name: &str| name.starts_with(&format!("{}-", plan.prefix));
    let namespaces: Vec<String> = netns::list_namespaces()?.into_iter().filter(|n| mine(n)).collect();
    for ns in &namespaces {
        // Processes first: a namespace with processes outlives `ip netns del`.
        for round in 0..50 {
            let pids = netns::pids(ns);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            if round == 49 {
                anyhow::bail!("processes in {ns} do not die: {:?}", netns::pids(ns));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run("ip", &["netns", "del", ns])?;
    }
    let mut files = 0;
    for dir in ["/etc/netns", "/var/run/wireguard"] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if mine(&name) {
                let path = entry.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path)?
                } else {
                    fs::remove_file(&path)?
                }
                files += 1;
            }
        }
    }
    if Path::new(&plan.state_dir).exists() {
        fs::remove_dir_all(&plan.state_dir)?;
        files += 1;
    }
    if report {
        eprintln!(
            "lab {}: removed {} namespaces and {files} files",
            plan.prefix,
            namespaces.len()
        );
    }
    Ok(())
}

/// Runs a command with `input` on its stdin (for `wg pubkey`).
fn pipe_to(program: &str, args: &[&str], input: &str) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "{program} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
