use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use corridor::cli::{self, Cli, Command, Terminal, Vpn};
use corridor::{account, connections, vpn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    corridor::logging::init(cli.verbose, false);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            cli::docs::completions(shell, &mut std::io::stdout());
            return Ok(());
        }
        Command::ManPage => return cli::docs::man_page(&mut std::io::stdout()),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let api = account::ApiSettings {
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
                account::login(api, token, &mut term).await
            }
            Command::Regions { json } => {
                cli::regions::print(&account::regions(&api).await?, json);
                Ok(())
            }
            Command::Vpn(Vpn::Up(args)) => vpn::up(api, args.into(), &mut term).await.map(drop),
            Command::Vpn(Vpn::Down { project }) => connections::down(project.as_deref(), &mut term).await.map(drop),
            Command::Vpn(Vpn::Status { json }) => {
                let statuses = connections::status(&mut term).await?;
                cli::print_status(&statuses, json);
                Ok(())
            }
            Command::Vpn(Vpn::Clear { project, project_id }) => {
                cli::keys::clear(api, project_id.or(project).as_deref(), &mut term).await
            }
            Command::Vpn(Vpn::Recheck) => {
                let mut input = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
                let request = serde_json::from_str(&input).context("reading the recheck request")?;
                println!("{}", serde_json::to_string(&vpn::recheck(request).await)?);
                Ok(())
            }
            Command::Vpn(Vpn::Key(command)) => cli::keys::key(api, command, &mut term).await,
            Command::Vpn(Vpn::Config(args)) => cli::keys::config(api, args, &mut term).await,
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
            Command::Completions { .. } | Command::ManPage => {
                unreachable!("handled above")
            }
        }
    })
}
