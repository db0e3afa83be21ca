//! The Debian package: built by `scripts/dist.sh deb` (a release build, minutes), installed by
//! `scripts/deb-test.sh`, which runs `corridor --version` and `man -w corridor` from it.
//! Not in the default run; CI runs it with `cargo test --test packaging -- --ignored`
//! (with CI=true the package is installed for real with `dpkg -i`, and removed afterwards).

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "a release build takes minutes: `cargo test --test packaging -- --ignored`"]
fn the_debian_package_installs_and_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dist = Command::new(repo.join("scripts/dist.sh")).arg("deb").status().unwrap();
    assert!(dist.success(), "scripts/dist.sh deb failed");
    let mut install = Command::new(repo.join("scripts/deb-test.sh"));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        install.arg("--system");
    }
    assert!(install.status().unwrap().success(), "scripts/deb-test.sh failed");
}
