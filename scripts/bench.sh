#!/usr/bin/env bash
# The benchmark (as root): corridor against the wireguard-go client and boringtun-cli, in turn,
# in the lab's laptop namespace against the same wireguard-go gateway. Installs what it needs,
# builds release, brings up its own lab (prefix crbench, slot 20; BENCH_PREFIX and BENCH_SLOT
# move it) and removes it at exit; the measuring is scripts/bench.py. Options (passed on):
# --rounds N (3), --duration S (10), --json PATH (target/bench/results.json), --only reliability
# (idle wakeups and recovery after a gateway restart), --only dns (corridor's DNS rows alone) or
# --only userspace (corridor forward against onetun) or --only pathmtu (TCP both ways for every
# client on a 1280-byte path, `lab path-mtu 1280`, and corridor's narrow / full ratio); --no-build
# uses the binaries already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${BENCH_PREFIX:-crbench}
SLOT=${BENCH_SLOT:-20}
LAB=target/release/examples/lab
TOOLS=target/bench-tools
BORINGTUN=$TOOLS/bin/boringtun-cli
ONETUN=$TOOLS/bin/onetun

build=1
dns_only=0
pass=()
prev=
for arg in "$@"; do
    case $arg in
        -h | --help) exec python3 scripts/bench.py --help ;;
        --no-build) build=0 ;;
        *) pass+=("$arg") ;;
    esac
    [[ $prev == --only && $arg == dns ]] && dns_only=1
    prev=$arg
done
if [[ $(id -u) != 0 ]]; then
    echo "the benchmark builds network namespaces: run as root (sudo $0)" >&2
    exit 1
fi

scripts/deps.sh
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v ping >/dev/null || missing+=(iputils-ping)
if ((${#missing[@]})); then
    echo "==> installing Debian packages for the benchmark: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ ! -x $BORINGTUN ]] && ((!dns_only)); then
    echo "==> installing boringtun-cli from crates.io into $TOOLS"
    if ! cargo install boringtun-cli --locked --root "$TOOLS"; then
        echo "==> boringtun-cli could not be installed: it is reported as unavailable" >&2
    fi
fi
if [[ ! -x $ONETUN ]]; then
    echo "==> installing onetun from crates.io into $TOOLS"
    if ! cargo install onetun --locked --root "$TOOLS"; then
        echo "==> onetun could not be installed: it is reported as unavailable" >&2
    fi
fi
if ((build)); then
    echo "==> building corridor and the lab (release)"
    cargo build --release --bin corridor --bin corridor-daemon --example lab
fi

cleanup() {
    echo "==> removing the benchmark lab" >&2
    "$LAB" --prefix "$PREFIX" --slot "$SLOT" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> bringing up the benchmark lab ($PREFIX, slot $SLOT)"
"$LAB" --prefix "$PREFIX" --slot "$SLOT" down >/dev/null 2>&1 || true
"$LAB" --prefix "$PREFIX" --slot "$SLOT" up
python3 scripts/bench.py --lab "$LAB" --prefix "$PREFIX" --slot "$SLOT" \
    --corridor target/release/corridor --boringtun "$BORINGTUN" --onetun "$ONETUN" "${pass[@]}"
