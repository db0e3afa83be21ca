//! The tunnel's part of `vpn status`: the session's state and every counter the core keeps.

use serde::{Deserialize, Serialize};

use crate::tunnel::core::{LinkState, Stats};

/// Fields a daemon of an older version does not send read as zero.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TunnelStatus {
    pub connected: bool,
    pub last_handshake_secs: Option<f64>,
    pub state: ConnectionState,
    /// Seconds since the gateway stopped answering, while reconnecting.
    pub reconnecting_secs: Option<f64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped_not_allowed: u64,
    pub dropped_invalid: u64,
    pub dropped_malformed: u64,
    pub dropped_small_buffer: u64,
    pub dropped_no_route: u64,
    pub sessions_rebuilt: u64,
    pub probes_sent: u64,
    pub reconnects: u64,
    pub handshakes_forced: u64,
    pub sleeps_detected: u64,
    /// The largest outer datagram known to cross the path to the gateway and back.
    pub path_mtu: Option<u16>,
    /// What TCP SYNs are clamped to while the path is narrower than the interface.
    pub mss_ipv4: Option<u16>,
    pub mss_ipv6: Option<u16>,
    pub syns_clamped: u64,
    pub packets_fragmented: u64,
    pub too_big_sent: u64,
    pub path_probes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    #[default]
    Connecting,
    Connected,
    Reconnecting,
}

impl From<&Stats> for TunnelStatus {
    fn from(stats: &Stats) -> TunnelStatus {
        // Destructured, so a counter added to the core cannot be left out of the status.
        let &Stats {
            tx_bytes,
            rx_bytes,
            tx_packets,
            rx_packets,
            dropped_not_allowed,
            dropped_invalid,
            dropped_malformed,
            dropped_small_buffer,
            dropped_no_route,
            last_handshake,
            sessions_rebuilt,
            state,
            probes_sent,
            reconnects,
            handshakes_forced,
            sleeps_detected,
            path_mtu,
            mss_ipv4,
            mss_ipv6,
            syns_clamped,
            packets_fragmented,
            too_big_sent,
            path_probes,
        } = stats;
        let (state, reconnecting_secs) = match state {
            LinkState::Connecting => (ConnectionState::Connecting, None),
            LinkState::Connected => (ConnectionState::Connected, None),
            LinkState::Reconnecting { since } => (ConnectionState::Reconnecting, Some(since.elapsed().as_secs_f64())),
        };
        TunnelStatus {
            connected: last_handshake.is_some(),
            last_handshake_secs: last_handshake.map(|d| d.as_secs_f64()),
            state,
            reconnecting_secs,
            rx_bytes,
            tx_bytes,
            rx_packets,
            tx_packets,
            dropped_not_allowed,
            dropped_invalid,
            dropped_malformed,
            dropped_small_buffer,
            dropped_no_route,
            sessions_rebuilt,
            probes_sent,
            reconnects,
            handshakes_forced,
            sleeps_detected,
            path_mtu,
            mss_ipv4,
            mss_ipv6,
            syns_clamped,
            packets_fragmented,
            too_big_sent,
            path_probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn every_counter_of_the_core_is_in_the_json() {
        let stats = Stats {
            tx_bytes: 1,
            rx_bytes: 2,
            tx_packets: 3,
            rx_packets: 4,
            dropped_not_allowed: 5,
            dropped_invalid: 6,
            dropped_malformed: 7,
            dropped_small_buffer: 8,
            last_handshake: Some(Duration::from_secs(9)),
            sessions_rebuilt: 10,
            state: LinkState::Reconnecting {
                since: Instant::now() - Duration::from_secs(11),
            },
            probes_sent: 12,
            reconnects: 13,
            handshakes_forced: 14,
            sleeps_detected: 15,
            dropped_no_route: 16,
            path_mtu: Some(17),
            mss_ipv4: Some(18),
            mss_ipv6: Some(19),
            syns_clamped: 20,
            packets_fragmented: 21,
            too_big_sent: 22,
            path_probes: 23,
        };

        let json = serde_json::to_value(TunnelStatus::from(&stats)).unwrap();

        let numbers: Vec<u64> = json
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_f64())
            .map(|v| v as u64)
            .collect();
        for expected in 1..=23 {
            assert!(numbers.contains(&expected), "{expected} missing from {json}");
        }
        assert_eq!(json["state"], "reconnecting");
        assert_eq!(json["connected"], true);
    }
}
