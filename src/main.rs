use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use corridor::cli::{self, Cli, Command, Vpn};
use corridor::{store::Store, vpn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, matches!(cli.command, Command::Daemon));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Daemon = cli.command {
        return vpn::daemon_main();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let api = vpn::ApiSettings {
        base: cli.api.clone(),
        timeout: Duration::from_secs(cli.api_timeout),
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Login { token } => login(api, token).await,
            Command::Vpn(Vpn::Up(args)) => vpn::up(api, args).await,
            Command::Vpn(Vpn::Down { project }) => vpn::down(project).await,
            Command::Vpn(Vpn::Status { json }) => vpn::status(json).await,
            Command::Vpn(Vpn::Clear { project, project_id }) => vpn::clear(api, project_id.or(project)).await,
            Command::Ls(args) => cli::access::ls(api, args).await,
            Command::Ssh(args) => cli::access::ssh(api, args).await,
            Command::SshConfig(args) => cli::access::ssh_config(api, args).await,
            Command::Export(export) => cli::access::export(api, export).await,
            Command::Daemon => unreachable!("handled above"),
        }
    })
}

async fn login(api: vpn::ApiSettings, token: String) -> Result<()> {
    let store = Store::open()?;
    let api_base = api.base.clone();
    let client = vpn::client_with_token(&store, api, token.clone())?;
    let user = client
        .user_info()
        .await
        .context("checking the token with the platform")?;
    store.save_token(&token)?;
    if let Some(base) = api_base {
        store.save_api_base(&base)?;
    }
    cli::step(&format!("logged in as {} ({})", user.full_name, user.email));
    Ok(())
}

fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "corridor=info",
        (2, _) => "corridor=debug",
        _ => "corridor=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!daemon)
        .init();
}
