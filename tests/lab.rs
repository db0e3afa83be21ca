//! The lab itself, proved with a WireGuard client nobody here wrote (wireguard-go + wg),
//! configured from the lab API's answer exactly as the platform's own CLI does.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

use common::{assert_success, stdout, Lab};
use serde_json::Value;

#[test]
fn reference_client_reaches_containers_by_ssh_plink_and_dns() {
    let Some(lab) = Lab::up("crtref", 1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    let private = cmd_ok("wg", &["genkey"], None);
    std::fs::write(&key_file, &private).unwrap();
    let public = cmd_ok("wg", &["pubkey"], Some(&private));

    let demo = lab.project("demo");
    let answer = register_key(&lab, demo["id"].as_str().unwrap(), public.trim());
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
    assert_eq!(api, expected, "api.zerops names both api containers");
}

#[test]
fn lab_up_twice_then_kill_then_down_leaves_nothing() {
    let Some(lab) = Lab::up("crtlife", 2) else { return };
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

/// POST /project/{id}/vpn from inside the laptop, as the platform's CLI does.
fn register_key(lab: &Lab, project_id: &str, public_key: &str) -> Value {
    let url = format!("{}/api/rest/public/project/{project_id}/vpn", lab.api_url());
    let body = serde_json::json!({"publicKey": public_key, "instanceId": null}).to_string();
    let auth = format!("Authorization: Bearer {}", lab.token());
    let out = lab.laptop_ok(&[
        "curl",
        "-sS",
        "--fail-with-body",
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &url,
    ]);
    serde_json::from_str(&out).expect("ProjectVpnItem JSON")
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

fn cmd_ok(program: &str, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_success(&format!("{program} {}", args.join(" ")), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
