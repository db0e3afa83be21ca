//! `corridor forward`, `connect` and `proxy` end to end: corridor runs in the lab's laptop
//! namespace as uid 65534 with no capabilities and no `vpn up`; real ssh, scp, plink, curl and
//! nc reach the containers through its userspace stack.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    assert_success, links, routes, run_quietly, stdout, Client, HttpServer, Lab, Nobody, Running, SSH_OPTIONS,
};

const SSH_PORT: &str = "65437";

#[test]
fn forward_without_root_serves_ssh_parallel_sessions_and_scp() {
    let Some(lab) = Lab::up("crtusfw") else { return };
    let user = Nobody::new(&lab);
    let links_before = links(lab.laptop());
    let routes_before = routes(lab.laptop());

    let mut forward = user.start(&["forward", "demo", "2222:api:65437"]);
    forward.wait_for("127.0.0.1:2222 → api:65437");

    let one = user.ssh_local(2222, "hostname");
    assert_success("ssh through forward", &one);
    assert!(is_api_node(&stdout(&one)), "{}", stdout(&one));

    let parallel: Vec<_> = (0..20)
        .map(|_| {
            let cmd = user.ssh_local_command(2222, "hostname");
            std::thread::spawn(move || run_quietly(cmd))
        })
        .collect();
    let results: Vec<Output> = parallel.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, out) in results.iter().enumerate() {
        assert_success(&format!("parallel ssh {i}"), out);
        assert!(is_api_node(&stdout(out)), "parallel ssh {i}: {}", stdout(out));
    }

    let payload: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = user.file("up.bin");
    let down = user.file("down.bin");
    std::fs::write(&up, &payload).unwrap();
    user.chown(&up);
    let started = Instant::now();
    assert_success(
        "scp up",
        &user.scp(2222, up.to_str().unwrap(), "root@127.0.0.1:/tmp/corridor-userspace.bin"),
    );
    assert_success(
        "scp down",
        &user.scp(
            2222,
            "root@127.0.0.1:/tmp/corridor-userspace.bin",
            down.to_str().unwrap(),
        ),
    );
    eprintln!("5 MB scp there and back in {:?}", started.elapsed());
    assert!(std::fs::read(&down).unwrap() == payload, "the file came back different");

    assert_eq!(links(lab.laptop()), links_before, "no interface was created");
    assert_eq!(routes(lab.laptop()), routes_before, "no route was added");
    forward.interrupt();
    let status = forward.wait(Duration::from_secs(10));
    assert!(status.success(), "forward ends cleanly on Ctrl-C: {status}");
    let after = user.ssh_local(2222, "hostname");
    assert!(!after.status.success(), "the port is closed once forward ended");
}

#[test]
fn connect_is_a_proxy_command_for_ssh_and_plink() {
    let Some(lab) = Lab::up("crtuscn") else { return };
    let user = Nobody::new(&lab);
    let connect = format!(
        "{} --api {} connect -P demo %h %p",
        user.staged.corridor().display(),
        lab.api_url()
    );

    let mut ssh = user.nobody_command(&["ssh"]);
    ssh.args(SSH_OPTIONS)
        .args(["-o", &format!("ProxyCommand={connect}"), "-p", SSH_PORT])
        .args(["root@node1.db.db.zerops", "hostname"]);
    let ssh = run_quietly(ssh);
    assert_success("ssh with ProxyCommand", &ssh);
    assert_eq!(stdout(&ssh), "node1.db.db.zerops");

    let mut plink = user.nobody_command(&["plink"]);
    plink
        .args([
            "-batch",
            "-ssh",
            "-P",
            SSH_PORT,
            "-hostkey",
            lab.ssh_host_key(),
            "-l",
            "root",
        ])
        .args(["-proxycmd", &connect.replace("%h %p", "%host %port")])
        .args(["node-id-13.runtime.api.zerops", "hostname"]);
    let plink = run_quietly(plink);
    assert_success("plink -proxycmd", &plink);
    assert_eq!(stdout(&plink), "node-id-13.runtime.api.zerops");

    // From start to the server's banner: the whole set-up (API, handshake, DNS, TCP).
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut bridge = user.start(&["connect", "-P", "demo", "node1.db.db.zerops", SSH_PORT]);
        bridge.wait_for("SSH-2.0-");
        fastest = fastest.min(started.elapsed());
    }
    eprintln!("corridor connect: SSH banner {} ms after start", fastest.as_millis());
    assert!(fastest < Duration::from_secs(2), "banner after {fastest:?}");

    // sshd hangs up on a bad greeting: connect must end then, though its stdin stays open.
    let mut bridge = user.start(&["connect", "-P", "demo", "node1.db.db.zerops", SSH_PORT]);
    bridge.wait_for("SSH-2.0-");
    bridge.child.stdin.as_mut().unwrap().write_all(b"garbage\r\n").unwrap();
    let status = bridge.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn socks5_proxy_resolves_names_in_the_project_for_curl_and_ssh() {
    let Some(lab) = Lab::up("crtussx") else { return };
    let user = Nobody::new(&lab);
    let container = lab.container("node-id-13.runtime.api.zerops")["ns"]
        .as_str()
        .unwrap()
        .to_string();
    let site = user.file("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "served from node-id-13\n").unwrap();
    let _http = HttpServer::start(&lab, &container, &site, 8000);

    let mut proxy = user.start(&["proxy", "-P", "demo", "--socks5", "127.0.0.1:1080"]);
    proxy.wait_for("127.0.0.1:1080 → SOCKS5");

    let mut curl = user.nobody_command(&["curl"]);
    curl.args(["-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:1080"])
        .arg("http://node-id-13.runtime.api.zerops:8000/");
    let curl = run_quietly(curl);
    assert_success("curl --socks5-hostname", &curl);
    assert_eq!(stdout(&curl), "served from node-id-13");

    let mut ssh = user.nobody_command(&["ssh"]);
    ssh.args(SSH_OPTIONS)
        .args(["-o", "ProxyCommand=nc -X 5 -x 127.0.0.1:1080 %h %p", "-p", SSH_PORT])
        .args(["root@api", "hostname"]);
    let ssh = run_quietly(ssh);
    assert_success("ssh via nc -X 5", &ssh);
    assert!(is_api_node(&stdout(&ssh)), "{}", stdout(&ssh));

    let mut unknown = user.nobody_command(&["curl"]);
    unknown
        .args(["-sS", "--max-time", "10", "--socks5-hostname", "127.0.0.1:1080"])
        .arg("http://nosuch:8000/");
    let unknown = run_quietly(unknown);
    assert!(!unknown.status.success(), "an unknown name fails");
    proxy.wait_for("no container or service named \"nosuch\"");
}

#[test]
fn bad_input_is_explained_and_other_connections_carry_on() {
    let Some(lab) = Lab::up("crtusbad") else { return };
    let user = Nobody::new(&lab);

    let mut forward = user.start(&["forward", "demo", "2222:api:65437", "2223:api:1"]);
    forward.wait_for("127.0.0.1:2223 → api:1");

    let refused = user.ssh_local(2223, "hostname");
    assert!(!refused.status.success(), "a refusing target fails the connection");
    forward.wait_for("refused the connection");
    let ok = user.ssh_local(2222, "hostname");
    assert_success("the other forward still works", &ok);
    assert!(is_api_node(&stdout(&ok)));

    let taken = user.run(&["forward", "demo", "2222:api:65437"]);
    assert!(!taken.status.success());
    assert!(stderr(&taken).contains("port is taken"), "{}", stderr(&taken));

    let unknown = user.run(&["forward", "demo", "2230:nosuch:22"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no container or service named \"nosuch\""),
        "{}",
        stderr(&unknown)
    );
    assert!(!listening(&lab, 2230), "nothing listens after a failed start");

    let connect = user.run(&["connect", "-P", "demo", "nosuch", "22"]);
    assert!(!connect.status.success());
    assert!(stderr(&connect).contains("nosuch"), "{}", stderr(&connect));

    assert_success("misbehave expired", &lab.lab(&["misbehave", "expired"]));
    let expired = user.run(&["forward", "demo", "2231:api:65437"]);
    assert_success("misbehave ok", &lab.lab(&["misbehave", "ok"]));
    assert!(!expired.status.success());
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    assert!(!listening(&lab, 2231), "nothing listens after a failed start");

    let still = user.ssh_local(2222, "hostname");
    assert_success("the running forward is unaffected", &still);
}

#[test]
fn silent_gateway_fails_fast_with_a_clear_message() {
    let Some(lab) = Lab::up("crtussil") else { return };
    let user = Nobody::new(&lab);
    let _drop = DropUdp::install(&lab);

    let started = Instant::now();
    let out = user.run(&["forward", "demo", "--timeout", "2", "2240:api:65437"]);

    assert!(!out.status.success());
    assert!(stderr(&out).contains("no WireGuard handshake"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(!listening(&lab, 2240));
}

#[test]
fn forward_from_a_container_of_another_project_without_privilege() {
    let Some(lab) = Lab::up("crtusc2c") else { return };
    let other = lab.project("other")["containers"][0]["ns"]
        .as_str()
        .unwrap()
        .to_string();
    let user = Nobody::in_ns(&lab, &other);
    let links_before = links(&other);

    let mut forward = user.start(&["forward", "demo", "2222:node1.db.db.zerops:65437"]);
    forward.wait_for("127.0.0.1:2222 → node1.db.db.zerops:65437");
    let ssh = user.ssh_local(2222, "hostname");

    assert_success("ssh from a container of project other", &ssh);
    assert_eq!(stdout(&ssh), "node1.db.db.zerops");
    assert_eq!(links(&other), links_before, "no interface was created");
}

#[test]
fn forward_and_vpn_up_to_one_project_work_side_by_side() {
    let Some(lab) = Lab::up("crtusvpn") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));

    let mut command = client.command(&["forward", "demo", "2222:node1.db.db.zerops:65437"]);
    let mut forward = Running::spawn(&mut command);
    forward.wait_for("127.0.0.1:2222 →");

    let through_tun = lab.ssh(
        lab.container("node-id-13.runtime.api.zerops")["ipv6"].as_str().unwrap(),
        "hostname",
    );
    assert_success("ssh through vpn up", &through_tun);
    assert_eq!(stdout(&through_tun), "node-id-13.runtime.api.zerops");
    let mut ssh = Command::new("ip");
    ssh.args(["netns", "exec", lab.laptop(), "ssh"])
        .args(SSH_OPTIONS)
        .args(["-p", "2222", "root@127.0.0.1", "hostname"]);
    let through_forward = run_quietly(ssh);
    assert_success("ssh through forward", &through_forward);
    assert_eq!(stdout(&through_forward), "node1.db.db.zerops");
    let keys = std::fs::read_dir(client.dir.path().join("config/keys"))
        .unwrap()
        .count();
    assert_eq!(keys, 2, "one key for each mode");
}

fn is_api_node(name: &str) -> bool {
    name == "node-id-13.runtime.api.zerops" || name == "node-id-14.runtime.api.zerops"
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether something in the laptop namespace listens on TCP `port`.
fn listening(lab: &Lab, port: u16) -> bool {
    let out = lab.run_in(lab.laptop(), &["ss", "-Htln", &format!("sport = :{port}")]);
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Drops the laptop's WireGuard traffic (UDP to the gateways), as a firewall might; the rule
/// goes with its table when dropped (and with the namespace when the lab goes).
struct DropUdp {
    ns: String,
}

impl DropUdp {
    const TABLE: &'static str = "corridor_test_silence";

    fn install(lab: &Lab) -> DropUdp {
        let guard = DropUdp {
            ns: lab.laptop().to_string(),
        };
        let t = Self::TABLE;
        for command in [
            format!("add table inet {t}"),
            format!("add chain inet {t} out {{ type filter hook output priority 0 ; }}"),
            format!("add rule inet {t} out udp dport 51820 drop"),
        ] {
            let out = lab.run_in(lab.laptop(), &["sh", "-c", &format!("nft '{command}'")]);
            assert_success(&command, &out);
        }
        guard
    }
}

impl Drop for DropUdp {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "delete", "table", "inet", Self::TABLE])
            .output();
    }
}
