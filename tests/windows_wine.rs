//! corridor.exe and corridor-daemon.exe (x86_64-pc-windows-gnu, release, taken out of the zip
//! that scripts/check-platforms.sh makes with scripts/dist.sh) under Wine: inside a lab's laptop
//! namespace, help, login against the lab API, status when not connected, doctor's Windows
//! checks, the daemon program started by hand refusing, and `vpn up` refused with what to do,
//! leaving nothing behind (Wine has no Wintun); the rootless `forward`, `connect` (ssh's
//! ProxyCommand) and `proxy` (SOCKS5 for curl and `nc -X 5`) carrying ssh, scp and HTTP through
//! the tunnel, the whole Windows data path (boringtun, the UDP socket, smoltcp); the DNS service
//! answering a lab project's names on 127.0.0.153 with its NRPT rule in Wine's registry, and
//! leaving nothing however it stops; and, with no network at all, journals planted where
//! corridor keeps its state refused without touching what they name.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_success, HttpServer, Lab, Running, SSH_OPTIONS};

/// The two programs of the Windows zip.
const EXES: [&str; 2] = ["corridor.exe", "corridor-daemon.exe"];
/// Built with mingw beside the programs: the ProcessPrng stand-in (Wine 8 has no
/// bcryptprimitives.dll) and a program that sets a process's stop event.
const HELPERS: [(&str, &str); 2] = [
    ("bcryptprimitives.c", "bcryptprimitives.dll"),
    ("stop-event.c", "stop-event.exe"),
];
/// Wine starts slowly: how long a program may take to say it is ready.
const WINE_READY: Duration = Duration::from_secs(60);
/// The folder inside the zip that `scripts/dist.sh windows` makes.
const ZIP_DIR: &str = concat!("corridor-", env!("CARGO_PKG_VERSION"), "-x86_64-windows");

#[test]
fn corridor_exe_logs_in_shows_status_and_refuses_a_tunnel_it_cannot_build() {
    let Some(lab) = Lab::up("wine") else { return };
    let Some(wine) = Wine::new(Some(lab.laptop())) else {
        return;
    };
    let links_before = lab.laptop_ok(&["ip", "-o", "link"]);

    let help = wine.run(&["--help"]);
    let login = wine.run(&["--api", lab.api_url(), "login", "--token", lab.token()]);
    let status = wine.run(&["vpn", "status"]);
    let ls = wine.run(&["ls", "demo", "--json"]);
    let ini = wine.prefix().join("demo.ini");
    let winscp_out = format!("Z:{}", ini.display());
    let winscp = wine.run(&["export", "winscp", "demo", "-o", &winscp_out]);
    let doctor = wine.run(&["doctor"]);
    let up = wine.run(&["vpn", "up", "--auto-disconnect", "alpha"]);
    let daemon_by_hand = wine.run_exe("corridor-daemon.exe", &[]);

    assert_success("corridor.exe --help", &help);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("login") && help.contains("vpn"), "{help}");

    assert_success("corridor.exe login", &login);
    let token = wine.find("token");
    assert_eq!(token.len(), 1, "one stored token in the user's profile: {token:?}");
    assert!(
        token[0].to_string_lossy().contains("AppData/Roaming/corridor"),
        "{token:?}"
    );
    assert_eq!(std::fs::read_to_string(&token[0]).unwrap().trim(), lab.token());

    assert_success("corridor.exe vpn status", &status);
    assert!(String::from_utf8_lossy(&status.stdout).contains("not connected"));

    assert_success("corridor.exe ls demo --json", &ls);
    let listing = String::from_utf8_lossy(&ls.stdout);
    for name in [
        "node-id-13.runtime.api.zerops",
        "node-id-14.runtime.api.zerops",
        "node1.db.db.zerops",
    ] {
        assert!(listing.contains(name), "{name} missing from {listing}");
    }
    assert_success("corridor.exe export winscp", &winscp);
    let sessions = std::fs::read_to_string(&ini).unwrap_or_default();
    assert!(sessions.contains("PortNumber=65437"), "{sessions}");
    assert!(sessions.contains("corridor-demo-api"), "{sessions}");

    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    for check in ["privileges", "wintun", "nrpt", "token"] {
        assert!(report.contains(check), "doctor checks {check}: {report}");
    }
    assert!(
        report.contains("wintun.dll is missing") && report.contains("wintun.net"),
        "{report}"
    );
    for linux in ["CAP_NET_ADMIN", "/dev/net/tun", "modprobe", "sysctl"] {
        assert!(!report.contains(linux), "no Linux check on Windows ({linux}): {report}");
    }

    assert!(!daemon_by_hand.status.success());
    let error = String::from_utf8_lossy(&daemon_by_hand.stderr);
    assert!(
        error.contains("started by corridor"),
        "corridor-daemon.exe runs and says what it is: {error}"
    );

    assert!(!up.status.success(), "vpn up cannot succeed without Wintun");
    let error = String::from_utf8_lossy(&up.stderr);
    eprintln!("vpn up under Wine: {}", error.trim());
    let says_what_to_do = error.contains("run it from an Administrator terminal")
        || (error.contains("wintun.dll is missing")
            && error.contains("beside corridor.exe")
            && error.contains("wintun.net"));
    assert!(says_what_to_do, "{error}");
    assert_eq!(
        wine.find(".journal"),
        Vec::<PathBuf>::new(),
        "no host-change journal is left"
    );
    let registry = std::fs::read_to_string(wine.prefix().join("system.reg")).unwrap_or_default();
    assert!(!registry.contains("corridor-"), "no NRPT rule is left");
    assert_eq!(
        lab.laptop_ok(&["ip", "-o", "link"]),
        links_before,
        "no interface is left"
    );
}

#[test]
fn corridor_exe_forward_carries_ssh_and_scp_through_the_tunnel() {
    let Some(lab) = Lab::up("winefwd") else { return };
    let Some(wine) = Wine::new(Some(lab.laptop())) else {
        return;
    };
    let login = wine.run(&["--api", lab.api_url(), "login", "--token", lab.token()]);
    assert_success("corridor.exe login", &login);

    let mut forward = wine.start(&["forward", "demo", "2222:api:65437"]);
    forward.wait_for_within("127.0.0.1:2222 → api:65437", WINE_READY);

    let hostname = lab.run_in(lab.laptop(), &ssh_args("ssh", "-p", &["root@127.0.0.1", "hostname"]));
    assert_success("ssh through corridor.exe forward", &hostname);
    let name = String::from_utf8_lossy(&hostname.stdout).trim().to_string();
    assert!(
        name.starts_with("node-id-1") && name.ends_with(".runtime.api.zerops"),
        "{name}"
    );

    let payload = payload();
    let (up, down) = (wine.dir.path().join("up.bin"), wine.dir.path().join("down.bin"));
    std::fs::write(&up, &payload).unwrap();
    let remote = "root@127.0.0.1:/tmp/corridor-wine.bin";
    let scp_up = lab.run_in(lab.laptop(), &ssh_args("scp", "-P", &[up.to_str().unwrap(), remote]));
    assert_success("scp up", &scp_up);
    let scp_down = lab.run_in(lab.laptop(), &ssh_args("scp", "-P", &[remote, down.to_str().unwrap()]));
    assert_success("scp down", &scp_down);
    assert!(std::fs::read(&down).unwrap() == payload, "the file came back different");
    let cleanup = ["root@127.0.0.1", "rm -f /tmp/corridor-wine.bin"];
    let _ = lab.run_in(lab.laptop(), &ssh_args("ssh", "-p", &cleanup));
}

#[test]
fn corridor_exe_connect_and_proxy_carry_ssh_scp_and_http_by_name() {
    let Some(lab) = Lab::up("wineprox") else { return };
    let Some(wine) = Wine::new(Some(lab.laptop())) else {
        return;
    };
    let login = wine.run(&["--api", lab.api_url(), "login", "--token", lab.token()]);
    assert_success("corridor.exe login", &login);
    // ssh starts it through the shell, with the prefix's environment (`Wine::linux`).
    let connect = format!(
        "{} {} connect -P demo %h %p",
        wine.wine.display(),
        wine.dir.path().join("bin/corridor.exe").display()
    );
    let proxy_command = format!("ProxyCommand={connect}");

    let hostname = wine
        .linux("ssh")
        .args(proxied_ssh_args(
            "-p",
            &proxy_command,
            &["root@node1.db.db.zerops", "hostname"],
        ))
        .output()
        .unwrap();
    assert_success("ssh with corridor.exe connect as its ProxyCommand", &hostname);
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "node1.db.db.zerops");

    let payload = payload();
    let (up, down) = (wine.dir.path().join("up.bin"), wine.dir.path().join("down.bin"));
    std::fs::write(&up, &payload).unwrap();
    let remote = "root@node-id-13.runtime.api.zerops:/tmp/corridor-wine-connect.bin";
    for (what, from, to) in [
        ("scp up", up.to_str().unwrap(), remote),
        ("scp down", remote, down.to_str().unwrap()),
    ] {
        let scp = wine
            .linux("scp")
            .args(proxied_ssh_args("-P", &proxy_command, &[from, to]))
            .output()
            .unwrap();
        assert_success(what, &scp);
    }
    assert!(std::fs::read(&down).unwrap() == payload, "the file came back different");

    let container = lab.container("node-id-13.runtime.api.zerops")["ns"].as_str().unwrap();
    let site = wine.dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "served from node-id-13\n").unwrap();
    let _http = HttpServer::start(&lab, container, &site, 8000);
    let mut proxy = wine.start(&["proxy", "-P", "demo", "--socks5", "127.0.0.1:1080"]);
    proxy.wait_for_within("127.0.0.1:1080 → SOCKS5", WINE_READY);

    let curl = lab.run_in(
        lab.laptop(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--socks5-hostname",
            "127.0.0.1:1080",
            "http://node-id-13.runtime.api.zerops:8000/",
        ],
    );
    assert_success("curl --socks5-hostname through corridor.exe proxy", &curl);
    assert_eq!(String::from_utf8_lossy(&curl.stdout).trim(), "served from node-id-13");

    let nc = "ProxyCommand=nc -X 5 -x 127.0.0.1:1080 %h %p";
    let ssh = lab.run_in(
        lab.laptop(),
        &proxied_ssh(&["-p", "65437"], nc, &["root@api", "hostname"]),
    );
    assert_success("ssh via nc -X 5 through corridor.exe proxy", &ssh);
    let name = String::from_utf8_lossy(&ssh.stdout).trim().to_string();
    assert!(
        name.starts_with("node-id-1") && name.ends_with(".runtime.api.zerops"),
        "the bare name api resolved in the project: {name}"
    );
    let cleanup = [
        "root@node-id-13.runtime.api.zerops",
        "rm -f /tmp/corridor-wine-connect.bin",
    ];
    let _ = wine
        .linux("ssh")
        .args(proxied_ssh_args("-p", &proxy_command, &cleanup))
        .output();
}

/// ssh or scp's arguments (after the program's name) to the lab's sshd through `proxy_command`;
/// `port_flag` is ssh's `-p` or scp's `-P`.
fn proxied_ssh_args<'a>(port_flag: &'a str, proxy_command: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    proxied_ssh(&[port_flag, "65437"], proxy_command, rest)
        .into_iter()
        .skip(1)
        .collect()
}

/// `ssh` with `port` (flag and value) through `proxy_command`. The connect timeout covers the
/// proxy's whole start, which under Wine takes seconds.
fn proxied_ssh<'a>(port: &[&'a str], proxy_command: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    // ssh takes the first value of an option: this timeout, not the common one.
    ["ssh", "-o", "ConnectTimeout=60", "-o", proxy_command]
        .into_iter()
        .chain(port.iter().copied())
        .chain(SSH_OPTIONS)
        .chain(rest.iter().copied())
        .collect()
}

/// 5 MB that no compression shrinks much.
fn payload() -> Vec<u8> {
    (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The NRPT rule of the DNS service (named after its journal, `dns.journal`).
const NRPT_RULE: &str = r"HKLM\SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig\{corridor-dns}";
#[test]
fn dns_service_answers_project_names_and_each_way_it_stops_leaves_nothing() {
    let Some(lab) = Lab::up("winedns") else { return };
    let demo = lab.project("demo");
    let project_dns = format!("{}:53", demo["dns"].as_str().unwrap());
    let id = demo["id"].as_str().unwrap();
    // A namespace of its own, linked to the gateway's, which reaches the project's dnsmasq
    // without a tunnel. Not the gateway's itself: Wine 8 binds a UDP socket asked for an
    // address that no interface has (127.0.0.153) on 0.0.0.0 (server/sock.c,
    // bind_to_interface), so port 53 must be free on every address, and the gateway's dnsmasq
    // has it on the project's.
    let ns = LinkedNs::new(&format!("{}-winesvc", lab.prefix), demo["gateway_ns"].as_str().unwrap());
    // And for the same reason, the answers of that socket to 127.0.0.153 would leave from
    // 127.0.0.1, the source of lo's 127.0.0.0/8, and dig would drop them: with the address on
    // lo they leave from it.
    let lo = ["ip", "-n", &ns.name, "addr", "add", "127.0.0.153/32", "dev", "lo"];
    assert_success(&lo.join(" "), &Command::new(lo[0]).args(&lo[1..]).output().unwrap());
    let Some(wine) = Wine::new(Some(&ns.name)) else {
        return;
    };
    let here = ns.name.as_str();
    let names = || {
        let args = ["names", "--project", id, "--name", "demo", "--dns", &project_dns];
        let mut names = wine.start_exe("corridor-daemon.exe", &args);
        let line = names.wait_for_within("\"pid\":", WINE_READY);
        let status: serde_json::Value = serde_json::from_str(&line).expect("the service's status");
        (names, status["pid"].as_u64().expect("the service's pid").to_string())
    };

    // The last unregister: the connection ends, the service with it.
    let (registered, pid) = names();
    serves_names_with_the_nrpt_rule(&lab, &wine, here);
    ends_cleanly(registered);
    nothing_is_left(&wine, here, &format!("after the last unregister (service pid {pid})"));

    // The stop event, as `vpn down` stops a daemon.
    let (registered, pid) = names();
    serves_names_with_the_nrpt_rule(&lab, &wine, here);
    assert_success(
        "setting the service's stop event",
        &wine.run_exe("stop-event.exe", &[&pid]),
    );
    wait_until("the service ends on its stop event", || {
        wine.processes("dns-service").is_empty()
    });
    assert_eq!(
        wine.reg(&["query", NRPT_RULE]).status.code(),
        Some(1),
        "the rule went with it"
    );
    ends_cleanly(registered);
    nothing_is_left(&wine, here, "after the stop event");

    // Terminated: the rule stays behind until the next `vpn down` (or `vpn up`) repairs.
    let (registered, pid) = names();
    serves_names_with_the_nrpt_rule(&lab, &wine, here);
    assert_success("taskkill /F", &wine.builtin("taskkill", &["/F", "/PID", &pid]));
    wait_until("the service is terminated", || wine.processes("dns-service").is_empty());
    assert_success(
        "the rule outlives its terminated service",
        &wine.reg(&["query", NRPT_RULE]),
    );
    ends_cleanly(registered);
    assert_success("corridor.exe vpn down", &wine.run(&["vpn", "down"]));
    nothing_is_left(&wine, here, "after terminate and repair");
}

/// `corridor-daemon.exe names` ends, and cleanly, at the end of its stdin.
fn ends_cleanly(mut names: Running) {
    drop(names.child.stdin.take());
    let status = names.wait(WINE_READY);
    assert!(
        status.success(),
        "corridor-daemon.exe names: {status}\n{}",
        names.said()
    );
}

/// A network namespace linked by a veth pair to `peer` (its default route), removed when
/// dropped (and by `lab down`, as its name starts with the lab's prefix).
struct LinkedNs {
    name: String,
}

impl LinkedNs {
    fn new(name: &str, peer: &str) -> LinkedNs {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let ns = LinkedNs { name: name.to_string() };
        let (ours, theirs) = ("wdns0", "wdns1");
        for step in [
            vec!["ip", "netns", "add", name],
            vec!["ip", "-n", name, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", name, "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", peer,
            ],
            vec!["ip", "-n", name, "addr", "add", "169.254.153.1/30", "dev", ours],
            vec!["ip", "-n", name, "link", "set", ours, "up"],
            vec!["ip", "-n", peer, "addr", "add", "169.254.153.2/30", "dev", theirs],
            vec!["ip", "-n", peer, "link", "set", theirs, "up"],
            vec!["ip", "-n", name, "route", "add", "default", "via", "169.254.153.2"],
        ] {
            let out = Command::new(step[0]).args(&step[1..]).output().unwrap();
            assert_success(&step.join(" "), &out);
        }
        ns
    }
}

impl Drop for LinkedNs {
    fn drop(&mut self) {
        // The veth pair goes with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Full and bare names answered on 127.0.0.153 from the project's DNS, and the NRPT rule in
/// Wine's registry.
fn serves_names_with_the_nrpt_rule(lab: &Lab, wine: &Wine, ns: &str) {
    let full = "node-id-13.runtime.api.zerops";
    let expected = lab.container(full)["ipv4"].as_str().unwrap();
    assert_eq!(dig(lab, ns, full), [expected], "{full}");
    // What the search domain makes of a bare `api`.
    let api = dig(lab, ns, "api.zerops");
    assert!(!api.is_empty(), "api.zerops has addresses");
    for address in &api {
        let node = ["node-id-13.runtime.api.zerops", "node-id-14.runtime.api.zerops"]
            .iter()
            .any(|name| lab.container(name)["ipv4"].as_str() == Some(address));
        assert!(node, "api.zerops is an api container: {address}");
    }

    let rule = wine.reg(&["query", NRPT_RULE]);
    assert_success("reg query the NRPT rule", &rule);
    let rule = String::from_utf8_lossy(&rule.stdout);
    for value in [
        ["GenericDNSServers", "REG_SZ", "127.0.0.153"].as_slice(),
        &["Name", "REG_MULTI_SZ", ".zerops"],
        &["ConfigOptions", "REG_DWORD", "0x8"],
        &["Version", "REG_DWORD", "0x2"],
        &["Comment", "REG_SZ", "corridor", "dns"],
    ] {
        let line = rule.lines().find(|l| l.split_whitespace().collect::<Vec<_>>() == value);
        assert!(line.is_some(), "{value:?} in {rule}");
    }
}

/// No NRPT rule, journal or service process, and nothing on port 53.
fn nothing_is_left(wine: &Wine, ns: &str, when: &str) {
    assert_eq!(
        wine.reg(&["query", NRPT_RULE]).status.code(),
        Some(1),
        "no NRPT rule {when}"
    );
    assert_eq!(wine.find(".journal"), Vec::<PathBuf>::new(), "no journal {when}");
    wait_until(&format!("no DNS service process {when}"), || {
        wine.processes("dns-service").is_empty()
    });
    // Any address: Wine binds the UDP socket on 0.0.0.0 (see the test).
    wait_until(&format!("nothing on port 53 {when}"), || {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hlnut", "sport = :53"])
            .output()
            .unwrap();
        out.status.success() && out.stdout.is_empty()
    });
}

/// The A records of `name` from 127.0.0.153, asked in namespace `ns`.
fn dig(lab: &Lab, ns: &str, name: &str) -> Vec<String> {
    let out = lab.run_in(ns, &["dig", "@127.0.0.153", "+short", "+time=3", "+tries=2", name, "A"]);
    assert_success(&format!("dig {name}"), &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `done` every 50 ms for up to 20 s; fails the test with `what` if it never holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `program` (ssh or scp) to the forwarded port 2222, non-interactive and without host keys.
fn ssh_args<'a>(program: &'a str, port_flag: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    // ssh takes the first value of an option: this timeout, not the common one.
    [program, port_flag, "2222", "-o", "ConnectTimeout=5"]
        .into_iter()
        .chain(SSH_OPTIONS)
        .chain(rest.iter().copied())
        .collect()
}

#[test]
fn journals_planted_in_the_state_dir_are_refused_and_what_they_name_is_untouched() {
    let Some(wine) = Wine::new(None) else { return };
    let work = wine.dir.path();
    let victim_key = r"HKLM\Software\corridor-victim";
    let reg_add = wine.reg(&["add", victim_key, "/v", "Owner", "/t", "REG_SZ", "/d", "victim", "/f"]);
    assert_success("wine reg add", &reg_add);
    let victim = work.join("victim.txt");
    std::fs::write(&victim, "the victim's own\n").unwrap();
    let state = private_dir(work, "state", 0o700);
    let backup = state.join("p1.resolv.conf.orig");
    std::fs::write(&backup, "planted\n").unwrap();
    let journal = state.join("p1.journal");
    plant(
        &journal,
        &[
            serde_json::json!({"kind": "registry_key", "key": r"Software\corridor-victim"}),
            serde_json::json!({"kind": "file", "path": windows_path(&victim), "backup": windows_path(&backup), "marker": null}),
        ],
    );

    let refused = wine.status_and_down(&state);

    assert!(
        refused.contains(r"HKLM\Software\corridor-victim is no registry key of this journal's"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("{} is no file corridor rewrites", windows_path(&victim))),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "the victim's own\n");
    assert!(journal.exists(), "kept for inspection");
    let key = wine.reg(&["query", victim_key, "/v", "Owner"]);
    assert_success("the victim key is still there", &key);
    assert!(String::from_utf8_lossy(&key.stdout).contains("victim"));

    // A journal of corridor's own shape (its own NRPT rule), in a directory everyone may write.
    let open = private_dir(work, "open", 0o777);
    let rule = r"HKLM\SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig\{corridor-p2}";
    assert_success(
        "wine reg add",
        &wine.reg(&["add", rule, "/v", "Comment", "/d", "corridor p2", "/f"]),
    );
    plant(
        &open.join("p2.journal"),
        &[serde_json::json!({"kind": "registry_key", "key": &rule[5..]})],
    );

    let refused = wine.status_and_down(&open);

    assert!(
        refused.contains("refusing to replay the host-change journal") && refused.contains("may write it"),
        "{refused}"
    );
    assert!(open.join("p2.journal").exists());
    assert_success(
        "the rule is left as it was",
        &wine.reg(&["query", rule, "/v", "Comment"]),
    );
}

fn plant(journal: &Path, entries: &[serde_json::Value]) {
    let lines: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    std::fs::write(journal, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(journal, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn private_dir(parent: &Path, name: &str, mode: u32) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// How a Windows program under Wine names a Linux path: on the Z: drive.
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// A Wine prefix of its own with corridor.exe and the ProcessPrng stand-in beside it; the
/// prefix is removed and its wineserver stopped when dropped.
struct Wine {
    dir: tempfile::TempDir,
    wine: PathBuf,
    wineserver: PathBuf,
    /// The network namespace its server and programs run in (none: this one).
    ns: Option<String>,
}

impl Wine {
    /// `None` (after saying why) when the zip, Wine or mingw is missing; a failure under
    /// CI=true. The programs are taken out of the zip users download; the prefix's server runs
    /// in the network namespace `ns` (none: this one, for tests that send nothing).
    fn new(ns: Option<&str>) -> Option<Wine> {
        let zip = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("dist/{ZIP_DIR}.zip"));
        let missing = (!zip.is_file()).then_some(&zip);
        let wine = find_program(&["wine64", "/usr/lib/wine/wine64"]);
        let wineserver = find_program(&["wineserver", "/usr/lib/wine/wineserver"]);
        let mingw = find_program(&["x86_64-w64-mingw32-gcc"]);
        let problem = if let Some(exe) = missing {
            Some(format!("{} is missing: run scripts/check-platforms.sh", exe.display()))
        } else if find_program(&["unzip"]).is_none() {
            Some("unzip is not installed".into())
        } else if wine.is_none() || wineserver.is_none() {
            Some("wine64 is not installed (Debian: apt-get install wine64)".into())
        } else if mingw.is_none() {
            Some("x86_64-w64-mingw32-gcc is not installed (Debian: gcc-mingw-w64-x86-64)".into())
        } else {
            None
        };
        if let Some(problem) = problem {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the Wine test cannot run: {problem}");
            }
            eprintln!("SKIPPED Wine test: {problem}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let unzip = Command::new("unzip")
            .args(["-q", "-j"])
            .arg(&zip)
            .args(EXES.map(|exe| format!("{ZIP_DIR}/{exe}")))
            .arg("-d")
            .arg(dir.path().join("bin"))
            .output()
            .unwrap();
        assert_success("taking the programs out of the zip", &unzip);
        let mingw = mingw.unwrap();
        let helpers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine");
        for (source, out) in HELPERS {
            let built = Command::new(&mingw)
                .args(["-O2", "-o"])
                .arg(dir.path().join("bin").join(out))
                .arg(helpers.join(source))
                .args(
                    out.ends_with(".dll")
                        .then_some(["-shared", "-ladvapi32"])
                        .into_iter()
                        .flatten(),
                )
                .output()
                .unwrap();
            assert_success(&format!("building {out}"), &built);
        }
        let wine = Wine {
            dir,
            wine: wine.unwrap(),
            wineserver: wineserver.unwrap(),
            ns: ns.map(str::to_string),
        };
        // The prefix's services (winedevice.exe and the rest) inherit the output pipes of the
        // run that starts them and can outlive it, holding a test's `output()` open: the prefix
        // is booted with no pipes of ours, its server kept (and so its services) until drop.
        // Wine makes a program's sockets in its wineserver: the server runs in the namespace the
        // programs' traffic belongs to.
        std::fs::create_dir(wine.prefix()).unwrap();
        let persistent = wine.with_env(in_ns(ns, &wine.wineserver).arg("-p")).status();
        assert!(persistent.is_ok_and(|s| s.success()), "wineserver -p");
        let boot = wine
            .with_env(in_ns(ns, &wine.wine).arg("wineboot"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(boot.is_ok_and(|s| s.success()), "wineboot");
        Some(wine)
    }

    fn prefix(&self) -> PathBuf {
        self.dir.path().join("prefix")
    }

    /// Where Debian's wineserver makes its socket directory, so that it goes with the prefix.
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Runs corridor.exe with `args` in the prefix's namespace.
    fn run(&self, args: &[&str]) -> Output {
        self.run_exe("corridor.exe", args)
    }

    /// One run of `exe`; a second when the first failed without a byte on either stream. Our
    /// programs say why whenever they fail, so a silent failure is Wine's (seen once in CI: a
    /// `corridor.exe ls` exit 1 with nothing written, not reproduced in 16 runs since).
    fn run_exe(&self, exe: &str, args: &[&str]) -> Output {
        let out = self.command(exe, args).output().expect("running wine");
        if out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty() {
            return out;
        }
        eprintln!(
            "{exe} {args:?} under Wine ended {} and wrote nothing: once more",
            out.status
        );
        self.command(exe, args).output().expect("running wine")
    }

    /// `exe` (one of the zip's, or a helper beside them) with `args` under Wine, in the
    /// prefix's namespace.
    fn command(&self, exe: &str, args: &[&str]) -> Command {
        let mut command = self.in_ns(&self.wine);
        self.with_env(command.arg(self.dir.path().join("bin").join(exe)).args(args));
        command
    }

    /// A Linux `program` in the prefix's namespace, with the prefix's environment: what it
    /// starts under Wine (an ssh ProxyCommand) runs in this prefix.
    fn linux(&self, program: &str) -> Command {
        let mut command = self.in_ns(Path::new(program));
        self.with_env(&mut command);
        command
    }

    fn in_ns(&self, program: &Path) -> Command {
        in_ns(self.ns.as_deref(), program)
    }

    /// corridor.exe with `args` left running in the prefix's namespace; ended when dropped.
    fn start(&self, args: &[&str]) -> Running {
        self.start_exe("corridor.exe", args)
    }

    fn start_exe(&self, exe: &str, args: &[&str]) -> Running {
        Running::spawn(&mut self.command(exe, args))
    }

    /// The Linux pids of this prefix's processes whose command line contains `needle`.
    fn processes(&self, needle: &str) -> Vec<u32> {
        let ours = format!("WINEPREFIX={}", self.prefix().display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let in_prefix = environ.split(|&b| b == 0).any(|var| var == ours.as_bytes());
            if in_prefix && String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
        found
    }

    /// `vpn status`, then `vpn down`, with `state` as the state and runtime dir; their output
    /// together. Nothing they do reaches the network.
    fn status_and_down(&self, state: &Path) -> String {
        let mut refused = String::new();
        for args in [["vpn", "status"], ["vpn", "down"]] {
            let out = self
                .with_env(
                    Command::new(&self.wine)
                        .arg(self.dir.path().join("bin/corridor.exe"))
                        .args(args),
                )
                .env("CORRIDOR_STATE_DIR", windows_path(state))
                .env("CORRIDOR_RUNTIME_DIR", windows_path(state))
                .output()
                .expect("running wine");
            refused.push_str(&String::from_utf8_lossy(&out.stdout));
            refused.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        refused
    }

    /// Wine's `reg` on this prefix's registry.
    fn reg(&self, args: &[&str]) -> Output {
        self.builtin("reg", args)
    }

    /// One of Wine's own programs (reg, taskkill) in the prefix's namespace.
    fn builtin(&self, program: &str, args: &[&str]) -> Output {
        let mut command = self.in_ns(&self.wine);
        self.with_env(command.arg(program).args(args))
            .output()
            .unwrap_or_else(|e| panic!("running wine {program}: {e}"))
    }

    fn with_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("WINEPREFIX", self.prefix())
            .env("TMPDIR", self.tmp())
            .env("WINEDEBUG", "-all")
            // The stand-in beside the exe, not a builtin; no Mono or Gecko installer prompts.
            .env("WINEDLLOVERRIDES", "bcryptprimitives=n;mscoree=;mshtml=")
            .env_remove("DISPLAY")
            .env_remove("CORRIDOR_CONFIG_DIR")
            .env_remove("CORRIDOR_TOKEN")
            .env_remove("CORRIDOR_STATE_DIR")
            .env_remove("CORRIDOR_RUNTIME_DIR")
    }

    /// Files under the prefix's C: drive whose names end with `suffix`.
    fn find(&self, suffix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.prefix().join("drive_c")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if entry.file_name().to_string_lossy().ends_with(suffix) {
                    found.push(entry.path());
                }
            }
        }
        found
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // Stop the prefix's wineserver and wait until it has gone, before the prefix goes.
        for flag in ["-k", "-w"] {
            let _ = Command::new(&self.wineserver)
                .arg(flag)
                .env("WINEPREFIX", self.prefix())
                .env("TMPDIR", self.tmp())
                .output();
        }
    }
}

/// `program` run in the network namespace `ns`, if any.
fn in_ns(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().find_map(|name| {
        let path = Path::new(name);
        if path.is_absolute() {
            return path.is_file().then(|| path.to_path_buf());
        }
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
    })
}
