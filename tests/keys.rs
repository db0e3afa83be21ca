//! `vpn key list`, `vpn key remove`, `vpn config` and the rootless key policy, end to end in the
//! lab: keys counted through the platform's API, and the configuration used by a WireGuard
//! client nobody here wrote (wireguard-go + `wg setconf`, set up the way wg-quick does it).
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{assert_success, cmd_ok, corridor_binary, stdout, Client, Lab, Running, SSH_OPTIONS};
use serde_json::Value;

#[test]
fn key_list_marks_the_connection_and_a_forward_as_this_machines_and_a_reference_key_as_anothers() {
    let Some(lab) = Lab::up("crklist") else { return };
    let client = Client::new(&lab);
    assert_success("vpn up", &client.run(&["vpn", "up", "demo", "--dns", "off"]));
    let mut forward = Running::spawn(&mut client.command(&["forward", "demo", "2222:api:65437"]));
    forward.wait_for("127.0.0.1:2222 →");
    let other = reference_key(&lab, "demo");

    let list = list_json(&client, "demo");
    let text = client.run(&["vpn", "key", "list", "demo"]);

    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{list:#}");
    let id = project_id(&lab, "demo");
    let connection = find(&list, &public_key_of(&client.key_file(&format!("{id}.key"))));
    assert_eq!(connection["thisMachine"], true);
    assert_eq!(connection["role"], "connection");
    assert_eq!(connection["inUse"], true, "vpn up runs");
    let rootless = find(&list, &public_key_of(&client.key_file(&format!("{id}.userspace.key"))));
    assert_eq!(rootless["thisMachine"], true);
    assert_eq!((&rootless["role"], &rootless["slot"]), (&"rootless".into(), &0.into()));
    assert_eq!(rootless["inUse"], true, "forward runs");
    let theirs = find(&list, &other);
    assert_eq!(theirs["thisMachine"], false);
    assert_eq!(theirs.get("role"), None);
    assert_eq!(theirs["addresses"].as_array().unwrap().len(), 2, "{theirs}");
    assert_success("vpn key list", &text);
    let text = stdout(&text);
    assert!(text.contains("3 keys registered, 2 of them this machine's"), "{text}");
    assert!(text.contains(&format!("{other}  another machine")), "{text}");
    assert!(text.contains("this machine: vpn up, connected"), "{text}");
    assert!(
        text.contains("this machine: rootless slot 0 (forward, connect, proxy), in use"),
        "{text}"
    );
}

#[test]
fn remove_mine_unused_takes_exactly_the_idle_keys_and_the_connections_key_needs_force() {
    let Some(lab) = Lab::up("crkrm") else { return };
    let client = Client::new(&lab);
    let id = project_id(&lab, "demo");
    assert_success("vpn up", &client.run(&["vpn", "up", "demo", "--dns", "off"]));
    let mut running = Running::spawn(&mut client.command(&["forward", "demo", "2222:api:65437"]));
    running.wait_for("127.0.0.1:2222 →");
    // Slot 1 is killed and leaves its key registered; slot 2 ends cleanly and deregisters it.
    let mut killed = Running::spawn(&mut client.command(&["forward", "demo", "2223:api:65437"]));
    killed.wait_for("127.0.0.1:2223 →");
    let mut ended = Running::spawn(&mut client.command(&["forward", "demo", "2224:api:65437"]));
    ended.wait_for("127.0.0.1:2224 →");
    killed.kill();
    ended.interrupt();
    assert!(
        ended.wait(Duration::from_secs(10)).success(),
        "forward ends cleanly on Ctrl-C"
    );
    assert_success("vpn config", &client.run(&["vpn", "config", "demo", "-o", "-"]));
    let other = reference_key(&lab, "demo");
    let key = |name: &str| public_key_of(&client.key_file(&format!("{id}.{name}")));
    let (connection, slot0, slot1, slot2, config) = (
        key("key"),
        key("userspace.key"),
        key("userspace-1.key"),
        key("userspace-2.key"),
        key("config.key"),
    );
    let before = api_keys(&lab, &id);
    assert_eq!(
        sorted(&before),
        sorted(&[&connection, &slot0, &slot1, &config, &other]),
        "slot 2 deregistered its key when it ended, slot 1 was killed before it could"
    );

    let refused = client.run(&["vpn", "key", "remove", "demo", &connection]);

    assert!(!refused.status.success(), "removing the connection's key is refused");
    let why = stderr(&refused);
    assert!(why.contains("running connection") && why.contains("--force"), "{why}");
    assert_eq!(sorted(&api_keys(&lab, &id)), sorted(&before), "nothing removed");

    let unused = client.run(&["vpn", "key", "remove", "demo", "--mine-unused"]);

    assert_success("key remove --mine-unused", &unused);
    assert_eq!(
        sorted(&api_keys(&lab, &id)),
        sorted(&[&connection, &slot0, &config, &other]),
        "exactly slot 1's key went"
    );
    let out = stdout(&unused);
    assert!(out.contains(&format!("removed {slot1}")), "{out}");
    assert!(
        out.contains(&format!("removed {slot2}")),
        "slot 2's file goes too: {out}"
    );
    assert!(out.contains(&format!("kept {config}")), "{out}");
    assert!(!client.key_file(&format!("{id}.userspace-1.key")).exists());
    assert!(!client.key_file(&format!("{id}.userspace-2.key")).exists());
    assert!(client.key_file(&format!("{id}.userspace.key")).exists());
    let through_forward = ssh_local(&lab, 2222);
    assert_success("ssh through the running forward", &through_forward);
    assert!(stdout(&through_forward).ends_with(".runtime.api.zerops"));

    let forced = client.run(&["vpn", "key", "remove", "demo", &connection, "--force"]);

    assert_success("key remove --force", &forced);
    assert_eq!(
        client.status()["connections"],
        serde_json::json!([]),
        "the connection ended"
    );
    assert_eq!(sorted(&api_keys(&lab, &id)), sorted(&[&slot0, &config, &other]));
    assert!(!client.key_file(&format!("{id}.key")).exists());
}

#[test]
fn the_config_file_as_it_stands_serves_wireguard_go_by_address_and_by_name() {
    let Some(lab) = Lab::up("crkconf") else { return };
    let client = Client::new(&lab);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("demo.conf");

    let written = client.run(&["vpn", "config", "demo", "-o", conf.to_str().unwrap()]);

    assert_success("vpn config", &written);
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&conf).unwrap();
    let demo = lab.project("demo");
    assert_eq!(
        value(&text, "DNS"),
        format!("{}, zerops", demo["dns"].as_str().unwrap())
    );
    assert_eq!(value(&text, "MTU"), "1420");
    let stripped = dir.path().join("stripped.conf");
    std::fs::write(&stripped, cmd_ok("wg-quick", &["strip", conf.to_str().unwrap()], None)).unwrap();
    let _client_if = ReferenceClient::up(&lab, "crkconf-wg", &stripped, &text);
    let n13 = lab.container("node-id-13.runtime.api.zerops");
    for addr in [n13["ipv4"].as_str().unwrap(), n13["ipv6"].as_str().unwrap()] {
        let ssh = lab.ssh(addr, "hostname");
        assert_success(&format!("ssh {addr}"), &ssh);
        assert_eq!(stdout(&ssh), "node-id-13.runtime.api.zerops");
    }
    let _resolv = NamespaceResolvConf::apply_dns_line(&lab, &value(&text, "DNS"));
    let by_name = lab.ssh("node-id-13.runtime.api.zerops", "hostname");
    assert_success("ssh by name", &by_name);
    assert_eq!(stdout(&by_name), "node-id-13.runtime.api.zerops");
    let bare = lab.ssh("api", "hostname");
    assert_success("ssh by the bare service name", &bare);
    assert!(stdout(&bare).ends_with(".runtime.api.zerops"), "{}", stdout(&bare));

    let again = client.run(&["vpn", "config", "demo", "-o", "-", "--skip-dns-setup", "--mtu", "1380"]);
    let qr = client.run(&["vpn", "config", "demo", "--qr"]);

    assert_success("vpn config -o -", &again);
    let again = stdout(&again);
    assert_eq!(
        value(&again, "PrivateKey"),
        value(&text, "PrivateKey"),
        "the configuration's key is kept"
    );
    assert_eq!(value(&again, "MTU"), "1380");
    assert!(!again.contains("DNS"), "{again}");
    assert_success("vpn config --qr", &qr);
    assert!(stdout(&qr).contains('█'), "a QR code of block characters");
    assert!(
        !client.dir.path().join("config/wireguard").exists(),
        "--qr alone writes no file"
    );
    let id = project_id(&lab, "demo");
    let config_key = cmd_ok("wg", &["pubkey"], Some(&value(&text, "PrivateKey")));
    assert_eq!(api_keys(&lab, &id), [config_key.trim()], "one key for every config");

    let cleared = client.run(&["vpn", "clear", "demo"]);

    assert_success("vpn clear", &cleared);
    assert!(
        stdout(&cleared).contains(&format!("removed {}", config_key.trim())),
        "clear lists what it removed: {}",
        stdout(&cleared)
    );
    assert!(api_keys(&lab, &id).is_empty());
    assert!(!client.key_file(&format!("{id}.config.key")).exists());
}

#[test]
fn twenty_rootless_connects_leave_only_the_first_slots_key_registered() {
    let Some(lab) = Lab::up("crkconn") else { return };
    let client = Client::new(&lab);
    let id = project_id(&lab, "demo");

    for round in 0..4 {
        let sessions: Vec<_> = (0..5)
            .map(|_| {
                let mut ssh = client.ssh_through_connect("node-id-13.runtime.api.zerops", "hostname");
                std::thread::spawn(move || ssh.output().unwrap())
            })
            .collect();
        for (i, session) in sessions.into_iter().enumerate() {
            let out = session.join().unwrap();
            assert_success(&format!("round {round}, ssh {i} through connect"), &out);
            assert_eq!(stdout(&out), "node-id-13.runtime.api.zerops");
        }
    }
    // Each `connect` deregisters before it lets go of its slot: once every slot is free, the
    // keys are as they will stay.
    let slots = client.slot_files(&id);
    wait_until("every connect has ended", Duration::from_secs(15), || {
        slots.iter().all(|slot| unlocked(slot))
    });

    assert!(slots.len() > 1, "parallel sessions used several slots: {slots:?}");
    let registered = api_keys(&lab, &id);
    assert_eq!(
        registered,
        [public_key_of(&client.key_file(&format!("{id}.userspace.key")))],
        "only the first slot's key stays"
    );
}

#[test]
fn bad_keys_an_empty_project_and_a_bad_answer_are_explained_and_remove_nothing() {
    let Some(lab) = Lab::up("crkbad") else { return };
    let client = Client::new(&lab);
    let id = project_id(&lab, "demo");
    let other = reference_key(&lab, "demo");
    let unknown = cmd_ok("wg", &["pubkey"], Some(&cmd_ok("wg", &["genkey"], None)));
    let unknown = unknown.trim();

    let malformed = client.run(&["vpn", "key", "remove", "demo", "not-a-key"]);
    let mixed = client.run(&["vpn", "key", "remove", "demo", &other, unknown]);
    let empty = client.run(&["vpn", "key", "remove", "empty", &other]);
    let empty_list = client.run(&["vpn", "key", "list", "empty"]);
    assert_success("lab misbehave garbage", &lab.lab(&["misbehave", "garbage"]));
    let garbage = client.run(&["vpn", "key", "remove", "demo", &other]);
    assert_success("lab misbehave ok", &lab.lab(&["misbehave", "ok"]));

    assert!(!malformed.status.success());
    assert!(
        stderr(&malformed).contains("\"not-a-key\" is not a WireGuard public key"),
        "{}",
        stderr(&malformed)
    );
    assert!(!mixed.status.success());
    let why = stderr(&mixed);
    assert!(
        why.contains("not registered with project demo") && why.contains(unknown),
        "{why}"
    );
    assert!(!why.contains(&other), "only the unknown key is named: {why}");
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("project empty has no VPN keys registered"),
        "{}",
        stderr(&empty)
    );
    assert_success("key list empty", &empty_list);
    assert_eq!(
        stdout(&empty_list),
        format!("no keys registered with empty ({})", project_id(&lab, "empty"))
    );
    assert!(!garbage.status.success());
    assert!(
        stderr(&garbage).contains("unexpected answer from the platform"),
        "{}",
        stderr(&garbage)
    );
    for out in [&malformed, &mixed, &empty] {
        assert!(stderr(out).contains("nothing removed"), "{}", stderr(out));
    }
    assert_eq!(api_keys(&lab, &id), [other], "nothing removed");
}

// Helpers

fn project_id(lab: &Lab, name: &str) -> String {
    lab.project(name)["id"].as_str().unwrap().to_string()
}

fn list_json(client: &Client, project: &str) -> Value {
    let out = client.run(&["vpn", "key", "list", project, "--json"]);
    assert_success("vpn key list --json", &out);
    serde_json::from_slice(&out.stdout).expect("key list JSON")
}

fn find<'v>(list: &'v Value, public_key: &str) -> &'v Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["publicKey"] == public_key)
        .unwrap_or_else(|| panic!("{public_key} not listed: {list:#}"))
}

/// The project's keys as the platform lists them, asked with curl from the laptop.
fn api_keys(lab: &Lab, project_id: &str) -> Vec<String> {
    let url = format!("{}/api/rest/public/project/{project_id}/vpn/list", lab.api_url());
    let auth = format!("Authorization: Bearer {}", lab.token());
    let out = lab.laptop_ok(&["curl", "-sS", "--fail-with-body", "-H", &auth, &url]);
    let list: Value = serde_json::from_str(&out).expect("key list JSON");
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["publicKey"].as_str().unwrap().to_string())
        .collect()
}

/// A key registered the way the platform's own CLI registers one: another machine's.
fn reference_key(lab: &Lab, project: &str) -> String {
    let public = cmd_ok("wg", &["pubkey"], Some(&cmd_ok("wg", &["genkey"], None)));
    let public = public.trim();
    lab.register_key(&project_id(lab, project), public);
    public.to_string()
}

fn public_key_of(private_key_file: &Path) -> String {
    let private = std::fs::read_to_string(private_key_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", private_key_file.display()));
    cmd_ok("wg", &["pubkey"], Some(&private)).trim().to_string()
}

fn sorted(keys: &[impl AsRef<str>]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
    keys.sort();
    keys
}

/// The value of `Key = value` in a WireGuard configuration.
fn value(conf: &str, key: &str) -> String {
    conf.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in:\n{conf}"))
}

/// ssh from the laptop to a local port (a `forward`), running `hostname`.
fn ssh_local(lab: &Lab, port: u16) -> Output {
    let port = port.to_string();
    let args: Vec<&str> = ["ssh"]
        .into_iter()
        .chain(SSH_OPTIONS)
        .chain(["-p", &port, "root@127.0.0.1", "hostname"])
        .collect();
    lab.run_in(lab.laptop(), &args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether no process holds the lock on a rootless slot's key file.
fn unlocked(path: &Path) -> bool {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

trait ClientExt {
    fn key_file(&self, name: &str) -> PathBuf;
    fn slot_files(&self, project_id: &str) -> Vec<PathBuf>;
    fn ssh_through_connect(&self, host: &str, command: &str) -> Command;
}

impl ClientExt for Client<'_> {
    fn key_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("config/keys").join(name)
    }

    fn slot_files(&self, project_id: &str) -> Vec<PathBuf> {
        let prefix = format!("{project_id}.userspace");
        std::fs::read_dir(self.dir.path().join("config/keys"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// OpenSSH in the laptop with `corridor connect` as its ProxyCommand, this client's files.
    fn ssh_through_connect(&self, host: &str, command: &str) -> Command {
        let proxy = format!(
            "{} --api {} connect -P demo %h %p",
            corridor_binary().display(),
            self.lab.api_url()
        );
        let mut ssh = Command::new("ip");
        ssh.args(["netns", "exec", &self.ns, "ssh"])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=10", "-o", &format!("ProxyCommand={proxy}")])
            .args(["-p", "65437", &format!("root@{host}"), command]);
        self.with_dirs(&mut ssh)
            .env_remove("CORRIDOR_TOKEN")
            .env_remove("ZEROPS_TOKEN");
        ssh
    }
}

/// wireguard-go in the laptop, configured from a stripped configuration file with `wg setconf`
/// and given the addresses, MTU and routes its wg-quick lines name, as wg-quick would; its
/// interface is deleted when dropped (wireguard-go exits with it).
struct ReferenceClient<'a> {
    lab: &'a Lab,
    interface: String,
}

impl<'a> ReferenceClient<'a> {
    fn up(lab: &'a Lab, interface: &str, stripped: &Path, conf: &str) -> ReferenceClient<'a> {
        let ns = lab.laptop();
        lab.laptop_ok(&["wireguard-go", interface]);
        let client = ReferenceClient {
            lab,
            interface: interface.to_string(),
        };
        lab.laptop_ok(&["wg", "setconf", interface, stripped.to_str().unwrap()]);
        for address in value(conf, "Address").split(',').map(str::trim) {
            let family = if address.contains(':') { "-6" } else { "-4" };
            let mut args = vec!["ip", family, "address", "add", address, "dev", interface];
            if family == "-6" {
                args.push("nodad");
            }
            lab.laptop_ok(&args);
        }
        let mtu = value(conf, "MTU");
        lab.laptop_ok(&["ip", "link", "set", "mtu", &mtu, "up", "dev", interface]);
        for net in value(conf, "AllowedIPs").split(',').map(str::trim) {
            let family = if net.contains(':') { "-6" } else { "-4" };
            lab.laptop_ok(&["ip", family, "route", "add", net, "dev", interface]);
        }
        assert!(common::links(ns).contains(&interface.to_string()));
        client
    }
}

impl Drop for ReferenceClient<'_> {
    fn drop(&mut self) {
        let _ = self
            .lab
            .run_in(self.lab.laptop(), &["ip", "link", "del", &self.interface]);
    }
}

/// The laptop namespace's own resolv.conf (the file `ip netns exec` mounts over
/// /etc/resolv.conf, never the host's), set as wg-quick sets a `DNS = ADDRESS, DOMAIN` line and
/// put back when dropped.
struct NamespaceResolvConf {
    path: PathBuf,
    original: Vec<u8>,
}

impl NamespaceResolvConf {
    fn apply_dns_line(lab: &Lab, dns: &str) -> NamespaceResolvConf {
        let path = PathBuf::from(format!("/etc/netns/{}/resolv.conf", lab.laptop()));
        let original =
            std::fs::read(&path).unwrap_or_else(|e| panic!("the lab gives its laptop {} ({e})", path.display()));
        let mut text = String::new();
        for part in dns.split(',').map(str::trim) {
            if part.parse::<std::net::IpAddr>().is_ok() {
                text.push_str(&format!("nameserver {part}\n"));
            } else {
                text.push_str(&format!("search {part}\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
        NamespaceResolvConf { path, original }
    }
}

impl Drop for NamespaceResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.original);
    }
}
