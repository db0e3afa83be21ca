//! The commands: `ls`, `ssh`, `ssh-config`, `export putty|winscp`. Each takes an option struct
//! and returns what it did; the CLI renders it (and runs the ssh it is handed).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::export::{self, Session};
use super::ssh::{self, Invocation};
use super::ssh_config::{self, Change};
use super::target::{self, Choice, Instance, TargetError};
use super::{find, inventory, Found, Inventory};
use crate::account::{self, ApiSettings};
use crate::report::Report;
use crate::store::Store;

#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// A service, a container, or `None` to choose.
    pub target: Option<String>,
    pub instance: Option<Instance>,
    pub project: Option<String>,
    /// Run `corridor vpn up` first when the project is not connected.
    pub connect: bool,
    /// Passed to ssh after the destination.
    pub ssh_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeAction {
    /// Only write the project's file.
    None,
    Install,
    Uninstall,
}

/// What `ssh-config` did.
#[derive(Debug, Clone)]
pub struct SshConfigOutcome {
    /// The project's file and how many host names it holds (not written by `Uninstall`).
    pub written: Option<(PathBuf, usize)>,
    /// The user's ssh config and what happened to its `Include` line.
    pub user_config: PathBuf,
    pub include_line: String,
    pub include: Option<Change>,
}

/// What `export putty` wrote.
#[derive(Debug, Clone)]
pub struct PuttyExport {
    pub sessions: Vec<Session>,
    /// The session files' directory (Unix).
    pub session_dir: Option<PathBuf>,
    pub reg: Option<PathBuf>,
}

/// The project's services and containers (the named project, else the connected one, else a
/// choice).
pub async fn list(api: ApiSettings, project: Option<&str>, report: &mut dyn Report) -> Result<Inventory> {
    let store = Store::open()?;
    let client = account::client(&store, api).await?;
    let project = super::project(&client, project, report).await?;
    inventory(&client, &project).await
}

/// The `ssh` that reaches the target: resolved, checked to be connected (or connected, with
/// `connect`), with corridor's known-hosts file ready.
pub async fn ssh_command(api: ApiSettings, options: SshOptions, report: &mut dyn Report) -> Result<Invocation> {
    let api_base = api.base.clone();
    let store = Store::open()?;
    let client = account::client(&store, api).await?;
    let target = options.target.as_deref();
    let inventory = match find(&client, options.project.as_deref(), target, report).await? {
        Found::One(inventory) => inventory,
        Found::Several(several) => bail!(
            "{} in several projects ({}): name one with --project",
            target.map_or("containers".to_string(), |t| format!("{t:?} is")),
            names(&several)
        ),
        Found::Nowhere(searched) if searched.is_empty() => bail!("your account has no projects"),
        Found::Nowhere(searched) => bail!(
            "no service or container named {:?} in project(s) {}",
            target.unwrap_or_default(),
            names(&searched)
        ),
    };
    let choice = pick(&inventory, target, options.instance, report)?;
    if !inventory.connected {
        if !options.connect {
            bail!(
                "not connected to project {0}: run `sudo corridor vpn up {0}` first (or pass --connect)",
                inventory.project.name
            );
        }
        connect(&inventory, api_base.as_deref())?;
    }
    let known_hosts = ssh::known_hosts(store.dir());
    prepare_known_hosts(&known_hosts)?;
    Ok(ssh::command(&choice.name, &known_hosts, &options.ssh_args))
}

/// Writes the project's OpenSSH configuration, and adds or removes the `Include` line.
pub async fn ssh_config(
    api: ApiSettings,
    project: Option<&str>,
    action: IncludeAction,
    proxy: bool,
    report: &mut dyn Report,
) -> Result<SshConfigOutcome> {
    let store = Store::open()?;
    let include_line = ssh_config::include_line(store.dir());
    let user_config = user_home()?.join(".ssh").join("config");
    let mut outcome = SshConfigOutcome {
        written: None,
        user_config,
        include_line,
        include: None,
    };
    if action == IncludeAction::Uninstall {
        outcome.include = Some(ssh_config::uninstall(&outcome.user_config, &outcome.include_line)?);
        return Ok(outcome);
    }
    let inventory = list(api, project, report).await?;
    let path = ssh_config::project_file(store.dir(), &inventory.project.name);
    let proxy = match proxy {
        true => {
            let corridor = std::env::current_exe().context("locating the corridor binary")?;
            Some(ssh_config::proxy_command(&corridor, inventory.project.id.as_str()))
        }
        false => None,
    };
    let text = ssh_config::render(&inventory, &ssh::known_hosts(store.dir()), proxy.as_deref());
    ssh_config::write(&path, &text)?;
    outcome.written = Some((path, inventory.aliases().len()));
    if action == IncludeAction::Install {
        outcome.include = Some(ssh_config::install(&outcome.user_config, &outcome.include_line)?);
    }
    Ok(outcome)
}

/// PuTTY sessions: session files for PuTTY's Unix tools, and a `.reg` file when asked (always
/// on Windows, next to where it runs).
pub async fn export_putty(
    api: ApiSettings,
    project: Option<&str>,
    reg: Option<PathBuf>,
    report: &mut dyn Report,
) -> Result<PuttyExport> {
    let inventory = list(api, project, report).await?;
    let sessions = export::sessions(&inventory);
    let mut done = PuttyExport {
        sessions,
        session_dir: None,
        reg: None,
    };
    if cfg!(unix) {
        let dir = putty_dir()?;
        for session in &done.sessions {
            let path = export::putty_session_path(&dir, session);
            write_creating_dirs(&path, export::putty_session_file(session).as_bytes())?;
        }
        done.session_dir = Some(dir.join("sessions"));
    }
    let reg =
        reg.or_else(|| cfg!(windows).then(|| PathBuf::from(format!("corridor-{}-putty.reg", inventory.project.name))));
    if let Some(reg) = reg {
        write_creating_dirs(&reg, &export::utf16_with_bom(&export::putty_reg(&done.sessions)))?;
        done.reg = Some(reg);
    }
    Ok(done)
}

/// The WinSCP.ini sessions section; written to `output` when given.
pub async fn export_winscp(
    api: ApiSettings,
    project: Option<&str>,
    output: Option<&Path>,
    report: &mut dyn Report,
) -> Result<String> {
    let inventory = list(api, project, report).await?;
    let ini = export::winscp_ini(&export::sessions(&inventory));
    if let Some(path) = output {
        write_creating_dirs(path, ini.as_bytes())?;
    }
    Ok(ini)
}

/// The target's container; several candidates → the report's choice, else the list in the error.
fn pick(
    inventory: &Inventory,
    target: Option<&str>,
    instance: Option<Instance>,
    report: &mut dyn Report,
) -> Result<Choice> {
    match target::resolve(inventory, target, instance) {
        Err(TargetError::Ambiguous { choices }) => {
            let listing: Vec<String> = choices.iter().map(ToString::to_string).collect();
            match report.pick("container", &listing) {
                Some(n) => Ok(choices[n].clone()),
                None => Err(TargetError::Ambiguous { choices }.into()),
            }
        }
        other => Ok(other?),
    }
}

/// Runs `corridor vpn up <project>` as its own process: it needs the privileges this one was
/// started with, and reports its own progress.
fn connect(inventory: &Inventory, api_base: Option<&str>) -> Result<()> {
    let mut command = Command::new(std::env::current_exe().context("locating the corridor binary")?);
    // Its report goes to stderr: stdout is the remote command's.
    command
        .args(["vpn", "up", inventory.project.id.as_str()])
        .stdout(std::io::stderr());
    if let Some(base) = api_base {
        command.env("CORRIDOR_API", base);
    }
    let status = command.status().context("running `corridor vpn up`")?;
    if !status.success() {
        bail!("`corridor vpn up {}` failed ({status})", inventory.project.name);
    }
    Ok(())
}

/// Creates the known-hosts file; under sudo it is handed to the user whose config dir holds it,
/// so their own `corridor ssh` can still add host keys to it.
fn prepare_known_hosts(path: &Path) -> Result<()> {
    let dir = path.parent().context("known-hosts path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !path.exists() {
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    }
    if let Some(invoker) = crate::platform::invoker() {
        for p in [dir, path] {
            crate::platform::hand_over(p, &invoker)
                .with_context(|| format!("handing {} to the sudo user", p.display()))?;
        }
    }
    Ok(())
}

/// The home of the user running corridor. Under sudo the files written there would belong to
/// root, and OpenSSH refuses a config it does not own: such runs are refused.
fn user_home() -> Result<PathBuf> {
    if crate::platform::invoker().is_some() {
        bail!("this writes files in your home directory: run it without sudo");
    }
    let home = directories::BaseDirs::new().context("no home directory (HOME is not set)")?;
    Ok(home.home_dir().to_path_buf())
}

/// `$PUTTYDIR`, else `~/.putty`: where PuTTY's Unix tools keep sessions.
fn putty_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PUTTYDIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(user_home()?.join(".putty"))
}

fn write_creating_dirs(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}

fn names(inventories: &[Inventory]) -> String {
    inventories
        .iter()
        .map(|i| i.project.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
