//! WireGuard data plane: the sans-IO core, the TUN device and the tokio shell around them.

pub mod acks;
pub mod clock;
pub mod core;
pub mod fit;
pub mod hold;
pub mod io;
pub mod pmtu;
pub mod probe;
pub mod socket;
#[cfg(test)]
pub(crate) mod testing;
pub mod tun;
