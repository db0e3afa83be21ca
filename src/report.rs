//! How commands talk to the person (or script) running them, without knowing how it is shown:
//! commands take `&mut dyn Report`, and `cli` renders text or JSON and asks on a terminal.

use crate::daemon::{StartupEvent, Status};

/// What a command reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    LoggedIn {
        name: &'a str,
        email: &'a str,
        /// The region the API address came from; `None` for `--api`.
        region: Option<&'a str>,
        api: &'a str,
    },
    KeyRegistered {
        project: &'a str,
    },
    /// A starting daemon's progress.
    Connection(&'a StartupEvent),
    /// The connection carries traffic.
    Connected(&'a Status),
    Disconnected {
        project: &'a str,
    },
    NotConnected {
        project: Option<&'a str>,
    },
    /// DNS was not set up because the platform's answer lacks what it needs.
    DnsSkipped {
        reason: &'a str,
    },
    /// A route, rule or address of the host takes some of the project's addresses elsewhere.
    RouteClash(&'a crate::host::clash::Clash),
    /// Something the user should know that stops nothing.
    Warning(String),
}

pub trait Report {
    fn progress(&mut self, progress: Progress<'_>);

    /// Asks a yes/no question; `None` when nobody can answer (no terminal).
    fn confirm(&mut self, question: &str) -> Option<bool>;

    /// Asks to pick one of `choices` (shown numbered); `None` when nobody can answer.
    fn pick(&mut self, what: &str, choices: &[String]) -> Option<usize>;
}
