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
        platform::asleep()
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
mod platform {
    use std::time::Duration;

    use nix::time::{clock_gettime, ClockId};

    /// Linux: CLOCK_BOOTTIME counts suspended time, CLOCK_MONOTONIC (tokio's timers) does not.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const WITH_SLEEP: ClockId = ClockId::CLOCK_BOOTTIME;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const WITHOUT_SLEEP: ClockId = ClockId::CLOCK_MONOTONIC;
    /// macOS: CLOCK_MONOTONIC counts suspended time, CLOCK_UPTIME_RAW (mach_absolute_time, what
    /// tokio's timers follow) does not.
    #[cfg(target_os = "macos")]
    const WITH_SLEEP: ClockId = ClockId::CLOCK_MONOTONIC;
    #[cfg(target_os = "macos")]
    const WITHOUT_SLEEP: ClockId = ClockId::from_raw(libc::CLOCK_UPTIME_RAW);

    pub fn asleep() -> Duration {
        // Read the clock without sleep first, so a tick between the two reads never looks negative.
        let (Ok(without), Ok(with)) = (clock_gettime(WITHOUT_SLEEP), clock_gettime(WITH_SLEEP)) else {
            return Duration::ZERO;
        };
        Duration::from(with).saturating_sub(Duration::from(without))
    }
}

/// Elsewhere no suspend is detected; WireGuard's own timers still recover, only more slowly.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
mod platform {
    pub fn asleep() -> std::time::Duration {
        std::time::Duration::ZERO
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
