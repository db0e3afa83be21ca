//! `vpn up`, `vpn down`, `vpn status`: the command side of a connection. It talks
//! to the platform and to daemons; it never holds a tunnel itself (except with --foreground).
//! It reports through [`Report`] and returns data; rendering is the CLI's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::api::{self, types::Project, Client, ProjectId};
use crate::daemon::{self, control, DaemonConfig, Event, Status};
use crate::dns;
use crate::host;
use crate::paths::ConnectionFiles;
use crate::platform::{self, Pid, Stop, UntrustedServer};
use crate::report::{Progress, Report};
use crate::store::Store;

/// What `vpn up` is asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Project name or id; `None` asks.
    pub project: Option<String>,
    pub mtu: u16,
    /// Replace a running connection to the same project without asking.
    pub auto_disconnect: bool,
    /// Serve in this process until stopped, instead of in a background daemon.
    pub foreground: bool,
    pub interface: Option<String>,
    /// Seconds to wait for the tunnel to carry traffic.
    pub timeout_secs: u64,
    pub dns: dns::Mode,
    pub keepalive_secs: u16,
    /// Bare names go to the highest priority connection first (`--dns-priority`).
    pub dns_priority: i32,
}

/// Connects; reports the connection once it carries traffic and returns its status then (with
/// `foreground`, once it has been stopped again).
pub async fn up(api: ApiSettings, options: UpOptions, report: &mut dyn Report) -> Result<Status> {
    // Cheap checks first: nothing is registered for a machine that cannot build the tunnel.
    host::preflight(false)?;
    platform::daemon_exe()?;
    clean_up_crashed(report).await;
    if let Err(e) = dns::service::repair().await {
        report.progress(Progress::Warning(format!("{e:#}")));
    }
    let store = Store::open()?;
    let client = client(&store, api).await?;
    let project = choose_project(&client, options.project.as_deref(), report).await?;
    let files = ConnectionFiles::for_project(&project.id);
    if let Ok(running) = control::request(&files.socket, control::Command::Status).await {
        replace_or_refuse(&running, options.auto_disconnect, report)?;
        down_one(&project.id, &files).await?;
    }

    let keys = store.project_key(&project.id)?;
    let item = client
        .register_vpn_key(&project.id, &keys.public_base64())
        .await
        .with_context(|| format!("registering this machine's key with project {}", project.name))?;
    report.progress(Progress::KeyRegistered { project: &project.name });
    let vpn = item.to_config().context("the platform's VPN answer")?;
    host::preflight(vpn.addresses.iter().any(|a| a.addr().is_ipv6()))?;
    report_route_clashes(&vpn.allowed_networks, item.dns_server().ok(), report);
    // The DNS address is read only to set DNS up: an answer without one still connects.
    let (dns, dns_missing) = match options.dns {
        dns::Mode::Off => (None, None),
        _ => match item.dns_server() {
            Ok(addr) => (Some(addr), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let config = DaemonConfig {
        project_id: project.id.clone(),
        project_name: project.name.clone(),
        interface: options.interface.clone(),
        mtu: options.mtu,
        keepalive_secs: options.keepalive_secs,
        handshake_timeout_secs: options.timeout_secs,
        private_key: keys.secret.clone(),
        server_public_key: x25519_dalek::PublicKey::from(vpn.server_public_key),
        endpoint: vpn.endpoint.clone(),
        addresses: vpn.addresses.clone(),
        networks: vpn.allowed_networks.clone(),
        dns,
        dns_mode: options.dns,
        dns_priority: options.dns_priority,
        probe_targets: vpn.gateways.clone(),
        platform: store.token()?.map(|token| daemon::heal::PlatformAccess {
            api: client.base().to_string(),
            token,
        }),
    };
    if let Some(reason) = &dns_missing {
        report.progress(Progress::DnsSkipped { reason });
    }

    if options.foreground {
        let mut ready = None;
        let mut events = |event: &Event| match event {
            Event::Ready { status } => {
                report.progress(Progress::Connected(status));
                ready = Some((**status).clone());
            }
            other => report.progress(Progress::Connection(other)),
        };
        daemon::run(config, files, &mut events).await?;
        return ready.context("stopped before the tunnel was ready");
    }
    spawn_daemon(&config, &files, Duration::from_secs(options.timeout_secs + 10), report)
}

/// Says, before the routes are added, where the host would take project addresses elsewhere; the
/// connection goes ahead (the clash may be intended, and the rest of the project works).
fn report_route_clashes(networks: &[ipnet::IpNet], dns: Option<std::net::IpAddr>, report: &mut dyn Report) {
    match host::route_clashes(networks, None) {
        Ok(Some(clashes)) => {
            for clash in &clashes {
                tracing::warn!(%clash, "route clash");
                report.progress(Progress::RouteClash(clash));
            }
            if let Some(dns) = dns.filter(|dns| clashes.iter().any(|c| c.affected.contains(dns))) {
                report.progress(Progress::Warning(format!(
                    "the project's DNS server {dns} is among those addresses: the project's names will not resolve"
                )));
            }
        }
        Ok(None) => tracing::debug!("route clashes are not checked on this platform"),
        Err(e) => report.progress(Progress::Warning(format!("{e:#}: route clashes not checked"))),
    }
}

/// `corridor vpn recheck`, run by a daemon whose gateway stopped answering: is the key still
/// registered (else it is registered again), and what does the project's side look like now?
pub async fn recheck(request: daemon::heal::RecheckRequest) -> daemon::heal::Recheck {
    use daemon::heal::Recheck;
    let project = &request.project_name;
    let client = match Client::new(&request.access.api, Some(request.access.token.clone()))
        .and_then(|c| c.with_timeouts(api::CONNECT_TIMEOUT, Duration::from_secs(10)))
    {
        Ok(client) => client,
        Err(e) => return refusal(&e, project),
    };
    let id = &request.project_id;
    let (item, reregistered) = match client.vpn_key(id, &request.public_key).await {
        Ok(item) => (item, false),
        Err(e) if e.code() == Some("vpnPublicKeyNotFound") || (e.is_not_found() && e.code().is_none()) => {
            tracing::info!(%project, "the key is gone from the project; registering it again");
            match client.register_vpn_key(id, &request.public_key).await {
                Ok(item) => (item, true),
                Err(e) => return refusal(&e, project),
            }
        }
        Err(e) => return refusal(&e, project),
    };
    let vpn = match item.to_config() {
        Ok(vpn) => vpn,
        Err(e) => {
            return Recheck::Unreachable {
                problem: format!("the platform's VPN answer: {e}"),
            }
        }
    };
    let answer = daemon::heal::Answer {
        server_public_key: crate::keys::encode(&vpn.server_public_key),
        endpoint: vpn.endpoint,
        addresses: vpn.addresses,
        networks: vpn.allowed_networks,
    };
    match reregistered {
        true => Recheck::Reregistered { answer },
        false => Recheck::Registered { answer },
    }
}

/// What a failed call to the platform means for a running connection, with its fix.
fn refusal(e: &api::ApiError, project: &str) -> daemon::heal::Recheck {
    use daemon::heal::Recheck;
    let reconnect = format!("`sudo corridor vpn up {project} --auto-disconnect`");
    if e.is_auth() {
        return Recheck::Refused {
            problem: format!("the platform refused the token: {e}"),
            fix: format!("`corridor login --token <token>` with a new personal access token, then {reconnect}"),
        };
    }
    match e.status() {
        Some(403) => Recheck::Refused {
            problem: format!("no permission for project {project}'s VPN: {e}"),
            fix: format!("ask the project's owner for access, or log in with a token that has it, then {reconnect}"),
        },
        Some(404) => Recheck::Refused {
            problem: format!("project {project} is gone or no longer yours: {e}"),
            fix: "`sudo corridor vpn down`, then `corridor vpn up` another project".into(),
        },
        _ => Recheck::Unreachable { problem: e.to_string() },
    }
}

/// Disconnects `project` (name or id), or every connection; returns the projects disconnected.
pub async fn down(project: Option<&str>, report: &mut dyn Report) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (id, files) in ConnectionFiles::all() {
        let name = saved_status(&files).map(|s| s.project_name);
        if project.is_some_and(|p| p != id.as_str() && Some(p) != name.as_deref()) {
            continue;
        }
        down_one(&id, &files).await?;
        let name = name.unwrap_or_else(|| id.to_string());
        report.progress(Progress::Disconnected { project: &name });
        done.push(name);
    }
    if done.is_empty() {
        report.progress(Progress::NotConnected { project });
    }
    // A DNS service that died with no connection left still holds the resolver.
    dns::service::repair().await?;
    Ok(done)
}

/// The status of every connection this user may see.
pub async fn status(report: &mut dyn Report) -> Result<Vec<Status>> {
    clean_up_crashed(report).await;
    let mut statuses = Vec::new();
    for (id, files) in ConnectionFiles::all() {
        match control::request(&files.socket, control::Command::Status).await {
            Ok(status) => statuses.push(status),
            Err(e) if UntrustedServer::is_cause_of(&e) => report.progress(Progress::Warning(format!(
                "connection {id}: {e:#}; corridor neither talks to it nor replays its journal"
            ))),
            Err(e) if !daemon_gone(&id, &files, &e) => report.progress(Progress::Warning(format!(
                "connection {id} is up, but its control socket is not yours: `sudo corridor vpn status` shows it"
            ))),
            Err(_) => {}
        }
    }
    Ok(statuses)
}

/// Whether a `vpn up` connection to the project runs: its daemon answers, or (its socket being
/// another user's, say root's) the pid it recorded is that project's daemon.
pub async fn connection_running(id: &ProjectId) -> bool {
    let files = ConnectionFiles::for_project(id);
    match control::request(&files.socket, control::Command::Status).await {
        Ok(_) => true,
        Err(e) => !daemon_gone(id, &files, &e),
    }
}

/// Runs the daemon: reads the configuration from stdin, reports progress on stdout as JSON
/// lines until it is ready (or failed), then keeps running in the background. `project` is the
/// id it was started for (in its command line, so that it can be recognised).
pub fn daemon_main(project: &str) -> Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let config: DaemonConfig = serde_json::from_str(&input).context("reading the daemon configuration")?;
    if config.project_id != *project {
        bail!(
            "started for project {project} with the configuration of {}",
            config.project_id
        );
    }
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

/// Variables the daemon must not inherit: it needs no token, and a token in a long-lived
/// process's environment is readable for its whole life.
const NOT_FOR_THE_DAEMON: [&str; 2] = [crate::store::TOKEN_ENV, crate::store::ZEROPS_TOKEN_ENV];

/// Starts the daemon in its own session and follows its progress until it is ready.
fn spawn_daemon(
    config: &DaemonConfig,
    files: &ConnectionFiles,
    timeout: Duration,
    report: &mut dyn Report,
) -> Result<Status> {
    if let Some(dir) = files.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
    let mut command = Command::new(platform::daemon_exe()?);
    command
        .args(["--project", config.project_id.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    for name in NOT_FOR_THE_DAEMON {
        command.env_remove(name);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "corridor=info");
    }
    platform::detach(&mut command);
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
            Ok(Event::Ready { status }) => {
                report.progress(Progress::Connected(&status));
                return Ok(*status);
            }
            Ok(Event::Failed { error }) => {
                let _ = child.wait();
                bail!("{error}\n(daemon log: {})", files.log.display());
            }
            Ok(event) => report.progress(Progress::Connection(&event)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                bail!(
                    "the daemon exited ({status}) before it was ready; its log is {}",
                    files.log.display()
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // It undoes its own host changes when asked to stop.
                if let Some(pid) = Pid::new(child.id()) {
                    let _ = platform::signal_stop(pid, Stop::Gracefully);
                }
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
async fn down_one(id: &ProjectId, files: &ConnectionFiles) -> Result<()> {
    let asked = control::request(&files.socket, control::Command::Down).await;
    if let Err(e) = &asked {
        if UntrustedServer::is_cause_of(e) {
            bail!("not stopping connection {id}: {e:#}");
        }
    }
    if let Ok(status) = asked {
        // The pid comes from a socket: signal it only if it is this project's daemon.
        if let Some(pid) = Pid::new(status.pid).filter(|&pid| platform::process_is_daemon_of(pid, id.as_str())) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while platform::process_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if platform::process_alive(pid) {
                tracing::warn!(pid = pid.get(), "daemon did not stop in time; killing it");
                let _ = platform::signal_stop(pid, Stop::Now);
            }
        }
    }
    host::restore(&files.journal).with_context(|| format!("restoring the host after connection {id}"))?;
    for path in [&files.socket, &files.state] {
        let _ = std::fs::remove_file(path);
    }
    // A daemon killed before it could unregister leaves its names with the DNS service.
    dns::service::forget(id.as_str()).await
}

/// Connections whose daemon is gone (killed, crashed, rebooted) are undone quietly.
async fn clean_up_crashed(report: &mut dyn Report) {
    for (id, files) in ConnectionFiles::all() {
        let Err(e) = control::request(&files.socket, control::Command::Status).await else {
            continue;
        };
        if daemon_gone(&id, &files, &e) {
            match down_one(&id, &files).await {
                Ok(()) => tracing::info!(project = %id, "cleaned up after a connection that had stopped"),
                Err(e) => report.progress(Progress::Warning(format!("{e:#}"))),
            }
        }
    }
}

/// A daemon that does not answer is gone unless its socket only refused us (another user's
/// connection) or the pid it recorded is still this project's daemon: only then may its
/// journal be replayed.
fn daemon_gone(id: &ProjectId, files: &ConnectionFiles, error: &anyhow::Error) -> bool {
    let refused_us = error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    let daemon_runs = saved_status(files)
        .and_then(|s| Pid::new(s.pid))
        .is_some_and(|pid| platform::process_alive(pid) && platform::process_is_daemon_of(pid, id.as_str()));
    !refused_us && !daemon_runs
}

fn saved_status(files: &ConnectionFiles) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(&files.state).ok()?).ok()
}

fn replace_or_refuse(running: &Status, auto_disconnect: bool, report: &mut dyn Report) -> Result<()> {
    if auto_disconnect {
        return Ok(());
    }
    let question = format!(
        "already connected to {}; disconnect and reconnect?",
        running.project_name
    );
    if report.confirm(&question) == Some(true) {
        return Ok(());
    }
    bail!(
        "already connected to {} on {}: run `corridor vpn down` first, or pass --auto-disconnect",
        running.project_name,
        running.interface
    )
}

/// Where and how patiently to talk to the platform.
pub struct ApiSettings {
    /// `--api` / `CORRIDOR_API`: overrides everything else.
    pub base: Option<String>,
    /// `--region`: a region from the region list.
    pub region: Option<String>,
    /// `--region-url` / `CORRIDOR_REGION_URL`; `None` is the platform's list.
    pub region_url: Option<String>,
    pub timeout: Duration,
}

/// The API address to use and the region it belongs to (`None` when given as `--api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAddress {
    pub base: String,
    pub region: Option<String>,
}

pub async fn client(store: &Store, settings: ApiSettings) -> Result<Client> {
    let token = store.token()?.context(
        "not logged in: run `corridor login --token <token>` (a personal access token from the platform), \
         or set CORRIDOR_TOKEN (or ZEROPS_TOKEN)",
    )?;
    client_with_token(store, settings, token).await
}

/// A client with `token` at the address [`api_address`] finds.
pub async fn client_with_token(store: &Store, settings: ApiSettings, token: String) -> Result<Client> {
    let address = api_address(store, &settings, true).await?;
    client_at(&address, &settings, token)
}

fn client_at(address: &ApiAddress, settings: &ApiSettings, token: String) -> Result<Client> {
    let connect = settings.timeout.min(api::CONNECT_TIMEOUT);
    Ok(Client::new(&address.base, Some(token))?.with_timeouts(connect, settings.timeout)?)
}

/// Where the API is, in this order: `--api`/`CORRIDOR_API`; the region named by `--region`,
/// from the region list; the address stored at login (`use_stored`); the region list's default.
pub async fn api_address(store: &Store, settings: &ApiSettings, use_stored: bool) -> Result<ApiAddress> {
    if let Some(base) = &settings.base {
        return Ok(ApiAddress {
            base: base.clone(),
            region: None,
        });
    }
    if settings.region.is_none() && use_stored {
        if let Some(base) = store.api_base()? {
            return Ok(ApiAddress {
                base,
                region: store.region()?,
            });
        }
    }
    let regions = regions(settings).await?;
    let region = api::region::pick(&regions, settings.region.as_deref())?;
    Ok(ApiAddress {
        base: region.address,
        region: Some(region.name),
    })
}

/// The platform's regions (or those at `--region-url`).
pub async fn regions(settings: &ApiSettings) -> Result<Vec<api::Region>> {
    let url = settings
        .region_url
        .as_deref()
        .unwrap_or(api::region::DEFAULT_REGION_URL);
    api::region::regions_at(url, settings.timeout)
        .await
        .with_context(|| format!("reading the region list at {url}"))
}

/// Checks the token with the platform and stores it, with the API address and its region.
pub async fn login(api: ApiSettings, token: String, report: &mut dyn Report) -> Result<()> {
    let store = Store::open()?;
    let address = api_address(&store, &api, false).await?;
    let client = client_at(&address, &api, token.clone())?;
    let user = client
        .user_info()
        .await
        .context("checking the token with the platform")?;
    store.save_token(&token)?;
    store.save_api_base(&address.base)?;
    store.save_region(address.region.as_deref())?;
    report.progress(Progress::LoggedIn {
        name: &user.full_name,
        email: &user.email,
        region: address.region.as_deref(),
        api: client.base(),
    });
    Ok(())
}

/// A project by id or name; without one, or with several matches, a picker on a terminal and a
/// clear error elsewhere.
pub async fn choose_project(client: &Client, wanted: Option<&str>, report: &mut dyn Report) -> Result<Project> {
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
    let Some(n) = report.pick("project", &listing) else {
        bail!(
            "several projects match; name one by id with -P:\n  {}",
            listing.join("\n  ")
        );
    };
    candidates.into_iter().nth(n).context("no such project number")
}

pub async fn all_projects(client: &Client) -> Result<Vec<Project>> {
    let user = client.user_info().await.context("asking the platform who you are")?;
    let mut projects = Vec::new();
    for membership in user.client_user_list.iter().filter(|m| m.is_active()) {
        projects.extend(client.search_projects(&membership.client_id).await?);
    }
    Ok(projects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemon::heal::Recheck;

    #[test]
    fn each_refusal_names_its_cause_and_its_fix() {
        let platform = |status: u16, code: &str| api::ApiError::Platform {
            status,
            code: code.into(),
            message: "refused".into(),
        };
        let cases = [
            (
                platform(401, "tokenExpired"),
                "refused the token",
                "corridor login --token",
            ),
            (
                platform(403, "insufficientPermissions"),
                "no permission",
                "ask the project's owner",
            ),
            (
                platform(404, "projectNotFound"),
                "project demo is gone",
                "corridor vpn down",
            ),
        ];
        for (error, problem_text, fix_text) in cases {
            let Recheck::Refused { problem, fix } = refusal(&error, "demo") else {
                panic!("{error} is a refusal");
            };
            assert!(problem.contains(problem_text), "{problem}");
            assert!(fix.contains(fix_text), "{fix}");
        }
        let timeout = api::ApiError::Timeout {
            url: "http://198.18.0.1:8080".into(),
        };
        assert!(matches!(refusal(&timeout, "demo"), Recheck::Unreachable { .. }));
        assert!(matches!(
            refusal(&platform(500, "internalServerError"), "demo"),
            Recheck::Unreachable { .. }
        ));
    }
}
