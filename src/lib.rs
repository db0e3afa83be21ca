//! corridor: put this machine inside a cloud project's private network.
//!
//! The binaries only parse and dispatch: `corridor` (`src/main.rs`), the commands, and
//! `corridor-daemon` (`src/bin/corridor-daemon.rs`), the processes that hold a connection and the
//! DNS service. Everything they use lives here so that tests drive the same code.

pub mod access;
pub mod account;
pub mod api;
pub mod cli;
pub mod connections;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod family;
pub mod host;
pub mod keys;
pub mod logging;
pub mod paths;
pub mod platform;
pub mod project_id;
pub mod report;
pub mod store;
pub mod tunnel;
pub mod userspace;
pub mod vpn;
pub mod vpn_keys;
pub mod wg_conf;
