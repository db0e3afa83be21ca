//! Shared by the end-to-end tests: a lab per test (own prefix and address slot, removed on drop,
//! also when the test fails) and helpers to run commands inside its namespaces.
#![allow(dead_code)]

pub mod labs;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running lab, removed when dropped.
pub struct Lab {
    pub prefix: String,
    pub slot: u8,
    pub status: Value,
}

impl Lab {
    /// Brings up the lab registered as `prefix` in [`labs::LABS`], on its slot. `None` (after
    /// saying why) when this machine cannot run it; under CI=true that is a failure instead, so
    /// no test passes by skipping.
    pub fn up(prefix: &str) -> Option<Lab> {
        let slot = labs::slot_of(prefix);
        if !can_run_labs() {
            return None;
        }
        // Checked before there is a Lab whose drop would run it again, panicking while unwinding.
        lab_binary();
        let mut lab = Lab {
            prefix: prefix.to_string(),
            slot,
            status: Value::Null,
        };
        // Leftovers of an earlier, killed run of this same test.
        lab.lab(&["down"]);
        let out = lab.lab(&["up"]);
        assert_success("lab up", &out);
        let status = lab.lab(&["status", "--json"]);
        assert_success("lab status", &status);
        lab.status = serde_json::from_slice(&status.stdout).expect("status JSON");
        Some(lab)
    }

    /// Runs the lab binary with this lab's prefix and slot.
    pub fn lab(&self, args: &[&str]) -> Output {
        Command::new(lab_binary())
            .args(["--prefix", &self.prefix, "--slot", &self.slot.to_string()])
            .args(args)
            .output()
            .expect("running the lab binary")
    }

    /// `lab path-mtu N` (`None`: `off`): packets over N bytes between the laptop and the
    /// gateways are dropped without ICMP, from now on, also under a running connection.
    pub fn path_mtu(&self, n: Option<u16>) {
        let size = n.map_or("off".to_string(), |n| n.to_string());
        let out = self.lab(&["path-mtu", &size]);
        assert_success(&format!("lab path-mtu {size}"), &out);
    }

    /// POST /project/{id}/vpn from inside the laptop, as the platform's CLI does.
    pub fn register_key(&self, project_id: &str, public_key: &str) -> Value {
        let out = self.vpn_key_call("POST", project_id, public_key);
        assert_success("POST /project/{id}/vpn", &out);
        serde_json::from_slice(&out.stdout).expect("ProjectVpnItem JSON")
    }

    /// `METHOD /project/{id}/vpn` with a key, from inside the laptop.
    pub fn vpn_key_call(&self, method: &str, project_id: &str, public_key: &str) -> Output {
        let url = format!("{}/api/rest/public/project/{project_id}/vpn", self.api_url());
        let body = serde_json::json!({"publicKey": public_key, "instanceId": null}).to_string();
        let auth = format!("Authorization: Bearer {}", self.token());
        self.run_in(
            self.laptop(),
            &[
                "curl",
                "-sS",
                "--fail-with-body",
                "-X",
                method,
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                &url,
            ],
        )
    }

    pub fn laptop(&self) -> &str {
        self.status["laptop_ns"].as_str().unwrap()
    }

    pub fn api_url(&self) -> &str {
        self.status["api_url"].as_str().unwrap()
    }

    pub fn token(&self) -> &str {
        self.status["token"].as_str().unwrap()
    }

    pub fn project(&self, name: &str) -> &Value {
        self.status["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .expect("project in lab")
    }

    /// A container by its full DNS name.
    pub fn container(&self, name: &str) -> &Value {
        self.status["projects"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["containers"].as_array().unwrap())
            .find(|c| c["name"] == name)
            .expect("container in lab")
    }

    pub fn ssh_host_key(&self) -> &str {
        self.status["ssh_host_key"].as_str().unwrap()
    }

    /// Runs a command inside one of the lab's namespaces.
    pub fn run_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a command in the laptop namespace and returns its stdout, failing the test if it fails.
    pub fn laptop_ok(&self, args: &[&str]) -> String {
        let out = self.run_in(self.laptop(), args);
        assert_success(&args.join(" "), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ssh` from the laptop namespace to a container, running `command`.
    pub fn ssh(&self, host: &str, command: &str) -> Output {
        self.ssh_from(self.laptop(), host, command)
    }

    /// `ssh` from namespace `ns` to a container, running `command`.
    pub fn ssh_from(&self, ns: &str, host: &str, command: &str) -> Output {
        self.ssh_with(ns, &[], host, command)
    }

    /// `ssh` from namespace `ns` with `extra` options (`-6`, say) before the usual ones.
    pub fn ssh_with(&self, ns: &str, extra: &[&str], host: &str, command: &str) -> Output {
        let target = format!("root@{host}");
        let args: Vec<&str> = ["ssh"]
            .into_iter()
            .chain(extra.iter().copied())
            // ssh takes the first value of an option: 5 s here, not SSH_OPTIONS' 10.
            .chain(["-p", "65437", "-o", "ConnectTimeout=5"])
            .chain(SSH_OPTIONS)
            .chain([target.as_str(), command])
            .collect();
        self.run_in(ns, &args)
    }

    /// PuTTY's `plink` from the laptop namespace, pinned to the lab's host key.
    pub fn plink(&self, host: &str, command: &str) -> Output {
        self.run_in(
            self.laptop(),
            &[
                "plink",
                "-batch",
                "-ssh",
                "-P",
                "65437",
                "-hostkey",
                self.ssh_host_key(),
                "-l",
                "root",
                host,
                command,
            ],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.lab(&["down"]);
        if !out.status.success() && !std::thread::panicking() {
            panic!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Root and network namespaces are needed. Says why not; fails under CI=true.
pub fn can_run_labs() -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        Some("`ip netns` does not work here")
    } else {
        None
    };
    let Some(problem) = problem else { return true };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("end-to-end test cannot run: {problem} (CI must run it as root)");
    }
    eprintln!("SKIPPED end-to-end test: {problem}; run the suite as root (scripts/test.sh)");
    false
}

/// The lab example binary, built next to the test binaries (cargo builds examples for tests).
pub fn lab_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let lab = profile_dir.join("examples").join("lab");
    assert!(
        lab.exists(),
        "{} is missing: run `cargo build --examples`",
        lab.display()
    );
    lab
}

/// The corridor binary under test.
pub fn corridor_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corridor"))
}

/// The corridor-daemon binary under test.
pub fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corridor-daemon"))
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A corridor client living in the lab's laptop namespace, with its own config and runtime
/// directories (so parallel tests never see each other's connections).
pub struct Client<'a> {
    pub lab: &'a Lab,
    pub dir: tempfile::TempDir,
    /// The namespace it runs in: the laptop, or a container.
    pub ns: String,
}

impl<'a> Client<'a> {
    /// Logged in to the lab's API.
    pub fn new(lab: &'a Lab) -> Client<'a> {
        Client::in_ns(lab, lab.laptop())
    }

    /// Logged in, living in namespace `ns`.
    pub fn in_ns(lab: &'a Lab, ns: &str) -> Client<'a> {
        let client = Client {
            lab,
            dir: tempfile::tempdir().unwrap(),
            ns: ns.to_string(),
        };
        let login = client.run(&["login", "--token", lab.token()]);
        assert_success("corridor login", &login);
        client
    }

    /// Runs `corridor ARGS` in the client's namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running corridor")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(corridor_binary())
            .args(["--api", self.lab.api_url()])
            .args(args);
        self.with_dirs(&mut cmd)
            .env_remove("CORRIDOR_TOKEN")
            .env_remove("ZEROPS_TOKEN")
            .env_remove("CORRIDOR_REGION_URL")
            .env_remove("SUDO_USER");
        cmd
    }

    /// Points a corridor command line at this client's config, runtime and state directories.
    pub fn with_dirs<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("CORRIDOR_CONFIG_DIR", self.dir.path().join("config"))
            .env("CORRIDOR_RUNTIME_DIR", self.dir.path().join("run"))
            .env("CORRIDOR_STATE_DIR", self.dir.path().join("state"))
    }

    pub fn status(&self) -> Value {
        let out = self.run(&["vpn", "status", "--json"]);
        assert_success("vpn status --json", &out);
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["vpn", "down"]);
    }
}

/// `corridor ARGS` (the copy in `staged`) in the laptop namespace as uid/gid 65534 with no
/// capabilities: an unprivileged user of the machine.
pub fn as_nobody(lab: &Lab, staged: &Staged, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        lab.laptop(),
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
    ])
    .args(["--clear-groups", "--inh-caps=-all"])
    .arg(staged.corridor())
    .args(args);
    cmd
}

/// corridor and corridor-daemon copied for another user to run, into a 0755 directory of
/// their own under the system's temporary directory, removed when dropped (also when the
/// test fails). Running a program needs search permission on every directory above it, and
/// the checkout may sit where only its owner gets in: /root, a 0750 home, a 0700 `mktemp -d`.
pub struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    pub fn new() -> Staged {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir();
        if let Some(closed) = tmp
            .ancestors()
            .find(|d| std::fs::metadata(d).map_or(true, |m| m.permissions().mode() & 0o001 == 0))
        {
            panic!(
                "{} (in the temporary directory {}) is not searchable by other users, who must run \
                 corridor from there: set TMPDIR to a directory everyone can reach, such as /tmp",
                closed.display(),
                tmp.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("corridor-bin").tempdir().unwrap();
        let everyone = || std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), everyone()).unwrap();
        for binary in [corridor_binary(), daemon_binary()] {
            let staged = dir.path().join(binary.file_name().unwrap());
            // A hard link is free where it works (debug builds weigh 150 MB); the inode must
            // already let others read and run it.
            let runnable = std::fs::metadata(&binary).unwrap().permissions().mode() & 0o005 == 0o005;
            if !(runnable && std::fs::hard_link(&binary, &staged).is_ok()) {
                std::fs::copy(&binary, &staged).unwrap();
                std::fs::set_permissions(&staged, everyone()).unwrap();
            }
        }
        Staged { dir }
    }

    /// The staged corridor (corridor-daemon beside it, as installed).
    pub fn corridor(&self) -> PathBuf {
        self.dir.path().join(corridor_binary().file_name().unwrap())
    }
}

/// Links in a namespace, by name.
pub fn links(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .collect()
}

/// Routes in a namespace (both families), one line each.
pub fn routes(ns: &str) -> String {
    let v4 = Command::new("ip").args(["-n", ns, "route"]).output().unwrap();
    let v6 = Command::new("ip").args(["-n", ns, "-6", "route"]).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&v4.stdout),
        String::from_utf8_lossy(&v6.stdout)
    )
}

const READY: Duration = Duration::from_secs(30);

/// A long-running corridor whose output is read line by line; killed when dropped.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting corridor");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `text`; fails the test after `READY` (30 s).
    pub fn wait_for(&mut self, text: &str) -> String {
        self.wait_for_within(text, READY)
    }

    /// Waits for an output line containing `text`; fails the test after `within`.
    pub fn wait_for_within(&mut self, text: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no line with {text:?} within {within:?}; output: {:#?}", self.seen);
                }
            }
        }
    }

    /// Every line it has written so far, those read while waiting and those not yet read.
    pub fn said(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    pub fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("corridor did not exit within {timeout:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ssh's options for the lab's throwaway hosts: no prompts, no known_hosts.
pub const SSH_OPTIONS: [&str; 10] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
];

/// Runs `program` to success with `input` on its stdin; its stdout.
pub fn cmd_ok(program: &str, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_success(&format!("{program} {}", args.join(" ")), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `python3 -m http.server` inside a container namespace, stopped when dropped.
pub struct HttpServer {
    child: Child,
}

impl HttpServer {
    pub fn start(lab: &Lab, ns: &str, dir: &Path, port: u16) -> HttpServer {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-m", "http.server"])
            .args([&port.to_string(), "--bind", "::", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server");
        let server = HttpServer { child };
        let url = format!("http://[::1]:{port}/");
        let deadline = Instant::now() + READY;
        while !lab
            .run_in(ns, &["curl", "-sf", "--max-time", "1", &url])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the HTTP server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid of an unprivileged user (nobody).
pub const NOBODY: u32 = 65534;
/// Every ssh and scp of an unprivileged user ends within this, whatever the tunnel does.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

/// Runs `command` with no stdin to completion.
pub fn run_quietly(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().expect("running a command")
}

/// An unprivileged user of the laptop (or of another namespace) with its own corridor store,
/// the lab's token and a copy of corridor it can reach.
pub struct Nobody<'a> {
    lab: &'a Lab,
    dir: tempfile::TempDir,
    ns: String,
    pub staged: Staged,
}

impl<'a> Nobody<'a> {
    pub fn new(lab: &'a Lab) -> Nobody<'a> {
        Nobody::in_ns(lab, lab.laptop())
    }

    pub fn in_ns(lab: &'a Lab, ns: &str) -> Nobody<'a> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let user = Nobody {
            lab,
            dir,
            ns: ns.to_string(),
            staged: Staged::new(),
        };
        user.chown(user.dir.path());
        user
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn chown(&self, path: &Path) {
        let id = Some(nix::unistd::Uid::from_raw(NOBODY));
        nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(NOBODY))).unwrap();
    }

    fn with_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("HOME", self.dir.path())
            .env("CORRIDOR_CONFIG_DIR", self.dir.path().join("config"))
            .env("CORRIDOR_TOKEN", self.lab.token())
            .env_remove("SUDO_USER")
            .env_remove("CORRIDOR_API")
    }

    /// `corridor --api … ARGS` as nobody in the user's namespace.
    pub fn corridor(&self, args: &[&str]) -> Command {
        let binary = self.staged.corridor();
        let mut command = self.nobody_command(&[binary.to_str().unwrap(), "--api", self.lab.api_url()]);
        command.args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_quietly(self.corridor(args))
    }

    pub fn start(&self, args: &[&str]) -> Running {
        Running::spawn(&mut self.corridor(args))
    }

    /// Any program as nobody in the user's namespace.
    pub fn nobody_command(&self, program: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns, "setpriv"])
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .args(program);
        self.with_env(&mut command);
        command
    }

    /// A program that ends within [`TRANSFER_LIMIT`] whatever the tunnel does.
    pub fn bounded_command(&self, program: &str) -> Command {
        let limit = TRANSFER_LIMIT.as_secs().to_string();
        self.nobody_command(&["timeout", "-k", "5", &limit, program])
    }

    pub fn ssh_local_command(&self, port: u16, remote: &str) -> Command {
        let mut command = self.bounded_command("ssh");
        command
            .args(SSH_OPTIONS)
            .args(["-p", &port.to_string(), "root@127.0.0.1", remote]);
        command
    }

    pub fn ssh_local(&self, port: u16, remote: &str) -> Output {
        run_quietly(self.ssh_local_command(port, remote))
    }

    pub fn scp(&self, port: u16, from: &str, to: &str) -> Output {
        let mut command = self.bounded_command("scp");
        command.args(SSH_OPTIONS).args(["-P", &port.to_string(), from, to]);
        run_quietly(command)
    }
}
