//! The TUN side of the data path, per OS: reading packets from the device and writing packets
//! to it (`host::device` creates it). Linux reads and writes in batches through TUN offload (a read yields a
//! TCP super-packet split into segments, a write hands the kernel coalesced segments); every
//! other OS moves one packet per read and write, as Linux does when offload is refused.

#[cfg(target_os = "linux")]
pub use batched::{coalesces, TunRx, TunTx, OFFLOAD, OFFSET};
#[cfg(not(target_os = "linux"))]
pub use portable::{coalesces, TunRx, TunTx, OFFLOAD, OFFSET};

#[cfg(target_os = "linux")]
mod batched {
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

    /// Whether the device coalesces the TCP segments of one write (offload granted): only
    /// then does holding packets for a larger write gain anything.
    pub fn coalesces(device: &AsyncDevice) -> bool {
        device.tcp_gso()
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

    /// Writes one packet at a time: nothing to gain by holding packets for a larger write.
    pub fn coalesces(_: &AsyncDevice) -> bool {
        false
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
