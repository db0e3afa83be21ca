//! The one registry of lab prefixes and slots. A prefix names every namespace, link and file of
//! a lab (so two labs with one prefix tear each other down) and a slot picks its addresses (so
//! two labs with one slot share networks). Test binaries may run side by side (cargo-nextest,
//! two `cargo test --test` at once), so a prefix or slot must be unique across all of tests/,
//! not just within one file: `Lab::up` takes only the prefix and looks its slot up here, and
//! `problems` (checked by tests/lab.rs) refuses duplicates.

use std::ops::RangeInclusive;

/// Every lab a test brings up: (prefix, slot). A prefix is at most 8 letters or digits (the lab
/// refuses longer ones: it becomes part of interface and namespace names).
pub const LABS: &[(&str, u8)] = &[
    // tests/lab.rs
    ("crtref", 1),
    ("crtlife", 2),
    ("crtgwrs", 30),
    ("crticmp", 31),
    ("crtshad", 36),
    // tests/vpn.rs
    ("crtvpn", 3),
    ("crtapi", 4),
    ("crtkill", 5),
    ("crtfail", 6),
    ("crtfg", 12),
    ("crtnooff", 13),
    ("crtuser", 14),
    ("crthold", 11),
    // tests/dns.rs
    ("crtdns", 7),
    ("crtdnsk", 8),
    ("crtc2c", 9),
    ("crtboot", 10),
    // tests/real_account.rs
    ("crrping", 37),
    ("crrnohs", 38),
    ("crrv6", 32),
    ("crrnodns", 33),
    ("crrztok", 34),
    ("crrregn", 35),
    // tests/dns_projects.rs
    ("crtdnsp", 40),
    // tests/userspace.rs
    ("crtusfw", 50),
    ("crtuscn", 51),
    ("crtussx", 52),
    ("crtusbad", 53),
    ("crtussil", 54),
    ("crtusvpn", 55),
    ("crtusc2c", 56),
    // tests/access.rs
    ("cracls", 60),
    ("cracssh", 61),
    ("cracconf", 62),
    ("cracpty", 63),
    ("cracdoc", 64),
    ("cracprox", 65),
    // tests/reliability.rs
    ("crtrel", 70),
    ("crtidle", 71),
    // tests/keys.rs
    ("crklist", 80),
    ("crkrm", 81),
    ("crkconf", 82),
    ("crkconn", 83),
    ("crkbad", 84),
    // tests/dns_watch.rs
    ("crwdns", 100),
    ("crwloop", 101),
    ("crwdoh", 102),
    ("crwcrash", 103),
    // tests/heal.rs
    ("crhroute", 105),
    ("crhnodns", 106),
    ("crhkey", 107),
    ("crhrekey", 108),
    ("crhtoken", 109),
    // tests/path_mtu.rs
    ("crpfull", 110),
    ("crp1124", 111),
    ("crpmid", 112),
    ("crpfwd", 113),
    ("crpstat", 114),
    // tests/windows_wine.rs
    ("wine", 90),
    ("winefwd", 91),
    ("winedns", 92),
    ("wineprox", 93),
];

/// Slots held for labs outside `LABS` or for test files still to come: (slots, prefix, who).
/// Inside a reserved range only prefixes starting with its prefix may appear in `LABS`, so
/// tests/keys.rs adds its `crk…` labs on slots 80–89 and tests/security.rs its `crsec…` labs on
/// 95–99 without looking at anyone else's.
pub const RESERVED: &[(RangeInclusive<u8>, &str, &str)] = &[
    (0..=0, "crdemo", "scripts/demo.sh, and `lab` by hand (prefix crl)"),
    (20..=20, "crbench", "scripts/bench.sh"),
    (23..=23, "crab", "scripts/bench-ab.py"),
    (72..=72, "crsoak", "scripts/soak.sh"),
    (80..=89, "crk", "tests/keys.rs"),
    (90..=94, "wine", "tests/windows_wine.rs"),
    (95..=99, "crsec", "tests/security.rs"),
    (100..=104, "crw", "tests/dns_watch.rs"),
    (105..=109, "crh", "tests/heal.rs"),
    (110..=114, "crp", "tests/path_mtu.rs"),
];

/// Prefixes the scripts use with their default slots (`lab` alone uses crl).
const SCRIPT_PREFIXES: &[&str] = &["crl", "crdemo", "crbench", "crab", "crsoak"];

/// The slot registered for `prefix`.
pub fn slot_of(prefix: &str) -> u8 {
    match LABS.iter().find(|(p, _)| *p == prefix) {
        Some((_, slot)) => *slot,
        None => {
            panic!("lab prefix {prefix} is not registered: add it with a free slot to LABS in tests/common/labs.rs")
        }
    }
}

/// Everything wrong with a registry (`LABS`) and the labs the test sources bring up
/// (`Lab::up("…")` in `sources`, (file name, text) pairs): empty when every lab is unique.
pub fn problems(labs: &[(&str, u8)], sources: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (prefix, slot)) in labs.iter().enumerate() {
        if prefix.is_empty() || prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(format!("{prefix}: a prefix is 1 to 8 letters or digits"));
        }
        if *slot > 127 {
            problems.push(format!("{prefix}: slot {slot} is above 127"));
        }
        if SCRIPT_PREFIXES.contains(prefix) {
            problems.push(format!("{prefix}: a script uses this prefix"));
        }
        for (other, other_slot) in &labs[..i] {
            if other == prefix {
                problems.push(format!("{prefix} is registered twice"));
            }
            if other_slot == slot {
                problems.push(format!("{prefix} and {other} share slot {slot}"));
            }
        }
        for (range, owner, who) in RESERVED {
            if range.contains(slot) && !prefix.starts_with(owner) {
                problems.push(format!("{prefix}: slot {slot} is reserved for {who} ({owner}…)"));
            }
        }
    }
    let mut used: Vec<(&str, &str)> = Vec::new();
    for (file, text) in sources {
        for call in text.split("Lab::up(\"").skip(1) {
            let prefix = call.split('"').next().unwrap_or_default();
            if !labs.iter().any(|(p, _)| *p == prefix) {
                problems.push(format!("{file}: lab {prefix} is not in LABS"));
            }
            if let Some((_, other)) = used.iter().find(|(p, _)| *p == prefix) {
                problems.push(format!(
                    "{file}: lab {prefix} is brought up by another test too (in {other})"
                ));
            }
            used.push((prefix, file));
        }
    }
    problems
}
