#!/usr/bin/env bash
# Installs the newest Debian package from target/debian/ (made by scripts/dist.sh deb) and checks
# that `corridor --version` and `corridor-daemon` run and `man -w corridor` finds the page. By default into a
# throwaway root (dpkg --root), so this machine stays as it was; with --system it is installed
# for real with `dpkg -i` and removed again at the end (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/corridor_*.deb 2>/dev/null | head -1)
[[ -n $deb ]] || { echo "no package in target/debian/: run scripts/dist.sh deb first" >&2; exit 1; }
echo "==> $deb"
dpkg-deb --contents "$deb"

if [[ ${1:-} == --system ]]; then
    trap 'dpkg -r corridor >/dev/null' EXIT
    dpkg -i "$deb"
    version=$(corridor --version)
    daemon=$(command -v corridor-daemon || true)
    page=$(man -w corridor)
else
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
    touch "$root/var/lib/dpkg/status"
    # The throwaway root has no libc6 package to satisfy the dependency; the host's libc serves.
    dpkg --root="$root" --force-depends --force-not-root -i "$deb" >/dev/null
    version=$("$root/usr/bin/corridor" --version)
    daemon=$root/usr/bin/corridor-daemon
    page=$(MANPATH="$root/usr/share/man" man -w corridor)
    [[ $page == "$root"/* ]] || { echo "man found $page, not the packaged page" >&2; exit 1; }
    for f in usr/share/bash-completion/completions/corridor usr/share/zsh/vendor-completions/_corridor \
             usr/share/fish/vendor_completions.d/corridor.fish lib/systemd/system/corridor@.service; do
        [[ -s $root/$f ]] || { echo "the package lacks /$f" >&2; exit 1; }
    done
fi
[[ $version == "corridor "* ]] || { echo "unexpected version line: $version" >&2; exit 1; }
# Started by hand, the daemon program runs and says who starts it.
[[ -x $daemon && $("$daemon" 2>&1 || true) == *"started by corridor"* ]] ||
    { echo "the package's corridor-daemon is missing or does not run" >&2; exit 1; }
echo "==> installed: $version; man page $page"
