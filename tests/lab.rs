//! The lab itself, proved with a WireGuard client nobody here wrote (wireguard-go + wg),
//! configured from the lab API's answer exactly as the platform's own CLI does.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

use common::{assert_success, cmd_ok, stdout, Lab};
use serde_json::Value;

#[test]
fn reference_client_reaches_containers_by_ssh_plink_and_dns() {
    let Some(lab) = Lab::up("crtref") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    let private = cmd_ok("wg", &["genkey"], None);
    std::fs::write(&key_file, &private).unwrap();
    let public = cmd_ok("wg", &["pubkey"], Some(&private));

    let demo = lab.project("demo");
    let answer = lab.register_key(demo["id"].as_str().unwrap(), public.trim());
    configure_reference_client(&lab, "crtref-ref", &key_file, &answer);

    for name in ["node-id-13.runtime.api.zerops", "node-id-14.runtime.api.zerops"] {
        let c = lab.container(name);
        let v6 = c["ipv6"].as_str().unwrap();
        let v4 = c["ipv4"].as_str().unwrap();
        for addr in [v6, v4] {
            let ssh = lab.ssh(addr, "hostname");
            assert_success(&format!("ssh {addr}"), &ssh);
            assert_eq!(stdout(&ssh), name, "ssh to {addr} reached the wrong container");
        }
        let plink = lab.plink(v6, "hostname");
        assert_success(&format!("plink {v6}"), &plink);
        assert_eq!(stdout(&plink), name, "plink to {v6} reached the wrong container");
    }

    let dns = demo["dns"].as_str().unwrap();
    let target = lab.container("node-id-13.runtime.api.zerops");
    let aaaa = lab.laptop_ok(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        &format!("@{dns}"),
        "node-id-13.runtime.api.zerops",
        "AAAA",
    ]);
    assert_eq!(aaaa.trim(), target["ipv6"].as_str().unwrap());
    let mut api = lab
        .laptop_ok(&[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            &format!("@{dns}"),
            "api.zerops",
            "A",
        ])
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    api.sort();
    let mut expected: Vec<String> = ["node-id-13.runtime.api.zerops", "node-id-14.runtime.api.zerops"]
        .iter()
        .map(|n| lab.container(n)["ipv4"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(
        api, expected,
        "api.zerops names both api containers, not the stopped one"
    );
    let stopped = lab.laptop_ok(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        &format!("@{dns}"),
        "node-id-15.runtime.api.zerops",
    ]);
    assert_eq!(stopped.trim(), "", "a stopped container has no DNS record");
}

#[test]
fn lab_up_twice_then_kill_then_down_leaves_nothing() {
    let Some(lab) = Lab::up("crtlife") else { return };
    let again = lab.lab(&["up"]);
    assert_success("second lab up", &again);
    assert!(
        stdout(&again).contains("already up"),
        "second up says so: {}",
        stdout(&again)
    );

    let namespaces: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with("crtlife-"))
        .collect();
    assert!(namespaces.len() >= 8, "lab built its namespaces: {namespaces:?}");
    let stopped = lab.container("node-id-15.runtime.api.zerops");
    assert_eq!(stopped["status"], "STOPPED");
    assert_eq!(stopped["ns"], Value::Null, "a stopped container has no namespace");
    assert!(!namespaces.iter().any(|n| n.contains("-demo-c15")), "{namespaces:?}");
    assert_eq!(lab.project("empty")["containers"], serde_json::json!([]));
    assert_eq!(lab.project("empty")["services"], serde_json::json!([]));
    let pids: Vec<String> = namespaces
        .iter()
        .flat_map(|ns| {
            cmd_ok("ip", &["netns", "pids", ns], None)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(pids.len() >= 10, "lab runs its daemons: {pids:?}");
    // A crash of the lab: every process it started dies at once, nothing is cleaned up.
    let kill = Command::new("kill").arg("-9").args(&pids).output().unwrap();
    assert_success("kill -9", &kill);

    assert_success("lab down", &lab.lab(&["down"]));
    assert!(
        list_namespaces().iter().all(|n| !n.starts_with("crtlife-")),
        "namespaces left: {:?}",
        list_namespaces()
    );
    let etc: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        etc.iter().all(|n| !n.to_string_lossy().starts_with("crtlife-")),
        "/etc/netns left: {etc:?}"
    );
    assert!(!std::path::Path::new("/var/run/wireguard/crtlife-g0.sock").exists());
    assert!(!std::path::Path::new("/run/corridor-lab/crtlife").exists());
    for pid in &pids {
        assert!(!alive(pid), "process {pid} still alive");
    }
    assert_success("lab down again", &lab.lab(&["down"]));
}

#[test]
fn gateway_restart_keeps_key_port_and_peers_and_loses_sessions() {
    let Some(lab) = Lab::up("crtgwrs") else { return };
    let demo = lab.project("demo");
    let (gw, wg_if) = (
        demo["gateway_ns"].as_str().unwrap(),
        demo["wg_interface"].as_str().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    let private = cmd_ok("wg", &["genkey"], None);
    std::fs::write(&key_file, &private).unwrap();
    let public = cmd_ok("wg", &["pubkey"], Some(&private));
    let answer = lab.register_key(demo["id"].as_str().unwrap(), public.trim());
    let second = cmd_ok("wg", &["pubkey"], Some(&cmd_ok("wg", &["genkey"], None)));
    lab.register_key(demo["id"].as_str().unwrap(), second.trim());
    configure_reference_client(&lab, "crtgwrs-ref", &key_file, &answer);
    let n13 = lab.container("node-id-13.runtime.api.zerops")["ipv6"]
        .as_str()
        .unwrap()
        .to_string();
    assert_success("ssh before the restart", &lab.ssh(&n13, "true"));
    let before = gateway_config(&lab, gw, wg_if);
    let pid_before = wireguard_pid(gw);
    assert!(
        before.sessions > 0,
        "the reference client has a session before the restart"
    );

    let restart = lab.lab(&["gateway-restart"]);

    assert_success("lab gateway-restart", &restart);
    assert!(stdout(&restart).contains("restarted"), "{}", stdout(&restart));
    let after = gateway_config(&lab, gw, wg_if);
    assert_ne!(wireguard_pid(gw), pid_before, "a new wireguard-go process");
    assert_eq!(after.interface, before.interface, "same public key and listen port");
    assert_eq!(after.peers, before.peers, "same peers and allowed IPs");
    assert_eq!(after.peers.len(), 2);
    assert_eq!(after.sessions, 0, "no session survives the restart");
    let addresses = cmd_ok("ip", &["-n", gw, "-o", "addr", "show", "dev", wg_if], None);
    for gateway in [
        &answer["peer"]["ipv4"]["network"]["gateway"],
        &answer["peer"]["ipv6"]["network"]["gateway"],
    ] {
        assert!(addresses.contains(gateway.as_str().unwrap()), "{addresses}");
    }
    assert!(
        lab.lab(&["gateway-restart", "nope"])
            .stderr
            .starts_with(b"Error: no project nope"),
        "an unknown project is named"
    );
}

#[test]
fn misbehave_no_icmp_drops_ping_through_the_gateway_until_ok() {
    let Some(lab) = Lab::up("crticmp") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    let private = cmd_ok("wg", &["genkey"], None);
    std::fs::write(&key_file, &private).unwrap();
    let public = cmd_ok("wg", &["pubkey"], Some(&private));
    let demo = lab.project("demo");
    let answer = lab.register_key(demo["id"].as_str().unwrap(), public.trim());
    configure_reference_client(&lab, "crticmp-ref", &key_file, &answer);
    let n13 = lab.container("node-id-13.runtime.api.zerops");
    let targets = [
        demo["dns"].as_str().unwrap(),
        demo["dns6"].as_str().unwrap(),
        n13["ipv4"].as_str().unwrap(),
        n13["ipv6"].as_str().unwrap(),
    ];
    for target in targets {
        assert!(pings(&lab, target), "{target} answers ping before");
    }

    assert_success("misbehave no-icmp", &lab.lab(&["misbehave", "no-icmp"]));

    for target in targets {
        assert!(!pings(&lab, target), "{target} still answers ping");
    }
    let ssh = lab.ssh(targets[3], "hostname");
    assert_success("ssh without ICMP", &ssh);
    assert_eq!(stdout(&ssh), "node-id-13.runtime.api.zerops");

    assert_success("misbehave ok", &lab.lab(&["misbehave", "ok"]));

    for target in targets {
        assert!(pings(&lab, target), "{target} answers ping again");
    }
    let unknown = lab.lab(&["misbehave", "sideways"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no-icmp"),
        "the modes are listed"
    );
}

#[test]
fn ssh_into_containers_survives_the_host_replacing_etc_shadow() {
    let Some(lab) = Lab::up("crtshad") else { return };
    let containers: Vec<(String, String, String)> = lab.status["projects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["containers"].as_array().unwrap())
        .filter(|c| c["status"] == "ACTIVE")
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap().to_string();
            (field("name"), field("ns"), field("ipv4"))
        })
        .collect();
    assert!(containers.len() >= 4, "{containers:?}");
    let ssh_into_every_container = |when: &str| {
        for (name, ns, addr) in &containers {
            let ssh = lab.ssh_from(ns, addr, "hostname");
            assert_success(&format!("ssh into {name} {when}"), &ssh);
            assert_eq!(stdout(&ssh), *name);
        }
    };
    ssh_into_every_container("before useradd");

    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/etc/shadow").unwrap());
    let before = inode();
    let _user = ThrowawayUser::add("crtshad-tmp");
    assert_ne!(inode(), before, "useradd replaced /etc/shadow by a rename");

    ssh_into_every_container("after useradd");
}

/// A user of this machine added with `useradd` (which replaces /etc/passwd and /etc/shadow by
/// rename) and removed with `userdel` when dropped.
struct ThrowawayUser(String);

impl ThrowawayUser {
    fn add(name: &str) -> ThrowawayUser {
        // Left over by an earlier, killed run.
        let _ = Command::new("userdel").arg(name).output();
        cmd_ok(
            "useradd",
            &["--no-create-home", "--shell", "/usr/sbin/nologin", name],
            None,
        );
        ThrowawayUser(name.to_string())
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let out = Command::new("userdel").arg(&self.0).output().expect("running userdel");
        if !out.status.success() && !std::thread::panicking() {
            panic!("userdel {} failed: {}", self.0, String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn every_lab_has_a_prefix_and_slot_of_its_own_across_all_test_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut sources: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    sources.sort();
    assert!(
        sources.len() >= 9,
        "{:?}",
        sources.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let problems = common::labs::problems(common::labs::LABS, &sources);
    assert!(problems.is_empty(), "{problems:#?}");

    // The check itself catches what it is for (written so this file does not call them).
    let call = |prefix: &str| format!("Lab::up(\"{prefix}\")");
    let twice = [
        ("a.rs".to_string(), call("crtref")),
        ("b.rs".to_string(), call("crtref") + &call("crtnope")),
    ];
    let found = common::labs::problems(common::labs::LABS, &twice);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("another test too (in a.rs)"), "{found:#?}");
    assert!(found[1].contains("crtnope is not in LABS"), "{found:#?}");
    let clashing = [
        ("crta", 1),
        ("crta", 2),
        ("crtb", 2),
        ("crtc", 81),
        ("crdemo", 3),
        ("crtlonger9", 200),
    ];
    let found = common::labs::problems(&clashing, &[]);
    for expected in [
        "crta is registered twice",
        "crtb and crta share slot 2",
        "crtc: slot 81 is reserved for tests/keys.rs",
        "crdemo: a script uses this prefix",
        "crtlonger9: a prefix is 1 to 8",
        "crtlonger9: slot 200 is above 127",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "{expected}: {found:#?}");
    }
}

fn pings(lab: &Lab, target: &str) -> bool {
    lab.run_in(lab.laptop(), &["ping", "-c", "1", "-W", "1", "-q", target])
        .status
        .success()
}

/// What `wg show dump` says of a gateway, split into what a restart must keep and what it loses.
struct GatewayConfig {
    /// Public key and listen port.
    interface: String,
    /// Public key and allowed IPs of each peer, sorted.
    peers: Vec<String>,
    /// Peers with a completed handshake.
    sessions: usize,
}

fn gateway_config(lab: &Lab, gw: &str, wg_if: &str) -> GatewayConfig {
    let out = lab.run_in(gw, &["wg", "show", wg_if, "dump"]);
    assert_success("wg show dump", &out);
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = dump.lines().map(|l| l.split('\t').collect::<Vec<_>>());
    let interface = lines.next().unwrap();
    let peers: Vec<Vec<&str>> = lines.collect();
    let mut kept: Vec<String> = peers.iter().map(|p| format!("{} {}", p[0], p[3])).collect();
    kept.sort();
    GatewayConfig {
        interface: format!("{} {}", interface[1], interface[2]),
        peers: kept,
        sessions: peers.iter().filter(|p| p[4] != "0").count(),
    }
}

fn wireguard_pid(ns: &str) -> String {
    let pids = cmd_ok("ip", &["netns", "pids", ns], None);
    let found: Vec<&str> = pids
        .lines()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "wireguard-go"))
        .collect();
    assert_eq!(found.len(), 1, "one wireguard-go in {ns}: {found:?}");
    found[0].to_string()
}

/// wireguard-go in the laptop namespace, set up from the answer: addresses, allowed IPs = the
/// four networks, endpoint = project.ipv4.sharedEndpoint, keepalive.
fn configure_reference_client(lab: &Lab, ifname: &str, key_file: &std::path::Path, answer: &Value) {
    let laptop = lab.laptop();
    lab.laptop_ok(&["wireguard-go", ifname]);
    let (project, peer) = (&answer["project"], &answer["peer"]);
    let networks: Vec<&str> = [&project["ipv4"], &project["ipv6"], &peer["ipv4"], &peer["ipv6"]]
        .iter()
        .map(|f| f["network"]["network"].as_str().unwrap())
        .collect();
    let allowed = networks.join(",");
    cmd_ok(
        "wg",
        &[
            "set",
            ifname,
            "private-key",
            key_file.to_str().unwrap(),
            "peer",
            project["publicKey"].as_str().unwrap(),
            "allowed-ips",
            &allowed,
            "endpoint",
            project["ipv4"]["sharedEndpoint"].as_str().unwrap(),
            "persistent-keepalive",
            "5",
        ],
        None,
    );
    let v4 = format!("{}/32", peer["ipv4"]["assignedIpAddress"].as_str().unwrap());
    let v6 = format!("{}/128", peer["ipv6"]["assignedIpAddress"].as_str().unwrap());
    cmd_ok("ip", &["-n", laptop, "addr", "add", &v4, "dev", ifname], None);
    cmd_ok("ip", &["-n", laptop, "addr", "add", &v6, "dev", ifname, "nodad"], None);
    cmd_ok("ip", &["-n", laptop, "link", "set", ifname, "mtu", "1420", "up"], None);
    for net in networks {
        cmd_ok("ip", &["-n", laptop, "route", "add", net, "dev", ifname], None);
    }
}

/// Running or sleeping; a zombie waiting for init to reap it is dead.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn list_namespaces() -> Vec<String> {
    cmd_ok("ip", &["netns", "list"], None)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
