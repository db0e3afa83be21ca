//! `ls`, `ssh`, `ssh-config` and `export`: their arguments, and the text and JSON they print.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::access::ssh::Invocation;
use crate::access::ssh_config::Change;
use crate::access::target::Instance;
use crate::access::{self, IncludeAction, Inventory, SshOptions};
use crate::account::ApiSettings;
use crate::report::Report;

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
    /// Reach the containers through `corridor connect` (no `vpn up`, no root) instead of the tunnel.
    #[arg(long, conflicts_with = "uninstall")]
    pub proxy: bool,
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
    let inventory = access::list(api, args.project_id.or(args.project).as_deref(), report).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inventory)?);
    } else {
        print_inventory(&inventory);
    }
    Ok(())
}

pub async fn ssh(api: ApiSettings, args: SshArgs, report: &mut dyn Report) -> Result<()> {
    let options = SshOptions {
        target: args.target,
        instance: args.instance,
        project: args.project,
        connect: args.connect,
        ssh_args: args.ssh_args,
    };
    let invocation = access::ssh_command(api, options, report).await?;
    tracing::debug!(program = %invocation.program, args = ?invocation.args, "running ssh");
    exec(&invocation)
}

pub async fn ssh_config(api: ApiSettings, args: SshConfigArgs, report: &mut dyn Report) -> Result<()> {
    let action = match (args.install, args.uninstall) {
        (true, _) => IncludeAction::Install,
        (_, true) => IncludeAction::Uninstall,
        _ => IncludeAction::None,
    };
    let done = access::ssh_config(api, args.project.as_deref(), action, args.proxy, report).await?;
    let user_config = done.user_config.display();
    if let Some((path, hosts)) = &done.written {
        super::step(&format!("{hosts} host names in {}", path.display()));
    }
    match (action, done.include) {
        (IncludeAction::None, _) => println!(
            "add this line at the top of {user_config} (or run with --install):\n{}",
            done.include_line
        ),
        (_, Some(Change::Added)) => super::step(&format!(
            "{user_config} includes it (backup: {})",
            access::ssh_config::backup_path(&done.user_config).display()
        )),
        (_, Some(Change::Removed)) => super::step(&format!("removed the Include line from {user_config}")),
        (IncludeAction::Install, _) => super::step(&format!("{user_config} already includes it")),
        (IncludeAction::Uninstall, _) => println!("{user_config} has no corridor Include line"),
    }
    Ok(())
}

pub async fn export(api: ApiSettings, export: Export, report: &mut dyn Report) -> Result<()> {
    match export {
        Export::Putty { project, reg } => {
            let done = access::export_putty(api, project.as_deref(), reg, report).await?;
            if let Some(dir) = &done.session_dir {
                let first = done.sessions.first().map_or("…", |s| s.name.as_str());
                super::step(&format!(
                    "{} PuTTY sessions in {} (`plink -load {first}`)",
                    done.sessions.len(),
                    dir.display()
                ));
            }
            if let Some(reg) = &done.reg {
                super::step(&format!(
                    "{} (import it with `reg import` or a double-click)",
                    reg.display()
                ));
            }
        }
        Export::Winscp { project, output } => {
            let ini = access::export_winscp(api, project.as_deref(), output.as_deref(), report).await?;
            match output {
                Some(path) => super::step(&format!("WinSCP sessions in {}", path.display())),
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

fn exec(invocation: &Invocation) -> Result<()> {
    let error = crate::platform::exec(Command::new(&invocation.program).args(&invocation.args));
    Err(error).with_context(|| format!("running {} (is OpenSSH's client installed?)", invocation.program))
}
