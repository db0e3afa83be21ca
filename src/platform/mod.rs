//! What differs between operating systems for corridor's own processes: privilege, where files
//! live, private files, the daemon's start and its stop signals, other processes' liveness, and
//! the control channel. Changes to the host (interfaces, routes, the resolver) are per OS too,
//! in `host` and `dns`; the rest of the code never names an OS.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(any(windows, test))]
mod sddl;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

pub use os::{
    asleep, check_private, config_dir_in, create_corridor_dir, create_private_dir, create_private_dir_all,
    create_private_file, detach, exec, hand_over, home_of, ipc, is_elevated, private_open_options, process_alive,
    process_is_daemon_of, signal_stop, sudo_invoker, system_runtime_dir, system_state_dir, Shutdown,
};
pub use os::{try_lock, FileLock};
#[cfg(windows)]
pub(crate) use windows::wide_to_string;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The program of the long-running processes (a connection's daemon, the DNS service), beside
/// `corridor` (see `src/bin/corridor-daemon.rs`).
const DAEMON_PROGRAM: &str = "corridor-daemon";

/// The daemon program's file name on this platform.
pub fn daemon_file_name() -> String {
    format!("{DAEMON_PROGRAM}{}", std::env::consts::EXE_SUFFIX)
}

/// The file names a corridor process runs from: the commands (which hold a connection with
/// `--foreground`), the daemon program, and whatever this executable is called.
pub fn program_names() -> Vec<String> {
    let suffix = std::env::consts::EXE_SUFFIX;
    let mut names = vec![format!("corridor{suffix}"), daemon_file_name()];
    names.extend(
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned())),
    );
    names
}

/// Where the daemon program is: beside the running executable (the daemon starts the DNS
/// service from itself).
pub fn daemon_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the corridor binary")?;
    let daemon = exe.with_file_name(daemon_file_name());
    if !daemon.is_file() {
        bail!(
            "{} is missing: corridor runs its connections in it; install it beside {} (both \
             come in the same package or archive)",
            daemon.display(),
            exe.display()
        );
    }
    Ok(daemon)
}

/// The commands' program beside this one: the daemon runs it for the few calls it makes to the
/// platform, so that the daemon itself carries no HTTP client.
pub fn cli_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the corridor binary")?;
    let cli = exe.with_file_name(format!("corridor{}", std::env::consts::EXE_SUFFIX));
    if !cli.is_file() {
        bail!("{} is missing: install it beside {}", cli.display(), exe.display());
    }
    Ok(cli)
}

/// A long-running process of the daemon program (a connection's daemon, the DNS service), just
/// started and still to be read.
pub struct Helper {
    pub child: std::process::Child,
    /// Where it says how its start went, line by line.
    pub stdout: std::process::ChildStdout,
}

/// Starts the daemon program with `args` in a session of its own (it outlives this process and
/// this terminal): `input` on its stdin (none if `None`), its stderr into `log`, without the
/// variables in `hidden`, and with `RUST_LOG=corridor=info` unless one is set. `what` names it
/// in errors ("the DNS service").
pub fn spawn_helper(
    args: &[&str],
    input: Option<&[u8]>,
    log: std::fs::File,
    hidden: &[&str],
    what: &str,
) -> Result<Helper> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut command = Command::new(daemon_exe()?);
    command
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(log);
    for name in hidden {
        command.env_remove(name);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "corridor=info");
    }
    detach(&mut command);
    let mut child = command.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().with_context(|| format!("{what}'s stdin"))?;
        stdin.write_all(input)?;
    }
    let stdout = child.stdout.take().with_context(|| format!("{what}'s stdout"))?;
    Ok(Helper { child, stdout })
}

/// The one-time grant that lets Linux users connect without sudo: `corridor` checks it and
/// `corridor-daemon` uses it (the tunnel, and port 53 for the responder), so both files get it.
pub fn grant_capabilities() -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| "corridor".into());
    let daemon = exe.with_file_name(daemon_file_name());
    [exe, daemon]
        .iter()
        .map(|file| format!("sudo setcap cap_net_admin,cap_net_bind_service+ep {}", file.display()))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The system's `ping` for one echo of exactly `packet` bytes (IP header included) to `target`
/// that may not be fragmented on the way: each OS spells "don't fragment" its own way.
pub fn ping_unfragmented(target: std::net::IpAddr, packet: u16) -> (&'static str, Vec<String>) {
    ping_command(std::env::consts::OS, target, packet)
}

/// [`ping_unfragmented`] on `os` (as `std::env::consts::OS` names it).
fn ping_command(os: &str, target: std::net::IpAddr, packet: u16) -> (&'static str, Vec<String>) {
    let headers = if target.is_ipv4() { 28 } else { 48 };
    let size = packet.saturating_sub(headers).to_string();
    let target = target.to_string();
    let v4 = !target.contains(':');
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match os {
        // IPv6 routers never fragment, so only IPv4 needs the DF bit (-f).
        "windows" if v4 => (
            "ping",
            args(&["-4", "-f", "-l", &size, "-n", "1", "-w", "2000", &target]),
        ),
        "windows" => ("ping", args(&["-6", "-l", &size, "-n", "1", "-w", "2000", &target])),
        "macos" if v4 => ("ping", args(&["-D", "-s", &size, "-c", "1", "-t", "2", "-q", &target])),
        "macos" => ("ping6", args(&["-D", "-s", &size, "-c", "1", &target])),
        _ => {
            let family = if v4 { "-4" } else { "-6" };
            (
                "ping",
                args(&[family, "-M", "do", "-s", &size, "-c", "1", "-W", "2", "-q", &target]),
            )
        }
    }
}

/// The next connection of a listener. An error (out of descriptors, typically) is logged and
/// retried after a pause that doubles up to a second, so a listener that keeps failing never
/// spins and the connections that hold descriptors get time to close.
pub async fn accept_patiently<T, F: Future<Output = std::io::Result<T>>>(mut accept: impl FnMut() -> F) -> T {
    let mut pause = Duration::from_millis(100);
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "accepting a connection");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A control channel's other end that corridor does not talk to: a process of another user
/// answers on a connection's name.
#[derive(Debug, thiserror::Error)]
#[error("refusing the control channel {channel}: {why}")]
pub struct UntrustedServer {
    pub channel: String,
    pub why: String,
}

impl UntrustedServer {
    /// Whether `error` (anywhere in its chain) is this refusal.
    pub fn is_cause_of(error: &anyhow::Error) -> bool {
        error.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<UntrustedServer>())
                || e.is::<UntrustedServer>()
        })
    }

    pub(crate) fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, self)
    }
}

/// The user behind this elevated run, if any.
pub fn invoker() -> Option<Invoker> {
    if !is_elevated() {
        return None;
    }
    sudo_invoker(&|name| std::env::var_os(name))
}

/// The user who asked for a privileged run (`sudo` on Unix): what corridor creates for them is
/// theirs, so their unprivileged `corridor vpn status` and `down` work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    /// Absent when only the ids are known.
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

/// A process id that may be signalled: never 0 or 1 (on Unix, `kill(0, …)` reaches the whole
/// process group and pid 1 is init), never beyond what the OS can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid(u32);

impl Pid {
    pub fn new(pid: u32) -> Option<Pid> {
        (pid > 1 && pid <= i32::MAX as u32).then_some(Pid(pid))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// How hard to stop a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ask it to shut down cleanly (SIGTERM).
    Gracefully,
    /// End it now (SIGKILL).
    Now,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_keeps_failing_is_retried_a_few_times_a_second_at_most() {
        let calls = std::cell::Cell::new(0u32);
        let failing = || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(std::io::Error::from_raw_os_error(24)) }
        };

        let gave_up = tokio::time::timeout(Duration::from_secs(10), accept_patiently(failing)).await;

        assert!(gave_up.is_err(), "never accepts");
        // 0, 0.1, 0.3, 0.7, 1.5, then once a second: 14 in 10 s, where an immediate retry
        // would be millions.
        assert!((10..=15).contains(&calls.get()), "{} accepts in 10 s", calls.get());
    }

    #[test]
    fn each_systems_ping_is_told_not_to_fragment_in_its_own_words() {
        let v4: std::net::IpAddr = "198.19.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "fd00::53".parse().unwrap();
        let line = |os, target, packet| {
            let (program, args) = ping_command(os, target, packet);
            format!("{program} {}", args.join(" "))
        };

        assert_eq!(line("linux", v4, 1420), "ping -4 -M do -s 1392 -c 1 -W 2 -q 198.19.0.1");
        assert_eq!(line("linux", v6, 1420), "ping -6 -M do -s 1372 -c 1 -W 2 -q fd00::53");
        assert_eq!(line("macos", v4, 1420), "ping -D -s 1392 -c 1 -t 2 -q 198.19.0.1");
        assert_eq!(line("macos", v6, 1280), "ping6 -D -s 1232 -c 1 fd00::53");
        assert_eq!(line("windows", v4, 1420), "ping -4 -f -l 1392 -n 1 -w 2000 198.19.0.1");
        assert_eq!(line("windows", v6, 1280), "ping -6 -l 1232 -n 1 -w 2000 fd00::53");
        assert!(!line("macos", v4, 1420).contains("-M"), "iputils' -M is Linux's alone");
    }

    #[test]
    fn pids_that_must_never_be_signalled_are_refused() {
        assert_eq!(Pid::new(0), None);
        assert_eq!(Pid::new(1), None);
        assert_eq!(Pid::new(u32::MAX), None);
        assert_eq!(Pid::new(4242).map(Pid::get), Some(4242));
    }

    #[test]
    fn a_file_lock_is_held_by_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");

        let first = try_lock(&path).unwrap();
        let second = try_lock(&path).unwrap();
        drop(first);
        let third = try_lock(&path).unwrap();

        assert!(second.is_none());
        assert!(third.is_some());
    }

    /// Set for a copy of this test binary that stands in for another program.
    const STAND_IN: &str = "CORRIDOR_TEST_STAND_IN";

    /// This test binary copied into `dir` as `name`, running only
    /// [`a_stand_in_waits_when_asked`] with `arg` among its arguments (no `sleep` on Windows);
    /// returned once it runs as itself, so its command line and image are its own.
    fn stand_in(dir: &std::path::Path, name: &str, arg: &str) -> std::process::Child {
        use std::io::BufRead as _;
        let exe = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let this = std::env::current_exe().unwrap();
        std::fs::copy(&this, &exe).unwrap();
        // With the libraries beside it (under Wine, the ProcessPrng stand-in).
        for entry in std::fs::read_dir(this.parent().unwrap()).unwrap().flatten() {
            let copy = dir.join(entry.file_name());
            if entry.file_name().to_string_lossy().ends_with(".dll") && !copy.exists() {
                std::fs::copy(entry.path(), copy).unwrap();
            }
        }
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "platform::tests::a_stand_in_waits_when_asked",
                "--nocapture",
                arg,
            ])
            .env(STAND_IN, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let ready = out.lines().map_while(Result::ok).any(|line| line.contains(READY));
        assert!(ready, "{name} started");
        child
    }

    const READY: &str = "stand-in ready";

    #[test]
    fn a_stand_in_waits_when_asked() {
        if std::env::var_os(STAND_IN).is_some() {
            println!("{READY}");
            std::thread::sleep(Duration::from_secs(30));
        }
    }

    #[test]
    fn a_process_that_is_no_corridor_daemon_is_not_taken_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = stand_in(dir.path(), "sleeper", "30");
        let mut daemon = stand_in(dir.path(), DAEMON_PROGRAM, "30");
        let pid = Pid::new(other.id()).unwrap();
        let daemon_pid = Pid::new(daemon.id()).unwrap();

        let alive = process_alive(pid);
        let taken = process_is_daemon_of(pid, "30");
        let ours = process_is_daemon_of(daemon_pid, "30");
        for child in [&mut other, &mut daemon] {
            child.kill().unwrap();
            child.wait().unwrap();
        }

        assert!(alive);
        assert!(
            !taken,
            "another program is no corridor daemon, even with the id in its arguments"
        );
        assert!(ours, "corridor-daemon with the project's id is one");
        assert!(!process_alive(pid) || !process_is_daemon_of(pid, "30"));
    }
}
