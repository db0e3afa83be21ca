//! Hostile journals and a squatted control socket: what another user could plant where corridor
//! keeps its state is refused and changes nothing on the host. Each test runs corridor (root, as
//! `vpn status` and `vpn down` after a crash would) in a network namespace of its own holding the
//! interfaces the planted journals name.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{can_run_labs, corridor_binary};

const NOBODY: u32 = 65534;

/// A namespace with corridor's directories, removed with everything in it when dropped.
struct Host {
    ns: String,
    dir: tempfile::TempDir,
}

impl Host {
    fn new(name: &str) -> Option<Host> {
        if !can_run_labs() {
            return None;
        }
        let ns = format!("crsec{name}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ok(Command::new("ip").args(["netns", "add", &ns]));
        let host = Host {
            ns,
            dir: tempfile::tempdir().unwrap(),
        };
        for dir in ["state", "run", "config"] {
            std::fs::create_dir(host.dir.path().join(dir)).unwrap();
        }
        host.sh("ip link set lo up");
        Some(host)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A shell command in the namespace; it must succeed.
    fn sh(&self, script: &str) -> String {
        let out = ok(Command::new("ip").args(["netns", "exec", &self.ns, "sh", "-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `corridor ARGS` as root in the namespace, with this host's directories.
    fn corridor(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(corridor_binary())
            .args(args)
            .env("CORRIDOR_STATE_DIR", self.state())
            .env("CORRIDOR_RUNTIME_DIR", self.run_dir())
            .env("CORRIDOR_CONFIG_DIR", self.dir.path().join("config"))
            .output()
            .unwrap()
    }

    /// `vpn status` then `vpn down`, as a user would after a crash; their stderr together.
    fn status_and_down(&self) -> String {
        let status = self.corridor(&["vpn", "status"]);
        let down = self.corridor(&["vpn", "down"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&status.stderr),
            String::from_utf8_lossy(&down.stderr)
        )
    }

    /// A persistent TUN interface named like corridor's, carrying `alias` as its tag.
    fn tun(&self, name: &str, alias: &str) {
        self.sh(&format!(
            "ip tuntap add dev {name} mode tun && ip link set {name} alias {alias} up"
        ));
    }

    fn has_link(&self, name: &str) -> bool {
        self.sh("ip -o link").contains(&format!(": {name}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn plant(journal: &Path, lines: &[String]) {
    std::fs::write(journal, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(journal, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn interface(name: &str, tag: &str) -> String {
    format!(r#"{{"kind":"interface","name":"{name}","tag":"{tag}"}}"#)
}

#[test]
fn journal_entries_corridor_never_makes_are_refused_and_change_nothing() {
    let Some(host) = Host::new("ent") else { return };
    host.sh("ip link add eth9 type veth peer name eth9p && ip link set eth9 up && ip link set eth9p up && ip route add 10.99.0.0/24 dev eth9");
    host.tun("corridor5", "corridor:other:0123456789abcdef");
    let victim = host.dir.path().join("victim");
    std::fs::write(&victim, "the victim's own\n").unwrap();
    let backup = host.state().join("p1.resolv.conf.orig");
    std::fs::write(&backup, "planted\n").unwrap();
    let journal = host.state().join("p1.journal");
    plant(
        &journal,
        &[
            interface("eth9", "corridor:p1:0123456789abcdef"),
            r#"{"kind":"route","destination":"10.99.0.0/24","interface":"eth9"}"#.into(),
            interface("corridor5", "corridor:p1:0123456789abcdef"),
            format!(
                r#"{{"kind":"file","path":"{}","backup":"{}","marker":null}}"#,
                victim.display(),
                backup.display()
            ),
            r#"{"kind":"registry_key","key":"SOFTWARE\\Microsoft"}"#.into(),
        ],
    );

    let said = host.status_and_down();

    for refusal in [
        "eth9 is no name corridor gives its interfaces",
        "eth9 is no interface this journal created",
        "is no file corridor rewrites",
        "is no registry key of this journal's",
    ] {
        assert!(said.contains(refusal), "{refusal:?} not in: {said}");
    }
    // corridor5 passes the list (a name and tag of the journal's own), but its live tag is
    // another connection's: left alone.
    assert!(host.has_link("eth9") && host.has_link("corridor5"));
    assert!(host.sh("ip route").contains("10.99.0.0/24 dev eth9"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "the victim's own\n");
    assert!(journal.exists(), "kept for inspection");
}

#[test]
fn a_journal_another_user_could_have_written_is_refused_whole() {
    let Some(host) = Host::new("own") else { return };
    host.tun("corridor6", "corridor:p2:0123456789abcdef");
    host.tun("corridor7", "corridor:p3:0123456789abcdef");
    let owned_by_nobody = host.state().join("p2.journal");
    plant(
        &owned_by_nobody,
        &[interface("corridor6", "corridor:p2:0123456789abcdef")],
    );
    std::os::unix::fs::chown(&owned_by_nobody, Some(NOBODY), Some(NOBODY)).unwrap();
    // A journal of corridor's own shape in a directory others may write.
    let open_state = host.dir.path().join("open-state");
    std::fs::create_dir(&open_state).unwrap();
    std::fs::set_permissions(&open_state, std::fs::Permissions::from_mode(0o775)).unwrap();
    plant(
        &open_state.join("p3.journal"),
        &[interface("corridor7", "corridor:p3:0123456789abcdef")],
    );

    let said = host.status_and_down();
    let in_open = Command::new("ip")
        .args(["netns", "exec", &host.ns])
        .arg(corridor_binary())
        .args(["vpn", "down"])
        .env("CORRIDOR_STATE_DIR", &open_state)
        .env("CORRIDOR_RUNTIME_DIR", host.run_dir())
        .env("CORRIDOR_CONFIG_DIR", host.dir.path().join("config"))
        .output()
        .unwrap();
    let said_open = String::from_utf8_lossy(&in_open.stderr);

    assert!(said.contains("belongs to uid 65534"), "{said}");
    assert!(
        said_open.contains("may be written by other users (mode 0775)"),
        "{said_open}"
    );
    assert!(
        host.has_link("corridor6") && host.has_link("corridor7"),
        "nothing undone"
    );
    assert!(owned_by_nobody.exists() && open_state.join("p3.journal").exists());

    // The same journal written by root is corridor's: it is replayed.
    std::os::unix::fs::chown(&owned_by_nobody, Some(0), Some(0)).unwrap();
    let down = host.corridor(&["vpn", "down"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(!host.has_link("corridor6"), "a journal of root's own is undone");
    assert!(!owned_by_nobody.exists());
}

/// A process of another user serving a connection's socket name.
struct Squatter(Child);

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_control_socket_served_by_another_user_is_refused() {
    let Some(host) = Host::new("sock") else { return };
    host.tun("corridor8", "corridor:p4:0123456789abcdef");
    plant(
        &host.state().join("p4.journal"),
        &[interface("corridor8", "corridor:p4:0123456789abcdef")],
    );
    // A runtime dir others may create sockets in, the squatter's way in.
    std::fs::set_permissions(host.run_dir(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = host.run_dir().join("p4.sock");
    let squatter = Squatter(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "nc", "-lkU"])
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "nc never listened on {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }

    let status = host.corridor(&["vpn", "status"]);
    let down = host.corridor(&["vpn", "down"]);

    let said = String::from_utf8_lossy(&status.stderr);
    assert!(said.contains("served by uid 65534"), "{said}");
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(
        !down.status.success() && said.contains("not stopping connection p4"),
        "{said}"
    );
    assert!(
        host.has_link("corridor8"),
        "the journal is not replayed while its socket is squatted"
    );
    drop(squatter);
}
