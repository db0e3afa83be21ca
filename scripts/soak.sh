#!/usr/bin/env bash
# Soak (as root, not part of the test suite): one corridor connection in the lab for
# --minutes M (30) with `ssh … true` every 3 s, while the gateway restarts every 5 minutes, the
# underlay drops everything for 30 s every 7 minutes (nftables in the laptop namespace), the
# laptop's address changes once and the daemon is stopped (SIGSTOP) for 200 s once, longer than
# WireGuard's 180 s reject-after time. Prints every recovery time (end of the disruption to the
# first ssh that works), the ssh commands that failed outside the disruption windows (goal:
# none), and the daemon's RSS at start and end. Brings up its own lab (prefix crsoak, slot 72;
# SOAK_PREFIX, SOAK_SLOT move it) and removes it at exit. --no-build uses target/release as is
# (SOAK_PROFILE=debug: target/debug);
# --quick runs every kind of disruption once in 6 minutes, to try the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${SOAK_PREFIX:-crsoak}
SLOT=${SOAK_SLOT:-72}
PROFILE=${SOAK_PROFILE:-release}
LAB=target/$PROFILE/examples/lab
CORRIDOR=$PWD/target/$PROFILE/corridor
SSH_EVERY=3
OUTAGE_SECS=30
STOP_SECS=200

minutes=30
build=1
quick=0
while (($#)); do
    case $1 in
        --minutes) minutes=$2; shift ;;
        --no-build) build=0 ;;
        --quick) quick=1; minutes=6 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (--minutes M, --quick, --no-build)" >&2; exit 2 ;;
    esac
    shift
done
if [[ $(id -u) != 0 ]]; then
    echo "the soak builds network namespaces: run as root (sudo $0)" >&2
    exit 1
fi
if ((build)); then
    echo "==> building corridor and the lab (release)"
    cargo build --release --bin corridor --bin corridor-daemon --example lab
fi

total=$((minutes * 60))
work=$(mktemp -d /tmp/corridor-soak.XXXXXX)
ssh_log=$work/ssh.log       # start end exit-code, one line per ssh … true
windows=$work/windows.log   # start end what: disruptions, failures inside them are expected
recoveries=$work/recoveries.log
lab() { "$LAB" --prefix "$PREFIX" --slot "$SLOT" "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
log() { printf '%7.1f s  %s\n' "$(since "$t0")" "$*" >&2; }

loop_pid=
cleanup() {
    [[ -n $loop_pid ]] && kill "$loop_pid" 2>/dev/null || true
    if [[ -n ${daemon:-} ]]; then kill -CONT "$daemon" 2>/dev/null || true; fi
    ip netns exec "$laptop" nft delete table inet soak 2>/dev/null || true
    corridor vpn down >/dev/null 2>&1 || true
    lab down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> bringing up the soak lab ($PREFIX, slot $SLOT)"
lab down >/dev/null 2>&1 || true
lab up >/dev/null
status=$(lab status --json)
field() { python3 -c "import json,sys; s=json.load(sys.stdin); print($1)" <<<"$status"; }
laptop=$(field 's["laptop_ns"]')
api=$(field 's["api_url"]')
token=$(field 's["token"]')
target=$(field '[c for p in s["projects"] for c in p["containers"] if c["name"].startswith("node-id-13")][0]["ipv6"]')
old_addr=$(ip -n "$laptop" -4 -o addr show dev underlay | awk '{print $4}')
new_addr=$(python3 -c "import ipaddress,sys; i=ipaddress.ip_interface(sys.argv[1]); print(f'{i.ip + 100}/{i.network.prefixlen}')" "$old_addr")
gateway_router=$(ip -n "$laptop" route show default | awk '{print $3}')

corridor() {
    CORRIDOR_CONFIG_DIR=$work/config CORRIDOR_RUNTIME_DIR=$work/run CORRIDOR_STATE_DIR=$work/state \
        ip netns exec "$laptop" "$CORRIDOR" --api "$api" "$@"
}
ssh_true() {
    timeout 30 ip netns exec "$laptop" ssh -p 65437 -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout="$1" "root@$target" true
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$daemon/status"; }

corridor login --token "$token" >/dev/null
corridor vpn up demo >/dev/null
daemon=$(corridor vpn status --json | python3 -c "import json,sys; print(json.load(sys.stdin)['connections'][0]['pid'])")
ssh_true 10
rss_start=$(rss_kib)
t0=$(now)
echo "==> soak for $minutes min: daemon $daemon, RSS $rss_start KiB, ssh to $target every ${SSH_EVERY} s"

# Traffic: an ssh every few seconds for the whole run; each is bounded by its ConnectTimeout
# (long enough that a gateway restart only slows it) and by `timeout`.
(
    while true; do
        start=$(now)
        rc=0
        ssh_true 10 2>/dev/null || rc=$?
        echo "$start $(now) $rc" >>"$ssh_log"
        sleep "$SSH_EVERY"
    done
) &
loop_pid=$!

# Ends when an ssh works again (attempts as a user makes them, bounded); records the time
# since $1.
recovered() {
    local from=$1 what=$2 deadline=$(($(date +%s) + 120))
    until ssh_true 5 2>/dev/null; do
        if (($(date +%s) > deadline)); then
            log "$what: NOT recovered within 120 s"
            echo "$what never" >>"$recoveries"
            return
        fi
        sleep 0.1
    done
    local took
    took=$(printf '%.2f' "$(since "$from")")
    log "$what: ssh works again after ${took} s"
    echo "$what $took" >>"$recoveries"
}

# The schedule, seconds from the start: restarts every 5 min, outages every 7 min, one address
# change, one long stop placed where it overlaps nothing else (scaled down for short runs).
events=()
if ((quick)); then
    events=("15 address" "30 restart" "60 outage" "100 stop" "320 restart")
else
    for ((t = 300; t < total; t += 300)); do events+=("$t restart"); done
    for ((t = 420; t < total; t += 420)); do events+=("$t outage"); done
    events+=("$((total / 12)) address")
    ((total >= 1200)) && events+=("$((total * 8 / 15)) stop")
fi
mapfile -t events < <(printf '%s\n' "${events[@]}" | sort -n)

for event in "${events[@]}"; do
    at=${event%% *}
    what=${event#* }
    wait_s=$(echo "$t0 + $at - $(now)" | bc)
    if [[ $wait_s != -* ]]; then sleep "$wait_s"; fi
    case $what in
        restart)
            log "gateway restart"
            lab gateway-restart demo >/dev/null
            recovered "$(now)" "gateway restart at ${at} s"
            ;;
        outage)
            log "underlay outage for ${OUTAGE_SECS} s"
            start=$(now)
            ip netns exec "$laptop" nft "add table inet soak; \
                add chain inet soak out { type filter hook output priority 0; oifname \"underlay\" drop; }; \
                add chain inet soak in { type filter hook input priority 0; iifname \"underlay\" drop; }"
            sleep "$OUTAGE_SECS"
            ip netns exec "$laptop" nft delete table inet soak
            end=$(now)
            recovered "$end" "outage at ${at} s"
            echo "$start $(now) outage" >>"$windows"
            ;;
        address)
            log "laptop address $old_addr → $new_addr"
            start=$(now)
            # Otherwise deleting the old (primary) address takes the new one with it.
            ip netns exec "$laptop" sysctl -qw net.ipv4.conf.underlay.promote_secondaries=1
            ip -n "$laptop" addr add "$new_addr" dev underlay
            ip -n "$laptop" addr del "$old_addr" dev underlay
            ip -n "$laptop" route replace default via "$gateway_router" dev underlay
            recovered "$start" "address change at ${at} s"
            ;;
        stop)
            log "daemon stopped (SIGSTOP) for ${STOP_SECS} s"
            start=$(now)
            kill -STOP "$daemon"
            sleep "$STOP_SECS"
            kill -CONT "$daemon"
            end=$(now)
            recovered "$end" "SIGSTOP ${STOP_SECS} s at ${at} s"
            echo "$start $(now) stop" >>"$windows"
            ;;
    esac
done
wait_s=$(echo "$t0 + $total - $(now)" | bc)
if [[ $wait_s != -* ]]; then sleep "$wait_s"; fi
kill "$loop_pid" 2>/dev/null || true
wait "$loop_pid" 2>/dev/null || true
loop_pid=

alive=yes
kill -0 "$daemon" 2>/dev/null || alive=no
rss_end=$( [[ $alive == yes ]] && rss_kib || echo gone)
final=$(corridor vpn status --json 2>/dev/null || echo '{}')

echo
echo "==> soak summary ($minutes min, corridor $(git describe --always --dirty 2>/dev/null || echo '?'))"
echo "recovery times (end of the disruption → first ssh that works):"
sed 's/^/  /' "$recoveries"
python3 - "$ssh_log" "$windows" "$t0" <<'EOF'
import sys
ssh_log, windows_log, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3])
runs = [tuple(float(x) for x in line.split()[:2]) + (int(line.split()[2]),) for line in open(ssh_log)]
try:
    windows = [(float(a), float(b), w) for a, b, w in (l.split() for l in open(windows_log))]
except FileNotFoundError:
    windows = []
failed = [r for r in runs if r[2] != 0]
inside = [r for r in failed if any(s <= r[1] and r[0] <= e for s, e, _ in windows)]
outside = [r for r in failed if r not in inside]
print(f"ssh commands: {len(runs)}, failed {len(failed)}: {len(inside)} inside outage/stop windows, "
      f"{len(outside)} outside")
for start, end, rc in outside:
    print(f"  failed outside a window: started at {start - t0:.1f} s, took {end - start:.1f} s, exit {rc}")
slowest = max((r for r in runs if r[2] == 0), key=lambda r: r[1] - r[0], default=None)
if slowest:
    print(f"slowest working ssh: {slowest[1] - slowest[0]:.1f} s (at {slowest[0] - t0:.1f} s)")
EOF
echo "daemon $daemon alive: $alive; RSS at start $rss_start KiB, at end $rss_end KiB"
python3 -c "
import json,sys
c = (json.loads(sys.argv[1]).get('connections') or [{}])[0]
keys = ['state', 'reconnects', 'handshakes_forced', 'probes_sent', 'sleeps_detected', 'sessions_rebuilt', 'dropped_invalid']
print('status: ' + ', '.join(f'{k} {c.get(k)}' for k in keys))
" "$final"
