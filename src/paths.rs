//! Where a connection keeps its files: the control socket, state and log in the runtime dir
//! (gone at reboot, as the daemon is), the host-change journal and backups in the state dir
//! (kept across a reboot, so a resolver rewritten before a power cut is still restored).

use std::path::{Path, PathBuf};

use crate::platform;
use crate::project_id::ProjectId;

/// `CORRIDOR_RUNTIME_DIR`, else the system's runtime dir (for root, and for everyone once a root
/// daemon made it, so `corridor vpn status` without sudo finds connections made with it), else
/// the user's runtime dir.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRIDOR_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    let system = platform::system_runtime_dir();
    if platform::is_elevated() || system.is_dir() {
        return system;
    }
    directories::BaseDirs::new()
        .and_then(|b| b.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(std::env::temp_dir)
        .join("corridor")
}

/// `CORRIDOR_STATE_DIR`, else the system's state dir when elevated, else the user's.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRIDOR_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if platform::is_elevated() {
        return platform::system_state_dir();
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
    pub fn for_project(project_id: &ProjectId) -> ConnectionFiles {
        let run = runtime_dir();
        ConnectionFiles {
            socket: run.join(format!("{project_id}.sock")),
            journal: state_dir().join(format!("{project_id}.journal")),
            state: run.join(format!("{project_id}.json")),
            log: run.join(format!("{project_id}.log")),
        }
    }

    /// Every connection with files here, running or crashed (also before a reboot). Files whose
    /// names are no project id are not ours and are left alone.
    pub fn all() -> Vec<(ProjectId, ConnectionFiles)> {
        let mut ids: Vec<ProjectId> = [runtime_dir(), state_dir()]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .flatten()
            .filter_map(|e| project_of(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let files = ConnectionFiles::for_project(&id);
                (id, files)
            })
            .collect()
    }
}

/// The host-wide DNS service's files: control socket, pid and log in the runtime dir, its
/// journal (the resolver rewrite) in the state dir. Their name is no connection's.
#[derive(Debug, Clone)]
pub struct DnsServiceFiles {
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
    pub journal: PathBuf,
    /// Held by the running service, so that no second one (nor a repair) touches its journal.
    pub lock: PathBuf,
}

const DNS_SERVICE: &str = "dns";

impl DnsServiceFiles {
    pub fn get() -> DnsServiceFiles {
        let run = runtime_dir();
        DnsServiceFiles {
            socket: run.join(format!("{DNS_SERVICE}.sock")),
            pid: run.join(format!("{DNS_SERVICE}.pid")),
            log: run.join(format!("{DNS_SERVICE}.log")),
            journal: state_dir().join(format!("{DNS_SERVICE}.journal")),
            lock: state_dir().join(format!("{DNS_SERVICE}.lock")),
        }
    }
}

fn project_of(file_name: &str) -> Option<ProjectId> {
    [".json", ".journal"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(ext))
        .filter(|&id| id != DNS_SERVICE)
        .and_then(|id| ProjectId::parse(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_named_by_a_project_id_are_connections() {
        assert_eq!(project_of("abc_1.json").unwrap().as_str(), "abc_1");
        assert_eq!(project_of("abc_1.journal").unwrap().as_str(), "abc_1");
        assert_eq!(project_of("abc.resolv.conf.orig"), None);
        assert_eq!(project_of("..journal"), None);
        assert_eq!(project_of("a b.json"), None);
        assert_eq!(project_of("abc.log"), None);
        assert_eq!(project_of("dns.journal"), None, "the DNS service's");
    }
}
