//! The host's resolver defended while connected: another program's rewrite of resolv.conf is put
//! back within 2 s, `down` (also after a crash) restores that program's newest version, a
//! program that rewrites it again and again is left to it (and status says so); and the Firefox
//! DNS-over-HTTPS canary is NXDOMAIN while other names resolve.
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, Instant};

use common::{assert_success, stdout, Client, Lab};

const N13: &str = "node-id-13.runtime.api.zerops";
/// The start of the first line of corridor's rewrite.
const MARKER: &str = "# Written by corridor while a VPN is connected";

#[test]
fn resolv_conf_rewritten_in_place_is_put_back_within_2_s_and_down_restores_that_version() {
    let Some(lab) = Lab::up("crwdns") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    assert!(!lab.laptop_ok(&["getent", "hosts", N13]).is_empty());

    // A DHCP renewal: the ISP's resolver again, which knows nothing of the project.
    let dhcp = format!("# a DHCP renewal\nnameserver {}\n", isp_dns(&lab));
    write_resolv_conf(&lab, &dhcp);
    let written = Instant::now();
    let resolved = poll(Duration::from_secs(3), || {
        lab.run_in(lab.laptop(), &["getent", "hosts", N13]).status.success()
    });
    let took = resolved.unwrap_or_else(|| panic!("{N13} still fails 3 s after the rewrite"));
    assert!(took <= Duration::from_secs(2), "names back after {took:?}");
    assert!(written.elapsed() < Duration::from_secs(5));
    let now = String::from_utf8_lossy(&resolv_conf(&lab)).into_owned();
    assert!(now.starts_with(MARKER), "{now}");
    assert!(
        now.contains("# corridor: nameserver"),
        "the renewal's server turned off: {now}"
    );

    let status = client.status();
    let dns = &status["connections"][0]["dns"];
    assert_eq!(dns["reapplied"], 1, "{dns}");
    assert!(dns.get("backed_off").is_none(), "{dns}");
    let text = stdout(&client.run(&["vpn", "status"]));
    assert!(text.contains("re-applied once"), "{text}");

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(
        String::from_utf8_lossy(&resolv_conf(&lab)),
        dhcp,
        "down restores the renewal's version byte for byte"
    );
}

#[test]
fn after_a_crash_the_next_down_restores_the_other_programs_version_too() {
    let Some(lab) = Lab::up("crwcrash") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let dhcp = format!("# a DHCP renewal\nnameserver {}\n", isp_dns(&lab));
    write_resolv_conf(&lab, &dhcp);
    let put_back = poll(Duration::from_secs(3), || {
        resolv_conf(&lab).starts_with(MARKER.as_bytes())
    });
    assert!(put_back.is_some(), "not put back within 3 s");

    let daemon = client.status()["connections"][0]["pid"].as_u64().unwrap().to_string();
    let service = std::fs::read_to_string(client.dir.path().join("run/dns.pid")).unwrap();
    for pid in [daemon.as_str(), service.trim()] {
        let kill = std::process::Command::new("kill").args(["-9", pid]).output().unwrap();
        assert_success("kill -9", &kill);
    }

    assert_success("vpn down after the crash", &client.run(&["vpn", "down"]));
    assert_eq!(String::from_utf8_lossy(&resolv_conf(&lab)), dhcp);
}

#[test]
fn a_program_that_rewrites_resolv_conf_again_and_again_is_left_to_it_and_status_says_so() {
    let Some(lab) = Lab::up("crwloop") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));

    let mut put_back = 0;
    let mut last = String::new();
    for i in 0..10 {
        last = format!("# rewrite {i} by a second VPN\nnameserver {}\n", isp_dns(&lab));
        write_resolv_conf(&lab, &last);
        // Put back within 2 s, or left alone: looked at for 2.5 s either way.
        if poll(Duration::from_millis(2500), || {
            resolv_conf(&lab).starts_with(MARKER.as_bytes())
        })
        .is_some()
        {
            put_back += 1;
        }
    }

    assert!((1..10).contains(&put_back), "put back {put_back} of 10 times");
    assert_eq!(resolv_conf(&lab), last.as_bytes(), "the last rewrite stays");
    let status = client.status();
    let dns = &status["connections"][0]["dns"];
    assert_eq!(dns["reapplied"], put_back, "{dns}");
    let why = dns["backed_off"]
        .as_str()
        .unwrap_or_else(|| panic!("no backoff in {dns}"));
    assert!(why.contains("/etc/resolv.conf was changed by another program"), "{why}");
    let text = stdout(&client.run(&["vpn", "status"]));
    assert!(text.contains(&format!("re-applied {put_back} times")), "{text}");
    assert!(text.contains("! dns       backed off:"), "{text}");
    let doctor = stdout(&client.run(&["doctor"]));
    assert!(doctor.contains("stop that program"), "{doctor}");

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    assert_eq!(
        String::from_utf8_lossy(&resolv_conf(&lab)),
        last,
        "down leaves the other program's version"
    );
}

#[test]
fn the_doh_canary_is_nxdomain_through_the_responder_and_other_names_are_unaffected() {
    let Some(lab) = Lab::up("crwdoh") else { return };
    // An upstream that answers the canary, as much of the internet's DNS may: only the
    // responder's own answer makes it NXDOMAIN.
    let upstream = Upstream::start(&lab);
    write_resolv_conf(&lab, &format!("nameserver {}\n", Upstream::ADDRESS));
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let dig = |name: &str, rtype: &str| {
        stdout(&lab.run_in(
            lab.laptop(),
            &["dig", "+time=2", "+tries=1", "@127.0.0.153", name, rtype],
        ))
    };

    for rtype in ["A", "AAAA"] {
        let canary = dig("use-application-dns.net", rtype);
        assert!(canary.contains("status: NXDOMAIN"), "{canary}");
    }
    let system = lab.run_in(lab.laptop(), &["getent", "hosts", "use-application-dns.net"]);
    assert!(!system.status.success(), "{}", stdout(&system));
    let below = dig("www.use-application-dns.net", "A");
    assert!(below.contains(Upstream::CANARY_ANSWER), "{below}");
    let isp = &lab.status["isp_names"][0];
    let other = dig(isp["name"].as_str().unwrap(), "A");
    assert!(other.contains("status: NOERROR"), "{other}");
    assert!(other.contains(isp["ipv4"].as_str().unwrap()), "{other}");
    let project = dig(N13, "AAAA");
    assert!(
        project.contains(lab.container(N13)["ipv6"].as_str().unwrap()),
        "{project}"
    );

    let doctor = stdout(&client.run(&["doctor"]));
    let browsers = doctor.lines().find(|l| l.contains("browsers:")).unwrap_or_default();
    assert!(
        browsers.starts_with('✓') && browsers.contains("DNS-over-HTTPS"),
        "{doctor}"
    );
    drop(client);
    drop(upstream);
}

/// A dnsmasq in the laptop namespace that answers the canary and its subdomains with an
/// address and forwards the rest to the ISP's resolver; stopped when dropped.
struct Upstream(std::process::Child);

impl Upstream {
    const ADDRESS: &str = "127.0.0.2";
    const CANARY_ANSWER: &str = "192.0.2.53";

    fn start(lab: &Lab) -> Upstream {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", lab.laptop(), "dnsmasq", "--keep-in-foreground"])
            .args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
            ])
            .args(["--user=root", "--log-facility=-", "--pid-file="])
            .arg(format!("--listen-address={}", Self::ADDRESS))
            .arg(format!("--address=/use-application-dns.net/{}", Self::CANARY_ANSWER))
            .arg(format!("--server={}", isp_dns(lab)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        let upstream = Upstream(child);
        let answers = poll(Duration::from_secs(5), || {
            let dig = lab.run_in(
                lab.laptop(),
                &[
                    "dig",
                    "+time=1",
                    "+tries=1",
                    "+short",
                    "@127.0.0.2",
                    "use-application-dns.net",
                ],
            );
            stdout(&dig) == Self::CANARY_ANSWER
        });
        assert!(answers.is_some(), "the test's dnsmasq did not answer within 5 s");
        upstream
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn isp_dns(lab: &Lab) -> &str {
    lab.status["isp_dns"].as_str().unwrap()
}

/// The resolv.conf programs in the laptop namespace see (the lab's file, bind-mounted there).
fn resolv_conf(lab: &Lab) -> Vec<u8> {
    lab.run_in(lab.laptop(), &["cat", "/etc/resolv.conf"]).stdout
}

/// Rewrites it in place, as `>` in a shell does.
fn write_resolv_conf(lab: &Lab, content: &str) {
    let write = lab.run_in(
        lab.laptop(),
        &["sh", "-c", "printf '%s' \"$1\" > /etc/resolv.conf", "sh", content],
    );
    assert_success("rewriting resolv.conf", &write);
}

/// How long until `done` held, looked at every 50 ms for at most `limit`.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
