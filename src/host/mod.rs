//! Everything corridor changes on the host, journaled so it can always be undone (DESIGN §6),
//! and the checks that tell a user what is missing before anything is changed.

pub mod allowed;
pub mod clash;
pub mod device;
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

pub use allowed::Allowed;
pub use journal::{Change, Journal};
pub use platform::{interface_tag, preflight, readiness, tag_interface, INTERFACE_PREFIX, OS};

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

/// What `vpn up` needs from this system, found out per OS (`readiness`) for `doctor` to report.
/// `Err` holds what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Linux {
        /// CAP_NET_ADMIN in the effective set (root has it).
        net_admin: bool,
        /// `/dev/net/tun` exists.
        tun: bool,
        ipv6: bool,
    },
    MacOs {
        root: bool,
        /// A utun control socket opens.
        utun: Result<(), String>,
        /// `/etc/resolver/zerops` is absent or corridor's.
        resolver_file: Result<(), String>,
    },
    Windows {
        /// An Administrator's (elevated) process.
        elevated: bool,
        /// `wintun.dll` is beside corridor.exe and loads.
        wintun: Result<(), String>,
        /// No Group Policy NRPT rules, under which Windows ignores local ones like corridor's.
        nrpt: Result<(), String>,
    },
}

/// Undoes every change a journal holds, newest first, then removes the journal. Used by
/// `vpn down`, a clean daemon exit and the next start after a crash. Changes already gone
/// (the kernel removes a TUN interface with its process) count as undone.
///
/// The journal is replayed with privilege, so it is trusted only as far as corridor could have
/// written it: a journal another user could have written is refused whole, and an entry
/// corridor never makes (see [`Allowed`]) is refused and never carried out; either way the
/// journal stays for inspection.
pub fn restore(journal: &Path) -> Result<Vec<Change>> {
    restore_with(journal, &Allowed::for_os(OS))
}

pub(crate) fn restore_with(journal: &Path, allowed: &Allowed) -> Result<Vec<Change>> {
    if fs::symlink_metadata(journal).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Vec::new());
    }
    if let Err(why) = crate::platform::check_private(journal) {
        tracing::error!(journal = %journal.display(), %why, "refusing to replay a journal another user could have written");
        bail!(
            "refusing to replay the host-change journal {}: {why}. corridor writes its journals \
             only where no one else can; inspect the file and remove it",
            journal.display()
        );
    }
    let text = match fs::read(journal) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", journal.display())),
    };
    let replay = plan_replay(journal, &text, allowed, &interface_tag);
    let refused: Vec<String> = replay
        .refused
        .iter()
        .map(|(change, why)| {
            tracing::error!(journal = %journal.display(), ?change, %why, "refused a journal entry corridor never makes");
            format!("  {why}")
        })
        .collect();
    for change in &replay.left_alone {
        tracing::info!(?change, "interface belongs to another connection now; left alone");
    }
    let mut left = Vec::new();
    for change in &replay.undo {
        if let Err(e) = undo(change) {
            tracing::warn!(?change, error = %e, "could not undo a host change");
            left.push(change.clone());
        }
    }
    if !refused.is_empty() {
        bail!(
            "the host-change journal {} holds changes corridor never makes; they were refused \
             and not carried out:\n{}\ninspect the file and remove it",
            journal.display(),
            refused.join("\n")
        );
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

/// What replaying a journal does, decided from its text and the live tags of the interfaces it
/// names (`tag_of`), before anything is executed.
#[derive(Debug, Default)]
pub struct Replay {
    /// The changes to undo, newest first: each one corridor could have made.
    pub undo: Vec<Change>,
    /// Entries corridor never makes, with why: never carried out.
    pub refused: Vec<(Change, String)>,
    /// Changes on an interface that carries another connection's tag now.
    pub left_alone: Vec<Change>,
}

/// Plans the replay of the journal at `journal` (its name says whose it is) holding `text`.
pub fn plan_replay(journal: &Path, text: &[u8], allowed: &Allowed, tag_of: &dyn Fn(&str) -> Option<String>) -> Replay {
    let changes = journal::parse(text, journal);
    let verdicts = allowed.check(journal, &changes);
    let mut replay = Replay::default();
    let mut permitted = Vec::new();
    for (change, verdict) in changes.into_iter().zip(verdicts) {
        match verdict {
            Ok(()) => permitted.push(change),
            Err(why) => replay.refused.push((change, why)),
        }
    }
    let foreign = foreign_interfaces(&permitted, tag_of);
    for change in permitted.into_iter().rev() {
        if names_any(&change, &foreign) {
            replay.left_alone.push(change);
        } else {
            replay.undo.push(change);
        }
    }
    replay
}

/// Where the host's routes, policy rules or addresses would take some of `networks` elsewhere
/// than into the tunnel (`own_interface`, once it exists). `None` where this platform's table
/// is not read yet (macOS, Windows).
pub fn route_clashes(networks: &[IpNet], own_interface: Option<&str>) -> Result<Option<Vec<clash::Clash>>> {
    let Some(table) = routing_table()? else {
        return Ok(None);
    };
    Ok(Some(clash::clashes(networks, &table, own_interface)))
}

#[cfg(target_os = "linux")]
fn routing_table() -> Result<Option<clash::RoutingTable>> {
    let table = netlink::routing_table().context("reading the routing table through the routing socket")?;
    Ok(Some(table))
}

#[cfg(not(target_os = "linux"))]
fn routing_table() -> Result<Option<clash::RoutingTable>> {
    Ok(None)
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
    crate::platform::check_private(backup).map_err(|why| anyhow::anyhow!("refusing the backup: {why}"))?;
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
pub(crate) fn undo(change: &Change) -> Result<()> {
    match change {
        Change::Interface { name, .. } => platform::remove_interface(name),
        // The journal's own interface, checked by `restore`; routes go with it when it is gone.
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

    /// A journal in `dir` that rewrote `victim` from `backup` (a change of the list only when
    /// `allowed` names the victim).
    fn planted(dir: &Path, victim: &Path) -> std::path::PathBuf {
        let journal = dir.join("p1.journal");
        let backup = dir.join("p1.resolv.conf.orig");
        std::fs::write(&backup, "planted\n").unwrap();
        let mut writer = Journal::create(&journal).unwrap();
        writer
            .record(Change::File {
                path: victim.to_path_buf(),
                backup,
                marker: Some("ours".into()),
            })
            .unwrap();
        journal
    }

    /// The fuzz target's property on its seeds cut at every byte (a torn write anywhere): the
    /// planner never plans what corridor could not have made.
    #[test]
    fn torn_and_hostile_journals_plan_only_corridors_own_changes() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/journal");
        let journal = Path::new("/var/lib/corridor/p1.journal");
        let tag_of = |_: &str| Some("corridor:p1:0123456789abcdef".to_string());
        let mut planned = 0;
        for seed in std::fs::read_dir(seeds).unwrap() {
            let text = std::fs::read(seed.unwrap().path()).unwrap();
            for cut in 0..=text.len() {
                for os in [plan::Os::Linux, plan::Os::MacOs, plan::Os::Windows] {
                    let allowed = Allowed::for_os(os);
                    let replay = plan_replay(journal, &text[..cut], &allowed, &tag_of);
                    let order: Vec<Change> = replay.undo.iter().rev().cloned().collect();
                    assert!(allowed.check(journal, &order).iter().all(Result::is_ok), "{order:?}");
                    planned += replay.undo.len();
                }
            }
        }
        assert!(planned > 0, "the seeds hold changes corridor makes");
    }

    #[test]
    fn a_file_outside_the_list_is_refused_and_the_journal_kept() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "ours, the victim's\n").unwrap();
        let journal = planted(dir.path(), &victim);

        let refused = restore_with(&journal, &Allowed::for_os(plan::Os::Linux)).unwrap_err();

        assert!(
            format!("{refused:#}").contains("is no file corridor rewrites"),
            "{refused:#}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ours, the victim's\n");
        assert!(journal.exists(), "kept for inspection");
        let allowed = Allowed::for_os(plan::Os::Linux).with_file(&victim, "ours", false);
        restore_with(&journal, &allowed).unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "planted\n",
            "the same journal, listed"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_journal_others_could_have_written_is_refused_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "ours, the victim's\n").unwrap();
        let journal = planted(dir.path(), &victim);
        let allowed = Allowed::for_os(plan::Os::Linux).with_file(&victim, "ours", false);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();

        let refused = restore_with(&journal, &allowed).unwrap_err();

        assert!(
            format!("{refused:#}").contains("may be written by other users (mode 0775)"),
            "{refused:#}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ours, the victim's\n");
        assert!(journal.exists());
    }

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
