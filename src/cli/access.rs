//! `ls`, `ssh`, `ssh-config` and `export`: their arguments, and the text and JSON they print.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::access::export::{self, Session};
use crate::access::target::{self, Choice, Instance, TargetError};
use crate::access::{self, ssh, ssh_config, Found, Inventory};
use crate::report::Report;
use crate::store::Store;
use crate::vpn::{self, ApiSettings};

#[derive(Args)]
pub struct LsArgs {
    /// Project name or id (default: the connected project, else a choice).
    pub project: Option<String>,
    #[arg(short = 'P', long = "project-id")]
    pub project_id: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SshArgs {
    /// A service (`api`), a container (`node-id-13.runtime.api.zerops`), or nothing to choose.
    pub target: Option<String>,
    /// Which container of the service: its position from 1, or `any` running one.
    #[arg(long)]
    pub instance: Option<Instance>,
    /// Project name or id (default: the connected project that has the target).
    #[arg(long)]
    pub project: Option<String>,
    /// Connect first (`corridor vpn up <project>`) when the project is not connected.
    #[arg(long)]
    pub connect: bool,
    /// Passed to ssh: a command, or options such as -L and -A.
    #[arg(last = true)]
    pub ssh_args: Vec<String>,
}

#[derive(Args)]
pub struct SshConfigArgs {
    /// Project name or id (default: the connected project, else a choice).
    pub project: Option<String>,
    /// Also add one `Include` line for corridor's configurations to ~/.ssh/config.
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove that `Include` line from ~/.ssh/config again.
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Subcommand)]
pub enum Export {
    /// PuTTY saved sessions: session files for plink/psftp/PuTTY here, and a .reg for Windows.
    Putty {
        /// Project name or id (default: the connected project, else a choice).
        project: Option<String>,
        /// Also write the sessions as a .reg file to import on Windows.
        #[arg(long, value_name = "FILE")]
        reg: Option<PathBuf>,
    },
    /// A WinSCP.ini sessions section (SFTP, port 65437, root).
    Winscp {
        /// Project name or id (default: the connected project, else a choice).
        project: Option<String>,
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub async fn ls(api: ApiSettings, args: LsArgs, report: &mut dyn Report) -> Result<()> {
    let inventory = project_inventory(api, args.project_id.or(args.project).as_deref(), report).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inventory)?);
    } else {
        print_inventory(&inventory);
    }
    Ok(())
}

pub async fn ssh(api: ApiSettings, args: SshArgs, report: &mut dyn Report) -> Result<()> {
    let api_base = api.base.clone();
    let store = Store::open()?;
    let client = vpn::client(&store, api)?;
    let inventory = match access::find(&client, args.project.as_deref(), args.target.as_deref(), report).await? {
        Found::One(inventory) => inventory,
        Found::Several(several) => bail!(
            "{} in several projects ({}): name one with --project",
            args.target
                .as_deref()
                .map_or("containers".to_string(), |t| format!("{t:?} is")),
            names(&several)
        ),
        Found::Nowhere(searched) => bail!(
            "no service or container named {:?} in {}",
            args.target.unwrap_or_default(),
            if searched.is_empty() {
                "your projects (you have none)".to_string()
            } else {
                format!("project(s) {}", names(&searched))
            }
        ),
    };
    let choice = pick(&inventory, args.target.as_deref(), args.instance, report)?;
    if !inventory.connected {
        let up = format!("sudo corridor vpn up {}", inventory.project.name);
        if !args.connect {
            bail!(
                "not connected to project {}: run `{up}` first (or pass --connect)",
                inventory.project.name
            );
        }
        connect(&inventory, api_base.as_deref())?;
    }
    let known_hosts = ssh::known_hosts(store.dir());
    prepare_known_hosts(&known_hosts)?;
    let invocation = ssh::command(&choice.name, &known_hosts, &args.ssh_args);
    tracing::debug!(program = %invocation.program, args = ?invocation.args, "running ssh");
    exec(&invocation)
}

pub async fn ssh_config(api: ApiSettings, args: SshConfigArgs, report: &mut dyn Report) -> Result<()> {
    let store = Store::open()?;
    let line = ssh_config::include_line(store.dir());
    let user_config = user_ssh_config()?;
    if args.uninstall {
        let change = ssh_config::uninstall(&user_config, &line)?;
        match change {
            ssh_config::Change::Removed => {
                super::step(&format!("removed the Include line from {}", user_config.display()))
            }
            _ => println!("{} has no corridor Include line", user_config.display()),
        }
        return Ok(());
    }
    let inventory = project_inventory(api, args.project.as_deref(), report).await?;
    let path = ssh_config::project_file(store.dir(), &inventory.project.name);
    ssh_config::write(&path, &ssh_config::render(&inventory, &ssh::known_hosts(store.dir())))?;
    super::step(&format!(
        "{} hosts of project {} in {}",
        inventory.aliases().len(),
        inventory.project.name,
        path.display()
    ));
    if args.install {
        match ssh_config::install(&user_config, &line)? {
            ssh_config::Change::Added => super::step(&format!(
                "{} includes it (backup: {})",
                user_config.display(),
                ssh_config::backup_path(&user_config).display()
            )),
            _ => super::step(&format!("{} already includes it", user_config.display())),
        }
    } else {
        println!(
            "add this line at the top of {} (or run with --install):\n{line}",
            user_config.display()
        );
    }
    Ok(())
}

pub async fn export(api: ApiSettings, export: Export, report: &mut dyn Report) -> Result<()> {
    match export {
        Export::Putty { project, reg } => {
            let inventory = project_inventory(api, project.as_deref(), report).await?;
            let sessions = export::sessions(&inventory);
            if cfg!(unix) {
                let dir = putty_dir()?;
                for session in &sessions {
                    let path = export::putty_session_path(&dir, session);
                    write_new(&path, export::putty_session_file(session).as_bytes())?;
                }
                super::step(&format!(
                    "{} PuTTY sessions in {} (`plink -load {}`)",
                    sessions.len(),
                    dir.join("sessions").display(),
                    first_name(&sessions)
                ));
            }
            let reg = reg.or_else(|| {
                cfg!(windows).then(|| PathBuf::from(format!("corridor-{}-putty.reg", inventory.project.name)))
            });
            if let Some(reg) = reg {
                write_new(&reg, &export::utf16_with_bom(&export::putty_reg(&sessions)))?;
                super::step(&format!(
                    "{} (import it with `reg import` or a double-click)",
                    reg.display()
                ));
            }
        }
        Export::Winscp { project, output } => {
            let inventory = project_inventory(api, project.as_deref(), report).await?;
            let ini = export::winscp_ini(&export::sessions(&inventory));
            match output {
                Some(path) => {
                    write_new(&path, ini.as_bytes())?;
                    super::step(&format!("WinSCP sessions in {}", path.display()));
                }
                None => std::io::stdout().write_all(ini.as_bytes())?,
            }
        }
    }
    Ok(())
}

pub fn print_inventory(inventory: &Inventory) {
    let state = if inventory.connected {
        "connected".to_string()
    } else {
        format!("not connected: `sudo corridor vpn up {}`", inventory.project.name)
    };
    println!("{} ({}), {state}", inventory.project.name, inventory.project.id);
    if inventory.services.is_empty() {
        println!("  no services");
        return;
    }
    let mut rows = vec![["SERVICE", "TYPE", "#", "CONTAINER", "STATUS", "ADDRESSES"].map(String::from)];
    for service in &inventory.services {
        // The service's name and type on its first row only.
        let label = |row: usize| match row {
            0 => [service.name.clone(), service.kind.clone()],
            _ => [String::new(), String::new()],
        };
        if service.containers.is_empty() {
            let [name, kind] = label(0);
            rows.push([
                name,
                kind,
                "-".into(),
                "(no containers)".into(),
                service.status.clone(),
                String::new(),
            ]);
        }
        for (row, c) in service.containers.iter().enumerate() {
            let [name, kind] = label(row);
            let addresses: Vec<String> = c.addresses.iter().map(ToString::to_string).collect();
            rows.push([
                name,
                kind,
                c.instance.to_string(),
                c.name.clone().unwrap_or_else(|| "(not named yet)".into()),
                c.status.clone(),
                addresses.join(" "),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        println!("  {}", line.join("  ").trim_end());
    }
}

async fn project_inventory(api: ApiSettings, wanted: Option<&str>, report: &mut dyn Report) -> Result<Inventory> {
    let store = Store::open()?;
    let client = vpn::client(&store, api)?;
    let project = access::project(&client, wanted, report).await?;
    access::inventory(&client, &project).await
}

/// The target's container; several candidates → a choice on a terminal, the list elsewhere.
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

/// Runs `corridor vpn up <project>` as its own process: it needs the privileges this one was
/// started with, and prints its own progress.
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

#[cfg(unix)]
fn exec(invocation: &ssh::Invocation) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let error = Command::new(&invocation.program).args(&invocation.args).exec();
    Err(error).with_context(|| format!("running {} (is OpenSSH's client installed?)", invocation.program))
}

#[cfg(not(unix))]
fn exec(invocation: &ssh::Invocation) -> Result<()> {
    let status = Command::new(&invocation.program)
        .args(&invocation.args)
        .status()
        .with_context(|| format!("running {} (is the OpenSSH client installed?)", invocation.program))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn user_ssh_config() -> Result<PathBuf> {
    Ok(user_home()?.join(".ssh").join("config"))
}

/// `$PUTTYDIR`, else `~/.putty`: where PuTTY's Unix tools keep sessions.
fn putty_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PUTTYDIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(user_home()?.join(".putty"))
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

fn write_new(path: &Path, content: &[u8]) -> Result<()> {
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

fn first_name(sessions: &[Session]) -> &str {
    sessions.first().map_or("…", |s| s.name.as_str())
}
