//! macOS host glue: root, routes on the utun, and undoing journaled changes.
//!
//! A utun interface cannot carry a tag, and it never outlives the process that opened it (nor
//! do its routes): one that exists when our daemon is gone belongs to someone else.

use std::ffi::CString;

use anyhow::{bail, Result};

use super::plan::{self, Os};
use super::Change;

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

/// Whether this process may create interfaces and routes: being elevated is the whole check here.
pub fn has_net_admin() -> bool {
    crate::platform::is_elevated()
}

/// IPv6 cannot be turned off system-wide here the way Linux's sysctl does.
pub fn ipv6_disabled() -> bool {
    false
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

/// Undoes one change; a change that is already gone is undone.
pub fn undo(change: &Change) -> Result<()> {
    match change {
        // Gone with the process that held it.
        Change::Interface { .. } => Ok(()),
        Change::Route { destination, interface } => {
            if interface_tag(interface).is_some() {
                let _ = super::run(&plan::delete_route(OS, *destination, interface));
            }
            Ok(())
        }
        Change::File { path, backup, marker } => super::restore_file(path, backup, marker.as_deref()),
        Change::CreatedFile { path, marker } => super::remove_created_file(path, marker),
        Change::RegistryKey { key } | Change::RegistryValue { key, .. } => {
            bail!("the registry key {key} is a Windows change; undo it on Windows")
        }
    }
}
