//! Linux host glue: privilege and kernel checks, routes, and undoing journaled changes.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::netlink;
use super::plan::Os;

pub const OS: Os = Os::Linux;
/// Tunnel interfaces are `corridor0`, `corridor1`, …
pub const INTERFACE_PREFIX: &str = "corridor";

const CAP_NET_ADMIN: u32 = 12;

/// Checks what the tunnel needs before anything is changed, with errors that say what to do.
pub fn preflight(need_ipv6: bool) -> Result<()> {
    if !has_net_admin() {
        bail!(
            "corridor needs CAP_NET_ADMIN to create the tunnel interface: run it with sudo, \
             or grant it once: `{}`",
            crate::platform::grant_capabilities()
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!(
            "/dev/net/tun is missing: load the tun module (`sudo modprobe tun`); in a container, \
             start it with `--device /dev/net/tun --cap-add NET_ADMIN`"
        );
    }
    if need_ipv6 && ipv6_disabled() {
        bail!(
            "IPv6 is disabled on this machine, and the project network is IPv6: enable it with \
             `sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0`"
        );
    }
    Ok(())
}

/// Marks an interface as one connection's (its alias), see [`Change::Interface`].
pub fn tag_interface(name: &str, tag: &str) -> Result<()> {
    netlink::set_alias(index(name)?, tag).with_context(|| format!("setting the alias of {name}"))
}

/// The tag an existing interface carries; `None` when there is no such interface.
pub fn interface_tag(name: &str) -> Option<String> {
    let alias = fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifalias")).ok()?;
    Some(alias.trim_end_matches('\n').to_string())
}

/// Removes a tunnel interface that is still there. The kernel removes a TUN interface itself
/// once the last descriptor on it closes, which after a crash can happen at any moment here.
pub fn remove_interface(name: &str) -> Result<()> {
    let Ok(index) = index(name) else {
        return Ok(());
    };
    match netlink::delete_link(index) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        done => done.with_context(|| format!("removing interface {name}")),
    }
}

/// Routes `destination` into the interface (`ip route replace … dev …`).
pub fn add_route(destination: IpNet, interface: &str) -> Result<()> {
    netlink::replace_route(destination, index(interface)?)
        .with_context(|| format!("routing {destination} into {interface}"))
}

/// Undoes [`add_route`].
pub fn delete_route(destination: IpNet, interface: &str) -> Result<()> {
    netlink::delete_route(destination, index(interface)?)
        .with_context(|| format!("removing the route {destination} from {interface}"))
}

fn index(interface: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(interface).with_context(|| format!("no interface {interface}"))
}

/// Registry changes are Windows's; a journal carrying one was written there.
pub fn delete_registry_key(key: &str) -> Result<()> {
    bail!("the registry key {key} is a Windows change; undo it on Windows")
}

pub fn delete_registry_value(key: &str, _name: &str, _interface: &str) -> Result<()> {
    delete_registry_key(key)
}

pub fn has_net_admin() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

pub fn readiness() -> super::Readiness {
    super::Readiness::Linux {
        net_admin: has_net_admin(),
        tun: Path::new("/dev/net/tun").exists(),
        ipv6: !ipv6_disabled(),
    }
}

pub fn ipv6_disabled() -> bool {
    !Path::new("/proc/net/if_inet6").exists()
        || fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use crate::host::{undo, Change};

    #[test]
    fn a_file_rewritten_by_someone_else_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, backup) = (dir.path().join("resolv.conf"), dir.path().join("backup"));
        std::fs::write(&path, "nameserver 192.0.2.9\n").unwrap();
        std::fs::write(&backup, "nameserver 192.0.2.1\n").unwrap();
        let change = Change::File {
            path: path.clone(),
            backup: backup.clone(),
            marker: Some("# ours".into()),
        };

        undo(&change).unwrap();

        assert_eq!(std::fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.9\n");
        assert!(!backup.exists());
    }

    #[test]
    fn a_file_with_our_marker_gets_its_original_back() {
        let dir = tempfile::tempdir().unwrap();
        let (path, backup) = (dir.path().join("resolv.conf"), dir.path().join("backup"));
        std::fs::write(&path, "# ours\nnameserver 127.0.0.153\n").unwrap();
        std::fs::write(&backup, "nameserver 192.0.2.1\n").unwrap();
        let change = Change::File {
            path: path.clone(),
            backup,
            marker: Some("# ours".into()),
        };

        undo(&change).unwrap();

        assert_eq!(std::fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.1\n");
    }
}
