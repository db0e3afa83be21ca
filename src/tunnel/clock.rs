//! Where the tunnel's time comes from: the system's clocks in the daemon, injected ones in tests.

use std::time::{Duration, Instant};

/// The two readings the session needs.
pub trait Clock {
    /// Monotonic time, the clock the shell's timers follow; it stops while the machine sleeps.
    fn now(&self) -> Instant;
    /// Time the machine has spent suspended so far: it grows only across a suspend.
    fn asleep(&self) -> Duration;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn asleep(&self) -> Duration {
        crate::platform::asleep()
    }
}

/// A clock whose readings a test sets.
#[cfg(test)]
pub struct TestClock {
    now: std::cell::Cell<Instant>,
    asleep: std::cell::Cell<Duration>,
}

#[cfg(test)]
impl TestClock {
    pub fn new(start: Instant) -> TestClock {
        TestClock {
            now: start.into(),
            asleep: Duration::from_secs(3).into(),
        }
    }

    /// Moves monotonic time on by `awake` and the time spent suspended by `asleep`.
    pub fn advance(&self, awake: Duration, asleep: Duration) {
        self.now.set(self.now.get() + awake);
        self.asleep.set(self.asleep.get() + asleep);
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now(&self) -> Instant {
        self.now.get()
    }

    fn asleep(&self) -> Duration {
        self.asleep.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reports_no_sleep_growth_while_awake() {
        let clock = SystemClock;

        let before = clock.asleep();
        std::thread::sleep(Duration::from_millis(20));
        let after = clock.asleep();

        assert!(
            after.saturating_sub(before) < Duration::from_millis(5),
            "{before:?} then {after:?}"
        );
    }
}
