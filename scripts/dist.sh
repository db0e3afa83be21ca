#!/usr/bin/env bash
# Release artifacts, one function per target: `scripts/dist.sh [TARGET…]` (default: deb).
#   docs   man page and shell completions, generated from the binary, into packaging/
#   deb    Debian package (cargo-deb, metadata in Cargo.toml) into target/debian/
#   linux    dist/corridor-<version>-x86_64-linux.tar.gz: corridor, corridor-daemon, README, the
#            systemd unit
#   windows  dist/corridor-<version>-x86_64-windows.zip: corridor.exe, corridor-daemon.exe, README,
#            WINTUN.txt (mingw-w64)
#   macos    says plainly that this machine cannot link for macOS (it only type-checks it)
# A release build is made first unless --no-build is given (then the binaries already built
# are used). PROFILE=dev packages the debug build instead: a quick check of the packaging only.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
OUT=dist

TOOLS=target/dist-tools
PROFILE=${PROFILE:-release}
case $PROFILE in
    dev) BIN=target/debug/corridor ;;
    *) BIN=target/$PROFILE/corridor ;;
esac

build() {
    echo "==> building corridor and corridor-daemon ($PROFILE)"
    cargo build --profile "$PROFILE" --locked --bin corridor --bin corridor-daemon
}

docs() {
    echo "==> man page and completions into packaging/"
    mkdir -p packaging/man packaging/completions
    "$BIN" man-page | gzip -9n > packaging/man/corridor.1.gz
    "$BIN" completions bash > packaging/completions/corridor.bash
    "$BIN" completions zsh > packaging/completions/_corridor
    "$BIN" completions fish > packaging/completions/corridor.fish
    "$BIN" completions powershell > packaging/completions/corridor.ps1
}

linux() {
    echo "==> Linux x86_64"
    local stage
    stage=$(mktemp -d)
    local dir="$stage/corridor-$VERSION-x86_64-linux"
    mkdir -p "$OUT" "$dir"
    cp "$BIN" "$BIN-daemon" README.md packaging/corridor@.service "$dir/"
    tar -C "$stage" -czf "$OUT/corridor-$VERSION-x86_64-linux.tar.gz" "$(basename "$dir")"
    rm -rf "$stage"
    echo "    $OUT/corridor-$VERSION-x86_64-linux.tar.gz"
}

windows() {
    echo "==> Windows x86_64 (mingw-w64; scripts/check-platforms.sh installs it)"
    cargo build --release --bin corridor --bin corridor-daemon --target x86_64-pc-windows-gnu
    local stage
    stage=$(mktemp -d)
    local dir="$stage/corridor-$VERSION-x86_64-windows"
    mkdir -p "$OUT" "$dir"
    cp target/x86_64-pc-windows-gnu/release/{corridor,corridor-daemon}.exe README.md "$dir/"
    cat > "$dir/WINTUN.txt" <<'NOTE'
corridor needs wintun.dll (the Wintun TUN driver) beside corridor.exe and corridor-daemon.exe.

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

deb() {
    docs
    if ! command -v cargo-deb >/dev/null && [[ ! -x $TOOLS/bin/cargo-deb ]]; then
        echo "==> installing cargo-deb from crates.io into $TOOLS"
        cargo install cargo-deb --locked --root "$TOOLS"
    fi
    echo "==> Debian package"
    PATH=$PWD/$TOOLS/bin:$PATH cargo deb --no-build --profile "$PROFILE"
}

build=1
targets=()
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        docs | deb | linux | windows | macos) targets+=("$arg") ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown target $arg (docs, deb, linux, windows, macos)" >&2; exit 2 ;;
    esac
done
((${#targets[@]})) || targets=(deb)
# Windows builds its own programs (another target); the rest package the Linux build.
if [[ " ${targets[*]} " =~ \ (docs|deb|linux)\  ]]; then
    ((build)) && build
    for bin in "$BIN" "$BIN-daemon"; do
        [[ -x $bin ]] || { echo "$bin is missing: run without --no-build" >&2; exit 1; }
    done
fi
for target in "${targets[@]}"; do
    "$target"
done
