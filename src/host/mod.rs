//! Everything corridor changes on the host, journaled so it can always be undone (DESIGN §6),
//! and the checks that tell a user what is missing before anything is changed.

mod journal;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;

pub use journal::{Change, Journal};
pub use platform::{add_route, preflight, run_tool, undo};

use std::path::Path;

use anyhow::Result;

/// Undoes every change a journal holds, newest first, then removes the journal. Used by
/// `vpn down`, a clean daemon exit and the next start after a crash. Changes already gone
/// (the kernel removes a TUN interface with its process) count as undone.
pub fn restore(journal: &Path) -> Result<Vec<Change>> {
    let changes = journal::read(journal)?;
    let mut left = Vec::new();
    for change in changes.iter().rev() {
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
