//! Names: with the tunnel up, project names resolve for every program through the system
//! resolver, other names keep resolving, and the host's resolver is restored byte for byte.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

use common::{assert_success, stdout, Client, Lab};

const N13: &str = "node-id-13.runtime.api.zerops";
const N14: &str = "node-id-14.runtime.api.zerops";

#[test]
fn names_work_in_every_tool_and_resolv_conf_comes_back_byte_identical() {
    let Some(lab) = Lab::up("crtdns") else { return };
    let client = Client::new(&lab);
    let before = resolv_conf(&lab, lab.laptop());
    let isp = lab.status["isp_names"][0]["name"].as_str().unwrap().to_string();

    let up = client.run(&["vpn", "up", "demo"]);
    assert_success("vpn up", &up);
    let progress = String::from_utf8_lossy(&up.stderr);
    assert!(
        progress.contains("dns ok") && progress.contains("resolv-conf"),
        "{progress}"
    );

    let ssh = lab.ssh(N13, "hostname");
    assert_success("ssh by name", &ssh);
    assert_eq!(stdout(&ssh), N13);
    let ssh = lab.ssh("api", "hostname");
    assert_success("ssh api", &ssh);
    assert!(
        [N13, N14].contains(&stdout(&ssh).as_str()),
        "api reached {}",
        stdout(&ssh)
    );
    let getent = lab.laptop_ok(&["getent", "ahosts", N14]);
    assert!(
        getent.contains(lab.container(N14)["ipv6"].as_str().unwrap()),
        "{getent}"
    );
    let plink = lab.plink(N14, "hostname");
    assert_success("plink by name", &plink);
    assert_eq!(stdout(&plink), N14);
    copy_5mb_there_and_back(&lab, N13);
    assert!(
        !lab.laptop_ok(&["getent", "hosts", &isp]).is_empty(),
        "{isp} resolves while up"
    );
    let status = client.status();
    let dns = &status["connections"][0]["dns"];
    assert_eq!(dns["mode"], "resolv-conf");
    assert!(dns["answered"].as_u64().unwrap() >= 4, "{dns}");

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(
        resolv_conf(&lab, lab.laptop()),
        before,
        "resolv.conf restored byte for byte"
    );
    assert!(
        !lab.laptop_ok(&["getent", "hosts", &isp]).is_empty(),
        "{isp} resolves after down"
    );
    assert!(
        !lab.run_in(lab.laptop(), &["getent", "hosts", N13]).status.success(),
        "project names are gone"
    );
}

#[test]
fn after_kill_9_down_or_up_restores_resolv_conf() {
    let Some(lab) = Lab::up("crtdnsk") else { return };
    let client = Client::new(&lab);
    let before = resolv_conf(&lab, lab.laptop());

    for then in ["down", "up"] {
        assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
        assert_ne!(resolv_conf(&lab, lab.laptop()), before, "rewritten while up");
        let pid = client.status()["connections"][0]["pid"].as_u64().unwrap();
        assert_success(
            "kill -9",
            &Command::new("kill").args(["-9", &pid.to_string()]).output().unwrap(),
        );

        let next = client.run(&["vpn", then, "demo"]);
        assert_success(&format!("vpn {then} after a crash"), &next);
        if then == "up" {
            let ssh = lab.ssh(N13, "hostname");
            assert_eq!(stdout(&ssh), N13, "names work after recovering");
            assert_success("vpn down", &client.run(&["vpn", "down"]));
        }
        assert_eq!(resolv_conf(&lab, lab.laptop()), before, "after kill -9 then {then}");
    }
}

#[test]
fn after_a_reboot_the_next_down_restores_resolv_conf() {
    let Some(lab) = Lab::up("crtboot") else { return };
    let client = Client::new(&lab);
    let before = resolv_conf(&lab, lab.laptop());
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let pid = client.status()["connections"][0]["pid"].as_u64().unwrap();

    // A power cut: the daemon dies and /run is empty at boot; the state dir survives.
    assert_success(
        "kill -9",
        &Command::new("kill").args(["-9", &pid.to_string()]).output().unwrap(),
    );
    std::fs::remove_dir_all(client.dir.path().join("run")).unwrap();
    assert_ne!(resolv_conf(&lab, lab.laptop()), before);

    assert_success("vpn down after the reboot", &client.run(&["vpn", "down"]));
    assert_eq!(resolv_conf(&lab, lab.laptop()), before);
}

#[test]
fn container_to_container_and_responder_only_answers_locally() {
    let Some(lab) = Lab::up("crtc2c") else { return };
    let other = lab.project("other")["containers"][0]["ns"]
        .as_str()
        .unwrap()
        .to_string();
    let client = Client::in_ns(&lab, &other);
    let before = resolv_conf(&lab, &other);

    assert_success("vpn up from a container", &client.run(&["vpn", "up", "demo"]));
    let ssh = lab.ssh_from(&other, N13, "hostname");
    assert_success("ssh by name from a container", &ssh);
    assert_eq!(stdout(&ssh), N13);

    // The responder is loopback-only: not from the underlay, not back through the tunnel.
    let tunnel_addr = client.status()["connections"][0]["addresses"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let gw = lab.project("demo")["gateway_ns"].as_str().unwrap();
    let from_gateway = lab.run_in(gw, &["dig", "+time=1", "+tries=1", &format!("@{tunnel_addr}"), N13]);
    assert!(
        !stdout(&from_gateway).contains("status: NOERROR"),
        "answered through the tunnel: {}",
        stdout(&from_gateway)
    );
    let from_gateway = lab.run_in(gw, &["dig", "+time=1", "+tries=1", "@127.0.0.153", N13]);
    assert!(
        !stdout(&from_gateway).contains("status: NOERROR"),
        "another namespace got an answer"
    );

    // With the tunnel cut, project names fail fast instead of hanging.
    assert_success("cutting the tunnel", &lab.run_in(gw, &["nft", "add table inet cut; add chain inet cut in { type filter hook input priority 0; udp dport 51820 drop; }"]));
    let started = std::time::Instant::now();
    let cut = lab.run_in(
        &other,
        &["dig", "+time=8", "+tries=1", "@127.0.0.153", "node1.db.db.zerops"],
    );
    assert!(stdout(&cut).contains("SERVFAIL"), "{}", stdout(&cut));
    assert!(started.elapsed().as_secs() < 5, "answered in {:?}", started.elapsed());

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(
        resolv_conf(&lab, &other),
        before,
        "the container's bind-mounted resolv.conf restored"
    );
}

/// pscp a 5 MB file to the container and back; both copies byte-identical.
fn copy_5mb_there_and_back(lab: &Lab, host: &str) {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&original, &data).unwrap();
    let back = dir.path().join("back");
    let remote = format!("root@{host}:/tmp/corridor-pscp-test");
    let pscp = |from: &str, to: &str| {
        let args = [
            "pscp",
            "-batch",
            "-q",
            "-P",
            "65437",
            "-hostkey",
            lab.ssh_host_key(),
            from,
            to,
        ];
        lab.run_in(lab.laptop(), &args)
    };
    assert_success("pscp there", &pscp(original.to_str().unwrap(), &remote));
    let again = pscp(&remote, back.to_str().unwrap());
    assert_success("pscp back", &again);
    assert!(std::fs::read(&back).unwrap() == data, "the copy came back different");
    let _ = lab.ssh(host, "rm -f /tmp/corridor-pscp-test");
}

/// The resolv.conf programs in namespace `ns` see.
fn resolv_conf(lab: &Lab, ns: &str) -> Vec<u8> {
    lab.run_in(ns, &["cat", "/etc/resolv.conf"]).stdout
}
