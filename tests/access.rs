//! `corridor ls`, `ssh`, `ssh-config` and `export` end to end: the lab's API lists the project,
//! the client connects from the laptop namespace, and stock OpenSSH, scp, rsync, plink and psftp
//! reach the containers by the names corridor gives them.
//!
//! Commands that read a home directory run in a private mount namespace with a temporary
//! directory bound over root's home (OpenSSH finds `~` through the password database, not
//! `$HOME`), so the machine's own ~/.ssh and ~/.putty are never read or written.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_success, corridor_binary, links, stdout, Client, Lab};
use serde_json::Value;

const N13: &str = "node-id-13.runtime.api.zerops";
const N14: &str = "node-id-14.runtime.api.zerops";
const N15: &str = "node-id-15.runtime.api.zerops";
const DB: &str = "node1.db.db.zerops";

#[test]
fn ls_shows_services_containers_stopped_and_empty_projects_then_addresses_once_connected() {
    let Some(lab) = Lab::up("cracls") else { return };
    let client = Client::new(&lab);

    let before = ls_json(&client, "demo");
    assert_eq!(before["project"]["name"], "demo");
    assert_eq!(before["connected"], false);
    let api = service(&before, "api");
    assert_eq!(api["dns_name"], "api.zerops");
    assert_eq!(api["type"], "nodejs@22");
    let rows: Vec<(String, u64, String, bool)> = api["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["instance"].as_u64().unwrap(),
                c["status"].as_str().unwrap().to_string(),
                c["running"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (N13.to_string(), 1, "ACTIVE".to_string(), true),
            (N14.to_string(), 2, "ACTIVE".to_string(), true),
            (N15.to_string(), 3, "STOPPED".to_string(), false),
        ]
    );
    assert_eq!(service(&before, "db")["containers"][0]["name"], DB);
    assert!(
        containers(&before).all(|c| c["addresses"].as_array().unwrap().is_empty()),
        "no addresses without a connection: {before}"
    );

    let empty = ls_json(&client, "empty");
    assert_eq!(empty["services"].as_array().unwrap().len(), 0);
    let text = client.run(&["ls", "empty"]);
    assert_success("ls empty", &text);
    assert!(stdout(&text).contains("no services"), "{}", stdout(&text));

    let links_before = links(lab.laptop());
    let refused = client.run(&["ssh", "api", "--instance", "1", "--", "hostname"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not connected to project demo") && err.contains("`sudo corridor vpn up demo`"),
        "{err}"
    );
    assert_eq!(links(lab.laptop()), links_before, "nothing started");
    assert_eq!(client.status()["connections"].as_array().unwrap().len(), 0);

    let connect = client.run(&["ssh", "api", "--instance", "1", "--connect", "--", "hostname"]);
    assert_success("ssh --connect", &connect);
    assert_eq!(stdout(&connect), N13);

    let after = ls_json(&client, "demo");
    assert_eq!(after["connected"], true);
    for (name, entry) in [(N13, container(&after, N13)), (DB, container(&after, DB))] {
        let addresses: Vec<&str> = entry["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for family in ["ipv4", "ipv6"] {
            let expected = lab.container(name)[family].as_str().unwrap();
            assert!(addresses.contains(&expected), "{name}: {addresses:?} lacks {expected}");
        }
    }
    assert!(container(&after, N15)["addresses"].as_array().unwrap().is_empty());
    let table = client.run(&["ls"]);
    assert_success("ls (the connected project)", &table);
    let table = stdout(&table);
    assert!(table.starts_with("demo (") && table.contains(", connected"), "{table}");
    let n15_row = table
        .lines()
        .find(|l| l.contains(N15))
        .expect("stopped container listed");
    assert!(n15_row.contains("STOPPED"), "{n15_row}");
}

#[test]
fn ssh_reaches_a_service_instance_a_container_picks_on_a_terminal_and_lists_choices_without_one() {
    let Some(lab) = Lab::up("cracssh") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));

    let second = client.run(&["ssh", "api", "--instance", "2", "--", "hostname"]);
    assert_success("ssh api --instance 2", &second);
    assert_eq!(stdout(&second), N14);

    let db = client.run(&["ssh", DB, "--", "echo ok"]);
    assert_success("ssh node1.db.db.zerops", &db);
    assert_eq!(stdout(&db), "ok");

    let several = client.run(&["ssh", "api", "--", "hostname"]);
    assert!(!several.status.success(), "no terminal, two running containers");
    let err = String::from_utf8_lossy(&several.stderr);
    assert!(err.contains(N13) && err.contains(N14), "{err}");
    assert!(!err.contains(N15), "a stopped container is no choice: {err}");

    let picked = pick_on_a_terminal(&client, &["ssh", "api", "--", "hostname"], "2");
    assert!(picked.contains(&format!("2) {N14}")), "the choices are shown: {picked}");
    assert!(picked.trim_end().ends_with(N14), "the second one is reached: {picked}");

    let stopped = client.run(&["ssh", "api", "--instance", "3", "--", "hostname"]);
    assert!(!stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("STOPPED"));

    let status = client.run(&["ssh", "api", "--instance", "any", "--", "exit 7"]);
    assert_eq!(status.status.code(), Some(7), "ssh's own exit status");

    let unknown = client.run(&["ssh", "web", "--", "true"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"web\""));
}

#[test]
fn ssh_config_install_gives_plain_ssh_scp_rsync_and_uninstall_restores_the_file() {
    let Some(lab) = Lab::up("cracconf") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let home = Home::new(&client);
    let original = "# mine\nHost example.test\n    User someone\n";
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/config"), original).unwrap();

    assert_success(
        "ssh-config --install",
        &home.corridor(&["ssh-config", "demo", "--install"]),
    );
    assert_success(
        "ssh-config --install again",
        &home.corridor(&["ssh-config", "demo", "--install"]),
    );
    let installed = std::fs::read_to_string(home.path().join(".ssh/config")).unwrap();
    assert_eq!(
        installed.lines().filter(|l| l.starts_with("Include")).count(),
        1,
        "{installed}"
    );
    assert!(installed.ends_with(original), "{installed}");

    let ssh = home.run(&["ssh", "-o", "BatchMode=yes", "api", "hostname"]);
    assert_success("ssh api hostname", &ssh);
    assert_eq!(stdout(&ssh), N13);
    let ssh2 = home.run(&["ssh", "-o", "BatchMode=yes", "api-2", "hostname"]);
    assert_success("ssh api-2 hostname", &ssh2);
    assert_eq!(stdout(&ssh2), N14);

    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = home.path().join("payload");
    std::fs::write(&local, &data).unwrap();
    let remote = home.path().join("remote-copy");
    let back = home.path().join("back");
    let remote_arg = format!("api:{}", remote.display());
    assert_success(
        "scp there",
        &home.run(&["scp", "-q", local.to_str().unwrap(), &remote_arg]),
    );
    assert_success(
        "scp back",
        &home.run(&["scp", "-q", &remote_arg, back.to_str().unwrap()]),
    );
    assert!(std::fs::read(&back).unwrap() == data, "5 MB came back byte-identical");

    let synced = home.path().join("synced");
    let rsync_arg = format!("db:{}", synced.display());
    assert_success(
        "rsync",
        &home.run(&["rsync", "-a", local.to_str().unwrap(), &rsync_arg]),
    );
    assert!(std::fs::read(&synced).unwrap() == data, "rsync copy identical");

    assert_success("ssh-config --uninstall", &home.corridor(&["ssh-config", "--uninstall"]));
    assert_eq!(
        std::fs::read_to_string(home.path().join(".ssh/config")).unwrap(),
        original
    );
    let after = home.run(&["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "api", "true"]);
    assert!(!after.status.success(), "`api` means nothing to ssh any more");
}

#[test]
fn ssh_config_with_proxy_reaches_containers_with_no_tunnel_at_all() {
    let Some(lab) = Lab::up("cracprox") else { return };
    let client = Client::new(&lab);
    let home = Home::new(&client);
    let links_before = common::links(lab.laptop());

    assert_success(
        "ssh-config --proxy --install",
        &home.corridor(&["ssh-config", "demo", "--proxy", "--install"]),
    );
    let ssh = home.run(&["ssh", "-o", "BatchMode=yes", "api-2", "hostname"]);
    let db = home.run(&["ssh", "-o", "BatchMode=yes", "node1.db.db.zerops", "hostname"]);

    assert_success("ssh api-2 through corridor connect", &ssh);
    assert_eq!(stdout(&ssh), N14);
    assert_success("ssh node1.db.db.zerops through corridor connect", &db);
    assert_eq!(stdout(&db), "node1.db.db.zerops");
    assert_eq!(
        common::links(lab.laptop()),
        links_before,
        "no interface: no tunnel was used"
    );
    assert_eq!(client.status()["connections"].as_array().unwrap().len(), 0);
    assert_success("ssh-config --uninstall", &home.corridor(&["ssh-config", "--uninstall"]));
}

#[test]
fn exported_putty_sessions_load_in_plink_and_psftp_and_match_the_documented_formats() {
    let Some(lab) = Lab::up("cracpty") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));
    let home = Home::new(&client);
    let reg = home.path().join("demo.reg");
    let ini = home.path().join("WinSCP.ini");
    assert_success(
        "export putty",
        &home.corridor(&["export", "putty", "demo", "--reg", reg.to_str().unwrap()]),
    );
    assert_success(
        "export winscp",
        &home.corridor(&["export", "winscp", "demo", "-o", ini.to_str().unwrap()]),
    );

    let plink = home.run(&[
        "plink",
        "-load",
        "corridor-demo-api",
        "-batch",
        "-hostkey",
        lab.ssh_host_key(),
        "hostname",
    ]);
    assert_success("plink -load corridor-demo-api", &plink);
    assert_eq!(stdout(&plink), N13);
    let batch = home.path().join("psftp-batch");
    std::fs::write(&batch, "pwd\n").unwrap();
    let psftp = home.run(&[
        "psftp",
        "-load",
        &format!("corridor-demo-{DB}"),
        "-batch",
        "-hostkey",
        lab.ssh_host_key(),
        "-b",
        batch.to_str().unwrap(),
    ]);
    assert_success("psftp -load", &psftp);
    assert!(stdout(&psftp).contains("Remote directory is /"), "{}", stdout(&psftp));

    let reg_bytes = std::fs::read(&reg).unwrap();
    assert_eq!(reg_bytes[..2], [0xFF, 0xFE], "UTF-16LE with a byte-order mark");
    assert_eq!(
        sections(&utf16(&reg_bytes[2..])),
        sections(&std::fs::read_to_string(fixture("putty-demo.reg")).unwrap())
    );
    assert_eq!(
        sections(&std::fs::read_to_string(&ini).unwrap()),
        sections(&std::fs::read_to_string(fixture("winscp-demo.ini")).unwrap())
    );
}

#[test]
fn doctor_passes_when_healthy_and_names_a_narrow_path_an_expired_token_a_blocked_endpoint_and_no_ipv6() {
    let Some(lab) = Lab::up("cracdoc") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo"]));

    let healthy = doctor(&client);
    assert!(healthy.0, "healthy: {:#}", healthy.1);
    let names: Vec<&str> = healthy.1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in [
        "privileges",
        "tun",
        "ipv6",
        "modes",
        "resolver",
        "api",
        "token",
        "clock",
        "handshake (demo)",
        "path mtu (demo)",
        "dns responder (demo)",
        "dns system (demo)",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let text = client.run(&["doctor"]);
    assert_success("doctor", &text);
    assert!(stdout(&text).lines().all(|l| l.starts_with('✓')), "{}", stdout(&text));

    let underlay_mtu = |mtu: &str| lab.run_in(lab.laptop(), &["ip", "link", "set", "underlay", "mtu", mtu]);
    assert_success("a narrow underlay", &underlay_mtu("1400"));
    let narrow = doctor(&client);
    assert_success("the underlay as before", &underlay_mtu("1500"));
    assert_eq!(failed(&narrow.1), ["path mtu (demo)"], "{:#}", narrow.1);
    let mtu_line = narrow.1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap();
    assert!(mtu_line["fix"].as_str().unwrap().contains("--mtu 1280"), "{mtu_line}");

    assert_success("misbehave", &lab.lab(&["misbehave", "expired"]));
    let expired = doctor(&client);
    assert!(!expired.0, "an expired token fails doctor");
    assert_eq!(failed(&expired.1), ["token"], "{:#}", expired.1);
    let text = stdout(&client.run(&["doctor"]));
    let line = text.lines().find(|l| l.contains("token")).unwrap();
    assert!(line.starts_with('✗') && line.contains("corridor login"), "{line}");
    assert_success("misbehave ok", &lab.lab(&["misbehave", "ok"]));

    let gw = lab.project("demo")["gateway_ns"].as_str().unwrap().to_string();
    let block = "add table inet crablock; add chain inet crablock in { type filter hook input priority 0; udp dport 51820 drop; }";
    assert_success("blocking the endpoint", &lab.run_in(&gw, &["nft", block]));
    assert!(reconnecting(&lab, &client), "the blocked endpoint is noticed");
    let blocked = doctor(&client);
    assert!(!blocked.0);
    let handshake = blocked.1["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "handshake (demo)")
        .unwrap();
    assert_eq!(handshake["ok"], false, "{blocked:?}");
    assert!(handshake["fix"].as_str().unwrap().contains("blocked"), "{handshake}");
    assert_success("unblocking", &lab.run_in(&gw, &["nft", "delete table inet crablock"]));

    assert_success("vpn down", &client.run(&["vpn", "down"]));
    let sysctl = |value: &str| {
        lab.run_in(
            lab.laptop(),
            &["sysctl", "-qw", &format!("net.ipv6.conf.all.disable_ipv6={value}")],
        )
    };
    assert_success("disable IPv6 in the laptop", &sysctl("1"));
    let no_ipv6 = doctor(&client);
    assert_success("enable IPv6 again", &sysctl("0"));
    assert_eq!(failed(&no_ipv6.1), ["ipv6"], "{:#}", no_ipv6.1);
}

/// Runs `corridor ARGS` on a pseudo-terminal (util-linux `script`), answers the picker with
/// `answer` once it asks, and returns everything the terminal showed.
fn pick_on_a_terminal(client: &Client, args: &[&str], answer: &str) -> String {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let command = client.command(args);
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|w| format!("'{}'", w.to_str().unwrap().replace('\'', r"'\''")))
        .collect();
    let mut child = Command::new("script")
        .args(["-qec", &words.join(" "), "/dev/null"])
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("SUDO_USER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut answered = false;
    while let Ok(chunk) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.extend(chunk);
        if !answered && String::from_utf8_lossy(&seen).contains("container number: ") {
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
            answered = true;
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answered,
        "no picker on the terminal: {}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8_lossy(&seen).replace('\r', "")
}

/// Sends traffic into the tunnel until the connection reports that the gateway stopped
/// answering (the core notices within seconds of unanswered traffic); bounded.
fn reconnecting(lab: &Lab, client: &Client) -> bool {
    let target = lab.container(N13)["ipv6"].as_str().unwrap().to_string();
    for _ in 0..20 {
        let _ = lab.run_in(lab.laptop(), &["ping", "-c", "2", "-i", "0.2", "-W", "1", &target]);
        if client.status()["connections"][0]["state"] == "reconnecting" {
            return true;
        }
    }
    false
}

/// `doctor --json`: whether it exited 0, and its report.
fn doctor(client: &Client) -> (bool, Value) {
    let out = client.run(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json does not parse ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["ok"].as_bool().unwrap(), out.status.success());
    (out.status.success(), report)
}

fn failed(report: &Value) -> Vec<&str> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// A temporary home directory bound over root's in a private mount namespace, in the laptop.
struct Home<'a> {
    client: &'a Client<'a>,
    dir: tempfile::TempDir,
}

impl<'a> Home<'a> {
    fn new(client: &'a Client<'a>) -> Home<'a> {
        Home {
            client,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `argv` in the laptop namespace with this home as root's.
    fn run(&self, argv: &[&str]) -> Output {
        let root_home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .expect("root in the password database")
            .dir;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.client.ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", "mount --bind \"$TEST_HOME\" \"$HOME\" && exec \"$@\"", "sh"])
        .args(argv)
        .env("TEST_HOME", self.path())
        .env("HOME", root_home);
        self.client
            .with_dirs(&mut cmd)
            .env_remove("PUTTYDIR")
            .env_remove("CORRIDOR_TOKEN")
            .env_remove("SUDO_USER")
            .output()
            .expect("running in the laptop namespace")
    }

    fn corridor(&self, args: &[&str]) -> Output {
        let binary = corridor_binary();
        let mut argv = vec![binary.to_str().unwrap(), "--api", self.client.lab.api_url()];
        argv.extend_from_slice(args);
        self.run(&argv)
    }
}

fn ls_json(client: &Client, project: &str) -> Value {
    let out = client.run(&["ls", project, "--json"]);
    assert_success(&format!("ls {project} --json"), &out);
    serde_json::from_slice(&out.stdout).expect("ls --json parses")
}

fn service<'v>(inventory: &'v Value, name: &str) -> &'v Value {
    inventory["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("service {name} in {inventory}"))
}

fn containers(inventory: &Value) -> impl Iterator<Item = &Value> {
    inventory["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["containers"].as_array().unwrap())
}

fn container<'v>(inventory: &'v Value, name: &str) -> &'v Value {
    containers(inventory)
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} in {inventory}"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).expect("UTF-16")
}

/// A section of an INI-style file and its `key=value` fields, sorted.
type Section = (String, Vec<(String, String)>);

/// An INI-style file (`.reg`, `WinSCP.ini`) as its header line and sorted sections, so line
/// endings and order do not hide a wrong or missing field.
fn sections(text: &str) -> (String, Vec<Section>) {
    let mut header = String::new();
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Vec::new()));
        } else if let Some((_, fields)) = sections.last_mut() {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            fields.push((key.to_string(), value.to_string()));
            fields.sort();
        } else {
            header = line.to_string();
        }
    }
    sections.sort();
    (header, sections)
}
