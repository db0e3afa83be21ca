//! `corridor-daemon`: the long-running half of corridor, started by `corridor` itself. It is a
//! program of its own so that the processes that live as long as a connection map only the
//! tunnel and the responder, not the API client, the userspace stack and the commands: its code
//! is under half of `corridor`'s, and a process maps most of the code of the file it runs.
//!
//!   corridor-daemon --project ID           a connection's daemon (its configuration on stdin)
//!   corridor-daemon dns-service --mode M   the host-wide DNS responder
//!   corridor-daemon names --project ID --name NAME --dns ADDR
//!                                          a project's names without a tunnel (for the tests of
//!                                          the DNS service where no tunnel can be built)

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
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
        ["names", ref rest @ ..] => corridor::daemon::names_only(names_only_args(rest)?),
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

/// `names`' flags, each with a value: `--project`, `--name`, `--dns` (IP:PORT).
fn names_only_args(args: &[&str]) -> Result<corridor::daemon::NamesOnly> {
    let mut flags = std::collections::BTreeMap::new();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("{} has no value", pair[0]);
        };
        if !["--project", "--name", "--dns"].contains(flag) || flags.insert(*flag, *value).is_some() {
            bail!("corridor-daemon names: unexpected {flag}");
        }
    }
    let get = |flag: &str| {
        flags
            .get(flag)
            .copied()
            .with_context(|| format!("corridor-daemon names needs {flag}"))
    };
    Ok(corridor::daemon::NamesOnly {
        project_id: corridor::project_id::ProjectId::parse(get("--project")?)?,
        project_name: get("--name")?.to_string(),
        dns: get("--dns")?.parse().context("--dns takes IP:PORT")?,
    })
}
