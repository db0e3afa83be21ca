//! Where a connection keeps its files: the control socket, state and log in the runtime dir
//! (gone at reboot, as the daemon is), the host-change journal and backups in the state dir
//! (kept across a reboot, so a resolver rewritten before a power cut is still restored).

use std::path::{Path, PathBuf};

/// `CORRIDOR_RUNTIME_DIR`, else `/run/corridor` (for root, and for everyone once a root daemon
/// made it, so `corridor vpn status` without sudo finds connections made with it), else
/// `$XDG_RUNTIME_DIR/corridor`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRIDOR_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from("/run/corridor");
    if nix::unistd::geteuid().is_root() || system.is_dir() {
        return system;
    }
    directories::BaseDirs::new()
        .and_then(|b| b.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
        .join("corridor")
}

/// `CORRIDOR_STATE_DIR`, else `/var/lib/corridor` for root, else the user's state dir.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRIDOR_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/corridor");
    }
    directories::ProjectDirs::from("", "", "corridor")
        .map(|d| d.state_dir().unwrap_or(d.data_local_dir()).to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("corridor-state"))
}

/// The files of one connection, named by project id.
#[derive(Debug, Clone)]
pub struct ConnectionFiles {
    pub socket: PathBuf,
    pub journal: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl ConnectionFiles {
    pub fn for_project(project_id: &str) -> ConnectionFiles {
        let run = runtime_dir();
        ConnectionFiles {
            socket: run.join(format!("{project_id}.sock")),
            journal: state_dir().join(format!("{project_id}.journal")),
            state: run.join(format!("{project_id}.json")),
            log: run.join(format!("{project_id}.log")),
        }
    }

    /// Every connection with files here, running or crashed (also before a reboot).
    pub fn all() -> Vec<(String, ConnectionFiles)> {
        let mut ids: Vec<String> = [runtime_dir(), state_dir()]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                [".json", ".journal"]
                    .iter()
                    .find_map(|ext| name.strip_suffix(ext).map(str::to_string))
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| (id.clone(), ConnectionFiles::for_project(&id)))
            .collect()
    }
}
