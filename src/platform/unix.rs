//! Linux and macOS.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
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
    PathBuf::from(system_dirs(std::env::consts::OS).0)
}

/// Kept across a reboot, so a change made before a power cut is still undone.
pub fn system_state_dir() -> PathBuf {
    PathBuf::from(system_dirs(std::env::consts::OS).1)
}

/// The runtime and state directories of root's corridor on `os` (as `std::env::consts::OS`
/// names it). macOS has no `/run` and its system volume is read-only; `/var/run` (cleared at
/// boot) and `/var/db` are where its own daemons keep theirs.
fn system_dirs(os: &str) -> (&'static str, &'static str) {
    match os {
        "macos" => ("/var/run/corridor", "/var/db/corridor"),
        _ => ("/run/corridor", "/var/lib/corridor"),
    }
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

/// A directory of corridor's own (runtime or state) with an explicit mode: `shared` lets other
/// users look in (the system runtime dir, where they find connections made with sudo), never
/// write. An existing one must be root's or ours, and loses any write bits for others.
pub fn create_corridor_dir(path: &Path, shared: bool) -> io::Result<()> {
    let mode = if shared { 0o755 } else { 0o700 };
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    let meta = std::fs::metadata(path)?;
    owned_by_root_or_us(path, &meta).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    if meta.mode() & 0o022 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7755))?;
    }
    Ok(())
}

/// Why `path` (a journal, its backup, or their directory) may hold what another user wrote:
/// it is a symbolic link, or it or a directory above it belongs to someone other than root or
/// us, or others may write it (a sticky directory above, like /tmp, only lets them replace
/// their own entries).
pub fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symbolic link", path.display()));
    }
    owned_by_root_or_us(path, &meta)?;
    closed_to_others(path, &meta, false)?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = std::fs::canonicalize(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    for (i, dir) in parent.ancestors().enumerate() {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        owned_by_root_or_us(dir, &meta)?;
        closed_to_others(dir, &meta, i > 0)?;
    }
    Ok(())
}

fn owned_by_root_or_us(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let (owner, me) = (meta.uid(), nix::unistd::geteuid().as_raw());
    if owner == 0 || owner == me {
        return Ok(());
    }
    Err(format!(
        "{} belongs to uid {owner}, neither root nor uid {me}",
        path.display()
    ))
}

fn closed_to_others(path: &Path, meta: &std::fs::Metadata, sticky_will_do: bool) -> Result<(), String> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 == 0 || (sticky_will_do && mode & 0o1000 != 0) {
        return Ok(());
    }
    Err(format!(
        "{} may be written by other users (mode {mode:04o})",
        path.display()
    ))
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
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
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

    /// Connects, then checks the other end: a process of root or of this user, behind a
    /// socket of theirs (a root daemon hands its socket to the user who ran sudo).
    pub async fn connect(path: &Path) -> std::io::Result<Stream> {
        let stream = UnixStream::connect(path).await?;
        let owner = std::fs::metadata(path)?.uid();
        let server = stream.peer_cred()?.uid();
        if let Err(why) = trusted(owner, server, nix::unistd::geteuid().as_raw()) {
            return Err(crate::platform::UntrustedServer {
                channel: path.display().to_string(),
                why,
            }
            .into_io());
        }
        Ok(stream)
    }

    fn trusted(owner: u32, server: u32, me: u32) -> Result<(), String> {
        if server != 0 && server != me {
            return Err(format!("it is served by uid {server}, neither root nor uid {me}"));
        }
        if owner != 0 && owner != me && server != 0 {
            return Err(format!("the socket belongs to uid {owner}, neither root nor uid {me}"));
        }
        Ok(())
    }

    /// Removes what `bind` left.
    pub fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    #[cfg(test)]
    mod tests {
        use super::trusted;

        #[test]
        fn servers_of_other_users_are_refused() {
            assert_eq!(trusted(1000, 1000, 1000), Ok(()));
            assert_eq!(
                trusted(1000, 0, 1000),
                Ok(()),
                "a root daemon's, handed to its sudo user"
            );
            assert_eq!(trusted(1000, 0, 0), Ok(()), "the same, asked by root");
            assert!(trusted(65534, 65534, 1000).unwrap_err().contains("served by uid 65534"));
            assert!(trusted(1000, 65534, 0).unwrap_err().contains("served by uid 65534"));
            assert!(trusted(65534, 1000, 1000).unwrap_err().contains("belongs to uid 65534"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn roots_directories_are_where_each_system_allows_them() {
        assert_eq!(system_dirs("linux"), ("/run/corridor", "/var/lib/corridor"));
        assert_eq!(system_dirs("macos"), ("/var/run/corridor", "/var/db/corridor"));
        let (run, state) = system_dirs("macos");
        assert!(
            !run.starts_with("/run/") && !state.starts_with("/run/"),
            "macOS has no /run"
        );
        assert_eq!(system_runtime_dir(), PathBuf::from(system_dirs(std::env::consts::OS).0));
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_files_no_one_else_could_write_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.journal");
        std::fs::write(&file, "").unwrap();
        set_mode(&file, 0o600);
        let link = dir.path().join("link.journal");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        assert_eq!(check_private(&file), Ok(()));
        assert!(check_private(&link).unwrap_err().contains("symbolic link"));
        set_mode(&file, 0o620);
        assert!(check_private(&file).unwrap_err().contains("mode 0620"));
        set_mode(&file, 0o600);
        set_mode(dir.path(), 0o1777);
        assert!(
            check_private(&file).unwrap_err().contains("mode 1777"),
            "a sticky directory still lets others plant journals in it"
        );
        set_mode(dir.path(), 0o700);
    }

    #[test]
    fn files_of_another_user_are_not_private() {
        if !is_elevated() {
            assert!(std::env::var("CI").is_err(), "CI runs the tests as root");
            eprintln!("skipped: needs root to give a file to another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.journal");
        std::fs::write(&file, "").unwrap();
        let nobody = Some(Uid::from_raw(65534));
        nix::unistd::chown(&file, nobody, None).unwrap();

        assert!(check_private(&file).unwrap_err().contains("belongs to uid 65534"));
        nix::unistd::chown(&file, Some(Uid::from_raw(0)), None).unwrap();
        nix::unistd::chown(dir.path(), nobody, None).unwrap();
        assert!(
            check_private(&file).unwrap_err().contains("belongs to uid 65534"),
            "its directory"
        );
        assert!(
            create_corridor_dir(dir.path(), false).is_err(),
            "nor is it taken as ours"
        );
    }

    #[test]
    fn corridor_dirs_get_their_mode_and_lose_others_write() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        let run = dir.path().join("run");

        create_corridor_dir(&state, false).unwrap();
        std::fs::create_dir(&run).unwrap();
        set_mode(&run, 0o777);
        create_corridor_dir(&run, true).unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&run), 0o755);
    }
}
