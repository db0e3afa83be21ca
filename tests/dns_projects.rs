//! Names of several projects at once: one responder for the host, every connected project
//! registered with it; a project that leaves (or whose daemon is killed) takes only its own
//! names along, and the last one out restores the resolver byte for byte.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_success, stdout, Client, Lab};

const DEMO_NAME: &str = "node-id-13.runtime.api.zerops";
const OTHER_NAME: &str = "node-id-1.runtime.app.zerops";

#[test]
fn two_projects_names_side_by_side_and_each_leaves_alone() {
    let Some(lab) = Lab::up("crtdnsp") else { return };
    let client = Client::new(&lab);
    let before = resolv_conf(&lab);
    let isp = lab.status["isp_names"][0]["name"].as_str().unwrap().to_string();

    assert_success("vpn up demo", &client.run(&["vpn", "up", "demo"]));
    assert_success("vpn up other", &client.run(&["vpn", "up", "other"]));

    for (host, expected) in [(DEMO_NAME, DEMO_NAME), (OTHER_NAME, OTHER_NAME)] {
        let ssh = lab.ssh(host, "hostname");
        assert_success(&format!("ssh {host}"), &ssh);
        assert_eq!(stdout(&ssh), expected);
    }
    let ssh = lab.ssh("api", "hostname");
    assert_success("ssh api (demo's, asked while other is the newest)", &ssh);
    assert!(stdout(&ssh).ends_with(".runtime.api.zerops"), "{}", stdout(&ssh));
    let app = lab.laptop_ok(&["getent", "ahosts", "app"]);
    assert!(
        app.contains(lab.container(OTHER_NAME)["ipv6"].as_str().unwrap()),
        "{app}"
    );
    assert!(!lab.laptop_ok(&["getent", "hosts", &isp]).is_empty(), "an ISP name");
    let tcp = dig(&lab, &["+tcp", DEMO_NAME]);
    assert!(tcp.contains("status: NOERROR") && tcp.contains("ANSWER: 1"), "{tcp}");
    let dnssec = dig(&lab, &["+dnssec", OTHER_NAME]);
    assert!(
        dnssec.contains("status: NOERROR") && dnssec.contains("flags: do;"),
        "{dnssec}"
    );

    let large = lab.status["isp_large_answer"]["name"].as_str().unwrap();
    let records = lab.status["isp_large_answer"]["txt_records"].as_u64().unwrap();
    let udp = dig(&lab, &["+bufsize=512", "+ignore", "TXT", large]);
    assert!(udp.contains(" tc ") || udp.contains(" tc;"), "TC over UDP: {udp}");
    let whole = dig(&lab, &["+tcp", "TXT", large]);
    assert!(whole.contains(&format!("ANSWER: {records},")), "{whole}");

    let status = client.status();
    let connections = status["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2);
    for connection in connections {
        let served = &connection["dns"]["served"];
        assert_eq!(served, &serde_json::json!(["other", "demo"]), "{connection}");
    }

    // `other` leaves: demo's names stay, other's are NXDOMAIN at once.
    assert_success("vpn down other", &client.run(&["vpn", "down", "other"]));
    assert_eq!(stdout(&lab.ssh(DEMO_NAME, "hostname")), DEMO_NAME);
    let gone = dig(&lab, &[OTHER_NAME]);
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");
    assert!(query_ms(&gone) < 100, "{gone}");

    // A daemon killed with -9 leaves the other connection and its names working.
    assert_success("vpn up other again", &client.run(&["vpn", "up", "other"]));
    assert!(dig(&lab, &[OTHER_NAME]).contains("status: NOERROR"));
    let other_pid = client.status()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["project_name"] == "other")
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    kill_9(other_pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dig(&lab, &[OTHER_NAME]).contains("status: NXDOMAIN") {
        assert!(Instant::now() < deadline, "the killed project's names are still served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stdout(&lab.ssh(DEMO_NAME, "hostname")), DEMO_NAME);
    assert!(!lab.laptop_ok(&["getent", "hosts", &isp]).is_empty());

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(resolv_conf(&lab), before, "resolv.conf restored byte for byte");
    assert!(!lab
        .run_in(lab.laptop(), &["getent", "hosts", DEMO_NAME])
        .status
        .success());

    // The responder's own process killed: the next `vpn down` replays its journal.
    assert_success("vpn up demo again", &client.run(&["vpn", "up", "demo"]));
    assert_ne!(resolv_conf(&lab), before);
    let service_pid = std::fs::read_to_string(client.dir.path().join("run/dns.pid")).unwrap();
    kill_9(service_pid.trim().parse().unwrap());
    assert_success("vpn down after the responder died", &client.run(&["vpn", "down"]));
    assert_eq!(resolv_conf(&lab), before, "after the responder was killed");
}

/// `dig` in the laptop namespace against the responder, one try.
fn dig(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["dig", "+time=2", "+tries=1", "@127.0.0.153"];
    all.extend_from_slice(args);
    stdout(&lab.run_in(lab.laptop(), &all))
}

/// dig's own measure of the answer's wait.
fn query_ms(dig_output: &str) -> u64 {
    dig_output
        .lines()
        .find_map(|l| l.strip_prefix(";; Query time: "))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no query time in {dig_output}"))
}

fn kill_9(pid: u64) {
    assert_success(
        "kill -9",
        &Command::new("kill").args(["-9", &pid.to_string()]).output().unwrap(),
    );
}

fn resolv_conf(lab: &Lab) -> Vec<u8> {
    lab.run_in(lab.laptop(), &["cat", "/etc/resolv.conf"]).stdout
}
