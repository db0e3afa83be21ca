//! `corridor-daemon`: the long-running half of corridor, started by `corridor` itself. It is a
//! program of its own so that the processes that live as long as a connection map only the
//! tunnel and the responder, not the API client, the userspace stack and the commands: its code
//! is under half of `corridor`'s, and a process maps most of the code of the file it runs.
//!
//!   corridor-daemon --project ID           a connection's daemon (its configuration on stdin)
//!   corridor-daemon dns-service --mode M   the host-wide DNS responder

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use corridor::dns::{self, service::SUBCOMMAND};

fn main() -> ExitCode {
    corridor::logging::init(0, true);
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--project", project] => corridor::daemon::main(project),
        [command, "--mode", mode] if command == SUBCOMMAND => {
            let mode: dns::Mode = serde_json::from_value(mode.into()).map_err(|_| anyhow!("no DNS mode {mode:?}"))?;
            dns::service::main(mode)
        }
        _ => bail!(
            "corridor-daemon is started by corridor (`corridor vpn up`), not by hand \
             (corridor-daemon --project ID | corridor-daemon {SUBCOMMAND} --mode MODE)"
        ),
    }
}
