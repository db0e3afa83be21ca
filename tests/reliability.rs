//! Reliability end to end: the gateway loses every session and corridor carries SSH again
//! within seconds; an idle connection leaves the machine asleep.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{assert_success, Client, Lab};

const N13: &str = "node-id-13.runtime.api.zerops";

#[test]
fn ssh_works_again_within_seconds_after_the_gateway_restarts() {
    let Some(lab) = Lab::up("crtrel") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up demo", &client.run(&["vpn", "up", "demo"]));
    let target = lab.container(N13)["ipv6"].as_str().unwrap().to_string();
    assert_success("ssh before the restart", &lab.ssh(&target, "true"));

    assert_success("lab gateway-restart", &lab.lab(&["gateway-restart", "demo"]));
    let restarted = Instant::now();
    let recovered = ssh_until_it_works(&lab, &target, Duration::from_secs(20));

    let recovery = recovered.map(|at| at - restarted);
    println!("ssh works again {recovery:?} after the gateway restarted");
    let recovery = recovery.expect("ssh never worked again within 20 s");
    assert!(recovery <= Duration::from_secs(10), "ssh came back after {recovery:?}");
    let status = client.status();
    let conn = &status["connections"][0];
    assert_eq!(conn["state"], "connected", "{conn}");
    assert!(
        conn["reconnects"].as_u64().unwrap() >= 1,
        "recovered by a forced handshake: {conn}"
    );
    assert!(conn["handshakes_forced"].as_u64().unwrap() >= 1, "{conn}");
    assert!(
        conn["probes_sent"].as_u64().unwrap() >= 1,
        "probed the gateway first: {conn}"
    );
}

#[test]
fn an_idle_connection_wakes_the_daemon_at_most_once_a_second() {
    let Some(lab) = Lab::up("crtidle") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up demo", &client.run(&["vpn", "up", "demo"]));
    let pid = client.status()["connections"][0]["pid"].as_u64().unwrap();
    // Let the start-up's own traffic (probe, DNS check) settle first.
    std::thread::sleep(Duration::from_secs(2));

    let before = voluntary_switches(pid);
    std::thread::sleep(IDLE);
    let after = voluntary_switches(pid);

    let woken: u64 = after
        .iter()
        .map(|(tid, n)| n - before.get(tid).copied().unwrap_or(0))
        .sum();
    let per_second = woken as f64 / IDLE.as_secs_f64();
    println!("idle daemon: {per_second:.2} wakeups per second over {IDLE:?}");
    assert!(per_second <= 1.0, "{per_second:.2} wakeups per second");
    let conn = &client.status()["connections"][0];
    assert_eq!(conn["state"], "connected", "{conn}");
    assert_eq!(conn["probes_sent"], 0, "no probe while idle and healthy: {conn}");
    assert_eq!(conn["handshakes_forced"], 0, "{conn}");
}

const IDLE: Duration = Duration::from_secs(10);

/// Runs `ssh … true` until it succeeds or `limit` passes; when it first succeeded.
fn ssh_until_it_works(lab: &Lab, target: &str, limit: Duration) -> Option<Instant> {
    let start = Instant::now();
    // Each attempt is bounded by ssh's ConnectTimeout (5 s), so this is bounded in time too.
    for _ in 0..100 {
        if lab.ssh(target, "true").status.success() {
            return Some(Instant::now());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Voluntary context switches of each of the process's threads, by thread id: each is a
/// wakeup after sleeping. Threads come and go (tokio's blocking pool), hence per thread.
fn voluntary_switches(pid: u64) -> HashMap<String, u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon alive");
    tasks
        .flatten()
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some((task.file_name().to_string_lossy().into_owned(), switches))
        })
        .collect()
}
