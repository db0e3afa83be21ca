#!/usr/bin/env bash
# Cargo's runner for x86_64-pc-windows-gnu (.cargo/config.toml): runs a Windows program, such as
# a test binary, under Wine in a prefix of its own that is removed afterwards, with the
# ProcessPrng stand-in beside it (Wine 8 has no bcryptprimitives.dll: tests/wine/).
set -euo pipefail
exe=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
stub=$(dirname "$exe")/bcryptprimitives.dll
if [[ ! $stub -nt $root/tests/wine/bcryptprimitives.c ]]; then
    x86_64-w64-mingw32-gcc -shared -O2 -o "$stub" "$root/tests/wine/bcryptprimitives.c" -ladvapi32
fi
# Debian keeps Wine's programs off PATH.
PATH=$PATH:/usr/lib/wine
work=$(mktemp -d)
export WINEPREFIX=$work/prefix TMPDIR=$work/tmp WINEDEBUG=${WINEDEBUG:--all}
# The stand-in, not a builtin; no Mono or Gecko installer prompts.
export WINEDLLOVERRIDES="bcryptprimitives=n;mscoree=;mshtml="
unset DISPLAY
mkdir -p "$TMPDIR"
cleanup() {
    wineserver -k 2>/dev/null || true
    wineserver -w 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
status=0
wine64 "$exe" "$@" || status=$?
exit "$status"
