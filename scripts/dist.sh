#!/usr/bin/env bash
# Release artifacts, one function per target: `scripts/dist.sh [TARGET…]` (default: deb).
#   docs   man page and shell completions, generated from the binary, into packaging/
#   deb    Debian package (cargo-deb, metadata in Cargo.toml) into target/debian/
# A release build is made first unless --no-build is given (then the binary already built is
# used). PROFILE=dev packages the debug build instead: a quick check of the packaging only.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=target/dist-tools
PROFILE=${PROFILE:-release}
case $PROFILE in
    dev) BIN=target/debug/corridor ;;
    *) BIN=target/$PROFILE/corridor ;;
esac

build() {
    echo "==> building corridor ($PROFILE)"
    cargo build --profile "$PROFILE" --locked --bin corridor
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
        docs | deb) targets+=("$arg") ;;
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "unknown target $arg (docs, deb)" >&2; exit 2 ;;
    esac
done
((${#targets[@]})) || targets=(deb)
((build)) && build
[[ -x $BIN ]] || { echo "$BIN is missing: run without --no-build" >&2; exit 1; }
for target in "${targets[@]}"; do
    "$target"
done
