//! Which container a target means: a service name (`api`, `api.zerops`) with `--instance N|any`,
//! a container name (`node-id-13.runtime.api.zerops`, also without `.zerops`), or nothing.
//! Pure functions over an [`Inventory`]; choosing among several is the caller's (a picker on a
//! terminal, the list in an error elsewhere).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{ContainerEntry, Inventory, ServiceEntry, DOMAIN};

/// `--instance`: a container of a service by its position (from 1), or any running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instance {
    Number(usize),
    Any,
}

/// A container a target can resolve to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The container's name over the tunnel.
    pub name: String,
    pub service: String,
    pub instance: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("project {project} has no running container with a name yet")]
    NoContainers { project: String },
    #[error("several containers match; name one (or pass --instance N|any):\n{}", list(.choices))]
    Ambiguous { choices: Vec<Choice> },
    #[error("project {project} has no service or container named {target:?}; its containers:\n{}", list(.choices))]
    Unknown {
        target: String,
        project: String,
        choices: Vec<Choice>,
    },
    #[error("service {service} has {count} container(s): --instance {n} does not exist")]
    NoSuchInstance { service: String, n: usize, count: usize },
    #[error("container {name} is {status}, not running")]
    NotRunning { name: String, status: String },
    #[error("service {service} has no running container")]
    NoneRunning { service: String },
    #[error("--instance picks a container of a service, and {target} is a container")]
    InstanceOnContainer { target: String },
    #[error("--instance needs a service name")]
    InstanceWithoutService,
}

/// Resolves `target` (and `--instance`) to one running container of the inventory.
pub fn resolve(inventory: &Inventory, target: Option<&str>, instance: Option<Instance>) -> Result<Choice, TargetError> {
    let Some(target) = target else {
        if instance.is_some() {
            return Err(TargetError::InstanceWithoutService);
        }
        return one_of(running(inventory.containers()), || TargetError::NoContainers {
            project: inventory.project.name.clone(),
        });
    };
    let target = target.trim().trim_end_matches('.');
    if let Some(service) = find_service(inventory, target) {
        return in_service(service, instance);
    }
    if let Some((service, container)) = find_container(inventory, target) {
        if instance.is_some() {
            return Err(TargetError::InstanceOnContainer {
                target: target.to_string(),
            });
        }
        let choice = choice(service, container).expect("found by its name");
        if !container.running {
            return Err(TargetError::NotRunning {
                name: choice.name,
                status: container.status.clone(),
            });
        }
        return Ok(choice);
    }
    Err(TargetError::Unknown {
        target: target.to_string(),
        project: inventory.project.name.clone(),
        choices: running(inventory.containers()),
    })
}

/// Whether `target` names a service or container of this project.
pub fn knows(inventory: &Inventory, target: &str) -> bool {
    let target = target.trim().trim_end_matches('.');
    find_service(inventory, target).is_some() || find_container(inventory, target).is_some()
}

impl FromStr for Instance {
    type Err = String;

    fn from_str(s: &str) -> Result<Instance, String> {
        if s.eq_ignore_ascii_case("any") {
            return Ok(Instance::Any);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Instance::Number(n)),
            _ => Err(format!("{s:?} is not an instance: give a number from 1, or `any`")),
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  (service {}, --instance {})",
            self.name, self.service, self.instance
        )
    }
}

fn in_service(service: &ServiceEntry, instance: Option<Instance>) -> Result<Choice, TargetError> {
    let none_running = || TargetError::NoneRunning {
        service: service.name.clone(),
    };
    let containers = service.containers.iter().map(|c| (service, c));
    match instance {
        None => one_of(running(containers), none_running),
        Some(Instance::Any) => running(containers).into_iter().next().ok_or_else(none_running),
        Some(Instance::Number(n)) => {
            let Some(container) = service.containers.iter().find(|c| c.instance == n) else {
                return Err(TargetError::NoSuchInstance {
                    service: service.name.clone(),
                    n,
                    count: service.containers.len(),
                });
            };
            let Some(choice) = choice(service, container) else {
                return Err(TargetError::NotRunning {
                    name: format!("{} instance {n}", service.name),
                    status: container.status.clone(),
                });
            };
            if !container.running {
                return Err(TargetError::NotRunning {
                    name: choice.name,
                    status: container.status.clone(),
                });
            }
            Ok(choice)
        }
    }
}

fn one_of(choices: Vec<Choice>, none: impl FnOnce() -> TargetError) -> Result<Choice, TargetError> {
    match choices.len() {
        0 => Err(none()),
        1 => Ok(choices.into_iter().next().expect("one")),
        _ => Err(TargetError::Ambiguous { choices }),
    }
}

fn find_service<'a>(inventory: &'a Inventory, target: &str) -> Option<&'a ServiceEntry> {
    inventory
        .services
        .iter()
        .find(|s| s.name == target || s.dns_name == target)
}

fn find_container<'a>(inventory: &'a Inventory, target: &str) -> Option<(&'a ServiceEntry, &'a ContainerEntry)> {
    let qualified = format!("{target}.{DOMAIN}");
    inventory
        .containers()
        .find(|(_, c)| c.name.as_deref().is_some_and(|n| n == target || n == qualified))
}

fn running<'a>(containers: impl Iterator<Item = (&'a ServiceEntry, &'a ContainerEntry)>) -> Vec<Choice> {
    containers
        .filter(|(_, c)| c.running)
        .filter_map(|(s, c)| choice(s, c))
        .collect()
}

fn choice(service: &ServiceEntry, container: &ContainerEntry) -> Option<Choice> {
    Some(Choice {
        name: container.name.clone()?,
        service: service.name.clone(),
        instance: container.instance,
    })
}

fn list(choices: &[Choice]) -> String {
    if choices.is_empty() {
        return "  (none running)".to_string();
    }
    choices.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::build;
    use crate::access::tests::{container, project, service};
    use crate::api;

    const N13: &str = "node-id-13.runtime.api.zerops";
    const N14: &str = "node-id-14.runtime.api.zerops";
    const DB: &str = "node1.db.db.zerops";

    #[test]
    fn a_service_with_an_instance_number() {
        let inv = demo();
        assert_eq!(resolve(&inv, Some("api"), Some(Instance::Number(2))).unwrap().name, N14);
        assert_eq!(
            resolve(&inv, Some("api.zerops"), Some(Instance::Number(1)))
                .unwrap()
                .name,
            N13
        );
        assert_eq!(
            resolve(&inv, Some("api"), Some(Instance::Number(3))),
            Err(TargetError::NoSuchInstance {
                service: "api".into(),
                n: 3,
                count: 2
            })
        );
    }

    #[test]
    fn a_service_with_several_containers_is_ambiguous_unless_any() {
        let inv = demo();
        let Err(TargetError::Ambiguous { choices }) = resolve(&inv, Some("api"), None) else {
            panic!("ambiguous expected");
        };
        let names: Vec<&str> = choices.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [N13, N14]);
        assert_eq!(resolve(&inv, Some("api"), Some(Instance::Any)).unwrap().name, N13);
    }

    #[test]
    fn a_service_with_one_container_needs_no_instance() {
        let choice = resolve(&demo(), Some("db"), None).unwrap();
        assert_eq!(
            choice,
            Choice {
                name: DB.into(),
                service: "db".into(),
                instance: 1
            }
        );
    }

    #[test]
    fn a_container_by_full_or_short_name() {
        let inv = demo();
        assert_eq!(resolve(&inv, Some(DB), None).unwrap().name, DB);
        assert_eq!(resolve(&inv, Some("node1.db.db"), None).unwrap().name, DB);
        assert_eq!(resolve(&inv, Some("node1.db.db.zerops."), None).unwrap().name, DB);
        assert_eq!(
            resolve(&inv, Some(DB), Some(Instance::Any)),
            Err(TargetError::InstanceOnContainer { target: DB.into() })
        );
    }

    #[test]
    fn nothing_means_the_only_container_or_the_list() {
        let Err(TargetError::Ambiguous { choices }) = resolve(&demo(), None, None) else {
            panic!("ambiguous expected");
        };
        assert_eq!(choices.len(), 3);
        let single = inventory(vec![(
            service("s2", "db"),
            vec![container("c3", 21, Some(DB), "ACTIVE")],
        )]);
        assert_eq!(resolve(&single, None, None).unwrap().name, DB);
        assert_eq!(
            resolve(&inventory(vec![]), None, None),
            Err(TargetError::NoContainers { project: "demo".into() })
        );
        assert_eq!(
            resolve(&single, None, Some(Instance::Any)),
            Err(TargetError::InstanceWithoutService)
        );
    }

    #[test]
    fn stopped_containers_are_never_picked() {
        let inv = inventory(vec![(
            service("s1", "api"),
            vec![
                container("c1", 13, Some(N13), "STOPPED"),
                container("c2", 14, Some(N14), "ACTIVE"),
            ],
        )]);
        assert_eq!(resolve(&inv, Some("api"), None).unwrap().name, N14);
        assert_eq!(resolve(&inv, Some("api"), Some(Instance::Any)).unwrap().name, N14);
        assert_eq!(
            resolve(&inv, Some("api"), Some(Instance::Number(1))),
            Err(TargetError::NotRunning {
                name: N13.into(),
                status: "STOPPED".into()
            })
        );
        assert_eq!(
            resolve(&inv, Some(N13), None),
            Err(TargetError::NotRunning {
                name: N13.into(),
                status: "STOPPED".into()
            })
        );
        let stopped = inventory(vec![(
            service("s1", "api"),
            vec![container("c1", 13, Some(N13), "STOPPED")],
        )]);
        assert_eq!(
            resolve(&stopped, Some("api"), Some(Instance::Any)),
            Err(TargetError::NoneRunning { service: "api".into() })
        );
    }

    #[test]
    fn unknown_targets_list_the_choices() {
        let err = resolve(&demo(), Some("web"), None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TargetError::Unknown { ref choices, .. } if choices.len() == 3));
        assert!(
            text.contains("\"web\"") && text.contains(N14) && text.contains("--instance 2"),
            "{text}"
        );
        assert!(knows(&demo(), "api") && knows(&demo(), "node1.db.db") && !knows(&demo(), "web"));
    }

    #[test]
    fn instance_parses_numbers_from_one_and_any() {
        assert_eq!("2".parse(), Ok(Instance::Number(2)));
        assert_eq!("ANY".parse(), Ok(Instance::Any));
        assert!("0".parse::<Instance>().is_err());
        assert!("x".parse::<Instance>().is_err());
    }

    fn demo() -> Inventory {
        inventory(vec![
            (
                service("s1", "api"),
                vec![
                    container("c1", 13, Some(N13), "ACTIVE"),
                    container("c2", 14, Some(N14), "ACTIVE"),
                ],
            ),
            (service("s2", "db"), vec![container("c3", 21, Some(DB), "ACTIVE")]),
        ])
    }

    fn inventory(services: Vec<(api::Service, Vec<api::Container>)>) -> Inventory {
        build(&project(), services, true)
    }
}
