//! Holding decrypted TCP data for the next receive, as a NIC holds segments for GRO: a batch
//! of bulk data none of whose segments is pushed (the sender has more of its burst coming)
//! waits, so the receiving TCP (the machine's behind the TUN, or smoltcp in the userspace mode)
//! takes twice as many segments in one go: one wake-up of its reader and one ACK instead of two.

use std::time::Duration;

use super::acks::more_follows;

/// Decrypted packets held for the next receive, at most.
pub const HOLD_MAX: usize = 24;
/// How long held packets wait for a next receive, at most.
pub const HOLD_WAIT: Duration = Duration::from_micros(200);

/// Whether the decrypted `packets` of a receive (with those held before it, `already_held`)
/// wait for the next one. A receive of one packet starts no hold: a trickle goes at once; and
/// anything but unpushed data (a pushed segment, a pure ACK, UDP, ICMP) sends the batch.
pub fn holds<'a>(mut packets: impl ExactSizeIterator<Item = &'a [u8]>, already_held: bool) -> bool {
    let count = packets.len();
    count < HOLD_MAX && (already_held || count >= 2) && packets.all(more_follows)
}

#[cfg(target_os = "linux")]
pub use timerfd::Timer;

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// The deadline of a hold: a timerfd, since tokio's timer is 1 ms-grained and a hold is a
    /// fraction of that.
    pub struct Timer(AsyncFd<Fd>);

    /// The timerfd by its raw descriptor, as tokio's AsyncFd takes it.
    struct Fd(TimerFd);

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    impl Timer {
        /// `None` if no timer could be made. Inside the runtime: the timer is registered with it.
        pub fn new() -> Option<Timer> {
            let timer = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .inspect_err(|e| tracing::debug!(error = %e, "no timer to hold packets with"))
            .ok()?;
            // SAFETY: the timer, which owns the descriptor, lives inside the AsyncFd.
            unsafe { AsyncFd::register_with_interest(Fd(timer), Interest::READABLE) }
                .ok()
                .map(Timer)
        }

        /// Ends the hold `after` from now (a hold still running is moved).
        pub fn start(&self, after: Duration) {
            let _ = self.0.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(after)),
                TimerSetTimeFlags::empty(),
            );
        }

        /// Returns when the hold's time is up (or the timer fails). Readiness left over from
        /// a hold that ended early is waited past: `start` re-armed the timer, so it reads
        /// nothing.
        pub async fn ended(&self) {
            loop {
                let Ok(mut ready) = self.0.readable().await else { return };
                if ready
                    .try_io(|timer| Ok(nix::unistd::read(&timer.get_ref().0, &mut [0; 8])?))
                    .is_ok()
                {
                    return;
                }
            }
        }
    }
}

/// No hold elsewhere: tokio's 1 ms timer would keep the tail of a flight waiting too long.
#[cfg(not(target_os = "linux"))]
pub enum Timer {}

#[cfg(not(target_os = "linux"))]
impl Timer {
    pub fn new() -> Option<Timer> {
        None
    }

    pub fn start(&self, _: Duration) {
        match *self {}
    }

    pub async fn ended(&self) {
        match *self {}
    }
}

/// Whether the decrypted `packets` of a receive are held: when there is a timer and the rule
/// of [`holds`] says so. The timer starts with the hold, not again with each receive that joins
/// it, so nothing waits longer than [`HOLD_WAIT`].
pub fn keep<'a>(timer: &Option<Timer>, packets: impl ExactSizeIterator<Item = &'a [u8]>, already_held: bool) -> bool {
    let Some(timer) = timer.as_ref().filter(|_| holds(packets, already_held)) else {
        return false;
    };
    if !already_held {
        timer.start(HOLD_WAIT);
    }
    true
}

/// When the hold ends; never without a timer.
pub async fn held_until(timer: &Option<Timer>) {
    match timer {
        Some(timer) => timer.ended().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment with `flags` and `data`.
    fn segment(flags: u8, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + data.len()) as u16).to_be_bytes());
        p[9] = 6;
        p[32] = 5 << 4;
        p[33] = flags;
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn only_a_batch_of_unpushed_data_waits_and_never_beyond_the_bound() {
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        let data = segment(ACK, b"burst");
        let batch = |packets: &[&Vec<u8>], held| holds(packets.iter().map(|p| p.as_slice()), held);

        assert!(batch(&[&data, &data], false));
        assert!(!batch(&[&data], false), "a single packet goes at once");
        assert!(batch(&[&data], true), "but joins a hold already running");
        assert!(!batch(&[&data, &segment(ACK | PSH, b"end")], false));
        assert!(!batch(&[&data, &segment(ACK, b"")], false), "a pure ACK");
        assert!(!batch(&[&data; HOLD_MAX], true));
        assert!(batch(&[&data; HOLD_MAX - 1], true));
    }
}
