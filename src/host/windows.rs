//! Windows host glue: elevation and wintun.dll, routes on the Wintun adapter, the registry, and
//! undoing journaled changes.
//!
//! An adapter's tag is its description, given when it is created (`tunnel::tun`); the adapter
//! and its routes go away with the process that holds it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetAdaptersAddresses, GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST,
    IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Networking::WinSock::AF_UNSPEC;
use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_SET_VALUE};
use winreg::RegKey;

use super::plan::Os;
use crate::platform::wide_to_string as wide_str;

pub const OS: Os = Os::Windows;
/// Tunnel adapters are `corridor0`, `corridor1`, …
pub const INTERFACE_PREFIX: &str = "corridor";

/// Where Wintun comes from; corridor loads `wintun.dll` from beside its own executable.
pub const WINTUN_SOURCE: &str = "https://www.wintun.net";

/// Checks what the tunnel needs before anything is changed, with errors that say what to do.
pub fn preflight(_need_ipv6: bool) -> Result<()> {
    if !crate::platform::is_elevated() {
        bail!(
            "corridor needs an elevated process to create the Wintun adapter, its routes and the \
             DNS rule: run it from an Administrator terminal (right-click Terminal or PowerShell, \
             \"Run as administrator\")"
        );
    }
    let dll = wintun_dll()?;
    if !dll.is_file() {
        bail!(
            "wintun.dll is missing: put it at {} (beside corridor.exe). It comes from {WINTUN_SOURCE}: \
             download the zip and take bin\\amd64\\wintun.dll",
            dll.display()
        );
    }
    Ok(())
}

/// Where `wintun.dll` must be: beside the running executable.
pub fn wintun_dll() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating corridor.exe")?;
    Ok(exe.with_file_name("wintun.dll"))
}

/// Whether this process may create interfaces and routes: being elevated is the whole check here.
pub fn has_net_admin() -> bool {
    crate::platform::is_elevated()
}

/// IPv6 cannot be turned off system-wide here the way Linux's sysctl does.
pub fn ipv6_disabled() -> bool {
    false
}

/// The tag is the adapter's description, set at creation; nothing to do afterwards.
pub fn tag_interface(_name: &str, _tag: &str) -> Result<()> {
    Ok(())
}

/// The description of the adapter named `name`; `None` when there is no such adapter.
pub fn interface_tag(name: &str) -> Option<String> {
    adapters().into_iter().find(|a| a.name == name).map(|a| a.description)
}

/// The GUID (`{…}`) of the adapter named `name`, which names its keys in the registry.
pub fn adapter_guid(name: &str) -> Option<String> {
    adapters().into_iter().find(|a| a.name == name).map(|a| a.guid)
}

/// A Wintun adapter is gone with the process that held it.
pub fn remove_interface(_name: &str) -> Result<()> {
    Ok(())
}

pub fn delete_registry_key(key: &str) -> Result<()> {
    match RegKey::predef(HKEY_LOCAL_MACHINE).delete_subkey_all(key) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("deleting the registry key HKLM\\{key}"))
        }
        _ => Ok(()),
    }
}

pub fn delete_registry_value(key: &str, name: &str, interface: &str) -> Result<()> {
    // The adapter's keys may have gone with it.
    let Ok(key_handle) = RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey_with_flags(key, KEY_SET_VALUE) else {
        return Ok(());
    };
    match key_handle.delete_value(name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("deleting {name} of HKLM\\{key} (adapter {interface})"))
        }
        _ => Ok(()),
    }
}

struct Adapter {
    /// The friendly name (`corridor0`).
    name: String,
    description: String,
    guid: String,
}

/// Every adapter.
fn adapters() -> Vec<Adapter> {
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    let mut len: u32 = 16 * 1024;
    for _ in 0..4 {
        // u64 elements keep the buffer aligned for the structures written into it.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        let first = buf.as_mut_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>();
        // SAFETY: `len` is the buffer's size in bytes; on overflow it is set to the size needed.
        let status = unsafe { GetAdaptersAddresses(AF_UNSPEC as u32, flags, std::ptr::null(), first, &mut len) };
        if status == ERROR_BUFFER_OVERFLOW {
            continue;
        }
        if status != NO_ERROR {
            return Vec::new();
        }
        let mut found = Vec::new();
        let mut next = first.cast_const();
        while !next.is_null() {
            // SAFETY: a linked list inside `buf`, written by GetAdaptersAddresses.
            let adapter = unsafe { &*next };
            // SAFETY: NUL-terminated strings (UTF-16, and ANSI for the GUID) owned by the same buffer.
            let (name, description, guid) = unsafe {
                (
                    wide_str(adapter.FriendlyName),
                    wide_str(adapter.Description),
                    ansi_str(adapter.AdapterName),
                )
            };
            found.push(Adapter {
                name,
                description,
                guid,
            });
            next = adapter.Next;
        }
        return found;
    }
    Vec::new()
}

/// # Safety
/// `ptr` is null or points to a NUL-terminated byte string.
unsafe fn ansi_str(ptr: *const u8) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise: the string ends with a NUL.
    unsafe { std::ffi::CStr::from_ptr(ptr.cast()) }
        .to_string_lossy()
        .into_owned()
}
