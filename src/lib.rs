//! corridor: put this machine inside a cloud project's private network.
//!
//! The binary (`src/main.rs`) only parses and dispatches; everything it uses lives here so that
//! tests drive the same code.

pub mod access;
pub mod api;
pub mod cli;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod host;
pub mod keys;
pub mod paths;
pub mod platform;
pub mod report;
pub mod store;
pub mod tunnel;
pub mod userspace;
pub mod vpn;
