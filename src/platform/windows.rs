//! Windows: the process token for elevation, %ProgramData% for system files, creation flags for
//! a detached daemon, console control events and a named stop event for its shutdown, and a
//! named pipe only the owner, SYSTEM and Administrators may open for its control channel.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::windows::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::signal::windows::{ctrl_c, ctrl_close, ctrl_shutdown, CtrlC, CtrlClose, CtrlShutdown};
use tokio::sync::mpsc;
use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_ACCESS_DENIED, HANDLE, STILL_ACTIVE};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetExitCodeProcess, OpenEventW, OpenProcess, QueryFullProcessImageNameW, SetEvent, TerminateProcess,
    WaitForSingleObject, CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS, EVENT_MODIFY_STATE, INFINITE, PROCESS_NAME_WIN32,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
};

use super::{Invoker, Pid, Stop};

/// Whether the process token is elevated (an Administrator terminal, or a service).
pub fn is_elevated() -> bool {
    security::token_of(None).is_ok_and(|(_, elevated)| elevated)
}

/// Connections made by an elevated process live here, for everyone to find.
pub fn system_runtime_dir() -> PathBuf {
    program_data().join("run")
}

/// Kept across a reboot, so a change made before a power cut is still undone.
pub fn system_state_dir() -> PathBuf {
    program_data().join("state")
}

/// Windows has no sudo: an elevated process runs as the user who started it, so what it creates
/// in their profile is already theirs.
pub fn sudo_invoker(_env: &dyn Fn(&str) -> Option<OsString>) -> Option<Invoker> {
    None
}

pub fn home_of(name: &str) -> io::Result<PathBuf> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("looking up the profile of {name:?} is not supported on Windows"),
    ))
}

/// corridor's config dir in the profile `home`, as `directories` places it for its owner.
pub fn config_dir_in(home: &Path) -> PathBuf {
    home.join(r"AppData\Roaming\corridor\config")
}

/// Never needed: see [`sudo_invoker`].
pub fn hand_over(_path: &Path, _invoker: &Invoker) -> io::Result<()> {
    Ok(())
}

/// A directory of corridor's own (runtime or state). An elevated process gives it a protected
/// DACL of SYSTEM and the Administrators (`shared`: users may read), since `%ProgramData%`
/// would otherwise pass down its own, under which users may create files. One in a user's
/// profile inherits the profile's, which is already private.
pub fn create_corridor_dir(path: &Path, shared: bool) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    if !is_elevated() {
        return Ok(());
    }
    let descriptor = security::Descriptor::from_sddl(&super::sddl::private_dir(shared))?;
    descriptor.apply_dacl(path)
}

/// Why `path` (a journal, its backup, or their directory) may hold what someone other than
/// SYSTEM, the Administrators or this user wrote: it is a link, or its owner or access list
/// (or its directory's) lets someone else write it.
pub fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symbolic link", path.display()));
    }
    let me = security::token_user(None).map_err(|e| format!("reading this process's user: {e}"))?;
    for object in [Some(path), path.parent()].into_iter().flatten() {
        let sddl = security::file_sddl(object).map_err(|e| format!("{}: {e}", object.display()))?;
        super::sddl::check(&sddl, &me).map_err(|why| format!("{} is {why}", object.display()))?;
    }
    Ok(())
}

/// A directory created in the user's profile inherits its ACL, which grants only the user,
/// SYSTEM and Administrators: private by default, with no mode to set.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// A new file (never an existing one); private as its directory is (see [`create_private_dir`]).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create_new(true).open(path)
}

/// `create_private_dir` for `path` and its missing parents.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Options that create files as private as their directory (see [`create_private_dir`]).
pub fn private_open_options() -> OpenOptions {
    OpenOptions::new()
}

/// Runs `command` in this process's place as far as Windows allows: it inherits the console, and
/// its exit status becomes ours. Returns only when it could not be started.
pub fn exec(command: &mut std::process::Command) -> io::Error {
    match command.status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(e) => e,
    }
}

/// An exclusive lock on a file, held until dropped (closing the handle releases it).
pub struct FileLock(#[allow(dead_code)] File);

/// Takes the lock on `path` (created if missing); `None` while another process holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
    use std::os::windows::io::AsRawHandle as _;
    use windows_sys::Win32::Foundation::ERROR_LOCK_VIOLATION;
    use windows_sys::Win32::Storage::FileSystem::{LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY};
    use windows_sys::Win32::System::IO::OVERLAPPED;

    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    // SAFETY: an all-zero OVERLAPPED is valid (offset 0, no event).
    let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
    // SAFETY: a valid file handle; the whole file's range; `overlapped` outlives the call.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            u32::MAX,
            u32::MAX,
            &mut overlapped,
        )
    };
    if ok != 0 {
        return Ok(Some(FileLock(file)));
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) => Ok(None),
        e => Err(e),
    }
}

/// No console, its own process group: closing the terminal or Ctrl+C in it leaves the daemon be.
pub fn detach(command: &mut Command) {
    command.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

/// Whether `pid` runs (also when it is another user's and we may not query it).
pub fn process_alive(pid: Pid) -> bool {
    let Some(process) = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION) else {
        // SAFETY: reads the calling thread's last error.
        return unsafe { GetLastError() } == ERROR_ACCESS_DENIED;
    };
    let mut code = 0u32;
    // SAFETY: a valid process handle with query access.
    let ok = unsafe { GetExitCodeProcess(process.0, &mut code) };
    ok != 0 && code == STILL_ACTIVE as u32
}

/// Whether `pid` runs one of corridor's programs. Windows gives no other process's arguments without
/// reading its memory, so the image name is the whole check here.
pub fn process_is_daemon_of(pid: Pid, _project: &str) -> bool {
    let Some(process) = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION) else {
        return false;
    };
    let mut buf = vec![0u16; 32_768];
    let mut len = buf.len() as u32;
    // SAFETY: `len` is the buffer's length in UTF-16 units; it returns the length written.
    if unsafe { QueryFullProcessImageNameW(process.0, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len) } == 0 {
        return false;
    }
    let image = PathBuf::from(OsString::from_wide(&buf[..len as usize]));
    image
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .is_some_and(|image| super::program_names().iter().any(|ours| ours.to_lowercase() == image))
}

/// Gracefully: sets the daemon's stop event (see [`Shutdown`]), so it undoes its host changes;
/// a process without one is terminated. Now: terminates it. A process already gone is stopped.
pub fn signal_stop(pid: Pid, how: Stop) -> io::Result<()> {
    if how == Stop::Gracefully {
        let name = wide(&stop_event_name(pid.get()));
        // SAFETY: a NUL-terminated name; the handle is closed by `Handle`.
        let event = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr()) };
        if !event.is_null() {
            let event = Handle(event);
            // SAFETY: a valid event handle with modify access.
            if unsafe { SetEvent(event.0) } != 0 {
                return Ok(());
            }
        }
    }
    let Some(process) = open_process(pid, PROCESS_TERMINATE) else {
        return match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::PermissionDenied => Err(e),
            _ => Ok(()),
        };
    };
    // SAFETY: a valid process handle with terminate access.
    if unsafe { TerminateProcess(process.0, 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ctrl+C, the console closing, the system shutting down, and the stop event that
/// [`signal_stop`] sets (a detached daemon has no console to receive the others); set up before
/// the first host change so that each leads to the cleanup.
pub struct Shutdown {
    ctrl_c: CtrlC,
    close: CtrlClose,
    shutdown: CtrlShutdown,
    stop: mpsc::Receiver<()>,
}

impl Shutdown {
    pub fn new() -> io::Result<Shutdown> {
        Ok(Shutdown {
            ctrl_c: ctrl_c()?,
            close: ctrl_close()?,
            shutdown: ctrl_shutdown()?,
            stop: stop_event()?,
        })
    }

    /// The same as [`Shutdown::new`]: closing the console already counts.
    pub fn with_hangup() -> io::Result<Shutdown> {
        Shutdown::new()
    }

    /// Waits for the next stop request; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.ctrl_c.recv() => "CTRL_C",
            _ = self.close.recv() => "CTRL_CLOSE",
            _ = self.shutdown.recv() => "CTRL_SHUTDOWN",
            _ = self.stop.recv() => "stop event",
        }
    }
}

/// The event named after our pid, waited for on a thread of its own (a plain thread, not the
/// runtime's blocking pool, so it never holds up the runtime's shutdown).
fn stop_event() -> io::Result<mpsc::Receiver<()>> {
    let name = wide(&stop_event_name(std::process::id()));
    // SAFETY: default security (creator and Administrators may set it), auto-reset, unset.
    let event = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
    if event.is_null() {
        return Err(io::Error::last_os_error());
    }
    let event = Handle(event);
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new().name("stop-event".into()).spawn(move || {
        let event = event;
        // SAFETY: a valid event handle, owned by this thread from now on.
        while unsafe { WaitForSingleObject(event.0, INFINITE) } == 0 {
            if tx.blocking_send(()).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}

/// No suspend is detected here; WireGuard's own timers still recover, only more slowly.
pub fn asleep() -> std::time::Duration {
    std::time::Duration::ZERO
}

fn stop_event_name(pid: u32) -> String {
    format!("Local\\corridor-stop-{pid}")
}

fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("corridor")
}

fn open_process(pid: Pid, access: u32) -> Option<Handle> {
    // SAFETY: no pointers; a null handle is checked.
    let process = unsafe { OpenProcess(access, 0, pid.get()) };
    (!process.is_null()).then_some(Handle(process))
}

fn wide(text: &str) -> Vec<u16> {
    OsStr::new(text).encode_wide().chain(Some(0)).collect()
}

/// A kernel handle closed when dropped.
struct Handle(HANDLE);

// SAFETY: kernel handles may be used and closed from any thread.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is open and owned by this value.
        unsafe { CloseHandle(self.0) };
    }
}

/// Security descriptors and tokens: the text form of a file's, the user behind a process.
mod security {
    use std::io;
    use std::path::Path;

    use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
        ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, SetNamedSecurityInfoW,
        SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetSecurityDescriptorDacl, GetTokenInformation, TokenElevation, TokenUser, ACL, DACL_SECURITY_INFORMATION,
        OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, TOKEN_ELEVATION,
        TOKEN_QUERY, TOKEN_USER,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    use super::{wide, Handle};

    /// A security descriptor allocated by the system, freed when dropped.
    pub struct Descriptor(pub PSECURITY_DESCRIPTOR);

    impl Descriptor {
        pub fn from_sddl(sddl: &str) -> io::Result<Descriptor> {
            let text = wide(sddl);
            let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: a NUL-terminated string; the descriptor is freed with LocalFree on drop.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    text.as_ptr(),
                    SDDL_REVISION_1,
                    &mut descriptor,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Descriptor(descriptor))
        }

        /// Puts this descriptor's DACL on `path`, protected from inheritance.
        pub fn apply_dacl(&self, path: &Path) -> io::Result<()> {
            let (mut present, mut defaulted) = (0, 0);
            let mut dacl: *mut ACL = std::ptr::null_mut();
            // SAFETY: a valid descriptor; the DACL pointer points into it.
            if unsafe { GetSecurityDescriptorDacl(self.0, &mut present, &mut dacl, &mut defaulted) } == 0 {
                return Err(io::Error::last_os_error());
            }
            let name = wide(&path.to_string_lossy());
            // SAFETY: a NUL-terminated name and a DACL that outlives the call.
            let status = unsafe {
                SetNamedSecurityInfoW(
                    name.as_ptr(),
                    SE_FILE_OBJECT,
                    DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    dacl,
                    std::ptr::null(),
                )
            };
            if status != 0 {
                return Err(io::Error::from_raw_os_error(status as i32));
            }
            Ok(())
        }
    }

    impl Drop for Descriptor {
        fn drop(&mut self) {
            // SAFETY: allocated by the system with LocalAlloc.
            unsafe { LocalFree(self.0) };
        }
    }

    /// The owner and DACL of a file or directory, as SDDL.
    pub fn file_sddl(path: &Path) -> io::Result<String> {
        let name = wide(&path.to_string_lossy());
        let info = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name; only the descriptor is asked for, freed below.
        let status = unsafe {
            GetNamedSecurityInfoW(
                name.as_ptr(),
                SE_FILE_OBJECT,
                info,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        to_sddl(&Descriptor(descriptor), info)
    }

    /// The owner and DACL of a kernel object (a pipe, an event) by its handle, as SDDL.
    #[cfg(test)]
    pub fn handle_sddl(handle: HANDLE) -> io::Result<String> {
        use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
        let info = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: a valid handle; only the descriptor is asked for, freed by `Descriptor`.
        let status = unsafe {
            GetSecurityInfo(
                handle,
                SE_KERNEL_OBJECT,
                info,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        to_sddl(&Descriptor(descriptor), info)
    }

    fn to_sddl(descriptor: &Descriptor, info: u32) -> io::Result<String> {
        let mut text = std::ptr::null_mut();
        // SAFETY: a valid descriptor; the string is freed with LocalFree.
        let ok = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor.0,
                SDDL_REVISION_1,
                info,
                &mut text,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(take_wide(text))
    }

    /// The SID (as text) of the user `process` runs as (`None`: this process), and whether
    /// its token is elevated.
    pub fn token_user(process: Option<HANDLE>) -> io::Result<String> {
        token_of(process).map(|(sid, _)| sid)
    }

    pub fn token_of(process: Option<HANDLE>) -> io::Result<(String, bool)> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: a process handle with query access (or our own pseudo-handle).
        if unsafe { OpenProcessToken(process.unwrap_or(GetCurrentProcess()), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = Handle(token);
        // u64 elements keep the buffer aligned for the TOKEN_USER written into it.
        let mut buf = vec![0u64; 64];
        let mut len = 0u32;
        // SAFETY: the buffer's size in bytes is passed.
        let ok = unsafe {
            GetTokenInformation(
                token.0,
                TokenUser,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut len,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: GetTokenInformation wrote a TOKEN_USER at the start of the buffer.
        let user = unsafe { &*buf.as_ptr().cast::<TOKEN_USER>() };
        let mut text = std::ptr::null_mut();
        // SAFETY: a SID inside `buf`; the string is freed with LocalFree.
        if unsafe { ConvertSidToStringSidW(user.User.Sid, &mut text) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let sid = take_wide(text);
        let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
        // SAFETY: the buffer is a TOKEN_ELEVATION and its size is passed.
        let ok = unsafe {
            GetTokenInformation(
                token.0,
                TokenElevation,
                (&mut elevation as *mut TOKEN_ELEVATION).cast(),
                std::mem::size_of::<TOKEN_ELEVATION>() as u32,
                &mut len,
            )
        };
        Ok((sid, ok != 0 && elevation.TokenIsElevated != 0))
    }

    /// A string the system allocated with LocalAlloc, copied and freed.
    fn take_wide(text: *mut u16) -> String {
        // SAFETY: a NUL-terminated string from the system.
        let value = unsafe { super::wide_to_string(text) };
        // SAFETY: allocated by the system with LocalAlloc.
        unsafe { LocalFree(text.cast()) };
        value
    }
}

/// # Safety
/// `ptr` is null or points to a NUL-terminated UTF-16 string.
pub(crate) unsafe fn wide_to_string(ptr: *const u16) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller's promise: the string ends with a NUL.
    while unsafe { *ptr.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Whether a control channel's server may be believed: it runs as SYSTEM or elevated, as
/// corridor's daemons do, never as a process an ordinary user could start first.
fn trusted_server(sid: &str, elevated: bool) -> bool {
    sid == "S-1-5-18" || elevated
}

/// The control channel: a named pipe, local clients only, that only the owner, SYSTEM and
/// Administrators may open. Its name is made from the connection's socket path, so connections
/// kept under different runtime dirs never meet.
pub mod ipc {
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    use anyhow::{Context, Result};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions};
    use tokio::sync::Mutex;
    use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;
    use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
    use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
    use windows_sys::Win32::System::Threading::PROCESS_QUERY_LIMITED_INFORMATION;

    use super::security::Descriptor;

    use crate::platform::Invoker;

    /// Full access for the owner (OW), SYSTEM (SY) and the Administrators group (BA); protected
    /// (P), so nothing is inherited; no one else.
    const SDDL: &str = "D:P(A;;GA;;;OW)(A;;GA;;;SY)(A;;GA;;;BA)";

    /// Either end of a connected pipe.
    pub enum Stream {
        Server(NamedPipeServer),
        Client(NamedPipeClient),
    }

    pub struct Listener {
        name: String,
        next: Mutex<NamedPipeServer>,
    }

    /// Creates the pipe for `path`; refuses when someone else already holds the name.
    pub fn bind(path: &Path, _owner: Option<&Invoker>) -> Result<Listener> {
        let name = pipe_name(path);
        let first = create(&name, true).with_context(|| format!("creating the control pipe {name}"))?;
        Ok(Listener {
            name,
            next: Mutex::new(first),
        })
    }

    impl Listener {
        pub async fn accept(&self) -> io::Result<Stream> {
            let mut next = self.next.lock().await;
            next.connect().await?;
            let connected = std::mem::replace(&mut *next, create(&self.name, false)?);
            Ok(Stream::Server(connected))
        }
    }

    pub async fn connect(path: &Path) -> io::Result<Stream> {
        let name = pipe_name(path);
        for _ in 0..50 {
            match ClientOptions::new().open(&name) {
                Ok(client) => {
                    check_server(&client).map_err(|why| {
                        crate::platform::UntrustedServer {
                            channel: name.clone(),
                            why,
                        }
                        .into_io()
                    })?;
                    return Ok(Stream::Client(client));
                }
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("{name} stays busy")))
    }

    /// Whoever creates a pipe name first serves it: the server must be SYSTEM or elevated.
    fn check_server(client: &NamedPipeClient) -> Result<(), String> {
        use std::os::windows::io::AsRawHandle as _;
        let mut pid = 0u32;
        // SAFETY: a valid pipe handle; `pid` is written on success.
        if unsafe { GetNamedPipeServerProcessId(client.as_raw_handle(), &mut pid) } == 0 {
            return Err(format!("its server is unknown ({})", io::Error::last_os_error()));
        }
        let process = super::Pid::new(pid)
            .and_then(|pid| super::open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION))
            .ok_or_else(|| format!("its server (pid {pid}) cannot be queried"))?;
        let (sid, elevated) =
            super::security::token_of(Some(process.0)).map_err(|e| format!("the server's user is unknown ({e})"))?;
        if super::trusted_server(&sid, elevated) {
            return Ok(());
        }
        Err(format!(
            "its server (pid {pid}) runs as {sid}, neither SYSTEM nor elevated"
        ))
    }

    /// A pipe vanishes with its last handle: nothing to remove.
    pub fn remove(_path: &Path) {}

    fn pipe_name(path: &Path) -> String {
        let flat: String = path
            .to_string_lossy()
            .chars()
            .map(|c| if matches!(c, '\\' | '/' | ':') { '-' } else { c })
            .collect();
        format!(r"\\.\pipe\corridor{flat}")
    }

    fn create(name: &str, first: bool) -> io::Result<NamedPipeServer> {
        let descriptor = Descriptor::from_sddl(SDDL)?;
        let mut attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.0,
            bInheritHandle: 0,
        };
        // SAFETY: `attributes` and the descriptor it points to outlive the call.
        unsafe {
            ServerOptions::new()
                .first_pipe_instance(first)
                .reject_remote_clients(true)
                .create_with_security_attributes_raw(name, (&mut attributes as *mut SECURITY_ATTRIBUTES).cast())
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Server(s) => Pin::new(s).poll_read(cx, buf),
                Stream::Client(c) => Pin::new(c).poll_read(cx, buf),
            }
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            match self.get_mut() {
                Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
                Stream::Client(c) => Pin::new(c).poll_write(cx, buf),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Server(s) => Pin::new(s).poll_flush(cx),
                Stream::Client(c) => Pin::new(c).poll_flush(cx),
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Server(s) => Pin::new(s).poll_shutdown(cx),
                Stream::Client(c) => Pin::new(c).poll_shutdown(cx),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Wine keeps no access lists of its own on files (it derives them from the Unix mode) and
    /// lets a second server take a pipe name that was created as the first instance.
    fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        let ntdll = wide("ntdll.dll");
        // SAFETY: a NUL-terminated name; ntdll is loaded in every process.
        let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
        // SAFETY: a loaded module and a NUL-terminated name.
        !module.is_null() && unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }.is_some()
    }

    /// The SIDs of a DACL's entries, in order, and whether it is protected from inheritance.
    fn dacl_sids(sddl: &str) -> (bool, Vec<String>) {
        let dacl = sddl.split_once("D:").map_or("", |(_, d)| d);
        let sids = dacl
            .split('(')
            .skip(1)
            .map(|ace| ace.trim_end_matches(')').rsplit(';').next().unwrap_or("").to_string())
            .collect();
        (dacl.starts_with('P'), sids)
    }

    #[test]
    fn only_system_or_an_elevated_process_may_serve_a_control_channel() {
        assert!(trusted_server("S-1-5-18", false));
        assert!(trusted_server("S-1-5-21-1-2-3-1001", true));
        assert!(!trusted_server("S-1-5-21-1-2-3-1001", false));
    }

    #[test]
    fn an_elevated_corridor_dir_is_protected_for_system_and_administrators() {
        if !is_elevated() || under_wine() {
            eprintln!("SKIPPED: not elevated on Windows (Wine stores no access lists)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let run = state.join("run");
        create_corridor_dir(&state, false).unwrap();
        create_corridor_dir(&run, true).unwrap();
        std::fs::write(run.join("p1.journal"), "").unwrap();

        let sddl = security::file_sddl(&state).unwrap();
        let (protected, sids) = dacl_sids(&sddl);
        assert!(protected, "{sddl}");
        assert_eq!(sids, ["SY", "BA"]);
        let (protected, sids) = dacl_sids(&security::file_sddl(&run).unwrap());
        assert!(protected);
        assert_eq!(sids, ["SY", "BA", "BU"], "users may read the runtime dir");
        assert_eq!(check_private(&run), Ok(()));
        assert_eq!(check_private(&run.join("p1.journal")), Ok(()));
    }

    #[test]
    fn a_file_others_may_write_or_in_a_directory_others_may_write_is_refused() {
        if under_wine() {
            eprintln!("SKIPPED: Wine stores no access lists (tests/windows_wine.rs plants by mode)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        let journal = open.join("p1.journal");
        std::fs::write(&journal, "").unwrap();
        let writable = security::Descriptor::from_sddl("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x2;;;BU)").unwrap();
        writable.apply_dacl(&open).unwrap();
        let own = security::Descriptor::from_sddl("D:P(A;;FA;;;SY)(A;;FA;;;BA)").unwrap();
        own.apply_dacl(&journal).unwrap();

        let refused = check_private(&journal).unwrap_err();

        assert!(refused.contains("BU may write it"), "{refused}");
        assert!(refused.contains("open"), "names the directory: {refused}");
        let missing = check_private(&open.join("p2.journal")).unwrap_err();
        assert!(missing.contains("p2.journal"), "{missing}");
    }

    #[tokio::test]
    async fn the_control_pipe_is_for_owner_system_and_administrators_and_answers_once_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("p1.sock");
        let listener = ipc::bind(&socket, None).unwrap();
        let second = ipc::bind(&socket, None);
        let server = tokio::spawn(async move {
            let mut stream = listener.accept().await.unwrap();
            let mut asked = [0u8; 6];
            stream.read_exact(&mut asked).await.unwrap();
            stream.write_all(b"status ok").await.unwrap();
            asked
        });

        let connected = ipc::connect(&socket).await;

        assert!(
            second.is_err() || under_wine(),
            "a second server for a name in use is refused"
        );
        if !is_elevated() {
            let refused = connected.err().expect("a server that is not elevated is refused");
            assert!(refused.to_string().contains("neither SYSTEM nor elevated"), "{refused}");
            server.abort();
            return;
        }
        let mut client = connected.unwrap();
        let ipc::Stream::Client(pipe) = &client else {
            panic!("connect gives the client end")
        };
        use std::os::windows::io::AsRawHandle as _;
        let sddl = security::handle_sddl(pipe.as_raw_handle()).unwrap();
        let (protected, sids) = dacl_sids(&sddl);
        assert!(protected, "{sddl}");
        assert_eq!(sids, ["OW", "SY", "BA"], "{sddl}");
        client.write_all(b"status").await.unwrap();
        let mut answer = [0u8; 9];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&server.await.unwrap(), b"status");
        assert_eq!(&answer, b"status ok");
    }

    #[tokio::test]
    async fn a_graceful_stop_sets_the_event_the_process_waits_for() {
        let mut shutdown = Shutdown::new().unwrap();

        signal_stop(Pid::new(std::process::id()).unwrap(), Stop::Gracefully).unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), shutdown.recv()).await;

        assert_eq!(why, Ok("stop event"));
    }
}
