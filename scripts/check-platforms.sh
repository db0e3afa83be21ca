#!/usr/bin/env bash
# Windows and macOS from this Linux machine: clippy (-D warnings, all targets) for both, the
# library's unit tests for Windows under Wine (cargo's runner for the target is
# scripts/wine-run.sh, see .cargo/config.toml), and the release zip (scripts/dist.sh windows)
# whose corridor.exe and corridor-daemon.exe the Wine tests (tests/windows_wine.rs) run.
# Installs what it needs when missing: the Rust targets, Debian's mingw-w64 (ring's C compiler
# for Windows) and wine64, and PyPI's ziglang + cargo-zigbuild (ring's C compiler for macOS).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
WINDOWS=x86_64-pc-windows-gnu
MACOS=x86_64-apple-darwin

installed_targets=$(rustup target list --installed)
for target in "$WINDOWS" "$MACOS"; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

missing=()
for p in gcc-mingw-w64-x86-64 wine64; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
    echo "==> installing ziglang and cargo-zigbuild from PyPI"
    python3 -m pip install -q ziglang cargo-zigbuild ||
        python3 -m pip install -q --break-system-packages ziglang cargo-zigbuild
    hash -r
fi
# pip's scripts directory may not be on PATH (a CI shell without pyenv's shims).
PATH=$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

echo "==> clippy for Windows ($WINDOWS)"
cargo clippy --all-targets --target "$WINDOWS" -- -D warnings
echo "==> the library's unit tests for Windows, under Wine"
cargo test --lib --target "$WINDOWS"
echo "==> clippy for macOS ($MACOS, zig as ring's C compiler)"
cargo-zigbuild clippy --all-targets --target "$MACOS" -- -D warnings
echo "==> release corridor.exe and corridor-daemon.exe, in the zip the Wine tests take them from"
scripts/dist.sh windows
echo "==> platforms checked in $((SECONDS - start)) s: dist/corridor-*-x86_64-windows.zip"
