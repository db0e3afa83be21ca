//! A connection that defends itself against its own machine and a changed platform side
//! (issue 19): routes that shadow a project network, rootless tunnels to a project without a
//! DNS gateway, keys removed and gateways rekeyed while connected.
#![cfg(target_os = "linux")]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_success, cmd_ok, stdout, Client, Lab, Running, SSH_OPTIONS};
use serde_json::Value;

const N13: &str = "node-id-13.runtime.api.zerops";
const DB: &str = "node1.db.db.zerops";

#[test]
fn a_shadowing_route_is_named_by_vpn_up_and_doctor_and_no_route_no_warning() {
    let Some(lab) = Lab::up("crhroute") else { return };
    let client = Client::new(&lab);
    let (shadow, network) = demo_shadow(&lab);

    let clean = client.run(&["vpn", "up", "demo"]);
    assert_success("vpn up without the route", &clean);
    assert!(!stderr(&clean).contains("shadows"), "{}", stderr(&clean));
    let healthy = doctor(&client);
    let routes = check(&healthy, "routes (demo)");
    assert_eq!(routes["ok"], true, "{routes}");
    assert_success("vpn down", &client.run(&["vpn", "down"]));

    let router = lab
        .api_url()
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let add = lab.run_in(
        lab.laptop(),
        &["ip", "route", "add", &shadow, "via", &router, "dev", "underlay"],
    );
    assert_success("the shadowing route", &add);

    let up = client.run(&["vpn", "up", "demo"]);

    assert_success("vpn up with the route", &up);
    let expected = format!("! {shadow} via {router} dev underlay shadows the project's {network}");
    assert!(
        stderr(&up).lines().any(|l| l.trim_start().starts_with(&expected)),
        "no {expected:?} in:\n{}",
        stderr(&up)
    );
    let ssh = lab.ssh(N13, "hostname");
    assert_success("ssh to a container outside the shadowed part", &ssh);
    assert_eq!(stdout(&ssh), N13);
    let report = doctor(&client);
    let routes = check(&report, "routes (demo)");
    assert_eq!(routes["ok"], false, "{routes}");
    assert!(
        routes["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{shadow} via {router} dev underlay")),
        "{routes}"
    );
    let text = stdout(&client.run(&["doctor"]));
    let line = text.lines().find(|l| l.contains("routes (demo)")).unwrap();
    assert!(line.starts_with('✗') && line.contains(&shadow), "{line}");
    assert!(
        !stderr(&up).contains("DNS server"),
        "the project DNS is outside {shadow}: {}",
        stderr(&up)
    );
    assert_success("vpn down", &client.run(&["vpn", "down"]));

    let dns = lab.project("demo")["dns"].as_str().unwrap().to_string();
    let over_dns = format!("{}.0/28", dns.rsplit_once('.').unwrap().0);
    let add = lab.run_in(
        lab.laptop(),
        &["ip", "route", "add", &over_dns, "via", &router, "dev", "underlay"],
    );
    assert_success("a route over the project DNS", &add);
    let up = client.run(&["vpn", "up", "demo"]);
    assert_success("vpn up with the project DNS shadowed", &up);
    assert!(
        stderr(&up).contains(&format!("the project's DNS server {dns} is among those addresses")),
        "{}",
        stderr(&up)
    );
    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_success(
        "route gone",
        &lab.run_in(lab.laptop(), &["ip", "route", "del", &over_dns]),
    );
    assert_success(
        "route gone",
        &lab.run_in(lab.laptop(), &["ip", "route", "del", &shadow]),
    );

    // A LAN numbered like the project: an address of the machine inside its network (a veth
    // pair inside the lab's laptop namespace, gone with it).
    let lan = format!("{}.40/29", dns.rsplit_once('.').unwrap().0);
    let dummy = [
        vec!["ip", "link", "add", "crhlan", "type", "veth", "peer", "name", "crhlan1"],
        vec!["ip", "addr", "add", &lan, "dev", "crhlan"],
        vec!["ip", "link", "set", "crhlan", "up"],
        vec!["ip", "link", "set", "crhlan1", "up"],
    ];
    for args in dummy {
        assert_success(&args.join(" "), &lab.run_in(lab.laptop(), &args));
    }
    let up = client.run(&["vpn", "up", "demo"]);
    assert_success("vpn up with an address in the project network", &up);
    let expected = format!("! this machine's address {lan} on crhlan overlaps the project's {network}");
    assert!(
        stderr(&up).lines().any(|l| l.trim_start().starts_with(&expected)),
        "no {expected:?} in:\n{}",
        stderr(&up)
    );
}

#[test]
fn forward_reaches_an_address_in_a_project_without_a_dns_gateway_and_says_names_cannot_resolve() {
    let Some(lab) = Lab::up("crhnodns") else { return };
    assert_success("misbehave no-dns", &lab.lab(&["misbehave", "no-dns"]));
    let client = Client::new(&lab);
    let v4 = lab.container(N13)["ipv4"].as_str().unwrap().to_string();

    let mut forward = Running::spawn(&mut client.command(&["forward", "demo", &format!("2222:{v4}:65437")]));
    forward.wait_for(&format!("127.0.0.1:2222 → {v4}:65437"));

    let warning = forward.wait_for("names of project demo cannot resolve");
    assert!(warning.contains("DNS server"), "{warning}");
    let ssh = ssh_local(&lab, 2222);
    assert_success("ssh through forward to an address", &ssh);
    assert_eq!(stdout(&ssh), N13);
    let by_name = client.run(&["forward", "demo", "2223:api:65437"]);
    assert!(!by_name.status.success(), "a name cannot resolve");
    assert!(
        stderr(&by_name).contains("names cannot resolve"),
        "{}",
        stderr(&by_name)
    );
}

#[test]
fn a_key_removed_through_the_api_is_registered_again_and_ssh_by_name_works_within_10_s() {
    let Some(lab) = Lab::up("crhkey") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let key = gateway_peer(&lab).expect("the connection's key is a peer of the gateway");

    let removed = remove_key_through_the_api(&lab, &key);
    assert_success("DELETE the key", &removed);
    assert_eq!(gateway_peer(&lab), None, "the API took the peer off the gateway");
    let started = Instant::now();

    let took = ssh_by_name_within(&lab, Duration::from_secs(10));

    assert!(took.is_some(), "ssh by name did not work again within 10 s");
    assert_eq!(
        gateway_peer(&lab).as_deref(),
        Some(key.as_str()),
        "the same key, registered again"
    );
    let status = client.status();
    let platform = &status["connections"][0]["platform"];
    assert_eq!(
        platform["note"], "re-registered after the key was removed from the project",
        "{status:#}"
    );
    assert_eq!(platform["reregistered"], 1);
    assert_eq!(platform["problem"], Value::Null);
    let text = stdout(&client.run(&["vpn", "status"]));
    assert!(
        text.contains("re-registered after the key was removed from the project"),
        "{text}"
    );
    eprintln!("ssh worked again {:?} after the removal", started.elapsed());
}

#[test]
fn a_gateway_rekeyed_on_a_new_port_is_adopted_and_ssh_by_name_works_within_10_s() {
    let Some(lab) = Lab::up("crhrekey") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let endpoint = lab.project("demo")["endpoint"].as_str().unwrap().to_string();
    let moved = format!("{}:51999", endpoint.rsplit_once(':').unwrap().0);

    let rekey = lab.lab(&["gateway-rekey", "demo", "--port", "51999"]);
    assert_success("gateway-rekey", &rekey);

    assert!(
        ssh_by_name_within(&lab, Duration::from_secs(10)).is_some(),
        "ssh by name did not work again within 10 s"
    );
    let status = client.status();
    let connection = &status["connections"][0];
    assert_eq!(connection["endpoint"], moved.as_str(), "{status:#}");
    assert_eq!(connection["platform"]["gateway_changes"], 1, "{status:#}");
    assert!(
        connection["platform"]["note"]
            .as_str()
            .unwrap()
            .contains(&format!("new key and endpoint {moved}")),
        "{status:#}"
    );
}

#[test]
fn with_the_token_refused_a_silent_gateway_is_blamed_on_the_token_not_the_network() {
    let Some(lab) = Lab::up("crhtoken") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let key = gateway_peer(&lab).expect("the connection's key is a peer of the gateway");
    assert_success("misbehave expired", &lab.lab(&["misbehave", "expired"]));
    // The platform's own clean-up, seen from the gateway: the API refuses every call now.
    let wg_if = lab.project("demo")["wg_interface"].as_str().unwrap().to_string();
    cmd_ok("wg", &["set", &wg_if, "peer", &key, "remove"], None);

    let problem = wait_for_platform_problem(&lab, &client, Duration::from_secs(20));

    assert!(problem["what"].as_str().unwrap().contains("token"), "{problem}");
    let text = stdout(&client.run(&["vpn", "status"]));
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in:\n{text}"))
            .to_string()
    };
    assert!(line("problem").contains("refused the token"), "{text}");
    assert!(line("fix").contains("corridor login"), "{text}");
    assert!(!text.contains("UDP"), "{text}");
    let report = doctor(&client);
    let handshake = check(&report, "handshake (demo)");
    assert_eq!(handshake["ok"], false, "{handshake}");
    assert!(handshake["detail"].as_str().unwrap().contains("token"), "{handshake}");
    let fix = handshake["fix"].as_str().unwrap();
    assert!(fix.contains("corridor login") && !fix.contains("UDP"), "{fix}");
}

/// The public key of the demo gateway's one peer, if it has one.
fn gateway_peer(lab: &Lab) -> Option<String> {
    let wg_if = lab.project("demo")["wg_interface"].as_str().unwrap();
    let out = Command::new("wg").args(["show", wg_if, "peers"]).output().unwrap();
    assert_success("wg show peers", &out);
    let peers = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(peers.lines().count() <= 1, "one connection, one peer: {peers}");
    (!peers.is_empty()).then_some(peers)
}

/// `DELETE /project/{id}/vpn` with the key, as another machine's `vpn key remove` sends it.
fn remove_key_through_the_api(lab: &Lab, key: &str) -> Output {
    lab.vpn_key_call("DELETE", lab.project("demo")["id"].as_str().unwrap(), key)
}

/// Tries `ssh node-id-13… hostname` until it works; how long that took, `None` past `limit`.
fn ssh_by_name_within(lab: &Lab, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let ssh = lab.ssh(N13, "hostname");
        if ssh.status.success() && stdout(&ssh) == N13 {
            return Some(started.elapsed());
        }
    }
    None
}

/// Sends traffic into the tunnel (a ping to node-id-13, which makes the daemon notice the silent
/// gateway) until the connection's status names a problem; fails the test past `limit`.
fn wait_for_platform_problem(lab: &Lab, client: &Client, limit: Duration) -> Value {
    let target = lab.container(N13)["ipv6"].as_str().unwrap().to_string();
    let started = Instant::now();
    while started.elapsed() < limit {
        let _ = lab.run_in(lab.laptop(), &["ping", "-c", "1", "-W", "1", &target]);
        let status = client.status();
        let problem = &status["connections"][0]["platform"]["problem"];
        if !problem.is_null() {
            return problem.clone();
        }
    }
    panic!("no problem in vpn status within {limit:?}: {:#}", client.status());
}

/// The demo project's second /28 (node1.db's address, not the project DNS nor node-id-13) and
/// its /26.
fn demo_shadow(lab: &Lab) -> (String, String) {
    let v4 = lab.container(DB)["ipv4"].as_str().unwrap();
    let base = v4.rsplit_once('.').unwrap().0;
    (format!("{base}.16/28"), format!("{base}.0/26"))
}

/// `ssh root@127.0.0.1 -p PORT hostname` in the laptop namespace.
fn ssh_local(lab: &Lab, port: u16) -> Output {
    let port = port.to_string();
    let mut args = vec!["ssh", "-p", &port];
    args.extend(SSH_OPTIONS);
    args.extend(["root@127.0.0.1", "hostname"]);
    lab.run_in(lab.laptop(), &args)
}

fn doctor(client: &Client) -> Value {
    let out = client.run(&["doctor", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}{}", stdout(&out), stderr(&out)))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
