#!/usr/bin/env bash
# The demo, from a fresh machine (as root): build corridor and the lab, then use corridor the
# way a developer would, from inside the lab's "laptop" namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "the demo builds network namespaces: run as root (sudo $0, or $0 in a root shell)" >&2
    exit 1
fi
scripts/deps.sh
echo "==> building corridor and the lab (release)"
cargo build --release --bin corridor --bin corridor-daemon --example lab
LAB=target/release/examples/lab
CORRIDOR=$PWD/target/release/corridor
export CORRIDOR_LAB_PREFIX=crdemo CORRIDOR_LAB_SLOT=0
WORK=$(mktemp -d)
export CORRIDOR_CONFIG_DIR=$WORK/config CORRIDOR_RUNTIME_DIR=$WORK/run CORRIDOR_STATE_DIR=$WORK/state
cleanup() {
    echo "==> cleaning up: vpn down, lab down"
    ip netns exec crdemo-laptop "$CORRIDOR" vpn down >/dev/null 2>&1 || true
    "$LAB" down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> bringing up the lab: a project 'demo' with containers, a WireGuard gateway, DNS and the API"
"$LAB" up
STATUS=$("$LAB" status --json)
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" <<<"$STATUS"; }
API=$(field 'd["api_url"]')
TOKEN=$(field 'd["token"]')
laptop() { echo "laptop\$ $*"; ip netns exec crdemo-laptop "$@"; }

SSH=(ssh -p 65437 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)

echo "==> on the laptop: log in, connect, ssh into containers by name, look at the status, disconnect"
laptop "$CORRIDOR" --api "$API" login --token "$TOKEN"
laptop "$CORRIDOR" vpn up demo
laptop "${SSH[@]}" root@node-id-13.runtime.api.zerops 'echo "hello from $(hostname)"'
laptop "${SSH[@]}" root@api 'echo "the service name api reached $(hostname)"'
laptop getent hosts www.isp.test
echo "==> everyday access: list the project, ssh by service name with no flags to remember"
laptop "$CORRIDOR" ls demo
laptop "$CORRIDOR" ssh api --instance 2 -- 'echo "corridor ssh reached $(hostname)"'
laptop "$CORRIDOR" vpn status
laptop "$CORRIDOR" vpn down
echo "==> without root and without vpn up: ssh through corridor's userspace stack (ProxyCommand)"
chmod 711 "$WORK"
install -d -o 65534 -g 65534 -m 700 "$WORK/nobody"
# That user runs a copy: the checkout may be where only root gets in (/root, a 0700 directory).
install -d -m 755 "$WORK/bin"
install -m 755 "$CORRIDOR" "$WORK/bin/corridor"
laptop setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    env CORRIDOR_CONFIG_DIR="$WORK/nobody" CORRIDOR_API="$API" ZEROPS_TOKEN="$TOKEN" \
    "${SSH[@]}" -o ProxyCommand="$WORK/bin/corridor connect -P demo %h %p" root@node1.db.db.zerops \
    'echo "uid 65534 reached $(hostname) with no tunnel interface"'
echo "==> demo done"
