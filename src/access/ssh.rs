//! The system's `ssh` pointed at a container: port, user, corridor's own known-hosts file, and
//! whatever the user passes after `--`.

use std::path::{Path, PathBuf};

use super::{SSH_PORT, SSH_USER};

/// A program and its arguments, to run or to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
}

/// `ssh -p 65437 -o UserKnownHostsFile=… -o StrictHostKeyChecking=accept-new root@HOST EXTRA…`.
/// OpenSSH reads options also after the destination, so `EXTRA` may hold `-L`, `-A` or a
/// command alike.
pub fn command(host: &str, known_hosts: &Path, extra: &[String]) -> Invocation {
    let mut args = vec![
        "-p".to_string(),
        SSH_PORT.to_string(),
        "-o".to_string(),
        format!("UserKnownHostsFile={}", quote(&known_hosts.display().to_string())),
        "-o".to_string(),
        "StrictHostKeyChecking=accept-new".to_string(),
        format!("{SSH_USER}@{host}"),
    ];
    args.extend(extra.iter().cloned());
    Invocation {
        program: "ssh".to_string(),
        args,
    }
}

/// Host keys of containers, apart from the user's own `~/.ssh/known_hosts`: containers come and
/// go under names that are reused, and a stale key there would block every other use of ssh.
pub fn known_hosts(config_dir: &Path) -> PathBuf {
    config_dir.join("ssh").join("known_hosts")
}

/// A path as an OpenSSH configuration argument: quoted, since a config dir may hold spaces
/// (macOS: `Application Support`).
pub fn quote(path: &str) -> String {
    format!("\"{path}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_gets_port_user_known_hosts_then_the_user_arguments() {
        let extra = vec![
            "-L".to_string(),
            "5432:localhost:5432".to_string(),
            "hostname".to_string(),
        ];
        let ssh = command(
            "node-id-14.runtime.api.zerops",
            Path::new("/home/dev/.config/corridor/ssh/known_hosts"),
            &extra,
        );
        assert_eq!(ssh.program, "ssh");
        assert_eq!(
            ssh.args,
            [
                "-p",
                "65437",
                "-o",
                "UserKnownHostsFile=\"/home/dev/.config/corridor/ssh/known_hosts\"",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "root@node-id-14.runtime.api.zerops",
                "-L",
                "5432:localhost:5432",
                "hostname",
            ]
        );
    }
}
