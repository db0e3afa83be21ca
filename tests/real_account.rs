//! What a real account needs beyond the lab's defaults (issue: a lab as strict as the platform):
//! gateways that do not answer ping, projects without IPv4 or without a DNS gateway, regions,
//! and the platform CLI's token variable. Each test runs the client against a lab told to
//! misbehave that way.
#![cfg(target_os = "linux")]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_success, routes, stdout, Client, Lab};
use serde_json::Value;

const N13: &str = "node-id-13.runtime.api.zerops";

#[test]
fn gateways_that_drop_ping_still_connect_with_a_warning() {
    let Some(lab) = Lab::up("crrping") else { return };
    assert_success("misbehave no-icmp", &lab.lab(&["misbehave", "no-icmp"]));
    let client = Client::new(&lab);

    let up = client.run(&["vpn", "up", "demo"]);

    assert_success("vpn up with no ICMP", &up);
    let progress = stderr(&up);
    let warning = progress
        .lines()
        .find(|l| l.contains("no answer to ping from"))
        .unwrap_or_else(|| panic!("no warning line in:\n{progress}"));
    assert!(warning.trim_start().starts_with('!'), "{warning}");
    assert!(
        warning.contains("logger.core.zerops"),
        "the probe name was tried: {warning}"
    );
    assert!(warning.contains("the tunnel is up (handshake "), "{warning}");
    let ssh = lab.ssh(N13, "hostname");
    assert_success("ssh by name", &ssh);
    assert_eq!(stdout(&ssh), N13);
}

#[test]
fn a_handshake_that_never_completes_still_fails_and_leaves_the_resolver_alone() {
    let Some(lab) = Lab::up("crrnohs") else { return };
    assert_success("misbehave no-icmp", &lab.lab(&["misbehave", "no-icmp"]));
    let gw = lab.project("demo")["gateway_ns"].as_str().unwrap();
    // The gateway stops answering altogether: no handshake can complete.
    let drop_udp = lab.run_in(gw, &["nft", "add table inet crrdrop; add chain inet crrdrop in { type filter hook input priority 0; udp dport 51820 drop; }"]);
    assert_success("drop WireGuard", &drop_udp);
    let client = Client::new(&lab);
    let resolv_before = lab.laptop_ok(&["cat", "/etc/resolv.conf"]);
    let service_pid = client.dir.path().join("run/dns.pid");

    let up = client
        .command(&["vpn", "up", "demo", "--timeout", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The DNS service starts with the connection, but the host is pointed at it only once a
    // project registers, which a tunnel that never comes up never does.
    let started = wait_for(Duration::from_secs(3), || service_pid.exists());
    let resolv_while_waiting = lab.laptop_ok(&["cat", "/etc/resolv.conf"]);
    let up = up.wait_with_output().unwrap();

    assert!(started, "the DNS service started while the tunnel came up");
    assert_eq!(
        resolv_while_waiting, resolv_before,
        "resolver untouched while connecting"
    );
    assert!(!up.status.success(), "vpn up succeeded without a handshake");
    assert!(stderr(&up).contains("not even a handshake"), "{}", stderr(&up));
    assert_eq!(client.status()["connections"], serde_json::json!([]));
    assert!(
        wait_for(Duration::from_secs(3), || !service_pid.exists()),
        "the DNS service the failed connection started is gone"
    );
    assert_eq!(lab.laptop_ok(&["cat", "/etc/resolv.conf"]), resolv_before);
}

/// Polls `done` every 10 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn ipv6_only_project_connects_without_any_ipv4() {
    let Some(lab) = Lab::up("crrv6") else { return };
    assert_success("misbehave ipv6-only", &lab.lab(&["misbehave", "ipv6-only"]));
    let client = Client::new(&lab);
    let routes_before = routes(lab.laptop());

    let up = client.run(&["vpn", "up", "demo"]);

    assert_success("vpn up ipv6-only", &up);
    let ssh = lab.ssh_with(lab.laptop(), &["-6"], N13, "hostname");
    assert_success("ssh -6 by name", &ssh);
    assert_eq!(stdout(&ssh), N13);
    let status = client.status();
    let conn = &status["connections"][0];
    let interface = conn["interface"].as_str().unwrap();
    let v4_addresses = lab.laptop_ok(&["ip", "-4", "-o", "addr", "show", "dev", interface]);
    assert_eq!(v4_addresses.trim(), "", "no IPv4 address on {interface}");
    let v4_routes = lab.laptop_ok(&["ip", "-4", "route", "show", "dev", interface]);
    assert_eq!(v4_routes.trim(), "", "no IPv4 route through {interface}");
    for net in conn["networks"].as_array().unwrap() {
        assert!(net.as_str().unwrap().contains(':'), "only IPv6 networks: {net}");
    }
    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(routes(lab.laptop()), routes_before);
}

#[test]
fn no_dns_gateway_connects_and_leaves_the_resolver_alone() {
    let Some(lab) = Lab::up("crrnodns") else { return };
    assert_success("misbehave no-dns", &lab.lab(&["misbehave", "no-dns"]));
    let client = Client::new(&lab);
    let resolv_before = lab.laptop_ok(&["cat", "/etc/resolv.conf"]);

    let up = client.run(&["vpn", "up", "demo"]);

    assert_success("vpn up without DNS", &up);
    let progress = stderr(&up);
    assert!(
        progress
            .lines()
            .any(|l| l.contains("✗ dns not set up") && l.contains("DNS server")),
        "{progress}"
    );
    assert_eq!(
        lab.laptop_ok(&["cat", "/etc/resolv.conf"]),
        resolv_before,
        "resolver untouched"
    );
    assert_eq!(
        client.status()["connections"][0]["dns"],
        Value::Null,
        "status says DNS is not set"
    );
    let v6 = lab.container(N13)["ipv6"].as_str().unwrap();
    let ssh = lab.ssh(v6, "hostname");
    assert_success("ssh by address", &ssh);
    assert_eq!(stdout(&ssh), N13);
    assert_success("vpn down", &client.run(&["vpn", "down"]));

    let skipped = client.run(&["vpn", "up", "demo", "--skip-dns-setup"]);
    assert_success("vpn up --skip-dns-setup", &skipped);
    assert!(
        !stderr(&skipped).contains("dns"),
        "the DNS address is never read: {}",
        stderr(&skipped)
    );
}

#[test]
fn zerops_token_connects_without_login() {
    let Some(lab) = Lab::up("crrztok") else { return };
    let client = Client {
        lab: &lab,
        dir: tempfile::tempdir().unwrap(),
        ns: lab.laptop().to_string(),
    };

    let mut up = client.command(&["vpn", "up", "demo"]);
    let up = up.env("ZEROPS_TOKEN", lab.token()).output().unwrap();

    assert_success("ZEROPS_TOKEN=… vpn up demo", &up);
    assert!(stdout(&up).contains("connected to demo"), "{}", stdout(&up));
    assert!(
        !client.dir.path().join("config").join("token").exists(),
        "nothing was stored"
    );
    let ssh = lab.ssh(N13, "hostname");
    assert_success("ssh by name", &ssh);
    let mut without = client.command(&["vpn", "up", "demo"]);
    let without = without.output().unwrap();
    assert!(!without.status.success());
    assert!(stderr(&without).contains("ZEROPS_TOKEN"), "{}", stderr(&without));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn login_and_vpn_up_find_the_api_in_the_region_list() {
    let Some(lab) = Lab::up("crrregn") else { return };
    let client = Client {
        lab: &lab,
        dir: tempfile::tempdir().unwrap(),
        ns: lab.laptop().to_string(),
    };
    let address = |name: &str| {
        lab.status["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let stored = || -> Value {
        serde_json::from_slice(&std::fs::read(client.dir.path().join("config/config.json")).unwrap()).unwrap()
    };

    let listed = without_api(&client, &["regions", "--json"]);
    assert_success("regions", &listed);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["regions"], lab.status["regions"]);

    let login = without_api(&client, &["login", "--token", lab.token()]);
    assert_success("login with the default region", &login);
    assert!(stderr(&login).contains("(region prg1)"), "{}", stderr(&login));
    assert_eq!(stored()["api"], address("prg1"));
    assert_eq!(stored()["region"], "prg1");

    let login = without_api(&client, &["login", "--token", lab.token(), "--region", "lab2"]);
    assert_success("login --region lab2", &login);
    assert_eq!(stored()["api"], address("lab2"));
    assert_eq!(stored()["region"], "lab2");
    let up = without_api(&client, &["vpn", "up", "demo"]);
    assert_success("vpn up at the stored region", &up);
    assert_success("ssh", &lab.ssh(N13, "true"));

    let unknown = without_api(&client, &["login", "--token", lab.token(), "--region", "mars"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no region named \"mars\"; the regions are: prg1 (default), lab2"),
        "{}",
        stderr(&unknown)
    );
    assert_eq!(stored()["region"], "lab2", "a failed login changes nothing");

    let explicit = client.run(&["login", "--token", lab.token(), "--region", "mars"]);
    assert_success("--api overrides the region", &explicit);
    assert_eq!(stored()["api"], lab.api_url());
    assert_eq!(stored()["region"], Value::Null);
}

/// `corridor ARGS` in the laptop without `--api`, the region list at the lab's.
fn without_api(client: &Client, args: &[&str]) -> Output {
    let dir = client.dir.path();
    std::process::Command::new("ip")
        .args(["netns", "exec", &client.ns])
        .arg(common::corridor_binary())
        .args(args)
        .env("CORRIDOR_REGION_URL", client.lab.status["region_url"].as_str().unwrap())
        .env("CORRIDOR_CONFIG_DIR", dir.join("config"))
        .env("CORRIDOR_RUNTIME_DIR", dir.join("run"))
        .env("CORRIDOR_STATE_DIR", dir.join("state"))
        .env_remove("CORRIDOR_API")
        .env_remove("CORRIDOR_TOKEN")
        .env_remove("ZEROPS_TOKEN")
        .env_remove("SUDO_USER")
        .output()
        .unwrap()
}
