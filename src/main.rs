use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use corridor::cli::{self, Cli, Command, Terminal, Vpn};
use corridor::vpn;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.verbose,
        matches!(cli.command, Command::Daemon { .. } | Command::DnsService { .. }),
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Daemon { project } = &cli.command {
        return vpn::daemon_main(project);
    }
    match cli.command {
        Command::DnsService { mode } => return corridor::dns::service::main(mode),
        Command::Completions { shell } => {
            cli::docs::completions(shell, &mut std::io::stdout());
            return Ok(());
        }
        Command::ManPage => return cli::docs::man_page(&mut std::io::stdout()),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let api = vpn::ApiSettings {
        base: cli.api.clone(),
        region: cli.region.clone(),
        region_url: Some(cli.region_url.clone()),
        timeout: Duration::from_secs(cli.api_timeout),
    };
    let mut term = Terminal;
    runtime.block_on(async move {
        match cli.command {
            Command::Login { token } => {
                let token = token.or_else(corridor::store::token_from_env).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no token: pass --token (a personal access token from the platform), \
                         or set CORRIDOR_TOKEN or ZEROPS_TOKEN"
                    )
                })?;
                vpn::login(api, token, &mut term).await
            }
            Command::Regions { json } => {
                cli::regions::print(&vpn::regions(&api).await?, json);
                Ok(())
            }
            Command::Vpn(Vpn::Up(args)) => vpn::up(api, args.into(), &mut term).await.map(drop),
            Command::Vpn(Vpn::Down { project }) => vpn::down(project.as_deref(), &mut term).await.map(drop),
            Command::Vpn(Vpn::Status { json }) => {
                let statuses = vpn::status(&mut term).await?;
                cli::print_status(&statuses, json);
                Ok(())
            }
            Command::Vpn(Vpn::Clear { project, project_id }) => {
                vpn::clear(api, project_id.or(project).as_deref(), &mut term).await
            }
            Command::Forward(args) => {
                let options = args.options().map_err(anyhow::Error::msg)?;
                corridor::userspace::forward(api, options, &mut cli::userspace::Live::new()).await
            }
            Command::Connect(args) => corridor::userspace::connect(api, args.options(), &mut term).await,
            Command::Proxy(args) => {
                corridor::userspace::proxy(api, args.options(), &mut cli::userspace::Live::new()).await
            }
            Command::Ls(args) => cli::access::ls(api, args, &mut term).await,
            Command::Ssh(args) => cli::access::ssh(api, args, &mut term).await,
            Command::SshConfig(args) => cli::access::ssh_config(api, args, &mut term).await,
            Command::Export(export) => cli::access::export(api, export, &mut term).await,
            Command::Doctor(args) => cli::doctor::doctor(api, args).await,
            Command::Daemon { .. } | Command::DnsService { .. } | Command::Completions { .. } | Command::ManPage => {
                unreachable!("handled above")
            }
        }
    })
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
