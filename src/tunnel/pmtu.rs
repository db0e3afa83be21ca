//! Path MTU discovery for the tunnel, sans-IO: which outer datagram sizes reach the gateway
//! and come back, learned from padded echo probes through the tunnel and never from ICMP the
//! path may drop (RFC 8899's packetization-layer search, with an echo as the acknowledgement).
//!
//! A search probes the largest size first (the common case ends after one probe), then halves
//! the range between the largest size answered and the smallest one lost. A probe counts as
//! lost only after a second try, so one dropped datagram does not narrow the path. Searches
//! start after the first handshake, when traffic stalls while the gateway still answers, and
//! periodically, which is how a path that widened again is found.

use std::time::{Duration, Instant};

/// WireGuard pads what it encrypts to a multiple of this: outer sizes between two such steps
/// carry the same inner packets, so only the steps are probed.
pub const PADDING: u16 = 16;
/// A probe is sent this many times before its size counts as lost.
const TRIES: u8 = 2;
/// How long a probe waits for its echo before the round trip is known, and the bounds of the
/// wait once it is.
const FIRST_WAIT: Duration = Duration::from_millis(1000);
const MIN_WAIT: Duration = Duration::from_millis(200);
/// A stall starts a search at most this often: a peer that answers probes but not traffic for
/// another reason must not keep the path busy with probes.
const STALL_SEARCH_EVERY: Duration = Duration::from_secs(10);
/// The default period of re-probing a path that was found narrower (or to check a full one).
pub const REPROBE: Duration = Duration::from_secs(300);
/// Sets the re-probe period in seconds, for tests that cannot wait five minutes.
pub const REPROBE_ENV: &str = "CORRIDOR_PATH_REPROBE_SECS";

/// The re-probe period: [`REPROBE`] unless [`REPROBE_ENV`] names a number of seconds.
pub fn reprobe_period() -> Duration {
    std::env::var(REPROBE_ENV)
        .ok()
        .and_then(|secs| secs.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map_or(REPROBE, Duration::from_secs)
}

/// The smallest outer size assumed to cross any path (IPv4's minimum reassembly size).
pub const FLOOR: u16 = 576;

/// What a search is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Search {
    /// The largest size answered in this search (or assumed: the floor, or the last result
    /// when the search only checks whether the path widened).
    good: u16,
    /// The smallest size lost in this search; one above the ceiling until then.
    bad: u16,
    probe: Option<InFlight>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    size: u16,
    seq: u16,
    sent: Instant,
    tries: u8,
}

/// A probe to send: an echo whose outer datagram (IP header included) is `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub size: u16,
    pub seq: u16,
}

#[derive(Debug)]
pub struct PathMtu {
    overhead: u16,
    ceiling: u16,
    reprobe: Duration,
    /// The outcome of the last search: the largest outer size known to cross.
    confirmed: Option<u16>,
    search: Option<Search>,
    next_search: Option<Instant>,
    last_stall_search: Option<Instant>,
    rtt: Option<Duration>,
    seq: u16,
    pub probes_sent: u64,
}

impl PathMtu {
    /// `mtu`: the largest inner packet (the interface MTU); `overhead`: what the tunnel adds
    /// to it outside WireGuard's padding (outer IP, UDP and WireGuard headers).
    pub fn new(mtu: u16, overhead: u16, reprobe: Duration) -> PathMtu {
        // Rounded down: the gateway's own interface is no larger than ours, and its echo of a
        // larger probe would come back in fragments.
        let largest = mtu / PADDING * PADDING;
        PathMtu {
            overhead,
            ceiling: (overhead + largest).max(FLOOR),
            reprobe,
            confirmed: None,
            search: None,
            next_search: None,
            last_stall_search: None,
            rtt: None,
            seq: 0,
            probes_sent: 0,
        }
    }

    /// The largest outer size known to cross the path, once a search has ended.
    pub fn confirmed(&self) -> Option<u16> {
        self.confirmed
    }

    pub fn ceiling(&self) -> u16 {
        self.ceiling
    }

    /// A round trip seen elsewhere (the handshake's): probes then wait a few of them, not a
    /// second, before counting as lost.
    pub fn observe_rtt(&mut self, rtt: Duration) {
        self.rtt.get_or_insert(rtt);
    }

    pub fn is_searching(&self) -> bool {
        self.search.is_some()
    }

    /// Starts a search unless one runs: after the first handshake, and when it is due.
    pub fn start(&mut self) {
        if self.search.is_some() {
            return;
        }
        self.next_search = None;
        // A full path is checked with one probe; a narrower one first tries the full size
        // again, and searches only above what it knew.
        let good = self.confirmed.unwrap_or(self.floor()).min(self.ceiling);
        self.search = Some(Search {
            good,
            bad: self.ceiling + 1,
            probe: None,
        });
        tracing::debug!(good, ceiling = self.ceiling, "path mtu search");
    }

    /// Traffic went unanswered while the gateway answered a small probe: the path may have
    /// narrowed under it. Everything is searched again, from the floor.
    pub fn stalled(&mut self, now: Instant) {
        if self.search.is_some()
            || self
                .last_stall_search
                .is_some_and(|last| now.saturating_duration_since(last) < STALL_SEARCH_EVERY)
        {
            return;
        }
        self.last_stall_search = Some(now);
        tracing::debug!("traffic stalled while the gateway answers; searching the path again");
        self.start();
        let floor = self.floor().min(self.ceiling);
        if let Some(search) = &mut self.search {
            search.good = floor;
        }
    }

    /// The probe to send now, if one is due; the caller sends it and reports its echo.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe> {
        let search = self.search.as_mut()?;
        if search.probe.is_some() {
            return None;
        }
        // The ceiling first: on a path that did not change, one probe ends the search.
        let size = if search.bad > self.ceiling {
            self.ceiling
        } else {
            let middle = search.good + (search.bad - search.good) / 2;
            self.overhead + middle.saturating_sub(self.overhead) / PADDING * PADDING
        };
        if size <= search.good {
            let found = search.good;
            self.conclude(found, now);
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        search.probe = Some(InFlight {
            size,
            seq: self.seq,
            sent: now,
            tries: 1,
        });
        self.probes_sent += 1;
        Some(Probe { size, seq: self.seq })
    }

    /// The echo of probe `seq` came back.
    pub fn answered(&mut self, seq: u16, now: Instant) {
        let Some(search) = self.search.as_mut() else { return };
        let Some(probe) = search.probe.filter(|p| p.seq == seq) else {
            return;
        };
        self.rtt = Some(now.saturating_duration_since(probe.sent));
        search.probe = None;
        search.good = search.good.max(probe.size);
        tracing::trace!(size = probe.size, "path probe answered");
        if probe.size >= self.ceiling {
            self.conclude(self.ceiling, now);
        }
    }

    /// When [`PathMtu::handle_timeout`] should run: a probe's wait ends, or the next search.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.search {
            Some(Search { probe: Some(p), .. }) => Some(p.sent + self.wait()),
            Some(_) => None,
            None => self.next_search,
        }
    }

    /// A probe waited long enough: sent again once, then its size counts as lost. A search
    /// that is due starts.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Probe> {
        if self.search.is_none() && self.next_search.is_some_and(|due| due <= now) {
            self.start();
        }
        let wait = self.wait();
        let search = self.search.as_mut()?;
        let Some(probe) = search.probe else {
            return self.poll_probe(now);
        };
        if now < probe.sent + wait {
            return None;
        }
        if probe.tries < TRIES {
            self.seq = self.seq.wrapping_add(1);
            search.probe = Some(InFlight {
                seq: self.seq,
                sent: now,
                tries: probe.tries + 1,
                ..probe
            });
            self.probes_sent += 1;
            return Some(Probe {
                size: probe.size,
                seq: self.seq,
            });
        }
        tracing::trace!(size = probe.size, "path probe lost");
        search.probe = None;
        search.bad = search.bad.min(probe.size);
        self.poll_probe(now)
    }

    fn conclude(&mut self, found: u16, now: Instant) {
        if self.confirmed != Some(found) {
            tracing::info!(path_mtu = found, ceiling = self.ceiling, "path mtu");
        }
        self.confirmed = Some(found);
        self.search = None;
        self.next_search = Some(now + self.reprobe);
    }

    /// [`FLOOR`], at a size WireGuard sends without padding.
    fn floor(&self) -> u16 {
        self.overhead + FLOOR.saturating_sub(self.overhead) / PADDING * PADDING
    }

    fn wait(&self) -> Duration {
        self.rtt.map_or(FIRST_WAIT, |rtt| {
            (rtt * 3 + Duration::from_millis(50)).clamp(MIN_WAIT, FIRST_WAIT)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs searches against a path that carries outer sizes up to `path`, answering after
    /// `rtt`; returns the result and the probes it took.
    fn search(p: &mut PathMtu, path: u16, start: Instant) -> (Option<u16>, u64, Instant) {
        let before = p.probes_sent;
        let mut now = start;
        let mut pending = p.poll_probe(now);
        for _ in 0..100 {
            if let Some(probe) = pending.take() {
                if probe.size <= path {
                    now += 2 * MS;
                    p.answered(probe.seq, now);
                    pending = p.poll_probe(now);
                    continue;
                }
            }
            if !p.is_searching() {
                break;
            }
            now = p.poll_timeout().expect("a searching path waits for its probe");
            pending = p.handle_timeout(now);
        }
        (p.confirmed(), p.probes_sent - before, now)
    }

    #[test]
    fn a_full_path_takes_one_probe() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, REPROBE);
        p.start();
        assert_eq!(search(&mut p, 1500, t).0, Some(1468));
        assert_eq!(p.probes_sent, 1);
        assert_eq!(p.poll_timeout(), Some(t + 2 * MS + REPROBE));
    }

    #[test]
    fn a_narrow_path_is_found_within_resolution_in_a_handful_of_probes_and_seconds() {
        for path in [1280, 1124, 1400, 700, 1467] {
            let t = Instant::now();
            let mut p = PathMtu::new(1420, 60, REPROBE);
            p.observe_rtt(2 * MS);
            p.start();
            let (found, probes, end) = search(&mut p, path, t);
            let found = found.unwrap();
            assert!(found <= path && path - found < PADDING, "path {path}: found {found}");
            assert_eq!((found - 60) % PADDING, 0, "a size WireGuard sends unpadded");
            assert!(probes <= 14, "path {path}: {probes} probes");
            assert!(end - t < Duration::from_secs(5), "path {path}: {:?}", end - t);
        }
    }

    #[test]
    fn one_lost_probe_is_sent_again_before_the_size_counts_as_lost() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, REPROBE);
        p.start();
        let first = p.poll_probe(t).unwrap();
        let again = p.handle_timeout(t + FIRST_WAIT).unwrap();
        assert_eq!((again.size, again.seq), (first.size, first.seq + 1));
        // The late echo of the first try no longer counts; the second's does.
        p.answered(first.seq, t + FIRST_WAIT + MS);
        assert!(p.is_searching());
        p.answered(again.seq, t + FIRST_WAIT + MS);
        assert_eq!(p.confirmed(), Some(1468));
    }

    #[test]
    fn a_path_that_widens_is_found_at_the_next_search() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, Duration::from_secs(5));
        p.start();
        let (found, _, end) = search(&mut p, 1280, t);
        assert!(found.unwrap() <= 1280);
        let due = p.poll_timeout().unwrap();
        assert_eq!(due, end + Duration::from_secs(5));
        let probe = p.handle_timeout(due).expect("the due search probes at once");
        assert_eq!(probe.size, 1468, "the full size first");
        p.answered(probe.seq, due + MS);
        assert_eq!(p.confirmed(), Some(1468));
    }

    #[test]
    fn a_stall_searches_from_the_floor_at_most_every_few_seconds() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, REPROBE);
        p.start();
        search(&mut p, 1500, t);
        p.stalled(t + Duration::from_secs(1));
        let (found, probes, end) = search(&mut p, 1124, t + Duration::from_secs(1));
        assert!(found.unwrap() <= 1124 && 1124 - found.unwrap() < PADDING);
        assert!(probes > 1);
        p.stalled(end);
        assert!(!p.is_searching(), "a second stall soon after searches nothing");
        p.stalled(end + STALL_SEARCH_EVERY);
        assert!(p.is_searching());
    }

    #[test]
    fn the_previous_result_holds_while_a_search_runs() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, REPROBE);
        p.start();
        search(&mut p, 1280, t);
        let before = p.confirmed();
        p.stalled(t + Duration::from_secs(20));
        p.poll_probe(t + Duration::from_secs(20));
        assert_eq!(p.confirmed(), before);
    }

    #[test]
    fn a_path_that_loses_everything_ends_at_the_floor() {
        let t = Instant::now();
        let mut p = PathMtu::new(1420, 60, REPROBE);
        p.start();
        assert_eq!(search(&mut p, 100, t).0, Some(572));
    }
}
