//! An OpenSSH configuration for a project's containers, kept in corridor's config dir, and the
//! one `Include` line in `~/.ssh/config` that makes plain `ssh api`, `scp`, `rsync` and editors'
//! remote plugins use it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ssh::quote;
use super::{Inventory, SSH_PORT, SSH_USER};

/// What `--install` and `--uninstall` did to `~/.ssh/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Already as asked: the file was not touched.
    Unchanged,
}

/// The configuration of one project: aliases (see [`Inventory::aliases`]) with their
/// `HostName`, then the settings every one of them shares. With `proxy` (a `ProxyCommand`, see
/// [`proxy_command`]) every host is reached through corridor's userspace mode instead of the
/// tunnel, so no `vpn up` and no privilege are needed.
pub fn render(inventory: &Inventory, known_hosts: &Path, proxy: Option<&str>) -> String {
    let aliases = inventory.aliases();
    let how = match proxy {
        Some(_) => "through `corridor connect` (no `vpn up` needed)".to_string(),
        None => format!("while `corridor vpn up {}` is connected", inventory.project.name),
    };
    let mut out = format!(
        "# corridor: project {} ({}). Written by `corridor ssh-config {}`; run it again after\n\
         # containers change. A service name reaches its first running container, <service>-N its\n\
         # N-th; names resolve {how}.\n",
        inventory.project.name, inventory.project.id, inventory.project.name
    );
    for alias in aliases.iter().filter(|a| a.alias != a.host) {
        out.push_str(&format!("\nHost {}\n    HostName {}\n", alias.alias, alias.host));
    }
    if aliases.is_empty() {
        out.push_str("\n# The project has no containers with a name yet.\n");
        return out;
    }
    let patterns: Vec<&str> = aliases.iter().map(|a| a.alias.as_str()).collect();
    out.push_str(&format!(
        "\nHost {}\n    Port {SSH_PORT}\n    User {SSH_USER}\n    UserKnownHostsFile {}\n    StrictHostKeyChecking accept-new\n",
        patterns.join(" "),
        quote(&known_hosts.display().to_string())
    ));
    if let Some(proxy) = proxy {
        out.push_str(&format!("    ProxyCommand {proxy}\n"));
    }
    out
}

/// `corridor connect` for `project` as an OpenSSH `ProxyCommand` (`%h` is the `HostName`).
pub fn proxy_command(corridor: &Path, project: &str) -> String {
    format!("{} connect -P {project} %h %p", quote(&corridor.display().to_string()))
}

/// Where the configuration of a project goes: one file per project, all matched by the one
/// `Include` line.
pub fn project_file(config_dir: &Path, project_name: &str) -> PathBuf {
    let safe: String = project_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    config_dir.join("ssh").join(format!("{safe}.conf"))
}

/// The line `--install` adds to `~/.ssh/config`.
pub fn include_line(config_dir: &Path) -> String {
    format!(
        "Include {}",
        quote(&config_dir.join("ssh").join("*.conf").display().to_string())
    )
}

/// Writes a project's configuration (0600 under a 0700 dir: it names the project's hosts).
pub fn write(path: &Path, content: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    write_file(path, content.as_bytes())
}

/// `content` with `line` first (an `Include` below a `Host` or `Match` line would apply only to
/// that block); `None` when it is there already.
pub fn with_include(content: &str, line: &str) -> Option<String> {
    if content.lines().any(|l| l.trim() == line) {
        return None;
    }
    Some(format!("{line}\n{content}"))
}

/// `content` without `line`, every other byte as it was; `None` when it is not there.
pub fn without_include(content: &str, line: &str) -> Option<String> {
    let mut offset = 0;
    for l in content.split_inclusive('\n') {
        if l.trim() == line {
            return Some(format!("{}{}", &content[..offset], &content[offset + l.len()..]));
        }
        offset += l.len();
    }
    None
}

/// Adds the `Include` line to the user's ssh config (`~/.ssh/config`), after copying it to
/// `config.corridor-backup`. Nothing else in the file changes.
pub fn install(ssh_config: &Path, line: &str) -> Result<Change> {
    let original = read(ssh_config)?;
    let Some(updated) = with_include(original.as_deref().unwrap_or(""), line) else {
        return Ok(Change::Unchanged);
    };
    if let Some(dir) = ssh_config.parent() {
        create_dirs(dir)?;
    }
    if let Some(original) = &original {
        backup(ssh_config, original)?;
    }
    write_file(ssh_config, updated.as_bytes())?;
    Ok(Change::Added)
}

/// Removes the `Include` line again; a file that held nothing else is removed, as it was
/// absent before `install`.
pub fn uninstall(ssh_config: &Path, line: &str) -> Result<Change> {
    let Some(original) = read(ssh_config)? else {
        return Ok(Change::Unchanged);
    };
    let Some(updated) = without_include(&original, line) else {
        return Ok(Change::Unchanged);
    };
    backup(ssh_config, &original)?;
    if updated.is_empty() {
        fs::remove_file(ssh_config).with_context(|| format!("removing {}", ssh_config.display()))?;
    } else {
        write_file(ssh_config, updated.as_bytes())?;
    }
    Ok(Change::Removed)
}

pub fn backup_path(ssh_config: &Path) -> PathBuf {
    let mut name = ssh_config.file_name().unwrap_or_default().to_os_string();
    name.push(".corridor-backup");
    ssh_config.with_file_name(name)
}

fn read(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .with_context(|| format!("{} is not UTF-8 text; it was left alone", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn backup(path: &Path, content: &str) -> Result<()> {
    let backup = backup_path(path);
    write_file(&backup, content.as_bytes()).with_context(|| format!("keeping a backup in {}", backup.display()))
}

/// Rewrites the file itself rather than renaming a new one over it: a symlinked `~/.ssh/config`
/// (dotfile managers) stays a symlink, and owner and mode stay as they were.
fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut file = crate::platform::private_open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content)
        .with_context(|| format!("writing {}", path.display()))
}

/// Directories only their owner may read (`~/.ssh` must not be open to others).
fn create_dirs(dir: &Path) -> Result<()> {
    crate::platform::create_private_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::build;
    use crate::access::tests::{container, project, service};

    const LINE: &str = "Include \"/home/dev/.config/corridor/ssh/*.conf\"";

    #[test]
    fn the_include_goes_first_once_and_comes_out_byte_for_byte() {
        let original = "Host github.com\n    User git\n\n# trailing comment without newline";
        let installed = with_include(original, LINE).unwrap();
        assert_eq!(installed, format!("{LINE}\n{original}"));
        assert_eq!(with_include(&installed, LINE), None, "idempotent");
        assert_eq!(without_include(&installed, LINE).unwrap(), original);
        assert_eq!(without_include(original, LINE), None);
        assert_eq!(without_include(&with_include("", LINE).unwrap(), LINE).unwrap(), "");
    }

    #[test]
    fn install_and_uninstall_on_disk_keep_a_backup_and_restore_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(".ssh").join("config");
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        let original = b"Host *\n    ServerAliveInterval 30\n";
        fs::write(&config, original).unwrap();

        assert_eq!(install(&config, LINE).unwrap(), Change::Added);
        assert_eq!(install(&config, LINE).unwrap(), Change::Unchanged);
        assert_eq!(fs::read(backup_path(&config)).unwrap(), original);
        assert!(fs::read_to_string(&config).unwrap().starts_with(LINE));
        assert_eq!(uninstall(&config, LINE).unwrap(), Change::Removed);
        assert_eq!(fs::read(&config).unwrap(), original);
        assert_eq!(uninstall(&config, LINE).unwrap(), Change::Unchanged);

        let fresh = dir.path().join("fresh").join("config");
        assert_eq!(install(&fresh, LINE).unwrap(), Change::Added);
        assert_eq!(uninstall(&fresh, LINE).unwrap(), Change::Removed);
        assert!(!fresh.exists(), "a config we created is removed again");
    }

    #[test]
    fn with_a_proxy_every_host_goes_through_corridor_connect() {
        let inventory = build(
            &project(),
            vec![(
                service("s1", "api"),
                vec![container("c1", 13, Some("node-id-13.runtime.api.zerops"), "ACTIVE")],
            )],
            false,
        );
        let proxy = proxy_command(Path::new("/opt/my tools/corridor"), "p1");

        let text = render(&inventory, Path::new("/k/known_hosts"), Some(&proxy));

        assert_eq!(proxy, "\"/opt/my tools/corridor\" connect -P p1 %h %p");
        let shared = text.split("\nHost ").last().unwrap();
        assert!(
            shared.ends_with("    StrictHostKeyChecking accept-new\n    ProxyCommand \"/opt/my tools/corridor\" connect -P p1 %h %p\n"),
            "{text}"
        );
        assert!(text.contains("no `vpn up` needed"), "{text}");
    }

    #[test]
    fn render_names_every_alias_and_shares_the_settings() {
        let inventory = build(
            &project(),
            vec![
                (
                    service("s1", "api"),
                    vec![
                        container("c1", 13, Some("node-id-13.runtime.api.zerops"), "ACTIVE"),
                        container("c2", 14, Some("node-id-14.runtime.api.zerops"), "ACTIVE"),
                    ],
                ),
                (
                    service("s2", "db"),
                    vec![container("c3", 21, Some("node1.db.db.zerops"), "ACTIVE")],
                ),
            ],
            true,
        );
        let text = render(&inventory, Path::new("/k/known_hosts"), None);
        let blocks: Vec<&str> = text.split("\nHost ").skip(1).collect();
        assert_eq!(
            blocks[..5],
            [
                "api\n    HostName node-id-13.runtime.api.zerops\n",
                "api-1\n    HostName node-id-13.runtime.api.zerops\n",
                "api-2\n    HostName node-id-14.runtime.api.zerops\n",
                "db\n    HostName node1.db.db.zerops\n",
                "db-1\n    HostName node1.db.db.zerops\n",
            ]
        );
        assert_eq!(
            blocks[5],
            "api api-1 api-2 db db-1 node-id-13.runtime.api.zerops node-id-14.runtime.api.zerops node1.db.db.zerops\n    \
             Port 65437\n    User root\n    UserKnownHostsFile \"/k/known_hosts\"\n    StrictHostKeyChecking accept-new\n"
        );
        assert_eq!(blocks.len(), 6);
    }

    #[test]
    fn project_files_have_safe_names() {
        let dir = Path::new("/c");
        assert_eq!(project_file(dir, "demo"), Path::new("/c/ssh/demo.conf"));
        assert_eq!(project_file(dir, "my app/β"), Path::new("/c/ssh/my_app__.conf"));
        // Joined with the platform's separator (Windows: `/c\ssh\*.conf`).
        let sep = std::path::MAIN_SEPARATOR;
        assert_eq!(include_line(dir), format!("Include \"/c{sep}ssh{sep}*.conf\""));
    }
}
