//! `lab path-mtu N|off`: a narrow path between the laptop and the project gateways, as a tunnel,
//! a PPPoE link or a mobile network makes one. Every IP packet larger than N bytes that crosses
//! the underlay bridge between the laptop's port and a gateway's port is dropped silently, both
//! ways, with no ICMP "too big" or "fragmentation needed": a path-MTU black hole. Traffic
//! between the laptop and the router itself (the API, the ISP resolver) keeps the full path.

use std::fs;

use anyhow::{Context, Result};

use crate::netns::{in_ns, ip};
use crate::plan::Plan;

/// The smallest and largest path MTU the lab narrows to: IPv4's minimum datagram every host
/// must take, and a jumbo frame.
pub const MIN: u16 = 576;
pub const MAX: u16 = 9000;

/// The nftables table (bridge family, in the net namespace) that holds the rule.
const TABLE: &str = "corridor_pathmtu";
/// The state file holding the current path MTU (absent: the full path).
pub const STATE: &str = "path-mtu";
/// veth's own limit of segments per GSO packet, which a narrow path lowers to 1 (below).
const GSO_MAX_SEGS: &str = "65535";

/// Parses `N` or `off`.
pub fn parse(text: &str) -> Result<Option<u16>> {
    if text == "off" {
        return Ok(None);
    }
    let n: u16 = text
        .parse()
        .ok()
        .filter(|n| (MIN..=MAX).contains(n))
        .with_context(|| format!("path-mtu takes a size in bytes from {MIN} to {MAX}, or off (not {text:?})"))?;
    Ok(Some(n))
}

/// The nft script: removes the table whether or not it exists, then adds it back with the rule
/// for `mtu`, all in one transaction (`nft -f` applies a file atomically), so a running
/// connection never sees a moment without a rule or with two.
pub fn rules(mtu: Option<u16>) -> String {
    let mut out = format!("table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n");
    if let Some(n) = mtu {
        // `ip6 length` is the payload length: the IPv6 header's 40 bytes are not in it.
        let v6 = n - 40;
        out.push_str(&format!(
            "table bridge {TABLE} {{\n\
             \x20 chain forward {{\n\
             \x20   type filter hook forward priority 0; policy accept;\n\
             \x20   iifname \"laptop\" oifname \"gw-*\" ether type ip ip length > {n} drop\n\
             \x20   iifname \"laptop\" oifname \"gw-*\" ether type ip6 ip6 length > {v6} drop\n\
             \x20   iifname \"gw-*\" oifname \"laptop\" ether type ip ip length > {n} drop\n\
             \x20   iifname \"gw-*\" oifname \"laptop\" ether type ip6 ip6 length > {v6} drop\n\
             \x20 }}\n\
             }}\n"
        ));
    }
    out
}

/// Narrows the path to `mtu` bytes, or gives it back its full size with `None`. Idempotent.
pub fn set(plan: &Plan, mtu: Option<u16>) -> Result<()> {
    let state = |name: &str| std::path::Path::new(&plan.state_dir).join(name);
    // A GSO packet crosses the bridge whole (the kernel cuts it into the segments that go on a
    // wire only at a device that cannot take it), so a rule on the packet's length would drop
    // a burst of small segments as one big packet. With one segment per GSO packet on the
    // devices that send into the narrow part (the laptop's and each gateway's underlay link),
    // the bridge sees what a wire would carry.
    let segs = if mtu.is_some() { "1" } else { GSO_MAX_SEGS };
    let mut senders = vec![plan.laptop_ns.as_str()];
    senders.extend(plan.projects.iter().map(|p| p.gw_ns.as_str()));
    for ns in senders {
        ip(ns, &["link", "set", "dev", "underlay", "gso_max_segs", segs])?;
    }
    let file = state(&format!("{TABLE}.nft"));
    fs::write(&file, rules(mtu)).with_context(|| format!("writing {}", file.display()))?;
    in_ns(&plan.net_ns, &["nft", "-f", &file.to_string_lossy()])?;
    match mtu {
        Some(n) => fs::write(state(STATE), format!("{n}\n"))?,
        None => {
            let _ = fs::remove_file(state(STATE));
        }
    }
    Ok(())
}

/// The path MTU `set` last put in place, `None` for the full path.
pub fn current(plan: &Plan) -> Option<u16> {
    let text = fs::read_to_string(std::path::Path::new(&plan.state_dir).join(STATE)).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_the_range_and_words_other_than_off_are_refused() {
        assert_eq!(parse("off").unwrap(), None);
        assert_eq!(parse("1280").unwrap(), Some(1280));
        assert_eq!(parse("576").unwrap(), Some(576));
        assert_eq!(parse("9000").unwrap(), Some(9000));
        for bad in ["575", "9001", "0", "-1", "", "1280.5", "on", "65536"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rules_replace_the_table_and_narrow_both_families_both_ways() {
        let off = rules(None);
        assert_eq!(
            off,
            "table bridge corridor_pathmtu {}\ndelete table bridge corridor_pathmtu\n"
        );
        let on = rules(Some(1280));
        assert!(on.starts_with(&off), "{on}");
        assert!(on.contains("iifname \"laptop\" oifname \"gw-*\" ether type ip ip length > 1280 drop"));
        assert!(on.contains("iifname \"gw-*\" oifname \"laptop\" ether type ip6 ip6 length > 1240 drop"));
        assert_eq!(on.matches(" drop").count(), 4, "{on}");
    }
}
