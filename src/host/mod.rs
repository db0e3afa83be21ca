//! Everything corridor changes on the host, journaled so it can always be undone (DESIGN §6),
//! and the checks that tell a user what is missing before anything is changed.

mod journal;
pub mod plan;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(target_os = "linux")]
use linux::{add_route, delete_route};
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "macos")]
use macos as platform;
#[cfg(windows)]
pub(crate) mod windows;
#[cfg(windows)]
use windows as platform;

pub use journal::{Change, Journal};
pub use platform::{has_net_admin, interface_tag, ipv6_disabled, preflight, tag_interface, INTERFACE_PREFIX, OS};

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

/// Undoes every change a journal holds, newest first, then removes the journal. Used by
/// `vpn down`, a clean daemon exit and the next start after a crash. Changes already gone
/// (the kernel removes a TUN interface with its process) count as undone.
pub fn restore(journal: &Path) -> Result<Vec<Change>> {
    let changes = journal::read(journal)?;
    let foreign = foreign_interfaces(&changes, &interface_tag);
    let mut left = Vec::new();
    for change in changes.iter().rev() {
        if names_any(change, &foreign) {
            tracing::info!(?change, "interface belongs to another connection now; left alone");
            continue;
        }
        if let Err(e) = undo(change) {
            tracing::warn!(?change, error = %e, "could not undo a host change");
            left.push(change.clone());
        }
    }
    if left.is_empty() {
        journal::remove(journal)?;
        return Ok(Vec::new());
    }
    let fixes: Vec<String> = left.iter().map(|c| format!("  {}", plan::manual_fix(OS, c))).collect();
    anyhow::bail!(
        "could not restore the host completely; left behind:\n{}\n(the journal {} is kept)",
        fixes.join("\n"),
        journal.display()
    )
}

/// Routes `networks` into the tunnel interface, each journaled before it is added.
pub fn add_routes(interface: &str, networks: &[IpNet], journal: &mut Journal) -> Result<()> {
    for (step, &destination) in plan::routes(OS, interface, networks).into_iter().zip(networks) {
        journal.record(step.change)?;
        add_route(destination, interface)?;
    }
    Ok(())
}

/// Linux changes routes through its routing socket (`vpn up` runs no `ip`); macOS and Windows
/// run the plan's tool.
#[cfg(not(target_os = "linux"))]
fn add_route(destination: IpNet, interface: &str) -> Result<()> {
    run(&plan::add_route(OS, destination, interface))
}

#[cfg(not(target_os = "linux"))]
fn delete_route(destination: IpNet, interface: &str) -> Result<()> {
    run(&plan::delete_route(OS, destination, interface))
}

/// Runs a system tool to completion; its stderr becomes the error, `hint` says what to check
/// when it cannot be started at all.
pub fn run_tool(program: &str, args: &[&str], hint: &str) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running `{program}` ({hint})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // netsh reports its errors on stdout.
        let detail = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout)
        } else {
            stderr
        };
        bail!("`{program} {}` failed: {}", args.join(" "), detail.trim());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn run(step: &plan::Run) -> Result<()> {
    let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
    run_tool(step.program, &args, "a system tool corridor needs")
}

/// Undoes [`Change::File`]: the original bytes back, in place (the file may be a bind mount, as
/// under Docker and `ip netns exec`), while the file still carries our `marker`.
fn restore_file(path: &Path, backup: &Path, marker: Option<&str>) -> Result<()> {
    if !backup.exists() {
        return Ok(());
    }
    let current = fs::read_to_string(path).unwrap_or_default();
    if marker.is_some_and(|m| !current.contains(m)) {
        tracing::warn!(path = %path.display(), "rewritten by someone else since; leaving their version");
        return fs::remove_file(backup).with_context(|| format!("removing {}", backup.display()));
    }
    let original = fs::read(backup).with_context(|| format!("reading {}", backup.display()))?;
    fs::write(path, original).with_context(|| format!("restoring {}", path.display()))?;
    fs::remove_file(backup).with_context(|| format!("removing {}", backup.display()))
}

/// Undoes [`Change::CreatedFile`]: a file someone has rewritten since is theirs and stays.
fn remove_created_file(path: &Path, marker: &str) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(current) if current.contains(marker) => {
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "rewritten by someone else since; leaving their version");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Interfaces the journal created that now carry another tag: the name was taken again (after a
/// reboot, by a new connection), so neither they nor their routes are ours to undo.
fn foreign_interfaces(changes: &[Change], tag_of: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    changes
        .iter()
        .filter_map(|change| match change {
            Change::Interface { name, tag: Some(tag) } => {
                let current = tag_of(name)?;
                (current != *tag).then(|| name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Undoes one change; a change that is already gone is undone. Routes and files are undone the
/// same way everywhere; interfaces and the registry per platform.
pub fn undo(change: &Change) -> Result<()> {
    match change {
        Change::Interface { name, .. } => platform::remove_interface(name),
        Change::Route { destination, interface } => {
            if interface_tag(interface).is_some() {
                let _ = delete_route(*destination, interface);
            }
            Ok(())
        }
        Change::File { path, backup, marker } => restore_file(path, backup, marker.as_deref()),
        Change::CreatedFile { path, marker } => remove_created_file(path, marker),
        Change::RegistryKey { key } => platform::delete_registry_key(key),
        Change::RegistryValue { key, name, interface } => platform::delete_registry_value(key, name, interface),
    }
}

fn names_any(change: &Change, interfaces: &[String]) -> bool {
    match change {
        Change::Interface { name, .. } => interfaces.contains(name),
        Change::Route { interface, .. } | Change::RegistryValue { interface, .. } => interfaces.contains(interface),
        Change::File { .. } | Change::CreatedFile { .. } | Change::RegistryKey { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_that_carries_another_tag_is_left_with_its_routes() {
        let ours = |name: &str| Change::Interface {
            name: name.into(),
            tag: Some(format!("corridor:p:{name}")),
        };
        let route = |interface: &str| Change::Route {
            destination: "fd00::/64".parse().unwrap(),
            interface: interface.into(),
        };
        let changes = [
            ours("corridor0"),
            route("corridor0"),
            ours("corridor1"),
            route("corridor1"),
            ours("corridor2"),
        ];
        let now = |name: &str| match name {
            "corridor0" => Some("corridor:p:corridor0".to_string()),
            "corridor1" => Some("corridor:q:new-connection".to_string()),
            _ => None,
        };

        let foreign = foreign_interfaces(&changes, &now);

        assert_eq!(foreign, ["corridor1"]);
        assert!(names_any(&route("corridor1"), &foreign));
        assert!(!names_any(&route("corridor0"), &foreign));
    }
}
