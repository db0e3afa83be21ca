//! corridor.exe and corridor-daemon.exe (x86_64-pc-windows-gnu, release, taken out of the zip
//! that scripts/check-platforms.sh makes with scripts/dist.sh) under Wine: inside a lab's laptop namespace, help, login against
//! the lab API, status when not connected, doctor's Windows checks, the daemon program started by
//! hand refusing, and `vpn up` refused with what to do, leaving nothing behind (Wine has no
//! Wintun); the rootless `forward` carrying ssh and scp through the tunnel, the whole Windows data
//! path (boringtun, the UDP socket, smoltcp); and, with no network at all, journals planted where corridor keeps its state refused
//! without touching what they name.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_success, Lab, SSH_OPTIONS};

/// The two programs of the Windows zip.
const EXES: [&str; 2] = ["corridor.exe", "corridor-daemon.exe"];
/// The folder inside the zip that `scripts/dist.sh windows` makes.
const ZIP_DIR: &str = concat!("corridor-", env!("CARGO_PKG_VERSION"), "-x86_64-windows");

#[test]
fn corridor_exe_logs_in_shows_status_and_refuses_a_tunnel_it_cannot_build() {
    let Some(lab) = Lab::up("wine") else { return };
    let Some(wine) = Wine::new(Some(lab.laptop())) else {
        return;
    };
    let links_before = lab.laptop_ok(&["ip", "-o", "link"]);

    let help = wine.run(&lab, &["--help"]);
    let login = wine.run(&lab, &["--api", lab.api_url(), "login", "--token", lab.token()]);
    let status = wine.run(&lab, &["vpn", "status"]);
    let ls = wine.run(&lab, &["ls", "demo", "--json"]);
    let ini = wine.prefix().join("demo.ini");
    let winscp_out = format!("Z:{}", ini.display());
    let winscp = wine.run(&lab, &["export", "winscp", "demo", "-o", &winscp_out]);
    let doctor = wine.run(&lab, &["doctor"]);
    let up = wine.run(&lab, &["vpn", "up", "--auto-disconnect", "alpha"]);
    let daemon_by_hand = wine.run_exe("corridor-daemon.exe", &lab, &[]);

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
    let login = wine.run(&lab, &["--api", lab.api_url(), "login", "--token", lab.token()]);
    assert_success("corridor.exe login", &login);

    let mut forward = wine.start(&lab, &["forward", "demo", "2222:api:65437"]);
    forward.wait_for("127.0.0.1:2222 → api:65437");

    let hostname = lab.run_in(lab.laptop(), &ssh_args("ssh", "-p", &["root@127.0.0.1", "hostname"]));
    assert_success("ssh through corridor.exe forward", &hostname);
    let name = String::from_utf8_lossy(&hostname.stdout).trim().to_string();
    assert!(
        name.starts_with("node-id-1") && name.ends_with(".runtime.api.zerops"),
        "{name}"
    );

    let payload: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
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
        let stub = Command::new(mingw.unwrap())
            .args(["-shared", "-O2", "-o"])
            .arg(dir.path().join("bin/bcryptprimitives.dll"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/bcryptprimitives.c"))
            .arg("-ladvapi32")
            .output()
            .unwrap();
        assert_success("building the ProcessPrng stand-in", &stub);
        let wine = Wine {
            dir,
            wine: wine.unwrap(),
            wineserver: wineserver.unwrap(),
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

    /// Runs corridor.exe with `args` in the lab's laptop namespace.
    fn run(&self, lab: &Lab, args: &[&str]) -> Output {
        self.run_exe("corridor.exe", lab, args)
    }

    fn run_exe(&self, exe: &str, lab: &Lab, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", lab.laptop()]).arg(&self.wine);
        self.with_env(command.arg(self.dir.path().join("bin").join(exe)).args(args))
            .output()
            .expect("running wine")
    }

    /// corridor.exe with `args` left running in the lab's laptop namespace; ended when dropped.
    fn start(&self, lab: &Lab, args: &[&str]) -> Running {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", lab.laptop()]).arg(&self.wine);
        let mut child = self
            .with_env(command.arg(self.dir.path().join("bin/corridor.exe")).args(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running wine");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines,
            seen: String::new(),
        }
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
        self.with_env(Command::new(&self.wine).arg("reg").args(args))
            .output()
            .expect("running wine reg")
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

/// A corridor.exe left running, its output read line by line; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
}

impl Running {
    /// Waits (up to a minute: Wine starts slowly) for a line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(_) => panic!("no {text:?} from corridor.exe; it said:\n{}", self.seen),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
