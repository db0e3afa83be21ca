//! `vpn up`, `vpn down`, `vpn status`, `vpn clear`: the CLI side of a connection. It talks to
//! the platform and to daemons; it never holds a tunnel itself (except with --foreground).

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use crate::api::{self, types::Project, Client};
use crate::cli::{self, UpArgs};
use crate::daemon::{self, control, DaemonConfig, Event, Status};
use crate::host;
use crate::paths::ConnectionFiles;
use crate::store::Store;

pub async fn up(api: ApiSettings, args: UpArgs) -> Result<()> {
    // Cheap checks first: nothing is registered for a machine that cannot build the tunnel.
    host::preflight(false)?;
    clean_up_crashed().await;
    let store = Store::open()?;
    let client = client(&store, api)?;
    let project = choose_project(&client, args.project_id.as_deref().or(args.project.as_deref())).await?;
    let files = ConnectionFiles::for_project(&project.id);
    if let Ok(running) = control::request(&files.socket, control::Command::Status).await {
        replace_or_refuse(&running, args.auto_disconnect)?;
        down_one(&project.id, &files).await?;
    }

    let keys = store.project_key(&project.id)?;
    let item = client
        .register_vpn_key(&project.id, &keys.public_base64())
        .await
        .with_context(|| format!("registering this machine's key with project {}", project.name))?;
    cli::step("key registered");
    let vpn = item.to_config().context("the platform's VPN answer")?;
    host::preflight(vpn.addresses.iter().any(|a| a.addr().is_ipv6()))?;
    let mut probe_targets: Vec<IpAddr> = item.project.ipv6.network.gateway.parse().into_iter().collect();
    probe_targets.push(vpn.dns);
    let config = DaemonConfig {
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        interface: args.interface.clone(),
        mtu: args.mtu,
        keepalive_secs: args.keepalive,
        handshake_timeout_secs: args.timeout,
        private_key: base64::engine::general_purpose::STANDARD.encode(keys.secret.to_bytes()),
        server_public_key: base64::engine::general_purpose::STANDARD.encode(vpn.server_public_key),
        endpoint: vpn.endpoint.clone(),
        addresses: vpn.addresses.clone(),
        networks: vpn.allowed_networks.clone(),
        dns: Some(vpn.dns),
        dns_mode: if args.skip_dns_setup {
            crate::dns::Mode::Off
        } else {
            args.dns
        },
        probe_targets,
    };

    if args.foreground {
        let mut ready = |event: &Event| match event {
            Event::Ready { status } => cli::print_connected(status),
            Event::Failed { .. } => {}
            other => cli::progress(other),
        };
        return daemon::run(config, files, &mut ready).await;
    }
    let status = spawn_daemon(&config, &files, Duration::from_secs(args.timeout + 10))?;
    cli::print_connected(&status);
    Ok(())
}

pub async fn down(project: Option<String>) -> Result<()> {
    let mut found = false;
    for (id, files) in ConnectionFiles::all() {
        let name = saved_status(&files).map(|s| s.project_name);
        if project
            .as_deref()
            .is_some_and(|p| p != id && Some(p) != name.as_deref())
        {
            continue;
        }
        found = true;
        down_one(&id, &files).await?;
        cli::step(&format!("disconnected from {} (host restored)", name.unwrap_or(id)));
    }
    if !found {
        match project {
            Some(p) => println!("not connected to {p}"),
            None => println!("not connected"),
        }
    }
    Ok(())
}

pub async fn status(json: bool) -> Result<()> {
    clean_up_crashed().await;
    let mut statuses = Vec::new();
    for (id, files) in ConnectionFiles::all() {
        match control::request(&files.socket, control::Command::Status).await {
            Ok(status) => statuses.push(status),
            Err(e) if !daemon_gone(&files, &e) => eprintln!(
                "connection {id} is up, but its control socket is not yours: `sudo corridor vpn status` shows it"
            ),
            Err(_) => {}
        }
    }
    cli::print_status(&statuses, json);
    Ok(())
}

pub async fn clear(api: ApiSettings, project: Option<String>) -> Result<()> {
    let store = Store::open()?;
    let client = client(&store, api)?;
    let project = choose_project(&client, project.as_deref()).await?;
    let files = ConnectionFiles::for_project(&project.id);
    if control::request(&files.socket, control::Command::Status).await.is_ok() {
        bail!("connected to {}: run `corridor vpn down` first", project.name);
    }
    let keys = store.project_key(&project.id)?;
    match client.delete_vpn_key(&project.id, &keys.public_base64()).await {
        Err(e) if e.is_not_found() => {}
        other => other.context("removing the key from the platform")?,
    }
    store.remove_project_key(&project.id)?;
    cli::step(&format!(
        "key for {} removed from the platform and this machine",
        project.name
    ));
    Ok(())
}

/// Runs the daemon: reads the configuration from stdin, reports progress on stdout as JSON
/// lines until it is ready (or failed), then keeps running in the background.
pub fn daemon_main() -> Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let config: DaemonConfig = serde_json::from_str(&input).context("reading the daemon configuration")?;
    let files = ConnectionFiles::for_project(&config.project_id);
    // One thread: the data path is one task that owns the session, and the responder's work is
    // small beside it; cross-thread wakeups would cost more than they give on a laptop's cores.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stdout = std::io::stdout();
    let mut report = move |event: &Event| {
        if let Ok(line) = serde_json::to_string(event) {
            // The CLI may be gone already (interrupted); the daemon carries on regardless.
            let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        }
    };
    runtime.block_on(daemon::run(config, files, &mut report))
}

/// Starts the daemon in its own session and follows its progress until it is ready.
fn spawn_daemon(config: &DaemonConfig, files: &ConnectionFiles, timeout: Duration) -> Result<Status> {
    if let Some(dir) = files.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
    let mut command = Command::new(std::env::current_exe().context("locating the corridor binary")?);
    command
        .arg("daemon")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "corridor=info");
    }
    // SAFETY: setsid is async-signal-safe; the daemon must not die with this terminal.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = command.spawn().context("starting the corridor daemon")?;
    let mut stdin = child.stdin.take().context("daemon stdin")?;
    stdin.write_all(&serde_json::to_vec(config)?)?;
    drop(stdin);

    let stdout = child.stdout.take().context("daemon stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Event>(&line) {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Ready { status }) => return Ok(*status),
            Ok(Event::Failed { error }) => {
                let _ = child.wait();
                bail!("{error}\n(daemon log: {})", files.log.display());
            }
            Ok(event) => cli::progress(&event),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                bail!(
                    "the daemon exited ({status}) before it was ready; its log is {}",
                    files.log.display()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // It undoes its own host changes on SIGTERM.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = child.wait();
                bail!(
                    "the tunnel was not ready within {}s; the daemon log is {}",
                    timeout.as_secs(),
                    files.log.display()
                );
            }
        }
    }
}

/// Stops one connection: asks its daemon, waits for it, then replays whatever journal is left
/// (all of it, if the daemon had crashed).
async fn down_one(id: &str, files: &ConnectionFiles) -> Result<()> {
    if let Ok(status) = control::request(&files.socket, control::Command::Down).await {
        let pid = nix::unistd::Pid::from_raw(status.pid as i32);
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if nix::sys::signal::kill(pid, None).is_ok() {
            tracing::warn!(%pid, "daemon did not stop in time; killing it");
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    host::restore(&files.journal).with_context(|| format!("restoring the host after connection {id}"))?;
    for path in [&files.socket, &files.state] {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Connections whose daemon is gone (killed, crashed, rebooted) are undone quietly.
async fn clean_up_crashed() {
    for (id, files) in ConnectionFiles::all() {
        let Err(e) = control::request(&files.socket, control::Command::Status).await else {
            continue;
        };
        if daemon_gone(&files, &e) {
            match down_one(&id, &files).await {
                Ok(()) => tracing::info!(project = %id, "cleaned up after a connection that had stopped"),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
    }
}

/// A daemon that does not answer is gone unless its socket only refused us (another user's
/// connection) or the pid it recorded still runs: only then may its journal be replayed.
fn daemon_gone(files: &ConnectionFiles, error: &anyhow::Error) -> bool {
    let refused_us = error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    let pid_runs = saved_status(files).is_some_and(|s| {
        let pid = nix::unistd::Pid::from_raw(s.pid as i32);
        matches!(
            nix::sys::signal::kill(pid, None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
    });
    !refused_us && !pid_runs
}

fn saved_status(files: &ConnectionFiles) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(&files.state).ok()?).ok()
}

fn replace_or_refuse(running: &Status, auto_disconnect: bool) -> Result<()> {
    if auto_disconnect {
        return Ok(());
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "already connected to {}; disconnect and reconnect? [y/N] ",
            running.project_name
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim().eq_ignore_ascii_case("y") {
            return Ok(());
        }
    }
    bail!(
        "already connected to {} on {}: run `corridor vpn down` first, or pass --auto-disconnect",
        running.project_name,
        running.interface
    )
}

/// Where and how patiently to talk to the platform.
pub struct ApiSettings {
    pub base: Option<String>,
    pub timeout: Duration,
}

pub fn client(store: &Store, settings: ApiSettings) -> Result<Client> {
    let token = store.token()?.context(
        "not logged in: run `corridor login --token <token>` (a personal access token from the platform), \
         or set CORRIDOR_TOKEN",
    )?;
    client_with_token(store, settings, token)
}

pub fn client_with_token(store: &Store, settings: ApiSettings, token: String) -> Result<Client> {
    let base = settings
        .base
        .or(store.api_base()?)
        .unwrap_or_else(|| api::DEFAULT_BASE.to_string());
    let connect = settings.timeout.min(api::CONNECT_TIMEOUT);
    Ok(Client::new(&base, Some(token))?.with_timeouts(connect, settings.timeout)?)
}

/// A project by id or name; without one, or with several matches, a picker on a terminal and a
/// clear error elsewhere.
pub async fn choose_project(client: &Client, wanted: Option<&str>) -> Result<Project> {
    let candidates = match wanted {
        Some(wanted) => client.find_projects(wanted).await.context("looking up the project")?,
        None => all_projects(client).await?,
    };
    match (candidates.len(), wanted) {
        (1, _) => return Ok(candidates.into_iter().next().expect("one")),
        (0, Some(wanted)) => {
            let names: Vec<String> = all_projects(client).await?.into_iter().map(|p| p.name).collect();
            bail!(
                "no project named or with id {wanted:?}; your projects: {}",
                names.join(", ")
            );
        }
        (0, None) => bail!("your account has no projects"),
        _ => {}
    }
    let listing: Vec<String> = candidates.iter().map(|p| format!("{} ({})", p.name, p.id)).collect();
    if !std::io::stdin().is_terminal() {
        bail!(
            "several projects match; name one by id with -P:\n  {}",
            listing.join("\n  ")
        );
    }
    for (i, line) in listing.iter().enumerate() {
        eprintln!("  {}) {line}", i + 1);
    }
    eprint!("project number: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let n: usize = answer.trim().parse().context("not a number")?;
    candidates
        .into_iter()
        .nth(n.wrapping_sub(1))
        .context("no such project number")
}

pub async fn all_projects(client: &Client) -> Result<Vec<Project>> {
    let user = client.user_info().await.context("asking the platform who you are")?;
    let mut projects = Vec::new();
    for membership in user.client_user_list.iter().filter(|m| m.is_active()) {
        projects.extend(client.search_projects(&membership.client_id).await?);
    }
    Ok(projects)
}
