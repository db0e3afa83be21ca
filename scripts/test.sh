#!/usr/bin/env bash
# The test suite, from a fresh machine: packages, build, unit and end-to-end tests (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "the end-to-end tests build network namespaces: run as root (sudo $0, or $0 in a root shell)" >&2
    exit 1
fi
scripts/deps.sh
echo "==> building corridor and the lab"
cargo build --all-targets --examples
echo "==> running the tests"
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
echo "==> the Debian package: release build, cargo-deb, installed and run"
cargo test --test packaging -- --ignored
