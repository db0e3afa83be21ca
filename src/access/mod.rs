//! Everyday access to a project's containers: what runs there and by which names it is reached
//! over the tunnel (`ls`), which container a target means (`target`), and the SSH, PuTTY and
//! WinSCP settings that reach it (`ssh`, `ssh_config`, `export`).
//!
//! Listing needs only the platform API; reaching a container needs a connection (`vpn up`).

mod commands;
pub mod export;
pub mod ssh;
pub mod ssh_config;
pub mod target;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::api::{self, Client, ProjectId};
use crate::daemon::{control, Status};
use crate::paths::ConnectionFiles;
use crate::report::Report;

pub use commands::{
    export_putty, export_winscp, list, ssh_command, ssh_config, IncludeAction, PuttyExport, SshConfigOutcome,
    SshOptions,
};

/// The port sshd listens on in every container of the platform.
pub const SSH_PORT: u16 = 65437;
/// The user every container's sshd accepts (the tunnel is the security boundary).
pub const SSH_USER: &str = "root";
/// The domain the project's DNS serves.
pub const DOMAIN: &str = "zerops";

/// One project as `corridor ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub project: ProjectRef,
    /// This machine has a running connection to the project.
    pub connected: bool,
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    pub id: ProjectId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub id: String,
    /// The service's hostname (`api`): plain `api` resolves through the `zerops` search domain.
    pub name: String,
    /// The fully qualified service name (`api.zerops`): all its containers.
    pub dns_name: String,
    /// Type and version, such as `nodejs@22`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub containers: Vec<ContainerEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerEntry {
    pub id: String,
    /// The platform's container number (not contiguous).
    pub number: u64,
    /// Position among the service's containers ordered by number, from 1: `--instance N`.
    pub instance: usize,
    /// The name that resolves over the tunnel (`node-id-13.runtime.api.zerops`); `None` while
    /// the platform has not named the container yet.
    pub name: Option<String>,
    pub status: String,
    pub running: bool,
    /// Resolved through the system resolver, only while connected; empty when unknown.
    pub addresses: Vec<IpAddr>,
}

/// Where a target was found: the projects searched are the named one, else those connected,
/// else (or when no connected one has the target) all of the user's projects.
#[derive(Debug)]
pub enum Found {
    One(Inventory),
    /// Several projects hold the target (or, without one, several are connected).
    Several(Vec<Inventory>),
    /// No project searched holds the target.
    Nowhere(Vec<Inventory>),
}

/// The project a command means: the one named, else the only one connected, else a choice
/// (a picker on a terminal, the list in an error elsewhere).
pub async fn project(client: &Client, wanted: Option<&str>, report: &mut dyn Report) -> Result<api::Project> {
    if wanted.is_none() {
        if let [only] = connections().await.as_slice() {
            return client
                .project(&only.project_id)
                .await
                .with_context(|| format!("looking up the connected project {}", only.project_name));
        }
    }
    crate::account::choose_project(client, wanted, report).await
}

/// The projects that hold `target` (any target, without one), as described at [`Found`].
pub async fn find(
    client: &Client,
    project_wanted: Option<&str>,
    target: Option<&str>,
    report: &mut dyn Report,
) -> Result<Found> {
    if project_wanted.is_some() {
        let project = project(client, project_wanted, report).await?;
        return Ok(Found::One(inventory(client, &project).await?));
    }
    let connected: Vec<ProjectId> = connections().await.into_iter().map(|s| s.project_id).collect();
    let mut searched = Vec::new();
    for id in &connected {
        let project = client.project(id).await.context("looking up a connected project")?;
        searched.push(inventory(client, &project).await?);
    }
    if connected.is_empty() || target.is_some_and(|t| !searched.iter().any(|i| target::knows(i, t))) {
        for project in crate::account::all_projects(client).await? {
            if !connected.contains(&project.id) {
                searched.push(inventory(client, &project).await?);
            }
        }
    }
    let mut holding: Vec<Inventory> = match target {
        Some(t) => searched.iter().filter(|i| target::knows(i, t)).cloned().collect(),
        None => searched.clone(),
    };
    Ok(match holding.len() {
        0 => Found::Nowhere(searched),
        1 => Found::One(holding.remove(0)),
        _ => Found::Several(holding),
    })
}

/// The project's services (system services left out) and their containers, from the API.
pub async fn inventory(client: &Client, project: &api::Project) -> Result<Inventory> {
    let services = client
        .search_services(&project.id, &project.client_id)
        .await
        .with_context(|| format!("listing the services of project {}", project.name))?;
    let mut with_containers = Vec::new();
    for service in services.into_iter().filter(|s| !s.is_system) {
        let containers = client
            .search_containers(&project.client_id, &service.id)
            .await
            .with_context(|| format!("listing the containers of service {}", service.name))?;
        with_containers.push((service, containers));
    }
    let connected = connection(&project.id).await.is_some();
    let mut inventory = build(project, with_containers, connected);
    if connected {
        resolve_addresses(&mut inventory).await;
    }
    Ok(inventory)
}

/// The running connection to a project, if this machine has one (asks its daemon).
pub async fn connection(project_id: &ProjectId) -> Option<Status> {
    let files = ConnectionFiles::for_project(project_id);
    control::request(&files.socket, control::Command::Status).await.ok()
}

/// Every running connection this user can see.
pub async fn connections() -> Vec<Status> {
    let mut all = Vec::new();
    for (_, files) in ConnectionFiles::all() {
        if let Ok(status) = control::request(&files.socket, control::Command::Status).await {
            all.push(status);
        }
    }
    all
}

/// Assembles an inventory from the API's answers: services by name, containers by number.
pub fn build(project: &api::Project, services: Vec<(api::Service, Vec<api::Container>)>, connected: bool) -> Inventory {
    let mut services: Vec<ServiceEntry> = services
        .into_iter()
        .map(|(service, mut containers)| {
            containers.sort_by_key(|c| c.number);
            ServiceEntry {
                dns_name: format!("{}.{DOMAIN}", service.name),
                kind: service.service_stack_type_info.service_stack_type_version_name,
                containers: containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ContainerEntry {
                        name: c.hostname.as_deref().and_then(container_name),
                        running: is_running(&c.status),
                        id: c.id,
                        number: c.number,
                        instance: i + 1,
                        status: c.status,
                        addresses: Vec::new(),
                    })
                    .collect(),
                id: service.id,
                name: service.name,
                status: service.status,
            }
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Inventory {
        project: ProjectRef {
            id: project.id.clone(),
            name: project.name.clone(),
        },
        connected,
        services,
    }
}

/// The name a container resolves by over the tunnel (DESIGN §5: `<node>.<role>.<service>.zerops`).
/// The platform's `hostname` field is that name, with or without the `zerops` domain.
pub fn container_name(hostname: &str) -> Option<String> {
    let name = hostname.trim().trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    let suffix = format!(".{DOMAIN}");
    Some(if name.ends_with(&suffix) {
        name.to_string()
    } else {
        format!("{name}{suffix}")
    })
}

/// Container states that accept connections.
pub fn is_running(status: &str) -> bool {
    status.eq_ignore_ascii_case("ACTIVE") || status.eq_ignore_ascii_case("RUNNING")
}

/// A name an SSH client connects by (`api`, `api-2`, `node-id-13.runtime.api.zerops`) and the
/// container name it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub alias: String,
    pub host: String,
}

impl Inventory {
    /// Every container with its service, in listing order.
    pub fn containers(&self) -> impl Iterator<Item = (&ServiceEntry, &ContainerEntry)> {
        self.services
            .iter()
            .flat_map(|s| s.containers.iter().map(move |c| (s, c)))
    }

    /// Per service: its name for its first running container (`--instance any`), then
    /// `<service>-N` for each instance; then every container by its own name. A service name
    /// goes to one container rather than to `<service>.zerops`, whose answer rotates among
    /// containers with different host keys.
    pub fn aliases(&self) -> Vec<Alias> {
        let mut aliases = Vec::new();
        for service in &self.services {
            let named = || service.containers.iter().filter_map(|c| Some((c, c.name.clone()?)));
            if let Some((_, host)) = named().find(|(c, _)| c.running) {
                aliases.push(Alias {
                    alias: service.name.clone(),
                    host,
                });
            }
            aliases.extend(named().map(|(c, host)| Alias {
                alias: format!("{}-{}", service.name, c.instance),
                host,
            }));
        }
        aliases.extend(self.containers().filter_map(|(_, c)| {
            let name = c.name.clone()?;
            Some(Alias {
                alias: name.clone(),
                host: name,
            })
        }));
        aliases
    }
}

/// How long one name may take to resolve; a connected project answers in milliseconds.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

async fn resolve_addresses(inventory: &mut Inventory) {
    for service in &mut inventory.services {
        for container in service.containers.iter_mut().filter(|c| c.running) {
            let Some(name) = &container.name else { continue };
            let lookup = tokio::net::lookup_host((name.as_str(), SSH_PORT));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    container.addresses = ips;
                }
                Ok(Err(error)) => tracing::debug!(%name, %error, "container name does not resolve"),
                Err(_) => tracing::debug!(%name, "resolving the container name timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_the_hostname_field() {
        assert_eq!(
            container_name("node-id-13.runtime.api.zerops").as_deref(),
            Some("node-id-13.runtime.api.zerops")
        );
        assert_eq!(container_name("node1.db.db").as_deref(), Some("node1.db.db.zerops"));
        assert_eq!(
            container_name("node1.db.db.zerops.").as_deref(),
            Some("node1.db.db.zerops")
        );
        assert_eq!(container_name("  "), None);
    }

    #[test]
    fn build_orders_services_by_name_and_containers_by_number() {
        let project = project();
        let inventory = build(
            &project,
            vec![
                (
                    service("s2", "db"),
                    vec![container("c3", 21, Some("node1.db.db.zerops"), "ACTIVE")],
                ),
                (
                    service("s1", "api"),
                    vec![
                        container("c2", 14, Some("node-id-14.runtime.api.zerops"), "STOPPED"),
                        container("c1", 13, Some("node-id-13.runtime.api.zerops"), "ACTIVE"),
                        container("c4", 15, None, "CREATING"),
                    ],
                ),
            ],
            false,
        );

        let names: Vec<&str> = inventory.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "db"]);
        let api = &inventory.services[0];
        assert_eq!(api.dns_name, "api.zerops");
        assert_eq!(api.kind, "nodejs@22");
        let rows: Vec<(u64, usize, Option<&str>, bool)> = api
            .containers
            .iter()
            .map(|c| (c.number, c.instance, c.name.as_deref(), c.running))
            .collect();
        assert_eq!(
            rows,
            [
                (13, 1, Some("node-id-13.runtime.api.zerops"), true),
                (14, 2, Some("node-id-14.runtime.api.zerops"), false),
                (15, 3, None, false),
            ]
        );
        assert!(!inventory.connected);
    }

    #[test]
    fn aliases_name_services_instances_and_containers() {
        let project = project();
        let inventory = build(
            &project,
            vec![(
                service("s1", "api"),
                vec![
                    container("c1", 13, Some("node-id-13.runtime.api.zerops"), "STOPPED"),
                    container("c2", 14, Some("node-id-14.runtime.api.zerops"), "ACTIVE"),
                    container("c3", 15, None, "CREATING"),
                ],
            )],
            false,
        );
        let pairs: Vec<(String, String)> = inventory.aliases().into_iter().map(|a| (a.alias, a.host)).collect();
        let n13 = "node-id-13.runtime.api.zerops".to_string();
        let n14 = "node-id-14.runtime.api.zerops".to_string();
        assert_eq!(
            pairs,
            [
                ("api".into(), n14.clone()),
                ("api-1".into(), n13.clone()),
                ("api-2".into(), n14.clone()),
                (n13.clone(), n13),
                (n14.clone(), n14),
            ]
        );
    }

    pub(crate) fn project() -> api::Project {
        api::Project {
            id: ProjectId::parse("p1").unwrap(),
            client_id: "c1".into(),
            name: "demo".into(),
            status: "ACTIVE".into(),
        }
    }

    pub(crate) fn service(id: &str, name: &str) -> api::Service {
        api::Service {
            id: id.into(),
            project_id: "p1".into(),
            name: name.into(),
            status: "ACTIVE".into(),
            is_system: false,
            service_stack_type_info: api::ServiceTypeInfo {
                service_stack_type_version_name: "nodejs@22".into(),
                service_stack_type_category: "USER".into(),
            },
        }
    }

    pub(crate) fn container(id: &str, number: u64, hostname: Option<&str>, status: &str) -> api::Container {
        api::Container {
            id: id.into(),
            service_stack_id: String::new(),
            number,
            hostname: hostname.map(str::to_string),
            status: status.into(),
        }
    }
}
