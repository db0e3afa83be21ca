//! The host's resolver kept pointed at the responder while another program (a DHCP client,
//! NetworkManager, a second VPN) rewrites it: each change is put back, with the other program's
//! version as the new backup so that `down` restores what it wrote, not a stale copy. A program
//! that rewrites it again and again wins: after `LIMIT` re-applies within `WINDOW` the watch
//! stops and says so, rather than fight it forever.
//!
//! [`Backoff`] decides (no I/O, time passed in); [`Watch`] does the looking and the rewriting
//! through the platform's [`Watched`], once a second on the DNS service's own tick.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
use super::linux::{watch, Watched};
use super::HostDns;
use crate::host::Journal;

/// Re-applies allowed within `WINDOW`; one change more and the other program keeps the resolver.
pub const LIMIT: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// A change is acted on only once it has held this long, so that a program that truncates and
/// then writes is not caught halfway.
const SETTLE: Duration = Duration::from_millis(100);

/// What `vpn status` shows of the watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// Times the resolver was put back after another program changed it.
    #[serde(default)]
    pub reapplied: u64,
    /// Why the watch stopped putting it back; the other program's version stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backed_off: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Reapply,
    /// Too many changes too fast: leave the resolver to the other program from now on.
    GiveUp,
}

/// Counts re-applies in a sliding window.
#[derive(Debug)]
pub struct Backoff {
    limit: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Backoff {
    pub fn new(limit: usize, window: Duration) -> Backoff {
        Backoff {
            limit,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Another program changed the resolver at `now`.
    pub fn changed(&mut self, now: Instant) -> Verdict {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit {
            return Verdict::GiveUp;
        }
        self.recent.push_back(now);
        Verdict::Reapply
    }
}

/// The resolver as corridor set it up, looked at on each tick.
pub struct Watch {
    watched: Option<Watched>,
    backoff: Backoff,
    status: WatchStatus,
}

impl Watch {
    /// Nothing to watch (yet).
    pub fn idle() -> Watch {
        Watch {
            watched: None,
            backoff: Backoff::new(LIMIT, WINDOW),
            status: WatchStatus::default(),
        }
    }

    /// Starts watching what `configure_host` just set up, where the platform can.
    pub fn start(&mut self, plan: &HostDns, responder: SocketAddr, journal: &Journal) {
        self.watched = watch(plan, responder, journal);
    }

    pub fn status(&self) -> WatchStatus {
        self.status.clone()
    }

    /// Puts the resolver back if another program changed it, or gives up on it. `links`: the
    /// registered projects' tunnel interfaces.
    pub async fn tick(&mut self, now: Instant, links: &[String]) {
        let Some(watched) = &mut self.watched else { return };
        let theirs = match watched.foreign(links) {
            Ok(Some(theirs)) => theirs,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "looking at the host resolver");
                return;
            }
        };
        tokio::time::sleep(SETTLE).await;
        if !matches!(watched.foreign(links), Ok(Some(again)) if again == theirs) {
            return;
        }
        let what = watched.describe(&theirs);
        let stop = match self.backoff.changed(now) {
            Verdict::Reapply => match watched.reapply(&theirs) {
                Ok(()) => {
                    self.status.reapplied += 1;
                    tracing::info!(resolver = %what, times = self.status.reapplied, "another program changed the resolver; put back, its version kept for down");
                    None
                }
                Err(e) => Some(format!(
                    "{what} was changed by another program and could not be put back: {e:#}"
                )),
            },
            Verdict::GiveUp => Some(format!(
                "{what} was changed by another program {} times within {} s; it keeps that \
                 program's version, so names of the projects may not resolve (`vpn down` and \
                 `vpn up` take it back)",
                LIMIT + 1,
                WINDOW.as_secs()
            )),
        };
        if let Some(why) = stop {
            tracing::warn!(resolver = %what, reason = %why, "stopped putting the resolver back");
            self.status.backed_off = Some(why);
            self.watched = None;
        }
    }
}

/// Only Linux's resolver is watched so far; macOS's resolver file and Windows's NRPT rule are
/// corridor's own, which other programs have no reason to touch.
#[cfg(not(target_os = "linux"))]
pub enum Watched {}

#[cfg(not(target_os = "linux"))]
#[derive(PartialEq)]
enum Foreign {}

#[cfg(not(target_os = "linux"))]
fn watch(_plan: &HostDns, _responder: SocketAddr, _journal: &Journal) -> Option<Watched> {
    None
}

#[cfg(not(target_os = "linux"))]
impl Watched {
    fn foreign(&mut self, _links: &[String]) -> anyhow::Result<Option<Foreign>> {
        match *self {}
    }

    fn reapply(&mut self, _theirs: &Foreign) -> anyhow::Result<()> {
        match *self {}
    }

    fn describe(&self, _theirs: &Foreign) -> String {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_put_back_until_too_many_come_within_the_window() {
        let mut backoff = Backoff::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);

        assert_eq!(backoff.changed(at(0)), Verdict::Reapply);
        assert_eq!(backoff.changed(at(1)), Verdict::Reapply);
        assert_eq!(backoff.changed(at(2)), Verdict::Reapply);
        assert_eq!(backoff.changed(at(3)), Verdict::GiveUp);
    }

    #[test]
    fn changes_spread_out_are_put_back_forever() {
        let mut backoff = Backoff::new(3, Duration::from_secs(60));
        let t0 = Instant::now();

        // A DHCP lease renewed every 30 s: never more than 2 in any minute.
        for i in 0..100 {
            assert_eq!(
                backoff.changed(t0 + Duration::from_secs(30 * i)),
                Verdict::Reapply,
                "renewal {i}"
            );
        }
    }

    #[test]
    fn the_window_slides_so_an_old_burst_does_not_count_against_a_new_change() {
        let mut backoff = Backoff::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);

        assert_eq!(backoff.changed(at(0)), Verdict::Reapply);
        assert_eq!(backoff.changed(at(5)), Verdict::Reapply);
        assert_eq!(
            backoff.changed(at(10)),
            Verdict::Reapply,
            "the first has left the window"
        );
        assert_eq!(backoff.changed(at(11)), Verdict::GiveUp);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_change_is_put_back_and_counted_and_one_that_cannot_be_stops_the_watch() {
        use super::super::linux::ResolvConfWatch;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backups = dir.path().join("state");
        std::fs::create_dir(&backups).unwrap();
        std::fs::write(&path, "nameserver 10.0.0.1\n").unwrap();
        let watched = ResolvConfWatch::new(
            &path,
            backups.join("p.resolv.conf.orig"),
            "127.0.0.153".parse().unwrap(),
        );
        let mut watch = Watch {
            watched: Some(Watched::ResolvConf(watched)),
            ..Watch::idle()
        };
        let t0 = Instant::now();

        watch.tick(t0, &[]).await;
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("nameserver 127.0.0.153"));
        assert_eq!(
            std::fs::read_to_string(backups.join("p.resolv.conf.orig")).unwrap(),
            "nameserver 10.0.0.1\n"
        );
        watch.tick(t0 + Duration::from_secs(1), &[]).await;
        assert_eq!(
            watch.status(),
            WatchStatus {
                reapplied: 1,
                backed_off: None
            },
            "unchanged since"
        );

        std::fs::remove_dir_all(&backups).unwrap();
        std::fs::write(&path, "nameserver 10.0.0.2\n").unwrap();
        watch.tick(t0 + Duration::from_secs(2), &[]).await;
        let status = watch.status();
        assert_eq!(status.reapplied, 1);
        assert!(
            status.backed_off.as_deref().unwrap().contains("could not be put back"),
            "{status:?}"
        );
        std::fs::write(&path, "nameserver 10.0.0.3\n").unwrap();
        watch.tick(t0 + Duration::from_secs(3), &[]).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.0.3\n",
            "left alone"
        );
    }
}
