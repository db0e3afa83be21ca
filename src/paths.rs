//! Where a connection keeps its runtime files: control socket, journal, state and log.

use std::path::{Path, PathBuf};

/// `CORRIDOR_RUNTIME_DIR`, else `/run/corridor` for root, else `$XDG_RUNTIME_DIR/corridor`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRIDOR_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/corridor");
    }
    directories::BaseDirs::new()
        .and_then(|b| b.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
        .join("corridor")
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
        let dir = runtime_dir();
        ConnectionFiles {
            socket: dir.join(format!("{project_id}.sock")),
            journal: dir.join(format!("{project_id}.journal")),
            state: dir.join(format!("{project_id}.json")),
            log: dir.join(format!("{project_id}.log")),
        }
    }

    /// Every connection with files in the runtime dir, running or crashed.
    pub fn all() -> Vec<(String, ConnectionFiles)> {
        let Ok(entries) = std::fs::read_dir(runtime_dir()) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
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
