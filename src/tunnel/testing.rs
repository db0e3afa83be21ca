//! Test support: two in-memory WireGuard peers, each the other's, for the core's tests and the
//! userspace stack's alike.

use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::OsRng;

use super::core::Config;

/// A client's and a gateway's session config with fresh keys, each accepting the sources given
/// (`client_allowed`: what the client accepts from the gateway); no keepalive, probe or path
/// search (tests set what they need).
pub(crate) fn peer_configs(client_allowed: &[&str], gateway_allowed: &[&str]) -> (Config, Config) {
    let client_key = StaticSecret::random_from_rng(OsRng);
    let gateway_key = StaticSecret::random_from_rng(OsRng);
    let config = |own: &StaticSecret, peer: &StaticSecret, allowed: &[&str]| Config {
        private_key: own.clone(),
        peer_public_key: PublicKey::from(peer),
        preshared_key: None,
        persistent_keepalive: None,
        allowed_ips: allowed.iter().map(|net| net.parse().expect("a prefix")).collect(),
        probe: None,
        path: None,
    };
    (
        config(&client_key, &gateway_key, client_allowed),
        config(&gateway_key, &client_key, gateway_allowed),
    )
}
