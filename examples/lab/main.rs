//! The lab: a simulated platform project in network namespaces on this machine.
//!
//! `cargo run --example lab -- up | down | status [--json] | misbehave MODE | gateway-restart [PROJECT] |
//! gateway-rekey [PROJECT] [--port N] | path-mtu N|off`
//! (as root).
//! The demo, the end-to-end tests and the benchmark all drive this one binary. Network
//! namespaces are Linux's: elsewhere it only says so.

#[cfg(target_os = "linux")]
mod api;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod path;
#[cfg(target_os = "linux")]
mod plan;
#[cfg(target_os = "linux")]
mod setup;

#[cfg(target_os = "linux")]
use anyhow::{bail, Result};
#[cfg(target_os = "linux")]
use clap::{Parser, Subcommand};

#[cfg(target_os = "linux")]
use plan::Plan;

#[cfg(target_os = "linux")]
#[derive(Parser)]
#[command(about = "A simulated platform project in network namespaces (needs root)")]
struct Args {
    /// Prefix of every namespace, link and file the lab creates (at most 8 letters or digits).
    #[arg(long, env = "CORRIDOR_LAB_PREFIX", default_value = "crl", global = true)]
    prefix: String,
    /// Address-plan slot (0-127): labs with different slots never share an address.
    #[arg(long, env = "CORRIDOR_LAB_SLOT", default_value_t = 0, global = true)]
    slot: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[cfg(target_os = "linux")]
#[derive(Subcommand)]
enum Cmd {
    /// Build the lab: namespaces, gateways, containers, DNS, the control-plane API.
    Up,
    /// Remove everything the lab created (idempotent; also after a crash).
    Down,
    /// Show whether the lab is up and what a script needs to use it.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Restart a project's WireGuard gateway: same key, port and peers, every session lost.
    GatewayRestart {
        #[arg(default_value = "demo")]
        project: String,
    },
    /// Give a project's gateway a new key (and, with --port, a new listen port), as a redeployed
    /// gateway: peers stay, sessions are lost, and the API answers the new key and endpoint.
    GatewayRekey {
        #[arg(default_value = "demo")]
        project: String,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Narrow the path between the laptop and the project gateways: every IP packet larger
    /// than N bytes (576-9000) is dropped silently, both ways, with no ICMP; `off` restores
    /// the full path. Takes effect at once, also under a running connection.
    PathMtu {
        #[arg(value_name = "N|off")]
        size: String,
    },
    /// Make the lab misbehave: ok, slow MS, error500, garbage, ratelimit, expired, no-icmp,
    /// ipv6-only, no-dns (one at a time; `ok` undoes them all).
    Misbehave { mode: Vec<String> },
    /// Serve the control-plane API (run by `up` inside the underlay namespace).
    #[command(hide = true)]
    Api,
}

#[cfg(target_os = "linux")]
fn main() -> Result<()> {
    let args = Args::parse();
    if args.prefix.is_empty() || args.prefix.len() > 8 || !args.prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--prefix must be 1 to 8 letters or digits");
    }
    if args.slot > 127 {
        bail!("--slot must be 0 to 127");
    }
    let plan = Plan::new(&args.prefix, args.slot);
    match args.cmd {
        Cmd::Up => {
            require_root()?;
            setup::up(&plan)
        }
        Cmd::Down => {
            require_root()?;
            setup::down(&plan)
        }
        Cmd::GatewayRestart { project } => {
            require_root()?;
            setup::restart_gateway(&plan, &project)
        }
        Cmd::GatewayRekey { project, port } => {
            require_root()?;
            setup::rekey_gateway(&plan, &project, port)
        }
        Cmd::PathMtu { size } => {
            require_root()?;
            setup::path_mtu(&plan, path::parse(&size)?)
        }
        Cmd::Status { json } => setup::status(&plan, json),
        Cmd::Misbehave { mode } => {
            require_root()?;
            let text = mode.join(" ");
            let parsed = api::Mode::parse(&text).map_err(anyhow::Error::msg)?;
            setup::misbehave(&plan, parsed, &text)
        }
        Cmd::Api => api::serve(
            plan.clone(),
            api::ApiOptions {
                listen: plan.api_addrs(),
                configure_wg: true,
            },
        ),
    }
}

#[cfg(target_os = "linux")]
fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and needs root: run it with sudo");
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the lab builds network namespaces, which only Linux has");
    std::process::exit(1);
}
