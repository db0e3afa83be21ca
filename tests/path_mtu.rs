//! Narrow paths: no MTU black hole. The lab's `path-mtu N` drops every packet over N bytes
//! between the laptop and the gateways, without ICMP, as a PPPoE link, a tunnel or a mobile
//! network does; ssh, scp, rsync and DNS through corridor must work all the same, also when the
//! path narrows in the middle of a transfer, and in the rootless mode. Each test first proves
//! that the lab's path really drops what it should (the control), so a pass means something.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_success, stdout, Client, Lab, Nobody, Running, SSH_OPTIONS, TRANSFER_LIMIT};

const N13: &str = "node-id-13.runtime.api.zerops";
const SSH_PORT: &str = "65437";
/// corridor's DNS responder, as the other tests ask it.
const RESPONDER: &str = "@127.0.0.153";
/// WireGuard over IPv4: 20 bytes of IP, 8 of UDP, 32 of WireGuard header and tag.
const WG_OVERHEAD: u64 = 60;
/// The daemon's re-probe period for these tests (the default is much longer).
const REPROBE_SECS: &str = "5";

/// A lab whose path laptop↔gateways carries `mtu` bytes at most, checked.
fn narrowed(prefix: &str, mtu: u16) -> Option<Lab> {
    let lab = Lab::up(prefix)?;
    lab.path_mtu(Some(mtu));
    assert_path_is_narrowed(&lab, mtu);
    Some(lab)
}

fn assert_ssh_by_name(lab: &Lab) {
    let by_name = ssh(lab, N13, "hostname");
    assert_success("ssh by name", &by_name);
    assert_eq!(stdout(&by_name), N13);
}

#[test]
fn on_a_1280_byte_path_ssh_scp_rsync_and_large_dns_answers_work() {
    let Some(lab) = narrowed("crpfull", 1280) else { return };
    let client = Client::new(&lab);
    vpn_up(&client);

    assert_ssh_by_name(&lab);
    let bare = ssh(&lab, "api", "hostname");
    assert_success("ssh by service name", &bare);
    assert!(stdout(&bare).ends_with(".runtime.api.zerops"), "{}", stdout(&bare));

    let work = Work::new();
    scp_there_and_back(&lab, &work, N13, 20_000_000);

    let tree = work.path("tree");
    make_tree(&tree);
    let remote = work.path("tree-remote");
    let rsync = laptop_bounded(
        &lab,
        &[
            "rsync",
            "-a",
            "-e",
            &format!("ssh -p {SSH_PORT} {}", SSH_OPTIONS.join(" ")),
            &format!("{}/", tree.display()),
            &format!("root@{N13}:{}/", remote.display()),
        ],
    );
    assert_success("rsync -a to the container", &rsync);
    let listing = format!(
        "cd {} && find . -type f -exec sha256sum {{}} + | sort -k 2",
        remote.display()
    );
    let there = ssh(&lab, N13, &listing);
    assert_success("sha256sum of the tree in the container", &there);
    let here = Command::new("sh")
        .args([
            "-c",
            &listing.replace(&remote.display().to_string(), &tree.display().to_string()),
        ])
        .output()
        .unwrap();
    assert_success("sha256sum of the local tree", &here);
    assert_eq!(stdout(&there), stdout(&here), "the tree arrived different");
    assert!(stdout(&here).lines().count() >= 10, "{}", stdout(&here));

    let large = lab.status["isp_large_answer"]["name"].as_str().unwrap().to_string();
    let records = lab.status["isp_large_answer"]["txt_records"].as_u64().unwrap();
    let dig = laptop_bounded(&lab, &["dig", "+time=5", "+tries=2", RESPONDER, &large, "TXT"]);
    assert_success("dig the large answer", &dig);
    let answer = stdout(&dig);
    assert!(answer.contains(&format!("ANSWER: {records},")), "{answer}");
    for i in 0..records {
        let record = format!("\"large-answer-record-{i:02}\"");
        assert!(answer.contains(&record), "no {record} in {answer}");
    }
}

#[test]
fn on_a_1124_byte_path_ssh_and_scp_work() {
    let Some(lab) = narrowed("crp1124", 1124) else { return };
    let client = Client::new(&lab);
    vpn_up(&client);

    assert_ssh_by_name(&lab);
    let work = Work::new();
    scp_there_and_back(&lab, &work, N13, 5_000_000);
}

#[test]
fn a_path_narrowed_in_the_middle_of_an_upload_finishes_it_and_widens_again() {
    let Some(lab) = Lab::up("crpmid") else { return };
    let client = Client::new(&lab);
    vpn_up(&client);
    let ssh_ok = ssh(&lab, N13, "hostname");
    assert_success("ssh on the full path", &ssh_ok);

    let work = Work::new();
    let payload = random_bytes(20_000_000, 3);
    let local = work.path("up.bin");
    std::fs::write(&local, &payload).unwrap();
    let remote = work.path("up-remote.bin");
    // Slowed to 2 MB/s, so that the path narrows while most of the file is still to go.
    let mut upload = Background::start(laptop_command(
        &lab,
        &scp_args(
            &["-l", "16000"],
            &local.display().to_string(),
            &format!("root@{N13}:{}", remote.display()),
        ),
    ));
    // The container's sshd shares this machine's /tmp (the lab gives it its own /etc only), so
    // the file's growth is visible here.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&remote).map_or(0, |m| m.len()) < 1_000_000 {
        assert!(upload.running(), "scp ended before 1 MB arrived: {:?}", upload.finish());
        assert!(Instant::now() < deadline, "the upload did not pass 1 MB within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.path_mtu(Some(1280));
    let narrowed_at = std::fs::metadata(&remote).unwrap().len();
    assert!(
        narrowed_at < payload.len() as u64,
        "the path narrowed after the upload ended"
    );
    assert_path_is_narrowed(&lab, 1280);

    let started = Instant::now();
    let done = upload.wait(TRANSFER_LIMIT);
    assert_success("scp across the narrowing", &done);
    eprintln!(
        "narrowed at {narrowed_at} bytes; the upload finished {:?} later",
        started.elapsed()
    );
    assert!(std::fs::read(&remote).unwrap() == payload, "the file arrived different");
    let sum = ssh(&lab, N13, &format!("sha256sum {}", remote.display()));
    assert_success("sha256sum in the container", &sum);
    assert_eq!(
        stdout(&sum).split_whitespace().next(),
        Some(sha256(&local).as_str()),
        "the container sees another file"
    );
    let narrow = client.status();
    let mtu = narrow["connections"][0]["path_mtu"].as_u64();
    assert!(
        mtu.is_some_and(|m| m <= 1280),
        "path_mtu on the narrow path: {narrow:#}\n{}",
        daemon_logs(&client)
    );

    lab.path_mtu(None);
    let target = lab.container(N13)["ipv6"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.status();
        if status["connections"][0]["path_mtu"].as_u64().is_some_and(|m| m >= 1400) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "path_mtu did not grow back to ≥ 1400 within 60 s of `lab path-mtu off` (re-probe every {REPROBE_SECS} s): {status:#}\n{}",
            daemon_logs(&client)
        );
        // Traffic through the tunnel, and the loop's pace.
        let _ = lab.run_in(lab.laptop(), &["ping", "-c", "1", "-W", "1", &target]);
    }
    let after = ssh(&lab, N13, "hostname");
    assert_success("ssh on the full path again", &after);
}

#[test]
fn status_reports_the_path_mtu_the_clamped_mss_and_the_counters() {
    let Some(lab) = narrowed("crpstat", 1280) else { return };
    let client = Client::new(&lab);
    vpn_up(&client);
    let by_name = ssh(&lab, N13, "hostname");
    assert_success("ssh by name", &by_name);
    let work = Work::new();
    scp_there_and_back(&lab, &work, N13, 1_000_000);

    let status = client.status();
    let c = &status["connections"][0];
    let number = |key: &str| {
        c[key].as_u64().unwrap_or_else(|| {
            panic!(
                "connections[0].{key} is not a number: {status:#}\n{}",
                daemon_logs(&client)
            )
        })
    };
    let path_mtu = number("path_mtu");
    assert!((1200..=1280).contains(&path_mtu), "path_mtu {path_mtu}: {status:#}");
    let mss6 = number("mss_ipv6");
    assert!(mss6 <= 1280 - WG_OVERHEAD - 60, "mss_ipv6 {mss6}: {status:#}");
    let mss4 = number("mss_ipv4");
    assert!(mss4 <= 1280 - WG_OVERHEAD - 40, "mss_ipv4 {mss4}: {status:#}");
    assert!(number("syns_clamped") >= 1, "an ssh went through: {status:#}");
    for key in ["packets_fragmented", "too_big_sent", "path_probes"] {
        number(key);
    }

    let text = stdout(&client.run(&["vpn", "status"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("  path"))
        .unwrap_or_else(|| panic!("no `  path` line in:\n{text}"));
    assert!(line.contains(&path_mtu.to_string()), "{line}");
}

#[test]
fn forward_without_root_on_a_1280_byte_path_carries_ssh_and_scp() {
    let Some(lab) = narrowed("crpfwd", 1280) else { return };
    let user = Nobody::new(&lab);

    let mut forward = Running::spawn(&mut user.corridor(&["forward", "demo", "2222:api:65437"]));
    forward.wait_for("127.0.0.1:2222 → api:65437");

    let mut ssh = user.bounded_command("ssh");
    ssh.args(SSH_OPTIONS).args(["-p", "2222", "root@127.0.0.1", "hostname"]);
    let ssh = output(ssh);
    assert_success("ssh through forward", &ssh);
    assert!(stdout(&ssh).ends_with(".runtime.api.zerops"), "{}", stdout(&ssh));

    let payload = random_bytes(5_000_000, 5);
    let up = user.file("up.bin");
    let down = user.file("down.bin");
    std::fs::write(&up, &payload).unwrap();
    user.chown(&up);
    // In the user's own directory, which the container sees as this machine's (shared /tmp).
    let remote = user.file("remote.bin");
    for (from, to) in [
        (up.display().to_string(), format!("root@127.0.0.1:{}", remote.display())),
        (
            format!("root@127.0.0.1:{}", remote.display()),
            down.display().to_string(),
        ),
    ] {
        let mut scp = user.bounded_command("scp");
        scp.args(SSH_OPTIONS).args(["-P", "2222", &from, &to]);
        assert_success(&format!("scp {from} {to} through forward"), &output(scp));
    }
    assert!(std::fs::read(&down).unwrap() == payload, "the file came back different");
}

/// The control: the lab's path drops an IPv4 packet one byte over `mtu` to the demo gateway
/// (no reply, no ICMP error either) and carries one of exactly `mtu` bytes; the router itself
/// still takes the large one.
fn assert_path_is_narrowed(lab: &Lab, mtu: u16) {
    let gateway = lab.project("demo")["endpoint"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let router = lab.status["isp_dns"].as_str().unwrap().to_string();
    let fits = (mtu - 28).to_string();
    let over = (mtu - 27).to_string();
    let ping = |size: &str, to: &str, count: &str| {
        lab.run_in(
            lab.laptop(),
            &["ping", "-n", "-q", "-M", "do", "-c", count, "-W", "1", "-s", size, to],
        )
    };
    assert_success(
        &format!("ping of {mtu} bytes to the gateway"),
        &ping(&fits, &gateway, "3"),
    );
    let dropped = ping(&over, &gateway, "2");
    assert!(
        !dropped.status.success(),
        "a ping of {} bytes crossed a {mtu}-byte path: {}",
        mtu + 1,
        stdout(&dropped)
    );
    assert!(
        stdout(&dropped).contains("2 packets transmitted, 0 received"),
        "{}",
        stdout(&dropped)
    );
    assert_success(
        &format!("ping of {} bytes to the router (not narrowed)", mtu + 1),
        &ping(&over, &router, "3"),
    );
}

/// The client's daemon logs, for a failure's message.
fn daemon_logs(client: &Client) -> String {
    let dir = client.dir.path().join("run");
    let text = client.run(&["vpn", "status"]);
    let mut out = format!(
        "--- vpn status ({}):\n{}{}",
        text.status,
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    );
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last lines)\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `vpn up demo`, with the re-probe period shortened for the tests.
fn vpn_up(client: &Client) {
    let up = client
        .command(&["vpn", "up", "demo"])
        .env("CORRIDOR_PATH_REPROBE_SECS", REPROBE_SECS)
        .output()
        .unwrap();
    assert_success("vpn up demo", &up);
}

/// A file of `size` random bytes to `host` by scp and back again, byte-identical.
fn scp_there_and_back(lab: &Lab, work: &Work, host: &str, size: usize) {
    let payload = random_bytes(size, size as u64);
    let up = work.path("there.bin");
    let back = work.path("back.bin");
    std::fs::write(&up, &payload).unwrap();
    let remote = work.path("remote.bin");
    let started = Instant::now();
    let there = laptop_bounded(
        lab,
        &scp_args(
            &[],
            &up.display().to_string(),
            &format!("root@{host}:{}", remote.display()),
        ),
    );
    assert_success(&format!("scp of {size} bytes to {host}"), &there);
    let again = laptop_bounded(
        lab,
        &scp_args(
            &[],
            &format!("root@{host}:{}", remote.display()),
            &back.display().to_string(),
        ),
    );
    assert_success(&format!("scp of {size} bytes from {host}"), &again);
    eprintln!("{size} bytes there and back in {:?}", started.elapsed());
    assert!(std::fs::read(&back).unwrap() == payload, "the file came back different");
}

fn scp_args(extra: &[&str], from: &str, to: &str) -> Vec<String> {
    let mut args = vec!["scp".to_string(), "-P".into(), SSH_PORT.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(SSH_OPTIONS.iter().map(|s| s.to_string()));
    args.extend([from.to_string(), to.to_string()]);
    args
}

/// `ssh root@HOST COMMAND` from the laptop, ended after `TRANSFER_LIMIT`.
fn ssh(lab: &Lab, host: &str, command: &str) -> Output {
    let target = format!("root@{host}");
    let mut args = vec!["ssh", "-p", SSH_PORT];
    args.extend(SSH_OPTIONS);
    args.extend([target.as_str(), command]);
    laptop_bounded(lab, &args)
}

/// A command in the laptop namespace under coreutils' `timeout`, so a stalled tunnel fails the
/// test instead of hanging it.
fn laptop_command<S: AsRef<str>>(lab: &Lab, args: &[S]) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", lab.laptop(), "timeout", "-k", "5"])
        .arg(TRANSFER_LIMIT.as_secs().to_string())
        .args(args.iter().map(AsRef::as_ref));
    command
}

fn laptop_bounded<S: AsRef<str>>(lab: &Lab, args: &[S]) -> Output {
    output(laptop_command(lab, args))
}

fn output(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().expect("running a command")
}

/// Deterministic bytes that do not compress (xorshift64*), seeded.
fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A few directories with files of random sizes up to 1 MB.
fn make_tree(root: &Path) {
    let mut seed = 7u64;
    for dir in ["", "a", "a/b", "c", "c/d/e"] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..3 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let size = (seed >> 33) as usize % 1_000_001;
            std::fs::write(dir.join(format!("f{i}.bin")), random_bytes(size, seed)).unwrap();
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert_success("sha256sum", &out);
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// A directory for the test's files, removed when dropped (also when the test fails). The
/// containers' sshd share this machine's file system but /etc, so a path here is also the
/// remote path of a copy, and goes away with it.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::Builder::new().prefix("corridor-pathmtu").tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A command running in the background, killed when dropped.
struct Background {
    child: Option<Child>,
}

impl Background {
    fn start(mut command: Command) -> Background {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a command");
        Background { child: Some(child) }
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Its output once it ended, waiting at most `limit` (it runs under `timeout` anyway).
    fn wait(&mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit + Duration::from_secs(10);
        while self.running() {
            assert!(Instant::now() < deadline, "the command did not end within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    /// Its output, killed first if it still runs.
    fn finish(&mut self) -> Output {
        let mut child = self.child.take().expect("finished once");
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
