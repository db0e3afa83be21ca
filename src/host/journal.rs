//! An append-only journal of host changes: one JSON line each, written and synced *before*
//! the change is made, so a crash at any point leaves a journal that covers every change.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A network interface we created, with the tag we gave it: after a reboot the same name may
    /// belong to another connection, and only an interface that still carries our tag is ours.
    Interface {
        name: String,
        #[serde(default)]
        tag: Option<String>,
    },
    /// A route we added.
    Route { destination: IpNet, interface: String },
    /// A file we rewrote; `backup` holds its original bytes. It is restored only while it still
    /// carries `marker`: a file someone else has rewritten since is theirs, not ours to undo.
    File {
        path: PathBuf,
        backup: PathBuf,
        #[serde(default)]
        marker: Option<String>,
    },
    /// A file we created where there was none (macOS's `/etc/resolver/zerops`). It is removed
    /// only while it still carries `marker`.
    CreatedFile { path: PathBuf, marker: String },
    /// A registry key we created under HKEY_LOCAL_MACHINE (Windows's NRPT rule); undone by
    /// deleting it with its values.
    RegistryKey { key: String },
    /// A registry value we set under HKEY_LOCAL_MACHINE on a key that is not ours (the search
    /// list of Windows's tunnel adapter); undone by deleting the value, and only while
    /// `interface` is still ours.
    RegistryValue {
        key: String,
        name: String,
        interface: String,
    },
}

pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a journal; an existing one must have been restored first.
    pub fn create(path: &Path) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            crate::platform::create_corridor_dir(dir, false).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = crate::platform::create_private_file(path)
            .with_context(|| format!("creating the host-change journal {}", path.display()))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Records a change that is about to be made.
    pub fn record(&mut self, change: Change) -> Result<()> {
        let mut line = serde_json::to_string(&change)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file
            .sync_data()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a journal; a missing one is empty.
#[cfg(test)]
pub fn read(path: &Path) -> Result<Vec<Change>> {
    match fs::read(path) {
        Ok(text) => Ok(parse(&text, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The changes of a journal's text (`path` names it in warnings). A torn last line (crash
/// mid-write) or any other unreadable line is skipped: a torn change was never made, since
/// changes follow their record.
pub fn parse(text: &[u8], path: &Path) -> Vec<Change> {
    text.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| match serde_json::from_slice(line) {
            Ok(change) => Some(change),
            Err(e) => {
                tracing::warn!(journal = %path.display(), error = %e, "skipping an unreadable journal line");
                None
            }
        })
        .collect()
}

pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    #[test]
    fn records_survive_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path).unwrap();
        journal
            .record(Change::Interface {
                name: "corridor0".into(),
                tag: None,
            })
            .unwrap();
        let route = Change::Route {
            destination: "fd00::/64".parse().unwrap(),
            interface: "corridor0".into(),
        };
        journal.record(route.clone()).unwrap();
        drop(journal);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"kind\":\"rou").unwrap();

        let changes = read(&path).unwrap();

        assert_eq!(
            changes,
            vec![
                Change::Interface {
                    name: "corridor0".into(),
                    tag: None,
                },
                route
            ]
        );
        assert!(
            Journal::create(&path).is_err(),
            "an unrestored journal is never overwritten"
        );
    }
}
