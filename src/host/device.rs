//! The TUN device: the only code that creates interfaces, sets their addresses and routes.
//! Every change goes through the host-change journal first; the data plane (`tunnel`) only
//! moves packets through the device it is handed.

use anyhow::{Context, Result};
use ipnet::IpNet;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::host::{self, Change, Journal};
use crate::tunnel::tun;

pub struct DeviceConfig<'a> {
    pub name: &'a str,
    /// Marks the interface as this connection's (see `host::Change::Interface`).
    pub tag: &'a str,
    pub mtu: u16,
    /// The peer's own addresses (/32 and /128).
    pub addresses: &'a [IpNet],
    /// Networks routed into the tunnel: the project's and the peers'.
    pub routes: &'a [IpNet],
}

/// Creates the interface with its addresses and routes, recording each change before it is made.
pub fn create(config: &DeviceConfig, journal: &mut Journal) -> Result<AsyncDevice> {
    journal.record(Change::Interface {
        name: config.name.to_string(),
        tag: Some(config.tag.to_string()),
    })?;
    // CORRIDOR_NO_OFFLOAD=1 takes the path of a kernel that refuses offload (tests use it).
    let try_offload = tun::OFFLOAD && std::env::var_os("CORRIDOR_NO_OFFLOAD").is_none_or(|v| v != "1");
    let offloaded = if try_offload {
        build(config, true)
    } else {
        Err(std::io::ErrorKind::Unsupported.into())
    };
    let device = match offloaded {
        Ok(device) => device,
        Err(e) => {
            // Old kernels and some sandboxes refuse the virtio header or TSO flags.
            tracing::info!(error = %e, "TUN offload refused; moving packets one at a time");
            build(config, false).with_context(|| format!("creating the tunnel interface {}", config.name))?
        }
    };
    host::tag_interface(config.name, config.tag).with_context(|| format!("tagging {}", config.name))?;
    host::add_routes(config.name, config.routes, journal).context("routing the project networks into the tunnel")?;
    Ok(device)
}

/// The first interface name (`corridorN`, `utunN` on macOS) not taken on this host.
pub fn free_name() -> String {
    (0..)
        .map(|n| format!("{}{n}", host::INTERFACE_PREFIX))
        .find(|name| host::interface_tag(name).is_none())
        .expect("some interface name is free")
}

/// Creates the device with its addresses; `offload` asks for TUN offload (Linux only; elsewhere
/// there is none to ask for).
fn build(config: &DeviceConfig, offload: bool) -> std::io::Result<AsyncDevice> {
    let mut builder = os_options(DeviceBuilder::new().name(config.name).mtu(config.mtu), config, offload);
    for addr in config.addresses {
        builder = match addr {
            IpNet::V4(v4) => builder.ipv4(v4.addr(), v4.prefix_len(), None),
            IpNet::V6(v6) => builder.ipv6(v6.addr(), v6.prefix_len()),
        };
    }
    builder.build_async()
}

#[cfg(target_os = "linux")]
fn os_options(builder: DeviceBuilder, _config: &DeviceConfig, offload: bool) -> DeviceBuilder {
    builder.offload(offload)
}

/// `wintun.dll` is loaded from beside corridor.exe (the preflight checked it is there); the
/// tag is kept as the adapter's description.
#[cfg(windows)]
fn os_options(builder: DeviceBuilder, config: &DeviceConfig, _offload: bool) -> DeviceBuilder {
    let builder = builder.description(config.tag);
    match std::env::current_exe() {
        Ok(exe) => builder.wintun_file(exe.with_file_name("wintun.dll").to_string_lossy().into_owned()),
        Err(_) => builder,
    }
}

#[cfg(target_os = "macos")]
fn os_options(builder: DeviceBuilder, _config: &DeviceConfig, _offload: bool) -> DeviceBuilder {
    builder
}
