//! Windows host glue: elevation and wintun.dll, routes on the Wintun adapter, the registry, and
//! undoing journaled changes.
//!
//! An adapter's tag is the tunnel type it is created with (`tunnel::tun`), which Wintun keeps in
//! its description; the adapter and its routes go away with the process that holds it.

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

pub fn readiness() -> super::Readiness {
    let nrpt = match RegKey::predef(HKEY_LOCAL_MACHINE).open_subkey(super::allowed::NRPT_GROUP_POLICY) {
        Ok(_) => Err("Group Policy sets NRPT rules on this machine, so Windows ignores corridor's local one".into()),
        Err(_) => Ok(()),
    };
    super::Readiness::Windows {
        elevated: crate::platform::is_elevated(),
        wintun: wintun_dll().map_err(|e| format!("{e:#}")).and_then(|dll| loads(&dll)),
        nrpt,
    }
}

/// Whether the library at `dll` exists and loads (then it is unloaded again).
fn loads(dll: &std::path::Path) -> Result<(), String> {
    use std::os::windows::ffi::OsStrExt as _;
    use windows_sys::Win32::Foundation::FreeLibrary;
    use windows_sys::Win32::System::LibraryLoader::LoadLibraryW;

    if !dll.is_file() {
        return Err(format!("{} is missing", dll.display()));
    }
    let name: Vec<u16> = dll.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated path; the module is freed below.
    let module = unsafe { LoadLibraryW(name.as_ptr()) };
    if module.is_null() {
        return Err(format!(
            "{} does not load: {}",
            dll.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a module this function loaded.
    unsafe { FreeLibrary(module) };
    Ok(())
}

/// The tag is given to Wintun at creation; nothing to do afterwards.
pub fn tag_interface(_name: &str, _tag: &str) -> Result<()> {
    Ok(())
}

/// The tag of the adapter named `name`, from its description (see [`super::plan::wintun_tag`]);
/// `None` when there is no such adapter.
pub fn interface_tag(name: &str) -> Option<String> {
    adapters()
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| super::plan::wintun_tag(&a.description).to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_and_values_are_deleted_and_missing_ones_count_as_deleted() {
        if !crate::platform::is_elevated() {
            eprintln!("SKIPPED: HKEY_LOCAL_MACHINE needs an elevated process");
            return;
        }
        let key = format!(r"SOFTWARE\corridor-unit-{}", std::process::id());
        let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
        let (handle, _) = hklm.create_subkey(format!(r"{key}\sub")).unwrap();
        handle.set_value("SearchList", &"zerops").unwrap();
        handle.set_value("Other", &"theirs").unwrap();

        delete_registry_value(&format!(r"{key}\sub"), "SearchList", "corridor0").unwrap();
        delete_registry_value(&format!(r"{key}\sub"), "SearchList", "corridor0").unwrap();
        delete_registry_value(&format!(r"{key}\gone"), "SearchList", "corridor0").unwrap();
        let sub = hklm.open_subkey(format!(r"{key}\sub")).unwrap();
        assert!(sub.get_value::<String, _>("SearchList").is_err());
        assert_eq!(
            sub.get_value::<String, _>("Other").unwrap(),
            "theirs",
            "other values stay"
        );
        drop(sub);

        delete_registry_key(&key).unwrap();
        delete_registry_key(&key).unwrap();
        assert!(hklm.open_subkey(&key).is_err(), "the key and its subkeys are gone");
    }

    #[test]
    fn adapters_are_found_by_name_and_a_missing_one_has_no_tag() {
        assert_eq!(interface_tag("corridor-no-such-adapter"), None);
        assert_eq!(adapter_guid("corridor-no-such-adapter"), None);
        for adapter in adapters() {
            assert!(
                adapter.guid.starts_with('{') && adapter.guid.ends_with('}'),
                "{}",
                adapter.guid
            );
            assert_eq!(adapter_guid(&adapter.name).as_deref(), Some(adapter.guid.as_str()));
        }
    }

    #[test]
    fn readiness_names_the_missing_wintun_dll() {
        let super::super::Readiness::Windows { wintun, .. } = readiness() else {
            panic!("Windows reports Windows's checks")
        };
        let dll = wintun_dll().unwrap();
        if dll.is_file() {
            return;
        }
        let why = wintun.unwrap_err();
        assert!(why.contains("wintun.dll is missing"), "{why}");
    }
}
