//! The TUN side of the data path, per OS: reading packets from the device and writing packets
//! to it (`host::device` creates it). Linux reads and writes in batches through TUN offload (a read yields a
//! TCP super-packet split into segments, a write hands the kernel coalesced segments); every
//! other OS moves one packet per read and write, as Linux does when offload is refused.

#[cfg(target_os = "linux")]
pub use batched::{Hold, TunRx, TunTx, OFFLOAD, OFFSET};
#[cfg(not(target_os = "linux"))]
pub use portable::{Hold, TunRx, TunTx, OFFLOAD, OFFSET};

#[cfg(target_os = "linux")]
mod batched {
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    use tun_rs::{AsyncDevice, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

    /// Where packets start in the TUN write buffers: room for the virtio header in front.
    pub const OFFSET: usize = VIRTIO_NET_HDR_LEN;
    pub const OFFLOAD: bool = true;

    /// Buffers for reading the TUN: the raw read (virtio header + super-packet) and its segments.
    pub struct TunRx {
        raw: Vec<u8>,
        segments: Vec<Vec<u8>>,
        sizes: Vec<usize>,
    }

    impl TunRx {
        pub fn new(mtu: u16) -> TunRx {
            let segment = usize::from(mtu).max(1500) + 64;
            TunRx {
                raw: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
                segments: vec![vec![0; segment]; IDEAL_BATCH_SIZE],
                sizes: vec![0; IDEAL_BATCH_SIZE],
            }
        }

        /// Reads the next batch; returns how many packets it holds.
        pub async fn read(&mut self, device: &AsyncDevice) -> std::io::Result<usize> {
            device
                .recv_multiple(&mut self.raw, &mut self.segments, &mut self.sizes, 0)
                .await
        }

        /// The `n` packets of the last read.
        pub fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
            self.segments
                .iter()
                .zip(&self.sizes)
                .take(n)
                .map(|(buf, &size)| &buf[..size])
        }
    }

    /// The deadline of packets held back for a larger coalesced write: a timerfd, since
    /// tokio's timer is 1 ms-grained and a hold is a fraction of that.
    pub struct Hold(AsyncFd<Timer>);

    /// The timerfd by its raw descriptor, as tokio's AsyncFd takes it.
    pub struct Timer(TimerFd);

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    impl Hold {
        /// `None` where holding gains nothing: the device does not coalesce (offload refused),
        /// or no timer could be made. Inside the runtime: the timer is registered with it.
        pub fn new(device: &AsyncDevice) -> Option<Hold> {
            if !device.tcp_gso() {
                return None;
            }
            let timer = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .inspect_err(|e| tracing::debug!(error = %e, "no timer to hold packets with"))
            .ok()?;
            // SAFETY: the timer, which owns the descriptor, lives inside the AsyncFd.
            unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
                .ok()
                .map(Hold)
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

    /// Coalesces the packets of one write.
    #[derive(Default)]
    pub struct TunTx {
        gro: GROTable,
    }

    impl TunTx {
        /// Writes packets that start at [`OFFSET`] in their buffers, in one batch.
        pub async fn write(&mut self, device: &AsyncDevice, packets: &mut [Vec<u8>]) -> std::io::Result<()> {
            device.send_multiple(&mut self.gro, packets, OFFSET).await.map(drop)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use tun_rs::AsyncDevice;

    pub const OFFSET: usize = 0;
    pub const OFFLOAD: bool = false;

    pub struct TunRx {
        buf: Vec<u8>,
        len: usize,
    }

    impl TunRx {
        pub fn new(mtu: u16) -> TunRx {
            TunRx {
                buf: vec![0; usize::from(mtu).max(1500) + 64],
                len: 0,
            }
        }

        /// Reads one packet; returns 1.
        pub async fn read(&mut self, device: &AsyncDevice) -> std::io::Result<usize> {
            self.len = device.recv(&mut self.buf).await?;
            Ok(1)
        }

        pub fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
            std::iter::once(&self.buf[..self.len]).take(n)
        }
    }

    #[derive(Default)]
    pub struct TunTx;

    /// Holding packets for a larger write: nothing to gain where writes do not coalesce.
    pub enum Hold {}

    impl Hold {
        pub fn new(_: &AsyncDevice) -> Option<Hold> {
            None
        }

        pub fn start(&self, _: std::time::Duration) {
            match *self {}
        }

        pub async fn ended(&self) {
            match *self {}
        }
    }

    impl TunTx {
        /// Writes packets one at a time.
        pub async fn write(&mut self, device: &AsyncDevice, packets: &mut [Vec<u8>]) -> std::io::Result<()> {
            for packet in packets.iter() {
                device.send(&packet[OFFSET..]).await?;
            }
            Ok(())
        }
    }
}
