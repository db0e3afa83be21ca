//! `forward`, `connect` and `proxy`: their arguments and what they print.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::report::{Progress, Report};
use crate::userspace::{
    ConnectOptions, ForwardOptions, ForwardSpec, ForwardingEvent, ProxyOptions, Snapshot, TunnelOptions, Watch,
};

#[derive(Args, Clone)]
pub struct TunnelArgs {
    /// Project name or id (default: the only project, or a picker).
    #[arg(long = "project", short = 'P', alias = "project-id")]
    pub project: Option<String>,
    /// Tunnel MTU.
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub mtu: u16,
    /// Persistent keepalive, seconds.
    #[arg(long, default_value_t = 25)]
    pub keepalive: u16,
    /// Seconds to wait for the WireGuard handshake.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Seconds a connection to a container may take to open.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
}

#[derive(Args, Clone)]
pub struct ForwardArgs {
    /// An optional project name or id, then LOCAL:TARGET:PORT... (TARGET: a container name, a
    /// service name or an address), e.g. `demo 2222:api:22 5432:db:5432`.
    #[arg(required = true, value_name = "[PROJECT] LOCAL:TARGET:PORT")]
    pub args: Vec<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
}

#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// Container name, service name or address.
    pub host: String,
    pub port: u16,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
}

#[derive(Args, Clone)]
pub struct ProxyArgs {
    /// Address of the SOCKS5 proxy.
    #[arg(long, default_value = "127.0.0.1:1080")]
    pub socks5: SocketAddr,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
}

impl TunnelArgs {
    fn options(&self, project: Option<String>) -> TunnelOptions {
        TunnelOptions {
            project: project.or_else(|| self.project.clone()),
            mtu: self.mtu,
            keepalive: self.keepalive,
            handshake_timeout: Duration::from_secs(self.timeout),
            connect_timeout: Duration::from_secs(self.connect_timeout),
        }
    }
}

impl ForwardArgs {
    pub fn options(&self) -> Result<ForwardOptions, String> {
        let (project, specs) = match self.args.split_first() {
            Some((first, rest)) if !first.contains(':') => (Some(first.clone()), rest),
            _ => (None, &self.args[..]),
        };
        let forwards = specs
            .iter()
            .map(|s| s.parse::<ForwardSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ForwardOptions {
            tunnel: self.tunnel.options(project),
            bind: self.bind,
            forwards,
        })
    }
}

impl ConnectArgs {
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            tunnel: self.tunnel.options(None),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl ProxyArgs {
    pub fn options(&self) -> ProxyOptions {
        ProxyOptions {
            tunnel: self.tunnel.options(None),
            listen: self.socks5,
        }
    }
}

/// Prints what `forward` and `proxy` report: the listeners once on stdout, then a status line
/// on a terminal and connection failures on stderr; the rest as every command does.
pub struct Live {
    terminal: super::Terminal,
    live: bool,
}

impl Live {
    pub fn new() -> Live {
        Live {
            terminal: super::Terminal,
            live: std::io::stderr().is_terminal(),
        }
    }
}

impl Default for Live {
    fn default() -> Live {
        Live::new()
    }
}

impl Report for Live {
    fn progress(&mut self, progress: Progress<'_>) {
        self.terminal.progress(progress);
    }

    fn confirm(&mut self, question: &str) -> Option<bool> {
        self.terminal.confirm(question)
    }

    fn pick(&mut self, what: &str, choices: &[String]) -> Option<usize> {
        self.terminal.pick(what, choices)
    }
}

impl Watch for Live {
    fn event(&mut self, event: &ForwardingEvent) {
        match event {
            ForwardingEvent::Ready {
                project,
                handshake,
                listeners,
            } => {
                for l in listeners {
                    let via = if l.addresses.is_empty() {
                        String::new()
                    } else {
                        let addresses: Vec<String> = l.addresses.iter().map(ToString::to_string).collect();
                        format!(" ({})", addresses.join(", "))
                    };
                    println!("{} → {}{via} in {project}", l.listen, l.target);
                }
                super::step(&format!(
                    "tunnel up without root (handshake {} ms); Ctrl-C stops",
                    handshake.as_millis()
                ));
            }
            ForwardingEvent::Status(snapshot) if self.live => {
                eprint!("\r\x1b[K  {}", status_line(snapshot));
                let _ = std::io::stderr().flush();
            }
            ForwardingEvent::Status(_) => {}
            ForwardingEvent::ConnectionFailed { listen, error } => {
                if self.live {
                    eprint!("\r\x1b[K");
                }
                super::fail(&format!("{listen}: {error}"));
            }
        }
    }
}

fn status_line(s: &Snapshot) -> String {
    let handshake = s.stats.last_handshake.map_or("no handshake".to_string(), |h| {
        format!("handshake {} s ago", h.as_secs())
    });
    format!(
        "{} open, {} total, {} failed · ↓ {} ↑ {} · {handshake}",
        s.open,
        s.total,
        s.failed,
        super::bytes(s.stats.rx_bytes),
        super::bytes(s.stats.tx_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        forward: ForwardArgs,
    }

    #[test]
    fn a_leading_word_without_colon_is_the_project() {
        let with = Wrapper::parse_from(["x", "demo", "2222:api:22", "5432:db:5432"]);
        let without = Wrapper::parse_from(["x", "2222:api:22"]);

        let with = with.forward.options().unwrap();
        let without = without.forward.options().unwrap();

        assert_eq!(with.tunnel.project.as_deref(), Some("demo"));
        assert_eq!(with.forwards.len(), 2);
        assert_eq!(without.tunnel.project, None);
        assert!(Wrapper::parse_from(["x", "demo", "2222:api"])
            .forward
            .options()
            .is_err());
    }
}
