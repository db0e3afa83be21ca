//! `vpn key list`, `vpn key remove`, `vpn clear` and `vpn config`: a project's VPN keys on the
//! platform, which of them this machine holds, what each serves, and a WireGuard configuration
//! for clients corridor does not run. Data goes back to the CLI, which renders it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::account::{self, ApiSettings};
use crate::api::{types::Project, Client, ProjectId, VpnPeer};
use crate::connections;
use crate::platform::{self, FileLock};
use crate::report::Report;
use crate::store::{KeyRole, LocalKey, Store};
use crate::wg_conf::WgConf;

/// `vpn key list`: the project and every key registered with it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    pub project: ProjectRef,
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectRef {
    pub id: ProjectId,
    pub name: String,
}

/// One registered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub public_key: String,
    pub this_machine: bool,
    /// What it serves here; `None` for another machine's key.
    #[serde(flatten)]
    pub mine: Option<Mine>,
    /// The tunnel addresses the platform assigned to it.
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
}

/// A key of this machine's, what it serves and whether something runs with it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mine {
    #[serde(flatten)]
    pub role: KeyRole,
    pub in_use: bool,
    pub file: PathBuf,
}

/// Which keys `vpn key remove` (or `vpn clear`) removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These public keys, as given.
    Keys(Vec<String>),
    /// This machine's keys that no running connection or rootless process uses, except the
    /// configuration's: whoever imported that configuration uses it, unseen from here.
    MineUnused,
    /// Every key of this machine's (`vpn clear`); those of running rootless processes stay.
    AllMine,
}

/// What was asked for and cannot be done. Nothing has been removed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a WireGuard public key (44 characters of base64 for 32 bytes); nothing removed")]
    Malformed(String),
    #[error("project {project} has no VPN keys registered and this machine holds none for it; nothing removed")]
    NoKeys { project: String },
    #[error(
        "not registered with project {project} and not one of this machine's keys: {}; nothing removed \
         (`corridor vpn key list {project}` shows the project's keys)",
        keys.join(", ")
    )]
    Unknown { project: String, keys: Vec<String> },
    #[error(
        "{key} is the key of the running connection to {project} (`vpn up`): run `corridor vpn down {project}` \
         first, or pass --force to end the connection and remove the key; nothing removed"
    )]
    RunningConnection { project: String, key: String },
    #[error(
        "{key} is in use by a running `forward`, `connect` or `proxy` (rootless slot {slot}): end it first, or \
         pass --force (it then loses its tunnel); nothing removed"
    )]
    RunningProcess { key: String, slot: usize },
    #[error("connected to {project}: run `corridor vpn down {project}` first; nothing removed")]
    Connected { project: String },
}

/// What `vpn key remove` and `vpn clear` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removal {
    pub removed: Vec<Removed>,
    /// This machine's keys that stayed, and why.
    pub kept: Vec<Kept>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub public_key: String,
    /// Whether the platform still had it.
    pub was_registered: bool,
    /// This machine's key file, removed with it.
    pub file: Option<PathBuf>,
    pub role: Option<KeyRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub public_key: String,
    pub role: KeyRole,
    pub reason: KeptBecause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum KeptBecause {
    ConnectionRunning,
    ProcessRunning,
    ConfigExported,
}

/// Every key registered with the project, this machine's marked.
pub async fn list(api: ApiSettings, project: Option<&str>, report: &mut dyn Report) -> Result<KeyListing> {
    let (store, client, project) = open(api, project, report).await?;
    let peers = registered(&client, &project).await?;
    let held = held_keys(&store, &project.id).await?;
    let locals: Vec<Local> = held.iter().map(|h| h.local.clone()).collect();
    Ok(KeyListing {
        keys: entries(&peers, &locals),
        project: ProjectRef {
            id: project.id,
            name: project.name,
        },
    })
}

/// Removes keys from the platform and, for this machine's, their files. Checks everything
/// first: a malformed or unknown key, or one in use without `force`, removes nothing.
pub async fn remove(
    api: ApiSettings,
    project: Option<&str>,
    selection: Selection,
    force: bool,
    report: &mut dyn Report,
) -> Result<Removal> {
    // Before any call to the platform: a typo costs nothing.
    if let Selection::Keys(keys) = &selection {
        check_key_texts(keys)?;
    }
    let (store, client, project) = open(api, project, report).await?;
    let peers = registered(&client, &project).await?;
    // Held until the end: no rootless process takes a slot whose key is being removed.
    let held = held_keys(&store, &project.id).await?;
    let locals: Vec<Local> = held.iter().map(|h| h.local.clone()).collect();
    let registered_keys: Vec<String> = peers.iter().map(|p| p.public_key.clone()).collect();
    let plan = plan(&project.name, &selection, &registered_keys, &locals, force)?;

    if plan.ends_connection {
        connections::down(Some(project.id.as_str()), report)
            .await
            .with_context(|| format!("ending the connection to {} before removing its key", project.name))?;
    }
    let mut removal = Removal {
        removed: Vec::new(),
        kept: plan.kept,
    };
    for target in plan.targets {
        if target.registered {
            match client.delete_vpn_key(&project.id, &target.public_key).await {
                Err(e) if e.is_not_found() => {}
                other => other.with_context(|| {
                    format!(
                        "removing {} from project {}{}",
                        target.public_key,
                        project.name,
                        removed_so_far(&removal.removed)
                    )
                })?,
            }
        }
        let local = target.local.map(|i| &held[i]);
        if let Some(held) = local {
            store.remove_key_file(&held.key)?;
        }
        tracing::info!(project = %project.id, public_key = %target.public_key, "key removed");
        removal.removed.push(Removed {
            public_key: target.public_key,
            was_registered: target.registered,
            file: local.map(|h| h.key.path.clone()),
            role: local.map(|h| h.key.role),
        });
    }
    Ok(removal)
}

/// `vpn config`: what to write and where.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    pub project: Option<String>,
    pub output: ConfigOutput,
    pub mtu: u16,
    /// Leave the `DNS` line out.
    pub skip_dns: bool,
    pub keepalive_secs: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutput {
    /// `<config dir>/wireguard/<project>.conf`.
    Default,
    File(PathBuf),
    /// The text only, for standard output or a QR code.
    Text,
}

/// A written (or only rendered) configuration. `text` holds the private key.
pub struct WrittenConfig {
    pub project: String,
    pub path: Option<PathBuf>,
    pub public_key: String,
    pub text: String,
}

/// Registers the configuration's own key with the project and renders a WireGuard
/// configuration with it; writes it unless asked for the text only.
pub async fn config(api: ApiSettings, options: ConfigOptions, report: &mut dyn Report) -> Result<WrittenConfig> {
    let (store, client, project) = open(api, options.project.as_deref(), report).await?;
    let (keys, _) = store.config_key(&project.id)?;
    let item = account::register_key(&client, &project, &keys, "the configuration's key").await?;
    let vpn = item.to_config().context("the platform's VPN answer")?;
    let dns = match options.skip_dns {
        true => None,
        false => Some(item.dns_server().context(
            "the platform's VPN answer names no DNS server; pass --skip-dns-setup for a configuration without one",
        )?),
    };
    let text = WgConf {
        private_key: keys.secret.to_bytes(),
        addresses: vpn.addresses,
        dns,
        mtu: options.mtu,
        server_public_key: vpn.server_public_key,
        endpoint: vpn.endpoint,
        allowed_ips: vpn.allowed_networks,
        keepalive_secs: options.keepalive_secs,
    }
    .render();
    let path = match options.output {
        ConfigOutput::Text => None,
        ConfigOutput::File(path) => Some(path),
        ConfigOutput::Default => Some(
            store
                .dir()
                .join("wireguard")
                .join(format!("{}.conf", file_name(&project.name))),
        ),
    };
    if let Some(path) = &path {
        store.write_private_file(path, text.as_bytes())?;
    }
    Ok(WrittenConfig {
        project: project.name,
        path,
        public_key: keys.public_base64(),
        text,
    })
}

async fn open(api: ApiSettings, project: Option<&str>, report: &mut dyn Report) -> Result<(Store, Client, Project)> {
    let store = Store::open()?;
    let client = account::client(&store, api).await?;
    let project = account::choose_project(&client, project, report).await?;
    Ok((store, client, project))
}

/// The project's registered keys, each checked: a list naming something that is no key is a
/// bad answer, not a key to show.
async fn registered(client: &Client, project: &Project) -> Result<Vec<VpnPeer>> {
    let list = client
        .list_vpn_keys(&project.id)
        .await
        .with_context(|| format!("listing the VPN keys of project {}", project.name))?;
    for peer in &list.peers {
        if !is_key_text(&peer.public_key) {
            anyhow::bail!(
                "the platform's list of the VPN keys of project {} names {:?}, which is no WireGuard public key",
                project.name,
                peer.public_key
            );
        }
    }
    Ok(list.peers)
}

/// One of this machine's keys, and the lock of its rootless slot when no process holds it.
struct Held {
    key: LocalKey,
    local: Local,
    _lock: Option<FileLock>,
}

/// What the pure functions below need of one of this machine's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Local {
    role: KeyRole,
    public_key: String,
    path: PathBuf,
    in_use: bool,
}

async fn held_keys(store: &Store, project_id: &ProjectId) -> Result<Vec<Held>> {
    let connected = connections::connection_running(project_id).await;
    let mut held = Vec::new();
    for key in store.local_keys(project_id)? {
        let (in_use, lock) = match key.role {
            KeyRole::Connection => (connected, None),
            // A running process holds its slot's lock for its whole life.
            KeyRole::Rootless { .. } => {
                match platform::try_lock(&key.path).with_context(|| format!("locking {}", key.path.display()))? {
                    Some(lock) => (false, Some(lock)),
                    None => (true, None),
                }
            }
            KeyRole::Config => (false, None),
        };
        let local = Local {
            role: key.role,
            public_key: key.pair.public_base64(),
            path: key.path.clone(),
            in_use,
        };
        held.push(Held {
            key,
            local,
            _lock: lock,
        });
    }
    Ok(held)
}

/// The platform's keys in its order, each marked with what it serves here, if anything.
fn entries(peers: &[VpnPeer], locals: &[Local]) -> Vec<KeyEntry> {
    peers
        .iter()
        .map(|peer| {
            let local = locals.iter().find(|l| l.public_key == peer.public_key);
            KeyEntry {
                public_key: peer.public_key.clone(),
                this_machine: local.is_some(),
                mine: local.map(|l| Mine {
                    role: l.role,
                    in_use: l.in_use,
                    file: l.path.clone(),
                }),
                addresses: [&peer.ipv4.assigned_ip_address, &peer.ipv6.assigned_ip_address]
                    .into_iter()
                    .filter(|a| !a.trim().is_empty())
                    .cloned()
                    .collect(),
                registered_at: peer.created.clone().filter(|c| !c.trim().is_empty()),
            }
        })
        .collect()
}

/// What a removal will do.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    targets: Vec<Target>,
    kept: Vec<Kept>,
    /// The running connection's key is among the targets (with --force): end it first.
    ends_connection: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Target {
    public_key: String,
    registered: bool,
    /// Index into the local keys.
    local: Option<usize>,
}

fn plan(
    project: &str,
    selection: &Selection,
    registered: &[String],
    locals: &[Local],
    force: bool,
) -> Result<Plan, KeyError> {
    let target = |public_key: &str, local: Option<usize>| Target {
        public_key: public_key.to_owned(),
        registered: registered.iter().any(|r| r == public_key),
        local,
    };
    let kept = |l: &Local, reason| Kept {
        public_key: l.public_key.clone(),
        role: l.role,
        reason,
    };
    let mut plan = Plan {
        targets: Vec::new(),
        kept: Vec::new(),
        ends_connection: false,
    };
    match selection {
        Selection::Keys(keys) => {
            check_key_texts(keys)?;
            let wanted: BTreeSet<&str> = keys.iter().map(|k| k.trim()).collect();
            if registered.is_empty() && locals.is_empty() {
                return Err(KeyError::NoKeys {
                    project: project.to_owned(),
                });
            }
            let unknown: Vec<String> = wanted
                .iter()
                .filter(|k| !registered.iter().any(|r| r == *k) && !locals.iter().any(|l| l.public_key == **k))
                .map(|k| k.to_string())
                .collect();
            if !unknown.is_empty() {
                return Err(KeyError::Unknown {
                    project: project.to_owned(),
                    keys: unknown,
                });
            }
            for key in wanted {
                let local = locals.iter().position(|l| l.public_key == key);
                if let Some(l) = local.map(|i| &locals[i]).filter(|l| l.in_use) {
                    match (l.role, force) {
                        (_, true) => plan.ends_connection |= l.role == KeyRole::Connection,
                        (KeyRole::Rootless { slot }, false) => {
                            return Err(KeyError::RunningProcess {
                                key: key.to_owned(),
                                slot,
                            })
                        }
                        (_, false) => {
                            return Err(KeyError::RunningConnection {
                                project: project.to_owned(),
                                key: key.to_owned(),
                            })
                        }
                    }
                }
                plan.targets.push(target(key, local));
            }
        }
        Selection::MineUnused | Selection::AllMine => {
            let all = *selection == Selection::AllMine;
            for (i, l) in locals.iter().enumerate() {
                match (l.role, l.in_use) {
                    (KeyRole::Connection, true) if all => {
                        return Err(KeyError::Connected {
                            project: project.to_owned(),
                        })
                    }
                    (KeyRole::Connection, true) => plan.kept.push(kept(l, KeptBecause::ConnectionRunning)),
                    (_, true) => plan.kept.push(kept(l, KeptBecause::ProcessRunning)),
                    (KeyRole::Config, _) if !all => plan.kept.push(kept(l, KeptBecause::ConfigExported)),
                    _ => plan.targets.push(target(&l.public_key, Some(i))),
                }
            }
        }
    }
    Ok(plan)
}

fn check_key_texts(keys: &[String]) -> Result<(), KeyError> {
    match keys.iter().find(|k| !is_key_text(k.trim())) {
        Some(bad) => Err(KeyError::Malformed(bad.clone())),
        None => Ok(()),
    }
}

/// 44 characters of standard base64 for 32 bytes: the only form the platform takes.
fn is_key_text(text: &str) -> bool {
    text.len() == 44 && crate::keys::decode(text).is_some()
}

fn removed_so_far(removed: &[Removed]) -> String {
    if removed.is_empty() {
        return " (nothing removed)".to_owned();
    }
    let keys: Vec<&str> = removed.iter().map(|r| r.public_key.as_str()).collect();
    format!(" (removed before it: {})", keys.join(", "))
}

/// A project name as a file name: what wg-quick accepts in an interface name, the rest as `-`.
fn file_name(project: &str) -> String {
    let name: String = project
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '=' | '+' | '.' | '-' => c,
            _ => '-',
        })
        .collect();
    match name.trim_matches('.') {
        "" => "project".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VpnPeerNet;

    #[test]
    fn the_list_marks_this_machines_keys_with_what_they_serve() {
        let locals = [
            local(KeyRole::Connection, 1, true),
            local(KeyRole::Rootless { slot: 2 }, 2, false),
        ];
        let peers = [peer(3, Some("2024-05-01T10:00:00Z")), peer(1, None), peer(2, Some(""))];

        let entries = entries(&peers, &locals);

        assert_eq!(entries.len(), 3);
        assert_eq!((entries[0].this_machine, &entries[0].mine), (false, &None));
        assert_eq!(entries[0].registered_at.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(entries[0].addresses, ["198.18.64.3", "fdc0::3"]);
        let connection = entries[1].mine.as_ref().unwrap();
        assert_eq!((connection.role, connection.in_use), (KeyRole::Connection, true));
        let slot = entries[2].mine.as_ref().unwrap();
        assert_eq!((slot.role, slot.in_use), (KeyRole::Rootless { slot: 2 }, false));
        assert_eq!(entries[2].registered_at, None, "an empty time is no time");
    }

    #[test]
    fn the_list_as_json_names_role_slot_and_use() {
        let locals = [local(KeyRole::Rootless { slot: 2 }, 2, true)];

        let json = serde_json::to_value(entries(&[peer(2, None), peer(3, None)], &locals)).unwrap();

        assert_eq!(json[0]["publicKey"], key(2));
        assert_eq!(json[0]["thisMachine"], true);
        assert_eq!(json[0]["role"], "rootless");
        assert_eq!(json[0]["slot"], 2);
        assert_eq!(json[0]["inUse"], true);
        assert_eq!(json[1]["thisMachine"], false);
        assert_eq!(json[1].get("role"), None);
    }

    #[test]
    fn mine_unused_removes_exactly_the_keys_nothing_uses() {
        let locals = [
            local(KeyRole::Connection, 1, true),
            local(KeyRole::Rootless { slot: 0 }, 2, true),
            local(KeyRole::Rootless { slot: 1 }, 3, false),
            local(KeyRole::Rootless { slot: 2 }, 4, false),
            local(KeyRole::Config, 5, false),
        ];
        let registered = [key(1), key(2), key(3), key(9)];

        let plan = plan("demo", &Selection::MineUnused, &registered, &locals, false).unwrap();

        assert_eq!(
            plan.targets,
            [
                Target {
                    public_key: key(3),
                    registered: true,
                    local: Some(2)
                },
                Target {
                    public_key: key(4),
                    registered: false,
                    local: Some(3)
                },
            ]
        );
        let kept: Vec<(String, KeptBecause)> = plan.kept.into_iter().map(|k| (k.public_key, k.reason)).collect();
        assert_eq!(
            kept,
            [
                (key(1), KeptBecause::ConnectionRunning),
                (key(2), KeptBecause::ProcessRunning),
                (key(5), KeptBecause::ConfigExported),
            ]
        );
        assert!(!plan.ends_connection);
    }

    #[test]
    fn the_running_connections_key_needs_force_and_force_ends_the_connection() {
        let locals = [local(KeyRole::Connection, 1, true)];
        let keys = Selection::Keys(vec![key(1)]);

        let refused = plan("demo", &keys, &[key(1)], &locals, false).unwrap_err();
        let forced = plan("demo", &keys, &[key(1)], &locals, true).unwrap();

        assert_eq!(
            refused,
            KeyError::RunningConnection {
                project: "demo".into(),
                key: key(1)
            }
        );
        assert!(refused.to_string().contains("--force"), "{refused}");
        assert!(forced.ends_connection);
        assert_eq!(forced.targets.len(), 1);
    }

    #[test]
    fn a_running_rootless_key_needs_force_and_force_does_not_end_a_connection() {
        let locals = [local(KeyRole::Rootless { slot: 3 }, 1, true)];
        let keys = Selection::Keys(vec![key(1)]);

        let refused = plan("demo", &keys, &[key(1)], &locals, false).unwrap_err();
        let forced = plan("demo", &keys, &[key(1)], &locals, true).unwrap();

        assert_eq!(refused, KeyError::RunningProcess { key: key(1), slot: 3 });
        assert!(!forced.ends_connection);
    }

    #[test]
    fn other_machines_keys_are_removed_on_the_platform_only() {
        let plan = plan("demo", &Selection::Keys(vec![key(7)]), &[key(7)], &[], false).unwrap();

        assert_eq!(
            plan.targets,
            [Target {
                public_key: key(7),
                registered: true,
                local: None
            }]
        );
    }

    #[test]
    fn bad_keys_remove_nothing() {
        let registered = [key(1)];
        let some = |keys: &[String]| Selection::Keys(keys.to_vec());

        let malformed = plan("demo", &some(&[key(1), "abc".into()]), &registered, &[], false).unwrap_err();
        let short = plan("demo", &some(&[key(1)[..43].to_owned()]), &registered, &[], false).unwrap_err();
        let unknown = plan("demo", &some(&[key(1), key(2)]), &registered, &[], false).unwrap_err();
        let none = plan("empty", &some(&[key(1)]), &[], &[], false).unwrap_err();

        assert_eq!(malformed, KeyError::Malformed("abc".into()));
        assert!(matches!(short, KeyError::Malformed(_)));
        assert_eq!(
            unknown,
            KeyError::Unknown {
                project: "demo".into(),
                keys: vec![key(2)]
            }
        );
        assert!(unknown.to_string().contains("nothing removed"), "{unknown}");
        assert_eq!(
            none,
            KeyError::NoKeys {
                project: "empty".into()
            }
        );
    }

    #[test]
    fn clear_takes_every_key_but_those_of_running_processes_and_refuses_a_running_connection() {
        let locals = [
            local(KeyRole::Connection, 1, false),
            local(KeyRole::Rootless { slot: 0 }, 2, true),
            local(KeyRole::Config, 3, false),
        ];

        let plan_ = plan("demo", &Selection::AllMine, &[key(1), key(3)], &locals, false).unwrap();
        let connected = [local(KeyRole::Connection, 1, true)];
        let refused = plan("demo", &Selection::AllMine, &[key(1)], &connected, false).unwrap_err();

        let targets: Vec<&str> = plan_.targets.iter().map(|t| t.public_key.as_str()).collect();
        assert_eq!(targets, [key(1), key(3)]);
        assert_eq!(plan_.kept.len(), 1);
        assert_eq!(refused, KeyError::Connected { project: "demo".into() });
    }

    #[test]
    fn config_file_names_keep_what_wg_quick_accepts() {
        assert_eq!(file_name("demo"), "demo");
        assert_eq!(file_name("my project/1"), "my-project-1");
        assert_eq!(file_name(".."), "project");
    }

    // Helpers

    fn key(n: u8) -> String {
        crate::keys::encode(&[n; 32])
    }

    fn local(role: KeyRole, n: u8, in_use: bool) -> Local {
        Local {
            role,
            public_key: key(n),
            path: PathBuf::from(format!("/keys/{n}.key")),
            in_use,
        }
    }

    fn peer(n: u8, created: Option<&str>) -> VpnPeer {
        VpnPeer {
            public_key: key(n),
            ipv4: VpnPeerNet {
                assigned_ip_address: format!("198.18.64.{n}"),
                ..Default::default()
            },
            ipv6: VpnPeerNet {
                assigned_ip_address: format!("fdc0::{n}"),
                ..Default::default()
            },
            created: created.map(str::to_owned),
        }
    }
}
