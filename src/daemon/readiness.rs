//! When a starting tunnel is ready, decided from the tunnel's events and the time alone.
//!
//! Ready means: the handshake done, and a ping answered through the tunnel if anything answers.
//! The project's gateways are pinged in turn, each given [`PING_WAIT`]; once the handshake is
//! done, `logger.core.zerops` is looked up through the tunnel and its addresses pinged too, as
//! the platform's CLI does. A completed handshake with no answer within [`PING_GRACE`] is ready
//! too (the platform does not promise that its gateways answer ping). Only a tunnel without a
//! handshake by the deadline fails.
//!
//! The daemon carries out the [`Step`]s and feeds back what happened; nothing here waits.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::tunnel::core::{Event, ProbeRoute};

/// How long pings keep trying once the handshake has completed.
pub const PING_GRACE: Duration = Duration::from_secs(2);
/// How long one ping waits for its answer.
pub const PING_WAIT: Duration = Duration::from_millis(500);
/// How long a round waits when there is nothing to ping: only the handshake can come.
const IDLE: Duration = Duration::from_millis(50);

/// What the daemon does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send an echo request with the machine's id and `seq` along `route`.
    Ping {
        route: ProbeRoute,
        seq: u16,
    },
    /// Look the platform's name up through the tunnel and hand its addresses to
    /// [`Readiness::looked_up`].
    LookUp,
    /// Nothing until an event or this moment.
    Wait(Instant),
    Ready(Ready),
    /// No handshake by the deadline.
    Failed,
}

/// How the tunnel proved itself ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A probe target answered an ICMP echo through the tunnel.
    Answered {
        target: IpAddr,
        millis: u64,
        first_handshake: Instant,
    },
    /// Nothing answered ping, but the handshake completed (its answer came back through the
    /// endpoint): the tunnel is up.
    HandshakeOnly {
        tried: Vec<String>,
        /// Since the last handshake (sessions may have been renewed since the first).
        handshake_age: Duration,
        first_handshake: Instant,
    },
}

/// Where a start stands.
#[derive(Debug)]
pub struct Readiness {
    id: u16,
    seq: u16,
    addresses: Vec<IpNet>,
    configured: Vec<IpAddr>,
    targets: Vec<IpAddr>,
    tried: Vec<String>,
    /// The name to look up once the handshake is done; `None` without a project DNS server.
    look_up: Option<String>,
    looked_up: bool,
    deadline: Instant,
    phase: Phase,
    first_handshake: Option<Instant>,
    last_handshake: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pinging the targets from `next` on; `pinged`: this round has sent a ping.
    Round { next: usize, pinged: bool },
    /// A ping to `targets[index]` waits for its answer until `until`.
    Pinging {
        index: usize,
        sent: Instant,
        until: Instant,
        answered: Option<Instant>,
    },
    /// Nothing could be pinged: a short pause before the round ends.
    Idle { until: Instant },
    /// The round is over.
    RoundDone,
    /// The name is being looked up.
    LookingUp,
}

impl Readiness {
    /// Pings `targets` from our `addresses` with echo id `id`; a `name` to look up once the
    /// handshake is done (when the project has a DNS server); fails at `deadline`.
    pub fn new(id: u16, addresses: &[IpNet], targets: &[IpAddr], name: Option<&str>, deadline: Instant) -> Readiness {
        Readiness {
            id,
            seq: 0,
            addresses: addresses.to_vec(),
            configured: targets.to_vec(),
            targets: targets.to_vec(),
            tried: targets.iter().map(ToString::to_string).collect(),
            look_up: name.map(str::to_string),
            looked_up: false,
            deadline,
            phase: Phase::Round { next: 0, pinged: false },
            first_handshake: None,
            last_handshake: None,
        }
    }

    /// The echo id of the pings.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Something the tunnel said, as it arrived at `now`.
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        match *event {
            Event::HandshakeCompleted => {
                self.first_handshake.get_or_insert(now);
                self.last_handshake = Some(now);
            }
            Event::ProbeAnswered { id } if id == self.id => {
                if let Phase::Pinging { answered, .. } = &mut self.phase {
                    answered.get_or_insert(now);
                }
            }
            _ => {}
        }
    }

    /// The addresses the name has, once looked up (none if it did not answer).
    pub fn looked_up(&mut self, name: &str, found: Vec<IpAddr>) {
        self.looked_up = true;
        self.tried.push(name.to_string());
        let new: Vec<IpAddr> = found.into_iter().filter(|a| !self.configured.contains(a)).collect();
        self.targets.extend(new);
        self.phase = Phase::Round { next: 0, pinged: false };
    }

    /// The name to look up after [`Step::LookUp`].
    pub fn name(&self) -> Option<&str> {
        self.look_up.as_deref()
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Step {
        loop {
            match self.phase {
                Phase::Pinging {
                    index,
                    sent,
                    answered: Some(at),
                    ..
                } => {
                    return Step::Ready(Ready::Answered {
                        target: self.targets[index],
                        millis: at.saturating_duration_since(sent).as_millis() as u64,
                        first_handshake: self.first_handshake.unwrap_or(at),
                    })
                }
                Phase::Pinging { until, .. } if now < until => return Step::Wait(until),
                Phase::Pinging { index, .. } => {
                    self.phase = Phase::Round {
                        next: index + 1,
                        pinged: true,
                    }
                }
                Phase::Round { next: 0, .. } if now >= self.deadline => return self.at_deadline(now),
                Phase::Round { next, pinged } if next < self.targets.len() => {
                    let Some(route) = ProbeRoute::from_addresses(&self.addresses, self.targets[next]) else {
                        self.phase = Phase::Round { next: next + 1, pinged };
                        continue;
                    };
                    self.seq = self.seq.wrapping_add(1);
                    self.phase = Phase::Pinging {
                        index: next,
                        sent: now,
                        until: (now + PING_WAIT).min(self.deadline.max(now)),
                        answered: None,
                    };
                    return Step::Ping { route, seq: self.seq };
                }
                Phase::Round { pinged: false, .. } => self.phase = Phase::Idle { until: now + IDLE },
                Phase::Round { pinged: true, .. } => self.phase = Phase::RoundDone,
                Phase::Idle { until } if now < until => return Step::Wait(until),
                Phase::Idle { .. } => self.phase = Phase::RoundDone,
                Phase::LookingUp => return Step::Wait(self.deadline),
                Phase::RoundDone => {
                    let (Some(first), Some(last)) = (self.first_handshake, self.last_handshake) else {
                        self.phase = Phase::Round { next: 0, pinged: false };
                        continue;
                    };
                    if self.look_up.is_some() && !self.looked_up {
                        self.phase = Phase::LookingUp;
                        return Step::LookUp;
                    }
                    if self.targets.is_empty() || now.saturating_duration_since(first) >= PING_GRACE {
                        return Step::Ready(self.handshake_only(first, last, now));
                    }
                    self.phase = Phase::Round { next: 0, pinged: false };
                }
            }
        }
    }

    fn at_deadline(&self, now: Instant) -> Step {
        match (self.first_handshake, self.last_handshake) {
            (Some(first), Some(last)) => Step::Ready(self.handshake_only(first, last, now)),
            _ => Step::Failed,
        }
    }

    fn handshake_only(&self, first: Instant, last: Instant, now: Instant) -> Ready {
        Ready::HandshakeOnly {
            tried: self.tried.clone(),
            handshake_age: now.saturating_duration_since(last),
            first_handshake: first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: u16 = 7;

    fn addresses() -> Vec<IpNet> {
        vec!["10.0.0.2/32".parse().unwrap()]
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    fn ping_to(step: Step) -> IpAddr {
        match step {
            Step::Ping { route, .. } => route.target,
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    #[test]
    fn an_answered_ping_is_ready_with_its_round_trip() {
        let t0 = Instant::now();
        let mut r = Readiness::new(ID, &addresses(), &[ip("10.0.0.1")], None, t0 + Duration::from_secs(10));
        assert_eq!(ping_to(r.poll(t0)), ip("10.0.0.1"));
        assert_eq!(r.poll(t0), Step::Wait(t0 + PING_WAIT));
        r.handle_event(&Event::HandshakeCompleted, t0 + Duration::from_millis(20));
        r.handle_event(&Event::ProbeAnswered { id: ID }, t0 + Duration::from_millis(45));

        assert_eq!(
            r.poll(t0 + Duration::from_millis(45)),
            Step::Ready(Ready::Answered {
                target: ip("10.0.0.1"),
                millis: 45,
                first_handshake: t0 + Duration::from_millis(20),
            })
        );
    }

    #[test]
    fn another_id_answers_nothing_and_targets_are_tried_in_turn() {
        let t0 = Instant::now();
        let targets = [ip("10.0.0.1"), ip("fd00::1"), ip("10.0.0.3")];
        let mut r = Readiness::new(ID, &addresses(), &targets, None, t0 + Duration::from_secs(10));
        assert_eq!(ping_to(r.poll(t0)), ip("10.0.0.1"));
        r.handle_event(&Event::ProbeAnswered { id: ID + 1 }, t0);
        let t1 = t0 + PING_WAIT;

        // No IPv6 address of ours: that target is skipped without a wait.
        assert_eq!(ping_to(r.poll(t1)), ip("10.0.0.3"));
    }

    #[test]
    fn a_handshake_without_answers_is_ready_after_the_grace() {
        let t0 = Instant::now();
        let mut r = Readiness::new(ID, &addresses(), &[ip("10.0.0.1")], None, t0 + Duration::from_secs(10));
        r.handle_event(&Event::HandshakeCompleted, t0);
        let mut now = t0;
        let ready = loop {
            match r.poll(now) {
                Step::Ping { .. } => {}
                Step::Wait(until) => now = until,
                Step::Ready(ready) => break ready,
                other => panic!("unexpected {other:?}"),
            }
        };

        assert_eq!(now, t0 + 4 * PING_WAIT, "pings go on for the grace");
        assert_eq!(
            ready,
            Ready::HandshakeOnly {
                tried: vec!["10.0.0.1".into()],
                handshake_age: 4 * PING_WAIT,
                first_handshake: t0,
            }
        );
    }

    #[test]
    fn the_name_is_looked_up_once_the_handshake_is_done_and_its_addresses_pinged() {
        let t0 = Instant::now();
        let mut r = Readiness::new(
            ID,
            &addresses(),
            &[ip("10.0.0.1")],
            Some("logger.core.zerops"),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(ping_to(r.poll(t0)), ip("10.0.0.1"));
        let t1 = t0 + PING_WAIT;
        assert_eq!(ping_to(r.poll(t1)), ip("10.0.0.1"), "no handshake yet: another round");
        r.handle_event(&Event::HandshakeCompleted, t1);
        let t2 = t1 + PING_WAIT;

        assert_eq!(r.poll(t2), Step::LookUp);
        assert_eq!(r.name(), Some("logger.core.zerops"));
        r.looked_up("logger.core.zerops", vec![ip("10.0.0.1"), ip("10.0.0.9")]);
        assert_eq!(ping_to(r.poll(t2)), ip("10.0.0.1"));
        assert_eq!(ping_to(r.poll(t2 + PING_WAIT)), ip("10.0.0.9"));
    }

    #[test]
    fn nothing_to_ping_waits_for_the_handshake_only() {
        let t0 = Instant::now();
        let mut r = Readiness::new(ID, &addresses(), &[], None, t0 + Duration::from_secs(10));
        assert_eq!(r.poll(t0), Step::Wait(t0 + IDLE));
        r.handle_event(&Event::HandshakeCompleted, t0 + IDLE);
        let now = t0 + IDLE + Duration::from_millis(30);

        assert_eq!(
            r.poll(now),
            Step::Ready(Ready::HandshakeOnly {
                tried: vec![],
                handshake_age: Duration::from_millis(30),
                first_handshake: t0 + IDLE,
            })
        );
    }

    #[test]
    fn no_handshake_by_the_deadline_fails_and_a_late_one_is_enough() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(1);
        let mut r = Readiness::new(ID, &addresses(), &[ip("10.0.0.1")], None, deadline);
        let mut now = t0;
        loop {
            match r.poll(now) {
                Step::Ping { .. } => {}
                Step::Wait(until) => now = until,
                Step::Failed => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(now, deadline);

        let mut r = Readiness::new(ID, &addresses(), &[ip("10.0.0.1")], None, deadline);
        r.handle_event(&Event::HandshakeCompleted, deadline - Duration::from_millis(100));
        assert!(matches!(r.poll(deadline), Step::Ready(Ready::HandshakeOnly { .. })));
    }
}
