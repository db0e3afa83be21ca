//! `corridor vpn up/status/down` end to end: the client in the lab's laptop namespace, the
//! wireguard-go gateway as its peer, real ssh and plink into the containers.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_success, links, routes, stdout, Client, Lab, Running};

const N13: &str = "node-id-13.runtime.api.zerops";
const N14: &str = "node-id-14.runtime.api.zerops";

#[test]
fn up_reaches_containers_status_counts_and_down_restores_the_host() {
    let Some(lab) = Lab::up("crtvpn") else { return };
    let client = Client::new(&lab);
    let links_before = links(lab.laptop());
    let routes_before = routes(lab.laptop());

    let up = client.run(&["vpn", "up", "demo"]);
    assert_success("vpn up demo", &up);
    assert!(stdout(&up).contains("connected to demo"), "{}", stdout(&up));

    for (name, family) in [(N13, "ipv6"), (N14, "ipv6"), (N13, "ipv4"), (N14, "ipv4")] {
        let addr = lab.container(name)[family].as_str().unwrap();
        let ssh = lab.ssh(addr, "hostname");
        assert_success(&format!("ssh {addr}"), &ssh);
        assert_eq!(stdout(&ssh), name);
    }
    let v6 = lab.container(N14)["ipv6"].as_str().unwrap();
    let plink = lab.plink(v6, "hostname");
    assert_success("plink", &plink);
    assert_eq!(stdout(&plink), N14);

    // A burst: 100 echo requests queued on the interface at once, none lost (a data path that
    // gathered several reads per pass once dropped the last read of each: every fifth packet).
    for family in ["ipv4", "ipv6"] {
        let addr = lab.container(N13)[family].as_str().unwrap();
        let ping = lab.run_in(lab.laptop(), &["ping", "-c", "100", "-l", "100", "-W", "5", "-q", addr]);
        assert!(
            stdout(&ping).contains("100 packets transmitted, 100 received"),
            "burst to {addr}: {}",
            stdout(&ping)
        );
    }

    let first = client.status();
    let conn = &first["connections"][0];
    assert_eq!(conn["project_name"], "demo");
    let age = conn["last_handshake_secs"].as_f64().expect("a handshake happened");
    assert!(age < 10.0, "handshake {age} s ago");
    let ssh = lab.ssh(lab.container(N13)["ipv6"].as_str().unwrap(), "head -c 200000 /dev/zero");
    assert_success("ssh transfer", &ssh);
    assert_eq!(ssh.stdout.len(), 200_000);
    let second = client.status();
    let grew = |field: &str| second["connections"][0][field].as_u64().unwrap() > conn[field].as_u64().unwrap();
    assert!(
        grew("rx_bytes") && grew("tx_bytes"),
        "traffic counted: {first} then {second}"
    );
    assert!(second["connections"][0]["rx_bytes"].as_u64().unwrap() > 200_000);
    let interface = conn["interface"].as_str().unwrap().to_string();
    let pid = conn["pid"].as_u64().unwrap();
    assert!(links(lab.laptop()).contains(&interface));
    let alias = lab.laptop_ok(&["cat", &format!("/sys/class/net/{interface}/ifalias")]);
    let project_id = conn["project_id"].as_str().unwrap();
    assert!(
        alias.starts_with(&format!("corridor:{project_id}:")),
        "the interface carries its connection's tag: {alias:?}"
    );
    let table = routes(lab.laptop());
    for network in conn["networks"].as_array().unwrap() {
        let route = format!("{} dev {interface}", network.as_str().unwrap());
        assert!(
            table.lines().any(|r| r.starts_with(&route)),
            "{route} in the routing table: {table}"
        );
    }
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        program.file_name().unwrap(),
        "corridor-daemon",
        "the connection runs in the daemon program, not in the whole of corridor"
    );

    let down = client.run(&["vpn", "down"]);
    assert_success("vpn down", &down);

    assert_eq!(links(lab.laptop()), links_before, "interfaces restored");
    assert_eq!(routes(lab.laptop()), routes_before, "routes restored");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/exe")).exists(),
        "daemon {pid} gone"
    );
    let run_dir = client.dir.path().join("run");
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|f| f.to_string_lossy().ends_with(".log")),
        "runtime files left: {left:?}"
    );
    for log in &left {
        let text = std::fs::read_to_string(run_dir.join(log)).unwrap_or_default();
        assert!(
            !text.contains("could not take the project's names off"),
            "the DNS service answers the last project's unregistration: {text}"
        );
    }
    assert_eq!(client.status()["connections"].as_array().unwrap().len(), 0);
}

#[test]
fn kill_9_of_the_daemon_then_down_then_up_again() {
    let Some(lab) = Lab::up("crtkill") else { return };
    let client = Client::new(&lab);
    let routes_before = routes(lab.laptop());
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let pid = client.status()["connections"][0]["pid"].as_u64().unwrap();

    let kill = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    assert_success("kill -9", &kill);
    let down = client.run(&["vpn", "down"]);
    assert_success("vpn down after a crash", &down);

    assert!(
        links(lab.laptop()).iter().all(|l| !l.starts_with("corridor")),
        "{:?}",
        links(lab.laptop())
    );
    assert_eq!(routes(lab.laptop()), routes_before);
    let up = client.run(&["vpn", "start", "demo"]);
    assert_success("vpn start after the crash", &up);
    let again = client.run(&["vpn", "up", "demo"]);
    assert!(
        !again.status.success(),
        "a second up without --auto-disconnect is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--auto-disconnect"));
    let replaced = client.run(&["vpn", "up", "demo", "--auto-disconnect"]);
    assert_success("vpn up --auto-disconnect", &replaced);
    assert_eq!(client.status()["connections"].as_array().unwrap().len(), 1);
    let ssh = lab.ssh(lab.container(N13)["ipv6"].as_str().unwrap(), "hostname");
    assert_eq!(stdout(&ssh), N13);
    assert_success("vpn stop", &client.run(&["vpn", "stop"]));
}

#[test]
fn api_failures_are_explained_and_leave_no_interface() {
    let Some(lab) = Lab::up("crtapi") else { return };
    let client = Client::new(&lab);
    let before = links(lab.laptop());
    let cases: [(&[&str], &str, &str); 5] = [
        (&["error500"], "demo", "internalServerError"),
        (&["garbage"], "demo", "not json"),
        (&["slow", "5000"], "demo", "no answer from"),
        (&["ok"], "nosuchproject", "no project named"),
        (&["expired"], "demo", "tokenExpired"),
    ];
    for (mode, project, expected) in cases {
        assert_success("lab misbehave", &lab.lab(&[&["misbehave"], mode].concat()));
        let mut cmd = client.command(&["vpn", "up", project]);
        cmd.env("CORRIDOR_API_TIMEOUT", "2");
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:?}: vpn up should fail");
        assert!(err.contains(expected), "{mode:?}: {expected:?} not in {err}");
        assert_eq!(links(lab.laptop()), before, "{mode:?}: no interface left");
    }
    assert_success("lab misbehave ok", &lab.lab(&["misbehave", "ok"]));
    let demo_id = lab.project("demo")["id"].as_str().unwrap().to_string();
    let wrong_id = format!("{}x", &demo_id[..21]);
    let out = client.run(&["vpn", "up", "-P", &wrong_id]);
    assert!(!out.status.success());
    assert_eq!(links(lab.laptop()), before);

    let mut wrong_token = client.command(&["vpn", "up", "demo"]);
    wrong_token.env("CORRIDOR_TOKEN", "not-the-token");
    let out = wrong_token.output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notAuthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(links(lab.laptop()), before);
}

#[test]
fn unreachable_endpoint_and_missing_privilege_fail_cleanly() {
    let Some(lab) = Lab::up("crtfail") else { return };
    let client = Client::new(&lab);
    let before = links(lab.laptop());
    let routes_before = routes(lab.laptop());

    let gw = lab.project("demo")["gateway_ns"].as_str().unwrap();
    let drop_wg = lab.run_in(gw, &["nft", "add table inet block; add chain inet block in { type filter hook input priority 0; udp dport 51820 drop; }"]);
    assert_success("blocking the gateway", &drop_wg);
    let out = client.run(&["vpn", "up", "demo", "--timeout", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer through the tunnel"), "{err}");
    assert_eq!(links(lab.laptop()), before);
    assert_eq!(routes(lab.laptop()), routes_before);

    let staged = common::Staged::new();
    let mut unprivileged = common::as_nobody(&lab, &staged, &["--api", lab.api_url(), "vpn", "up", "demo"]);
    unprivileged
        .env("CORRIDOR_TOKEN", lab.token())
        .env("CORRIDOR_RUNTIME_DIR", client.dir.path().join("run-nobody"))
        .env("CORRIDOR_STATE_DIR", client.dir.path().join("state-nobody"));
    let out = unprivileged.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("CAP_NET_ADMIN") && err.contains("sudo"), "{err}");
    assert_eq!(links(lab.laptop()), before);

    let corridor = common::corridor_binary();
    let script = format!(
        "mount -t tmpfs none /dev/net && exec {} --api {} vpn up demo",
        corridor.display(),
        lab.api_url()
    );
    let mut unshared = std::process::Command::new("ip");
    unshared.args(["netns", "exec", lab.laptop(), "unshare", "--mount", "sh", "-c", &script]);
    let out = client.with_dirs(&mut unshared).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/dev/net/tun"), "{err}");
    assert_eq!(links(lab.laptop()), before);

    // corridor without corridor-daemon beside it: refused before the platform hears of it.
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(&corridor, alone.path().join("corridor")).unwrap();
    let mut without_daemon = std::process::Command::new("ip");
    without_daemon
        .args(["netns", "exec", lab.laptop()])
        .arg(alone.path().join("corridor"))
        .args(["--api", lab.api_url(), "vpn", "up", "demo"]);
    let out = client.with_dirs(&mut without_daemon).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("corridor-daemon is missing"), "{err}");
    assert!(!err.contains("key registered"), "{err}");
    assert_eq!(links(lab.laptop()), before);

    assert_success("unblocking", &lab.run_in(gw, &["nft", "delete table inet block"]));
    let sysctl = |v: &str| {
        lab.run_in(
            lab.laptop(),
            &["sysctl", "-qw", &format!("net.ipv6.conf.all.disable_ipv6={v}")],
        )
    };
    assert_success("disabling IPv6", &sysctl("1"));
    let out = client.run(&["vpn", "up", "demo"]);
    assert_success("enabling IPv6", &sysctl("0"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("IPv6 is disabled"), "{err}");
    assert_eq!(links(lab.laptop()), before);
    assert_eq!(routes(lab.laptop()), routes_before);
}

#[test]
fn foreground_serves_until_sigterm_then_restores_the_host() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(lab) = Lab::up("crtfg") else { return };
    let client = Client::new(&lab);
    let (links_before, routes_before) = (links(lab.laptop()), routes(lab.laptop()));
    let resolv_before = lab.run_in(lab.laptop(), &["cat", "/etc/resolv.conf"]).stdout;

    // `ip netns exec` execs corridor, so the child's pid is corridor's.
    let mut child = client
        .command(&["vpn", "up", "demo", "--foreground"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let output = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("foreground reports ready");
    assert!(line.contains("connected to demo"), "{line}");
    let ssh = lab.ssh(N13, "hostname");
    assert_eq!(stdout(&ssh), N13, "names and tunnel work in the foreground");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap();
    assert_success("kill -TERM", &term);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "foreground corridor did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert_eq!(links(lab.laptop()), links_before);
    assert_eq!(routes(lab.laptop()), routes_before);
    assert_eq!(
        lab.run_in(lab.laptop(), &["cat", "/etc/resolv.conf"]).stdout,
        resolv_before
    );
}

#[test]
fn without_tun_offload_the_tunnel_still_carries_bulk_data() {
    let Some(lab) = Lab::up("crtnooff") else { return };
    let client = Client::new(&lab);
    let mut up = client.command(&["vpn", "up", "demo"]);
    up.env("CORRIDOR_NO_OFFLOAD", "1");
    assert_success("vpn up without offload", &up.output().unwrap());

    let ssh = lab.ssh(
        lab.container(N14)["ipv4"].as_str().unwrap(),
        "head -c 3000000 /dev/urandom | sha256sum; hostname",
    );
    assert_success("bulk ssh without offload", &ssh);
    assert!(stdout(&ssh).ends_with(N14), "{}", stdout(&ssh));
    let upload = lab.run_in(
        lab.laptop(),
        &["sh", "-c", &format!("head -c 3000000 /dev/zero | ssh -p 65437 -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@{N13} 'wc -c'")],
    );
    assert_success("upload without offload", &upload);
    assert_eq!(stdout(&upload), "3000000");
    assert_success("vpn down", &client.run(&["vpn", "down"]));
}

/// Counts, for up to 5 s, the TCP payload bytes that reach this namespace carrying `MARK`;
/// prints `ready` once listening and the count at the end.
const RAW_RECEIVER: &str = r#"
import socket, sys, time
want = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.settimeout(0.2)
print("ready", flush=True)
got, end = 0, time.monotonic() + 5
while got < want and time.monotonic() < end:
    try:
        p = s.recv(70000)
    except socket.timeout:
        continue
    tcp = p[(p[0] & 15) * 4:]
    got += tcp[(tcp[12] >> 4) * 4:].count(b"MARK")
print("received", got, flush=True)
"#;

/// Sends `argv[3]` back-to-back TCP segments from `argv[1]` to `argv[2]`, each with data and
/// the ACK flag only (no PSH: their sender has more to send), in sequence.
const RAW_SENDER: &str = r#"
import socket, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
def checksum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
seq = 1000
for i in range(n):
    data = b"MARK%04d" % i
    head = struct.pack("!HHIIBBHHH", 40000, 9, seq, 1, 5 << 4, 0x10, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(head) + len(data))
    head = head[:16] + struct.pack("!H", checksum(pseudo + head + data)) + head[18:]
    s.sendto(head + data, (dst, 0))
    seq += len(data)
"#;

#[test]
fn a_burst_that_never_pushes_still_reaches_the_laptop_whole() {
    // The data path holds bulk TCP data whose sender did not push for the next receive, so
    // that one TUN write carries more; a burst whose last segments never get a next receive
    // must still go out on its own.
    let Some(lab) = Lab::up("crthold") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up demo", &client.run(&["vpn", "up", "demo"]));
    let container = lab.container(N13);
    let (ns, container_v4) = (container["ns"].as_str().unwrap(), container["ipv4"].as_str().unwrap());
    let route = lab.laptop_ok(&["ip", "-4", "route", "get", container_v4]);
    let laptop_v4 = route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .expect("src in route");

    const SEGMENTS: usize = 40;
    let count = SEGMENTS.to_string();
    let mut receiver =
        Running::spawn(Command::new("ip").args(["netns", "exec", lab.laptop(), "python3", "-c", RAW_RECEIVER, &count]));
    receiver.wait_for("ready");
    let sent = lab.run_in(ns, &["python3", "-c", RAW_SENDER, container_v4, laptop_v4, &count]);
    assert_success("sending the burst from the container", &sent);
    let received = receiver.wait_for_within("received", Duration::from_secs(15));
    assert_eq!(received, format!("received {SEGMENTS}"), "{}", receiver.said());
    assert_success("vpn down", &client.run(&["vpn", "down"]));
}

#[test]
fn status_without_sudo_sees_its_own_connection_and_never_tears_down_others() {
    use std::os::unix::fs::PermissionsExt;
    let Some(lab) = Lab::up("crtuser") else { return };
    let client = Client::new(&lab);
    std::fs::set_permissions(client.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let staged = common::Staged::new();
    let as_nobody = |args: &[&str]| {
        common::as_nobody(&lab, &staged, args)
            .env("CORRIDOR_RUNTIME_DIR", client.dir.path().join("run"))
            .env("CORRIDOR_STATE_DIR", client.dir.path().join("state-nobody"))
            .env("CORRIDOR_CONFIG_DIR", client.dir.path().join("config-nobody"))
            .output()
            .unwrap()
    };

    // Started by root directly: the socket is root's, and nobody's status must leave it alone.
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    std::fs::set_permissions(client.dir.path().join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = as_nobody(&["vpn", "status"]);
    assert!(
        String::from_utf8_lossy(&theirs.stderr).contains("sudo corridor vpn status"),
        "{theirs:?}"
    );
    assert_eq!(
        client.status()["connections"].as_array().unwrap().len(),
        1,
        "still connected"
    );
    assert_success("vpn down", &client.run(&["vpn", "down"]));

    // Started under sudo by uid 65534: that user's status works without sudo.
    let mut up = client.command(&["vpn", "up", "demo"]);
    up.env("SUDO_UID", "65534").env("SUDO_GID", "65534");
    assert_success("vpn up under sudo", &up.output().unwrap());
    let mine = as_nobody(&["vpn", "status", "--json"]);
    assert_success("vpn status as the sudo user", &mine);
    let json: serde_json::Value = serde_json::from_slice(&mine.stdout).unwrap();
    assert_eq!(json["connections"][0]["project_name"], "demo");
    assert_success("vpn down", &client.run(&["vpn", "down"]));
}
