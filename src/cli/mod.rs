//! Command-line definitions and the rendering of results, text and JSON.

pub mod access;
pub mod docs;
pub mod doctor;
pub mod keys;
pub mod regions;

use std::io::IsTerminal;

use clap::{Args, Parser, Subcommand};

use crate::daemon::{ConnectionState, StartupEvent, Status, TunnelStatus};
use crate::report::{Progress, Report};
use crate::vpn::UpOptions;

pub mod userspace;

#[derive(Parser)]
#[command(
    name = "corridor",
    version,
    about = "Put this machine inside a project's private network"
)]
pub struct Cli {
    /// Platform API address, e.g. https://api.app-prg1.zerops.io (overrides the region).
    #[arg(long, global = true, env = "CORRIDOR_API")]
    pub api: Option<String>,
    /// Region from the platform's region list (default: the default region, or the one chosen
    /// at login).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Where the region list is.
    #[arg(long, global = true, env = "CORRIDOR_REGION_URL", default_value = crate::api::region::DEFAULT_REGION_URL, hide_default_value = true)]
    pub region_url: String,
    /// Seconds an API request may take.
    #[arg(long, global = true, env = "CORRIDOR_API_TIMEOUT", default_value_t = 15, hide = true)]
    pub api_timeout: u64,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Store a personal access token (verified with the platform first).
    Login {
        /// The token; default: CORRIDOR_TOKEN, else ZEROPS_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
    /// Connect to and disconnect from a project's private network.
    #[command(subcommand)]
    Vpn(Vpn),
    /// List the platform's regions (`login --region NAME` picks one).
    Regions {
        #[arg(long)]
        json: bool,
    },
    /// Forward local ports to containers, without root: [PROJECT] LOCAL:TARGET:PORT...
    Forward(userspace::ForwardArgs),
    /// Connect stdin and stdout to HOST PORT in the project, without root (ssh ProxyCommand).
    Connect(userspace::ConnectArgs),
    /// A SOCKS5 proxy into the project, without root; names resolve in the project.
    Proxy(userspace::ProxyArgs),
    /// List a project's services and containers, with the names that reach them.
    Ls(access::LsArgs),
    /// Open a shell (or run a command) in a container over the tunnel.
    Ssh(access::SshArgs),
    /// Write an OpenSSH configuration for a project's containers (`ssh api` with no flags).
    SshConfig(access::SshConfigArgs),
    /// Write saved sessions for PuTTY and WinSCP.
    #[command(subcommand)]
    Export(access::Export),
    /// Check what a connection needs: privileges, TUN, IPv6, resolver, API, token, clock, tunnel, MTU, DNS.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions { shell: docs::Shell },
    /// Print the man page, corridor(1), in roff.
    #[command(hide = true)]
    ManPage,
}

#[derive(Subcommand)]
pub enum Vpn {
    /// Connect: register this machine's key, bring up the tunnel, verify it.
    #[command(visible_alias = "start")]
    Up(UpArgs),
    /// Disconnect and put the host back as it was.
    #[command(visible_alias = "stop")]
    Down {
        /// Project name or id (default: every connection).
        project: Option<String>,
    },
    /// Show the connections: handshake age, traffic, endpoint.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The project's VPN keys: list them, remove them.
    #[command(subcommand)]
    Key(keys::Key),
    /// Register a key of its own and write a WireGuard configuration (wg-quick, the WireGuard
    /// apps) for the project.
    Config(keys::ConfigArgs),
    /// Remove this machine's keys for a project, from the platform and from this machine.
    Clear {
        /// Project name or id.
        project: Option<String>,
        #[arg(short = 'P', long = "project-id")]
        project_id: Option<String>,
    },
    /// Run by a connection's daemon whose gateway stopped answering: asks the platform about
    /// its key (a request on stdin, the verdict on stdout as JSON).
    #[command(hide = true)]
    Recheck,
}

#[derive(Args, Clone)]
pub struct UpArgs {
    /// Project name or id; without it, pick one interactively.
    pub project: Option<String>,
    /// Project id (as the platform's own CLI takes it).
    #[arg(short = 'P', long = "project-id")]
    pub project_id: Option<String>,
    /// Tunnel MTU.
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub mtu: u16,
    /// Replace a running connection to the same project instead of asking.
    #[arg(long)]
    pub auto_disconnect: bool,
    /// Run in this terminal until interrupted (for systemd and containers).
    #[arg(long)]
    pub foreground: bool,
    /// Interface name, corridorN (utunN on macOS); default: the first free one.
    #[arg(long, value_parser = tunnel_interface)]
    pub interface: Option<String>,
    /// Seconds to wait for the tunnel to carry traffic.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// How names get to the system resolver: auto, resolved, resolv-conf, off.
    #[arg(long, value_enum, default_value_t = crate::dns::Mode::Auto)]
    pub dns: crate::dns::Mode,
    /// Leave the host's DNS alone (same as --dns off).
    #[arg(long)]
    pub skip_dns_setup: bool,
    /// Persistent keepalive, seconds (25 keeps NAT mappings open, as WireGuard recommends).
    #[arg(long, default_value_t = 25)]
    pub keepalive: u16,
    /// With several connections, bare names (`ssh api`) go to the highest priority first, then
    /// to the most recent connection.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub dns_priority: i32,
}

impl From<UpArgs> for UpOptions {
    fn from(args: UpArgs) -> UpOptions {
        UpOptions {
            project: args.project_id.or(args.project),
            mtu: args.mtu,
            auto_disconnect: args.auto_disconnect,
            foreground: args.foreground,
            interface: args.interface,
            timeout_secs: args.timeout,
            dns: if args.skip_dns_setup {
                crate::dns::Mode::Off
            } else {
                args.dns
            },
            keepalive_secs: args.keepalive,
            dns_priority: args.dns_priority,
        }
    }
}

/// Progress on stderr, questions on the terminal (none without one).
pub struct Terminal;

impl Report for Terminal {
    fn progress(&mut self, progress: Progress<'_>) {
        match progress {
            Progress::LoggedIn {
                name,
                email,
                region,
                api,
            } => step(&format!(
                "logged in as {name} ({email}) at {api}{}",
                region.map_or(String::new(), |r| format!(" (region {r})"))
            )),
            Progress::KeyRegistered { .. } => step("key registered"),
            Progress::Connection(event) => connection_progress(event),
            Progress::Connected(status) => print_connected(status),
            Progress::Disconnected { project } => step(&format!("disconnected from {project} (host restored)")),
            Progress::NotConnected { project: Some(p) } => println!("not connected to {p}"),
            Progress::NotConnected { project: None } => println!("not connected"),
            Progress::DnsSkipped { reason } => fail(&format!(
                "dns not set up: {reason}; the project's names will not resolve, the host's resolver stays as it is"
            )),
            Progress::RouteClash(clash) => warn(&clash.to_string()),
            Progress::Warning(text) => eprintln!("warning: {text}"),
        }
    }

    fn confirm(&mut self, question: &str) -> Option<bool> {
        if !interactive() {
            return None;
        }
        eprint!("{question} [y/N] ");
        Some(read_answer()?.eq_ignore_ascii_case("y"))
    }

    fn pick(&mut self, what: &str, choices: &[String]) -> Option<usize> {
        if !interactive() {
            return None;
        }
        for (i, line) in choices.iter().enumerate() {
            eprintln!("  {}) {line}", i + 1);
        }
        eprint!("{what} number: ");
        let n: usize = read_answer()?.parse().ok()?;
        (1..=choices.len()).contains(&n).then(|| n - 1)
    }
}

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn read_answer() -> Option<String> {
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).ok()?;
    Some(answer.trim().to_string())
}

/// Progress lines while connecting, on stderr.
fn connection_progress(event: &StartupEvent) {
    match event {
        StartupEvent::Interface { name } => step(&format!("interface {name} up")),
        StartupEvent::Handshake { millis } => step(&format!("tunnel up (handshake {millis} ms)")),
        StartupEvent::Probe { target, millis } => step(&format!("tunnel carries traffic ({target} answered in {millis} ms)")),
        StartupEvent::Path {
            mtu: Some(mtu),
            mss_ipv6: None,
            ..
        } => step(&format!("path carries full-size packets (mtu {mtu})")),
        StartupEvent::Path {
            mtu: Some(mtu),
            mss_ipv6: Some(mss),
            interface_mtu,
        } => warn(&format!(
            "the path to the gateway is narrower than the interface ({mtu} < {interface_mtu} + tunnel): TCP fitted (mss {mss}), larger packets sent in fragments"
        )),
        StartupEvent::Path { mtu: None, .. } => warn("the path MTU is not measured yet; it will be while connected"),
        StartupEvent::NoPing {
            tried,
            handshake_ms_ago,
        } if tried.is_empty() => warn(&format!(
            "nothing to ping: the platform sent no gateway address; the tunnel is up (handshake {handshake_ms_ago} ms ago)"
        )),
        StartupEvent::NoPing {
            tried,
            handshake_ms_ago,
        } => warn(&format!(
            "no answer to ping from {}; the tunnel is up (handshake {handshake_ms_ago} ms ago)",
            tried.join(", ")
        )),
        StartupEvent::Dns {
            mode,
            name,
            answer: Ok(addr),
        } => step(&format!("dns ok ({name} → {addr}, {})", mode_name(*mode))),
        StartupEvent::Dns {
            mode,
            name,
            answer: Err(e),
        } => fail(&format!(
            "dns: {name} did not resolve through the system resolver ({}): {e}; the tunnel works, names may not",
            mode_name(*mode)
        )),
        StartupEvent::Ready { .. } | StartupEvent::Failed { .. } => {}
    }
}

pub fn step(text: &str) {
    mark_line("\x1b[32m✓\x1b[0m", "✓", text);
}

pub fn warn(text: &str) {
    mark_line("\x1b[33m!\x1b[0m", "!", text);
}

pub fn fail(text: &str) {
    mark_line("\x1b[31m✗\x1b[0m", "✗", text);
}

fn mark_line(colored: &str, plain: &str, text: &str) {
    let mark = if std::io::stderr().is_terminal() {
        colored
    } else {
        plain
    };
    eprintln!("  {mark} {text}");
}

/// The path line of `vpn status`: what was measured and what corridor does about it.
fn path(interface_mtu: u16, t: &crate::daemon::TunnelStatus) -> String {
    let Some(mtu) = t.path_mtu else {
        return "mtu not measured yet".to_string();
    };
    let fitted = match (t.mss_ipv4, t.mss_ipv6) {
        (Some(v4), Some(v6)) => format!(
            ", narrower than the interface ({interface_mtu}): tcp mss {v6} (ipv6) / {v4} (ipv4), {} syns clamped, {} packets fragmented, {} too-big answered",
            t.syns_clamped, t.packets_fragmented, t.too_big_sent
        ),
        _ => String::new(),
    };
    format!("mtu {mtu} measured ({} probes){fitted}", t.path_probes)
}

fn mode_name(mode: crate::dns::Mode) -> String {
    clap::ValueEnum::to_possible_value(&mode).map_or_else(|| format!("{mode:?}"), |v| v.get_name().to_string())
}

fn print_connected(status: &Status) {
    println!(
        "connected to {} ({}) via {}: {}",
        status.project_name,
        status.project_id,
        status.interface,
        status
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

pub fn print_status(statuses: &[Status], json: bool) {
    if json {
        println!("{}", serde_json::json!({ "connections": statuses }));
        return;
    }
    if statuses.is_empty() {
        println!("not connected");
        return;
    }
    for s in statuses {
        let t = &s.tunnel;
        let handshake = t
            .last_handshake_secs
            .map_or("never".to_string(), |h| format!("{h:.1} s ago"));
        println!("{} ({})", s.project_name, s.project_id);
        println!("  interface   {} (mtu {}), pid {}", s.interface, s.mtu, s.pid);
        println!("  addresses   {}", join(&s.addresses));
        println!("  routes      {}", join(&s.networks));
        println!("  endpoint    {}", s.endpoint);
        println!("  state       {}", state(t));
        println!("  handshake   {handshake}");
        println!("  traffic     rx {} / tx {}", bytes(t.rx_bytes), bytes(t.tx_bytes));
        println!(
            "  dropped     {} not from the project, {} not to it, {} invalid, {} malformed, {} too large",
            t.dropped_not_allowed, t.dropped_no_route, t.dropped_invalid, t.dropped_malformed, t.dropped_small_buffer
        );
        println!("  path        {}", path(s.mtu, t));
        println!(
            "  recovery    {} reconnects ({} handshakes forced, {} probes), {} sleeps, {} sessions rebuilt",
            t.reconnects, t.handshakes_forced, t.probes_sent, t.sleeps_detected, t.sessions_rebuilt
        );
        if let Some(note) = &s.platform.note {
            println!("  platform    {note}");
        }
        if let Some(problem) = &s.platform.problem {
            println!("  problem     {}", problem.what);
            println!("  fix         {}", problem.fix);
        }
        if let Some(dns) = &s.dns {
            let at = dns
                .responder
                .map_or("no responder".to_string(), |a| format!("responder {a}"));
            let reapplied = match dns.stats.resolver.reapplied {
                0 => String::new(),
                1 => ", re-applied once".to_string(),
                n => format!(", re-applied {n} times"),
            };
            println!(
                "  dns         {} ({at}, project DNS {}){reapplied}",
                mode_name(dns.mode),
                dns.project_dns
            );
            if let Some(why) = &dns.stats.resolver.backed_off {
                println!("  ! dns       backed off: {why}");
            }
            let last = dns
                .stats
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(", last error: {e}"));
            println!(
                "  queries     {} answered, {} failed, {} from cache{last}",
                dns.stats.answered, dns.stats.failures, dns.stats.cache_hits
            );
            if !dns.served.is_empty() {
                println!("  names of    {} (bare names in this order)", dns.served.join(", "));
            }
        }
        println!("  uptime      {} s", s.uptime_secs);
    }
}

fn state(t: &TunnelStatus) -> String {
    match (t.state, t.reconnecting_secs) {
        (ConnectionState::Connecting, _) => "connecting".into(),
        (ConnectionState::Connected, _) => "connected".into(),
        (ConnectionState::Reconnecting, Some(secs)) => format!("reconnecting since {secs:.1} s"),
        (ConnectionState::Reconnecting, None) => "reconnecting".into(),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

pub(crate) fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// Only names corridor gives its interfaces, so that no journal ever names another one.
fn tunnel_interface(name: &str) -> Result<String, String> {
    let prefix = crate::host::INTERFACE_PREFIX;
    if crate::host::Allowed::for_os(crate::host::OS).is_tunnel_name(name) {
        return Ok(name.to_string());
    }
    Err(format!(
        "tunnel interfaces are named {prefix}N ({prefix}0, {prefix}1, …)"
    ))
}
