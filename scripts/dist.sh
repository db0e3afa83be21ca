#!/usr/bin/env bash
# Release artifacts in dist/, one function per target:
#   corridor-<version>-x86_64-linux.tar.gz    corridor + README + the systemd unit
#   corridor-<version>-x86_64-windows.zip     corridor.exe + README + WINTUN.txt (where wintun.dll goes)
# macOS is type-checked here but not linked: the script says so instead of shipping nothing.
# `scripts/dist.sh [linux|windows|macos]...` builds some; with no argument, all.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
OUT=dist
mkdir -p "$OUT"

linux() {
    echo "==> Linux x86_64"
    cargo build --release --bin corridor
    local stage
    stage=$(mktemp -d)
    local dir="$stage/corridor-$VERSION-x86_64-linux"
    mkdir -p "$dir"
    cp target/release/corridor README.md packaging/corridor@.service "$dir/"
    tar -C "$stage" -czf "$OUT/corridor-$VERSION-x86_64-linux.tar.gz" "$(basename "$dir")"
    rm -rf "$stage"
    echo "    $OUT/corridor-$VERSION-x86_64-linux.tar.gz"
}

windows() {
    echo "==> Windows x86_64 (mingw-w64; scripts/check-platforms.sh installs it)"
    cargo build --release --bin corridor --target x86_64-pc-windows-gnu
    local stage
    stage=$(mktemp -d)
    local dir="$stage/corridor-$VERSION-x86_64-windows"
    mkdir -p "$dir"
    cp target/x86_64-pc-windows-gnu/release/corridor.exe README.md "$dir/"
    cat > "$dir/WINTUN.txt" <<'NOTE'
corridor needs wintun.dll (the Wintun TUN driver) beside corridor.exe.

1. Download the Wintun zip from https://www.wintun.net
2. Copy bin\amd64\wintun.dll from it into this folder, next to corridor.exe.
3. Run `corridor vpn up <project>` from an Administrator terminal.

wintun.dll is not shipped here: it is WireGuard LLC's signed driver, distributed by them.
NOTE
    (cd "$stage" && zip -qr - "$(basename "$dir")") > "$OUT/corridor-$VERSION-x86_64-windows.zip"
    rm -rf "$stage"
    echo "    $OUT/corridor-$VERSION-x86_64-windows.zip"
}

macos() {
    echo "==> macOS x86_64: not built. This machine has no macOS linker and SDK; it only"
    echo "    type-checks macOS (scripts/check-platforms.sh). Build on a Mac with"
    echo "    \`cargo build --release\`."
}

targets=("$@")
((${#targets[@]})) || targets=(linux windows macos)
for target in "${targets[@]}"; do
    case $target in
        linux | windows | macos) "$target" ;;
        *) echo "unknown target $target (linux, windows, macos)" >&2; exit 2 ;;
    esac
done
