//! macOS host glue: root, routes on the utun, and undoing journaled changes.
//!
//! A utun interface cannot carry a tag, and it never outlives the process that opened it (nor
//! do its routes): one that exists when our daemon is gone belongs to someone else.

use std::ffi::CString;

use anyhow::{bail, Result};

use super::plan::Os;

pub const OS: Os = Os::MacOs;
/// The kernel names tunnel interfaces `utunN`; no other name can be asked for.
pub const INTERFACE_PREFIX: &str = "utun";

/// Checks what the tunnel needs before anything is changed, with errors that say what to do.
pub fn preflight(_need_ipv6: bool) -> Result<()> {
    if !crate::platform::is_elevated() {
        bail!(
            "corridor needs root on macOS to create the utun interface, its routes and \
             /etc/resolver/zerops: run it with sudo (`sudo corridor vpn up …`)"
        );
    }
    Ok(())
}

pub fn readiness() -> super::Readiness {
    super::Readiness::MacOs {
        root: crate::platform::is_elevated(),
        utun: utun_opens(),
        resolver_file: resolver_file_free(),
    }
}

/// Whether the kernel control that makes utun interfaces can be reached (it needs no root).
fn utun_opens() -> Result<(), String> {
    // SAFETY: no pointers; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::PF_SYSTEM, libc::SOCK_DGRAM, libc::SYSPROTO_CONTROL) };
    if fd < 0 {
        return Err(format!(
            "no kernel control socket for utun: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor this function opened.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `/etc/resolver/zerops` is corridor's to write when it is absent or carries corridor's marker.
fn resolver_file_free() -> Result<(), String> {
    use crate::host::allowed::{RESOLVER_FILE, RESOLVER_MARKER};
    match std::fs::read_to_string(RESOLVER_FILE) {
        Ok(text) if !text.contains(RESOLVER_MARKER) => Err(format!("{RESOLVER_FILE} is another program's")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{RESOLVER_FILE}: {e}")),
        _ => Ok(()),
    }
}

/// A utun has no field for a tag; see the module's note.
pub fn tag_interface(_name: &str, _tag: &str) -> Result<()> {
    Ok(())
}

/// `Some("")` for an existing interface (it carries no tag), `None` when there is none.
pub fn interface_tag(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then(String::new)
}

/// A utun interface is gone with the process that held it.
pub fn remove_interface(_name: &str) -> Result<()> {
    Ok(())
}

/// Registry changes are Windows's; a journal carrying one was written there.
pub fn delete_registry_key(key: &str) -> Result<()> {
    bail!("the registry key {key} is a Windows change; undo it on Windows")
}

pub fn delete_registry_value(key: &str, _name: &str, _interface: &str) -> Result<()> {
    delete_registry_key(key)
}
