//! Linux and macOS.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{Gid, Uid, User};
use tokio::signal::unix::{signal, Signal as Stream, SignalKind};

use super::{Invoker, Pid, Stop};

pub fn is_elevated() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Connections made by root live here, for everyone to find.
pub fn system_runtime_dir() -> PathBuf {
    PathBuf::from("/run/corridor")
}

/// Kept across a reboot, so a change made before a power cut is still undone.
pub fn system_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/corridor")
}

/// The user behind `sudo`, when SUDO_UID and SUDO_GID are valid in `env` (and SUDO_USER names
/// them).
pub fn sudo_invoker(env: &dyn Fn(&str) -> Option<OsString>) -> Option<Invoker> {
    let var = |name| env(name)?.into_string().ok().filter(|s| !s.is_empty());
    Some(Invoker {
        name: var("SUDO_USER"),
        uid: var("SUDO_UID")?.parse().ok()?,
        gid: var("SUDO_GID")?.parse().ok()?,
    })
}

/// A user's home from the user database (under sudo, HOME may be root's or gone).
pub fn home_of(name: &str) -> io::Result<PathBuf> {
    match User::from_name(name).map_err(io::Error::from)? {
        Some(user) => Ok(user.dir),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the user {name:?} does not exist"),
        )),
    }
}

/// corridor's config dir in the home `home`, as `directories` places it for its owner.
pub fn config_dir_in(home: &Path) -> PathBuf {
    #[cfg(target_os = "macos")]
    return home.join("Library/Application Support/corridor");
    #[cfg(not(target_os = "macos"))]
    return home.join(".config/corridor");
}

/// Gives `path` to `invoker`.
pub fn hand_over(path: &Path, invoker: &Invoker) -> io::Result<()> {
    nix::unistd::chown(path, Some(Uid::from_raw(invoker.uid)), Some(Gid::from_raw(invoker.gid)))
        .map_err(io::Error::from)
}

/// One directory, readable only by its owner.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

/// `create_private_dir` for `path` and its missing parents.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Options that create files only their owner may read (an existing file keeps its mode).
pub fn private_open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Replaces this process with `command`, whose exit status becomes ours. Returns only when it
/// could not be started.
pub fn exec(command: &mut Command) -> io::Error {
    command.exec()
}

/// A new file (never an existing one) that only its owner may read.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create_new(true).mode(0o600).open(path)
}

/// The daemon must not die with the terminal that started it.
pub fn detach(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
}

/// An exclusive lock on a file, held until dropped (and by no one once its process is gone).
pub struct FileLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Takes the lock on `path` (created 0600 if missing); `None` while another process holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(FileLock(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Whether `pid` runs (also when it is another user's and we may not signal it).
pub fn process_alive(pid: Pid) -> bool {
    matches!(kill(nix_pid(pid), None), Ok(()) | Err(nix::errno::Errno::EPERM))
}

/// Whether `pid` is a corridor process serving `project` (the daemon program, or this program
/// with `--foreground`): a status file or a control socket names a pid, and after a crash and a
/// reboot that pid may belong to anyone.
pub fn process_is_daemon_of(pid: Pid, project: &str) -> bool {
    let Some(args) = command_line(pid) else {
        return false;
    };
    let is_corridor = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| super::program_names().iter().any(|ours| n == ours.as_str()));
    is_corridor && args.iter().any(|a| a == project || a == "--foreground")
}

/// Sends `pid` a stop signal; a process already gone is stopped.
pub fn signal_stop(pid: Pid, how: Stop) -> io::Result<()> {
    let signal = match how {
        Stop::Gracefully => Signal::SIGTERM,
        Stop::Now => Signal::SIGKILL,
    };
    match kill(nix_pid(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// SIGTERM and SIGINT, set up before the first host change so that a signal always leads to
/// the cleanup.
pub struct Shutdown {
    term: Stream,
    int: Stream,
    hangup: Option<Stream>,
}

impl Shutdown {
    pub fn new() -> io::Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hangup: None,
        })
    }

    /// Also SIGHUP: OpenSSH ends its ProxyCommand with it.
    pub fn with_hangup() -> io::Result<Shutdown> {
        Ok(Shutdown {
            hangup: Some(signal(SignalKind::hangup())?),
            ..Shutdown::new()?
        })
    }

    /// Waits for the next stop signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = hangup => "SIGHUP",
        }
    }
}

/// Time the machine has spent suspended so far (it grows only across a suspend): the clock that
/// counts sleep minus the one tokio's timers follow, which does not.
pub fn asleep() -> Duration {
    // Linux: CLOCK_BOOTTIME counts suspended time, CLOCK_MONOTONIC does not. macOS:
    // CLOCK_MONOTONIC counts it, CLOCK_UPTIME_RAW (mach_absolute_time) does not.
    #[cfg(target_os = "linux")]
    let (with_sleep, without_sleep) = (ClockId::CLOCK_BOOTTIME, ClockId::CLOCK_MONOTONIC);
    #[cfg(target_os = "macos")]
    let (with_sleep, without_sleep) = (ClockId::CLOCK_MONOTONIC, ClockId::from_raw(libc::CLOCK_UPTIME_RAW));
    // Read the clock without sleep first, so a tick between the two reads never looks negative.
    let (Ok(without), Ok(with)) = (clock_gettime(without_sleep), clock_gettime(with_sleep)) else {
        return Duration::ZERO;
    };
    Duration::from(with).saturating_sub(Duration::from(without))
}

fn nix_pid(pid: Pid) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid.get() as i32)
}

#[cfg(target_os = "linux")]
fn command_line(pid: Pid) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", pid.get())).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn command_line(pid: Pid) -> Option<Vec<String>> {
    let out = Command::new("ps")
        .args(["-o", "args=", "-p", &pid.get().to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    (!args.is_empty()).then_some(args)
}

/// The control channel: a Unix socket only its owner may open.
pub mod ipc {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use anyhow::{Context, Result};
    use tokio::net::{UnixListener, UnixStream};

    use crate::platform::Invoker;

    pub type Stream = UnixStream;

    pub struct Listener(UnixListener);

    /// Listens at `path` (mode 0600); under sudo the socket is handed to `owner`.
    pub fn bind(path: &Path, owner: Option<&Invoker>) -> Result<Listener> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(owner) = owner {
            super::hand_over(path, owner).with_context(|| format!("handing {} to the sudo user", path.display()))?;
        }
        Ok(Listener(listener))
    }

    impl Listener {
        pub async fn accept(&self) -> std::io::Result<Stream> {
            self.0.accept().await.map(|(stream, _)| stream)
        }
    }

    pub async fn connect(path: &Path) -> std::io::Result<Stream> {
        UnixStream::connect(path).await
    }

    /// Removes what `bind` left.
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}
