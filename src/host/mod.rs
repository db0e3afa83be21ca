//! Everything corridor changes on the host, journaled so it can always be undone (DESIGN §6),
//! and the checks that tell a user what is missing before anything is changed.

mod journal;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;

pub use journal::{Change, Journal};
pub use platform::{add_route, interface_tag, preflight, run_tool, tag_interface, undo};
pub use platform::{has_net_admin, ipv6_disabled};

use std::path::Path;

use anyhow::Result;

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
    let fixes: Vec<String> = left.iter().map(|c| format!("  {}", platform::manual_fix(c))).collect();
    anyhow::bail!(
        "could not restore the host completely; left behind:\n{}\n(the journal {} is kept)",
        fixes.join("\n"),
        journal.display()
    )
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

fn names_any(change: &Change, interfaces: &[String]) -> bool {
    match change {
        Change::Interface { name, .. } => interfaces.contains(name),
        Change::Route { interface, .. } => interfaces.contains(interface),
        Change::File { .. } => false,
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
