#!/usr/bin/env python3
"""The benchmark's measurements (run by scripts/bench.sh, which installs, builds and brings up
the lab). corridor, the wireguard-go client and boringtun-cli take turns in the lab's laptop
namespace against the same wireguard-go gateway of project `demo`: A B C A B C …, each brought
up and torn down per round, never two at once. Medians of the rounds go to a table on stdout and,
with every round's values, to a JSON file. Python 3 standard library only.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SSH_OPTS = [
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
]
# Names the project's dnsmasq answers from its hosts file (so always "cached").
DNS_QUERIES = """node-id-13.runtime.api.zerops A
node-id-13.runtime.api.zerops AAAA
node-id-14.runtime.api.zerops A
node-id-14.runtime.api.zerops AAAA
node1.db.db.zerops A
node1.db.db.zerops AAAA
api.zerops A
api.zerops AAAA
db.zerops A
"""
# Names asked once each (more than a 10 s run can send), so no answer comes from corridor's
# cache: every query through its responder is forwarded through the tunnel to dnsmasq.
FORWARDED_NAMES = 400_000


def forwarded_queries():
    return "".join(f"n{i}.bench.zerops A\n" for i in range(FORWARDED_NAMES))


# (key, label, unit, format) in table order.
METRICS = [
    ("tcp_up_mbps", "TCP laptop→container", "Mbit/s", "{:.0f}"),
    ("tcp_down_mbps", "TCP container→laptop", "Mbit/s", "{:.0f}"),
    ("client_cpu_up", "client CPU per GB, up", "s/GB", "{:.2f}"),
    ("client_cpu_down", "client CPU per GB, down", "s/GB", "{:.2f}"),
    ("client_syscalls_up", "client syscalls per GB, up (perf stat)", "k/GB", "{:.0f}"),
    ("client_syscalls_down", "client syscalls per GB, down (perf stat)", "k/GB", "{:.0f}"),
    ("client_cswitches_up", "client context switches per GB, up (perf stat)", "k/GB", "{:.1f}"),
    ("client_cswitches_down", "client context switches per GB, down (perf stat)", "k/GB", "{:.1f}"),
    ("gw_cpu_up", "gateway wireguard-go CPU per GB, up", "s/GB", "{:.2f}"),
    ("gw_cpu_down", "gateway wireguard-go CPU per GB, down", "s/GB", "{:.2f}"),
    ("rtt_p50", "ping RTT p50 (tunnel)", "ms", "{:.3f}"),
    ("rtt_p99", "ping RTT p99 (tunnel)", "ms", "{:.3f}"),
    ("underlay_p50", "ping RTT p50 (underlay, no tunnel)", "ms", "{:.3f}"),
    ("underlay_p99", "ping RTT p99 (underlay, no tunnel)", "ms", "{:.3f}"),
    ("up_to_ping_ms", "up → first ping answered", "ms", "{:.0f}"),
    ("ssh_first_ms", "first ssh … true after up", "ms", "{:.0f}"),
    ("ssh_warm_ms", "ssh … true, warm tunnel", "ms", "{:.0f}"),
    ("rss_mib", "client RSS after throughput", "MiB", "{:.1f}"),
    ("dns_qps", "DNS dnsmasq via tunnel", "q/s", "{:.0f}"),
    ("dns_lat_ms", "DNS dnsmasq via tunnel, p99 latency", "ms", "{:.2f}"),
    ("dns_direct_qps", "DNS dnsmasq direct (its own namespace)", "q/s", "{:.0f}"),
    ("dns_direct_lat_ms", "DNS dnsmasq direct, p99 latency", "ms", "{:.2f}"),
    ("dns_corridor_qps", "DNS corridor responder (cached names)", "q/s", "{:.0f}"),
    ("dns_corridor_lat_ms", "DNS corridor responder, p99 latency", "ms", "{:.2f}"),
    ("idle_wakeups", "idle wakeups per second (20 s)", "1/s", "{:.2f}"),
    ("recovery_ms", "ssh works again after a gateway restart", "ms", "{:.0f}"),
    ("dns_forwarded_qps", "DNS corridor responder (names forwarded through the tunnel)", "q/s", "{:.0f}"),
    ("dns_forwarded_lat_ms", "DNS corridor responder forwarded, p99 latency", "ms", "{:.2f}"),
]
# The rows `--only reliability` measures (each round: up, idle, gateway restart, down).
RELIABILITY = ("idle_wakeups", "recovery_ms")
IDLE_SECONDS = 20
# Both clients send a persistent keepalive this often (corridor's default).
KEEPALIVE = "25"

# The userspace mode (no TUN, no root): corridor forward against onetun, iperf3 through a
# forwarded local port to the same container over IPv4 (onetun takes one source address).
USERSPACE_METRICS = [
    ("fwd_up_mbps", "TCP laptop→container via forwarded port", "Mbit/s", "{:.0f}"),
    ("fwd_down_mbps", "TCP container→laptop via forwarded port", "Mbit/s", "{:.0f}"),
    ("fwd_cpu_up", "forwarder CPU per GB, up", "s/GB", "{:.2f}"),
    ("fwd_cpu_down", "forwarder CPU per GB, down", "s/GB", "{:.2f}"),
    ("fwd_rss_mib", "forwarder RSS after throughput", "MiB", "{:.1f}"),
    ("connect_banner_ms", "`corridor connect` start → SSH banner", "ms", "{:.0f}"),
]
FWD_PORT = 15201
IPERF_PORT = 5201

# A narrow path (`lab path-mtu`): every packet over PATH_MTU bytes between the laptop and the
# gateway dropped without ICMP. Each client on it, TCP both ways against a one-off iperf3 server
# of its own (a stalled test never leaves the container's server busy for the next row); a row
# that does not finish within its timeout, or moves next to nothing, is "stalled". corridor is
# also measured on the full path in the same rounds, for the ratio narrow / full.
PATH_MTU = 1280
PATHMTU_METRICS = [
    ("narrow_up_mbps", f"TCP laptop→container, {PATH_MTU}-byte path", "Mbit/s", "{:.0f}"),
    ("narrow_down_mbps", f"TCP container→laptop, {PATH_MTU}-byte path", "Mbit/s", "{:.0f}"),
    ("full_up_mbps", "TCP laptop→container, full path (same rounds)", "Mbit/s", "{:.0f}"),
    ("full_down_mbps", "TCP container→laptop, full path (same rounds)", "Mbit/s", "{:.0f}"),
]
# Less than this over a whole run counts as stalled (a black hole lets the handshakes through).
STALLED_MBPS = 1.0
PATHMTU_PORT = 5301
STALLED = "stalled"
# The full path of the narrow-path rows: nothing dropped, frames segmented as on the narrow one.
FULL_PATH = 1500

STARTED = []  # every Popen this script started, killed at exit


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def run(args, ns=None, timeout=60, check=True, env=None, stdin=None):
    """Runs a command (inside a namespace if `ns`), bounded by `timeout`; text output."""
    if ns:
        args = ["ip", "netns", "exec", ns] + list(args)
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, input=stdin,
                         check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of stat, 12 and 13 after the comm field.
    return int(fields[11]) + int(fields[12])


def voluntary_switches(pid):
    """Voluntary context switches of each of a process's threads, by thread id: each is a wakeup
    from sleep. Per thread, because threads come and go (tokio's blocking pool, goroutines' Ms)."""
    switches = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches[task] = int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return switches


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


class Lab:
    def __init__(self, args):
        self.command = [args.lab, "--prefix", args.prefix, "--slot", str(args.slot)]
        out = run(self.command + ["status", "--json"])
        self.status = json.loads(out.stdout)
        if not self.status.get("up"):
            raise RuntimeError(f"lab {args.prefix} is not up")
        self.laptop = self.status["laptop_ns"]
        self.api = self.status["api_url"]
        self.token = self.status["token"]
        self.demo = next(p for p in self.status["projects"] if p["name"] == "demo")
        self.gw_ns = self.demo["gateway_ns"]
        self.gw_underlay = self.demo["endpoint"].rsplit(":", 1)[0]
        self.dns = self.demo["dns"]
        node13 = next(c for c in self.demo["containers"] if c["name"].startswith("node-id-13"))
        self.target = node13["ipv6"]
        self.target4 = node13["ipv4"]
        self.target_ns = node13["ns"]

    def gateway_pid(self):
        for pid in run(["ip", "netns", "pids", self.gw_ns]).stdout.split():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "wireguard-go":
                        return int(pid)
            except OSError:
                pass
        raise RuntimeError(f"no wireguard-go in {self.gw_ns}")

    def restart_gateway(self):
        """Restarts demo's wireguard-go with the same key, port and peers: every session is lost."""
        run(self.command + ["gateway-restart", "demo"], timeout=60)

    def path_mtu(self, size):
        """`lab path-mtu SIZE` (None: off): packets over SIZE bytes laptop↔gateway dropped, no ICMP."""
        run(self.command + ["path-mtu", "off" if size is None else str(size)], timeout=30)

    def in_laptop(self, args, **kw):
        return run(args, ns=self.laptop, **kw)

    def extra_links(self):
        out = self.in_laptop(["ip", "-o", "link", "show"]).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
        return [n for n in names if n not in ("lo", "underlay")]


class Corridor:
    name = "corridor"

    def __init__(self, lab, binary, work):
        self.lab, self.binary = lab, binary
        self.env = dict(os.environ, CORRIDOR_CONFIG_DIR=os.path.join(work, "corridor-config"),
                        CORRIDOR_RUNTIME_DIR=os.path.join(work, "corridor-run"),
                        CORRIDOR_STATE_DIR=os.path.join(work, "corridor-state"))
        self.pid = None
        self.status = None
        self.logged_in = False

    def cmd(self, args, timeout=60, check=True):
        return self.lab.in_laptop([self.binary] + args, env=self.env, timeout=timeout, check=check)

    def up(self):
        if not self.logged_in:
            self.cmd(["--api", self.lab.api, "login", "--token", self.lab.token])
            self.logged_in = True
        self.cmd(["--api", self.lab.api, "vpn", "up", "demo"], timeout=60)
        self.status = json.loads(self.cmd(["vpn", "status", "--json"]).stdout)["connections"][0]
        self.pid = int(self.status["pid"])

    def responder(self):
        """corridor's own DNS responder, if its status names one: (address, port) or None."""
        dns, port = (self.status or {}).get("dns"), "53"
        if isinstance(dns, dict):
            port = str(dns.get("port") or 53)
            dns = dns.get("responder") or dns.get("address") or dns.get("listen")
        if not isinstance(dns, str) or dns in (self.lab.dns, self.lab.demo.get("dns6")):
            return None  # absent, or just the project's DNS server
        m = re.fullmatch(r"\[([0-9a-fA-F:]+)\]:(\d+)|([\d.]+):(\d+)", dns)  # [v6]:port or v4:port
        if m:
            return (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return dns, port

    def down(self):
        if self.logged_in:
            self.cmd(["vpn", "down"], timeout=30, check=False)
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.pid, self.status = None, None
        run_dir = self.env["CORRIDOR_RUNTIME_DIR"]
        logs = os.path.join(ROOT, "target", "bench", "logs")
        for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
            if name.endswith(".log"):  # the daemon's log, kept for a look after the run
                os.makedirs(logs, exist_ok=True)
                with open(os.path.join(run_dir, name)) as src, open(
                        os.path.join(logs, "corridor-daemon.log"), "a") as dst:
                    dst.write(src.read())


class Reference:
    """A WireGuard client nobody here wrote, configured from the lab API's answer as
    tests/lab.rs configure_reference_client does: key registered, `wg set`, addresses, routes."""

    def __init__(self, name, lab, command, ifname, work):
        self.name, self.lab, self.command, self.ifname = name, lab, command, ifname
        self.key_file = os.path.join(work, f"{ifname}.key")
        private = run(["wg", "genkey"]).stdout
        with open(self.key_file, "w") as f:
            f.write(private)
        os.chmod(self.key_file, 0o600)
        self.public = run(["wg", "pubkey"], stdin=private).stdout.strip()
        self.log_path = os.path.join(ROOT, "target", "bench", "logs", f"{name}.log")
        self.proc = None
        self.pid = None

    def register(self):
        url = f"{self.lab.api}/api/rest/public/project/{self.lab.demo['id']}/vpn"
        body = json.dumps({"publicKey": self.public, "instanceId": None})
        out = self.lab.in_laptop(["curl", "-sS", "--max-time", "20", "--fail-with-body", "-X", "POST",
                                  "-H", f"Authorization: Bearer {self.lab.token}",
                                  "-H", "Content-Type: application/json", "-d", body, url])
        return json.loads(out.stdout)

    def up(self):
        answer = self.register()
        sock = f"/var/run/wireguard/{self.ifname}.sock"
        with open(self.log_path, "a") as logf:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.lab.laptop] + self.command + [self.ifname],
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, LOG_LEVEL="error"))
        STARTED.append(self.proc)
        self.pid = self.proc.pid  # `ip netns exec` execs the client: same pid
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); log {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no UAPI socket {sock} within 10 s")
            time.sleep(0.005)
        project, peer = answer["project"], answer["peer"]
        networks = [f["network"]["network"] for f in
                    (project["ipv4"], project["ipv6"], peer["ipv4"], peer["ipv6"])]
        run(["wg", "set", self.ifname, "private-key", self.key_file, "peer", project["publicKey"],
             "allowed-ips", ",".join(networks), "endpoint", project["ipv4"]["sharedEndpoint"],
             "persistent-keepalive", KEEPALIVE])
        ns = self.lab.laptop
        run(["ip", "-n", ns, "addr", "add", peer["ipv4"]["assignedIpAddress"] + "/32", "dev", self.ifname])
        run(["ip", "-n", ns, "addr", "add", peer["ipv6"]["assignedIpAddress"] + "/128", "dev", self.ifname,
             "nodad"])
        run(["ip", "-n", ns, "link", "set", self.ifname, "mtu", "1420", "up"])
        for net in networks:
            run(["ip", "-n", ns, "route", "add", net, "dev", self.ifname])

    def responder(self):
        return None

    def down(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc, self.pid = None, None


def wait_first_ping(lab, t0, limit=30.0):
    """Pings until the first answer; returns ms since t0. Bounded by `limit` seconds."""
    while time.monotonic() - t0 < limit:
        out = lab.in_laptop(["ping", "-6", "-n", "-q", "-c", "1", "-W", "1", lab.target], check=False,
                            timeout=10)
        if out.returncode == 0:
            return (time.monotonic() - t0) * 1000.0
        time.sleep(0.01)
    raise RuntimeError(f"no ping answered within {limit:.0f} s of up")


def timed_ssh(lab):
    t0 = time.monotonic()
    lab.in_laptop(["ssh", "-p", "65437"] + SSH_OPTS + [f"root@{lab.target}", "true"], timeout=30)
    return (time.monotonic() - t0) * 1000.0


def idle_wakeups(client, seconds=IDLE_SECONDS):
    """Wakeups per second of an idle, connected client."""
    time.sleep(2)  # the start-up's own traffic settles
    before = voluntary_switches(client.pid)
    time.sleep(seconds)
    after = voluntary_switches(client.pid)
    return sum(n - before.get(tid, 0) for tid, n in after.items()) / seconds


def recovery_after_gateway_restart(lab, limit=60.0):
    """ms from the restart's end to the first `ssh … true` that works again, tried every 100 ms."""
    timed_ssh(lab)  # the tunnel carries ssh before the restart
    lab.restart_gateway()
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        out = lab.in_laptop(["ssh", "-p", "65437"] + SSH_OPTS + ["-o", "ConnectTimeout=5",
                                                                 f"root@{lab.target}", "true"],
                            check=False, timeout=30)
        if out.returncode == 0:
            return (time.monotonic() - t0) * 1000.0
        time.sleep(0.1)
    raise RuntimeError(f"ssh did not work again within {limit:.0f} s of the gateway restart")


def reliability(lab, client, r):
    """The reliability rows, on a client that is up; the gateway restart goes last."""
    r["idle_wakeups"] = idle_wakeups(client)
    r["recovery_ms"] = recovery_after_gateway_restart(lab)


def ping_rtts(lab, family, target, count=200):
    out = lab.in_laptop(["ping", family, "-n", "-c", str(count), "-i", "0.01", "-W", "1", target],
                        check=False, timeout=count * 0.05 + 30)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out.stdout)]
    if not rtts:
        raise RuntimeError(f"ping {target}: no answers: {out.stdout[-300:]} {out.stderr[-300:]}")
    return percentile(rtts, 50), percentile(rtts, 99), count - len(rtts)


# iperf3's TCP, both ends (-C reaches the server of a -R run too): Linux's default on every host
# rather than what the lab's namespaces inherit. A host's bbr without fq (runs before 4d6b3e5)
# pushed the laptop's upload through the gateway's full socket buffer, some 14 % of it lost and
# sent again, and paced with an hrtimer armed inside the client's TUN write of each ACK.
CONGESTION = "cubic"


def iperf_command(target, port, duration, reverse):
    """An iperf3 client run with JSON output, from the laptop to `target`."""
    return (["iperf3", "-c", target, "-p", str(port), "-t", str(duration), "-J", "-C", CONGESTION,
             "--connect-timeout", "5000"] + (["-R"] if reverse else []))


def iperf(lab, client_pid, gw_pid, duration, reverse, target=None, port=IPERF_PORT):
    args = iperf_command(target or lab.target, port, duration, reverse)
    counting = Counters(client_pid)
    c0, g0 = cpu_ticks(client_pid), cpu_ticks(gw_pid)
    try:
        out = lab.in_laptop(args, check=False, timeout=duration + 60)
    finally:
        counts = counting.stop()
    c1, g1 = cpu_ticks(client_pid), cpu_ticks(gw_pid)
    try:
        result = json.loads(out.stdout)
    except ValueError as e:
        raise RuntimeError(f"iperf3: no JSON ({out.stderr.strip()[-300:]})") from e
    if result.get("error"):
        raise RuntimeError(f"iperf3: {result['error']}")
    received = result["end"]["sum_received"]
    gb = received["bytes"] / 1e9
    return {
        "mbps": received["bits_per_second"] / 1e6,
        "bytes": received["bytes"],
        "client_cpu_s_per_gb": (c1 - c0) / CLK_TCK / gb if gb else None,
        "gw_cpu_s_per_gb": (g1 - g0) / CLK_TCK / gb if gb else None,
        # Counts, not times: they repeat where CPU seconds on a shared machine do not (this VM
        # exposes no instruction or cycle counters; the kernel's tracepoints work everywhere).
        "client_ksyscalls_per_gb": counts.get(SYSCALLS) / 1e3 / gb if gb and SYSCALLS in counts else None,
        "client_kcswitches_per_gb": counts.get(CSWITCHES) / 1e3 / gb if gb and CSWITCHES in counts else None,
    }


SYSCALLS = "raw_syscalls:sys_enter"
CSWITCHES = "context-switches"


class Counters:
    """`perf stat` on one process (all its threads) while it runs; {} where perf is missing."""

    def __init__(self, pid):
        self.proc, self.out = None, None
        if shutil.which("perf") and pid:
            fd, self.out = tempfile.mkstemp(prefix="bench-perf-")
            os.close(fd)
            self.proc = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", f"{SYSCALLS},{CSWITCHES}", "-p", str(pid), "-o", self.out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.proc:
            return {}
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        counts = {}
        with open(self.out) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) >= 3 and fields[0].isdigit():
                    counts[fields[2]] = int(fields[0])
        os.unlink(self.out)
        return counts


def dnsperf(lab, server, port, seconds, qfile, ns=None):
    """Queries per second, p99 latency in ms (from dnsperf's per-query lines), queries lost."""
    out = run(["dnsperf", "-s", server, "-p", str(port), "-d", qfile, "-l", str(seconds), "-t", "2", "-v"],
              ns=ns or lab.laptop, check=False, timeout=seconds + 60)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    # "> STATUS NAME TYPE LATENCY" per answer; a query that timed out ends without the latency
    # ("> T NAME TYPE") and is counted among those lost.
    latencies = sorted(float(fields[-1]) for fields in (line.split() for line in out.stdout.splitlines())
                       if fields[:1] == [">"] and len(fields) >= 3 and fields[-1].replace(".", "", 1).isdigit())
    if not qps or not latencies:
        raise RuntimeError(f"dnsperf {server}: {out.stdout[-300:]} {out.stderr[-300:]}")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return float(qps.group(1)), p99 * 1000.0, int(lost.group(1)) if lost else None


def read_until(proc, text, limit=30.0):
    """Reads `proc`'s stdout until a line contains `text`; bounded by `limit` seconds."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + limit, []
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        if text in line:
            return line
        seen.append(line)
    raise RuntimeError(f"no {text!r} within {limit:.0f} s: {''.join(seen)[-300:]}")


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class CorridorForward:
    """`corridor forward` as an unprivileged user: a local port to the container's iperf3."""
    name = "corridor forward"

    def __init__(self, lab, binary, work):
        self.lab = lab
        config = os.path.join(work, "corridor-userspace")
        os.makedirs(config, mode=0o700, exist_ok=True)
        os.chown(config, 65534, 65534)
        os.chmod(work, 0o711)  # the unprivileged user passes through to its own directory
        # and runs a copy of corridor: the checkout may be where only root gets in (/root).
        staged = os.path.join(work, "corridor-userspace-bin")
        os.makedirs(staged, mode=0o755, exist_ok=True)
        os.chmod(staged, 0o755)
        self.binary = os.path.join(staged, "corridor")
        shutil.copy(binary, self.binary)
        os.chmod(self.binary, 0o755)
        self.log_path = os.path.join(ROOT, "target", "bench", "logs", "corridor-forward.log")
        self.env = dict(os.environ, CORRIDOR_CONFIG_DIR=config, CORRIDOR_TOKEN=lab.token, HOME=config)
        self.proc, self.pid = None, None

    def command(self, args):
        return (["ip", "netns", "exec", self.lab.laptop, "setpriv", "--reuid=65534", "--regid=65534",
                 "--clear-groups", "--inh-caps=-all", self.binary, "--api", self.lab.api] + args)

    def up(self):
        spec = f"{FWD_PORT}:{self.lab.target4}:{IPERF_PORT}"
        with open(self.log_path, "a") as logf:
            self.proc = subprocess.Popen(self.command(["forward", "demo", spec]), stdout=subprocess.PIPE,
                                         stderr=logf, stdin=subprocess.DEVNULL, text=True, env=self.env)
        STARTED.append(self.proc)
        self.pid = self.proc.pid  # ip netns exec and setpriv exec: same pid
        read_until(self.proc, "→")

    def banner_ms(self):
        """From start to the SSH banner of node-id-13, through a fresh `corridor connect`."""
        t0 = time.monotonic()
        proc = subprocess.Popen(self.command(["connect", "-P", "demo", self.lab.target4, "65437"]),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE,
                                text=True, env=self.env)
        STARTED.append(proc)
        try:
            read_until(proc, "SSH-2.0-")
            return (time.monotonic() - t0) * 1000.0
        finally:
            proc.kill()
            proc.wait(timeout=5)

    def down(self):
        stop(self.proc)
        self.proc, self.pid = None, None


class Onetun(Reference):
    """onetun with a key of its own registered like the reference clients' keys."""

    def __init__(self, lab, binary, work):
        super().__init__("onetun", lab, [binary], "onetun", work)

    def up(self):
        answer = self.register()
        project, peer = answer["project"], answer["peer"]
        args = [f"127.0.0.1:{FWD_PORT}:{self.lab.target4}:{IPERF_PORT}",
                "--endpoint-addr", project["ipv4"]["sharedEndpoint"],
                "--endpoint-public-key", project["publicKey"], "--private-key-file", self.key_file,
                "--source-peer-ip", peer["ipv4"]["assignedIpAddress"], "--keep-alive", "5"]
        with open(self.log_path, "a") as logf:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.lab.laptop] + self.command + args,
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        STARTED.append(self.proc)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while not self.lab.in_laptop(["ss", "-Htln", f"sport = :{FWD_PORT}"]).stdout.strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"onetun is not listening on {FWD_PORT}; log {self.log_path}")
            time.sleep(0.01)


def userspace_round(lab, forwarder, args):
    r = {}
    try:
        forwarder.up()
        gw = lab.gateway_pid()
        for key, reverse in (("up", False), ("down", True)):
            res = iperf(lab, forwarder.pid, gw, args.duration, reverse, target="127.0.0.1", port=FWD_PORT)
            r[f"fwd_{key}_mbps"] = res["mbps"]
            r[f"fwd_cpu_{key}"] = res["client_cpu_s_per_gb"]
        r["fwd_rss_mib"] = rss_mib(forwarder.pid)
        if isinstance(forwarder, CorridorForward):
            r["connect_banner_ms"] = min(forwarder.banner_ms() for _ in range(3))
    finally:
        forwarder.down()
    return r


def tunnel_round(lab, client, args):
    """corridor's `vpn up` in the same round as the forwarders: what `forward` is held against."""
    r = {}
    try:
        client.up()
        wait_first_ping(lab, time.monotonic())
        gw = lab.gateway_pid()
        for key, reverse in (("up", False), ("down", True)):
            r[f"tun_{key}_mbps"] = iperf(lab, client.pid, gw, args.duration, reverse)["mbps"]
    finally:
        teardown(lab, client)
    return r


def userspace_rounds(lab, args, work, available):
    """corridor forward and onetun in turn, A B A B …, and corridor's `vpn up` after them in each
    round (its figures join forward's); returns (rounds, errors) by name."""
    tunnel = Corridor(lab, os.path.abspath(args.corridor), os.path.join(work, "vpn-up"))
    forwarders = [CorridorForward(lab, os.path.abspath(args.corridor), work)]
    if available["onetun"]:
        forwarders.append(Onetun(lab, os.path.abspath(args.onetun), work))
    rounds = {"corridor forward": [], "onetun": []}
    errors = {"corridor forward": [], "onetun": []}
    for i in range(args.rounds):
        for f in forwarders:
            log(f"userspace round {i + 1}/{args.rounds}: {f.name}")
            try:
                rounds[f.name].append(userspace_round(lab, f, args))
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
                log(f"userspace round {i + 1}: {f.name} failed: {e}")
                errors[f.name].append(f"round {i + 1}: {e}")
        if len(rounds["corridor forward"]) == i + 1:
            log(f"userspace round {i + 1}/{args.rounds}: corridor vpn up, for the ratio")
            try:
                rounds["corridor forward"][-1].update(tunnel_round(lab, tunnel, args))
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
                log(f"userspace round {i + 1}: corridor vpn up failed: {e}")
                errors["corridor forward"].append(f"round {i + 1} (vpn up): {e}")
    return rounds, errors


def forward_to_tunnel(rounds):
    """Median `forward` / `vpn up` throughput per direction over the rounds that measured both."""
    text = []
    for key in ("up", "down"):
        ratios = [r[f"fwd_{key}_mbps"] / r[f"tun_{key}_mbps"] for r in rounds
                  if r.get(f"fwd_{key}_mbps") and r.get(f"tun_{key}_mbps")]
        text.append(f"{key} {statistics.median(ratios):.2f}" if ratios else f"{key} n/a")
    return ", ".join(text)


def iperf_row(lab, duration, reverse, port):
    """Mbit/s of one iperf3 run to a one-off server of its own in node-id-13, or STALLED when it
    does not end within its timeout or moves next to nothing."""
    server = subprocess.Popen(["ip", "netns", "exec", lab.target_ns, "iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    STARTED.append(server)
    try:
        deadline = time.monotonic() + 10
        while not run(["ss", "-Htln", f"sport = :{port}"], ns=lab.target_ns).stdout.strip():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no iperf3 server on port {port} in {lab.target_ns}")
            time.sleep(0.01)
        args = iperf_command(lab.target, port, duration, reverse)
        try:
            out = lab.in_laptop(args, check=False, timeout=duration + 20)
        except subprocess.TimeoutExpired:
            log(f"stalled: iperf3 did not end within {duration + 20} s")
            return STALLED
        try:
            received = json.loads(out.stdout)["end"]["sum_received"]
        except (ValueError, KeyError):
            # No results: the control connection's last messages were lost, or the test failed.
            log(f"stalled: iperf3 gave no results ({out.stderr.strip()[-200:] or out.stdout.strip()[-200:]})")
            return STALLED
        mbps = received["bits_per_second"] / 1e6
        if mbps < STALLED_MBPS:
            log(f"stalled: {mbps:.3f} Mbit/s")
            return STALLED
        return mbps
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)


def pathmtu_round(lab, client, args, narrow, port):
    """One client on the narrow (or, for corridor's comparison, the full) path: up, both ways, down.
    The full path is `path-mtu 1500`, which drops nothing but has the lab segment every frame as
    the narrow one does (a GSO burst crosses a bridge whole): the ratio is corridor's, not the lab's."""
    lab.path_mtu(PATH_MTU if narrow else FULL_PATH)
    r = {}
    kind = "narrow" if narrow else "full"
    try:
        client.up()
        wait_first_ping(lab, time.monotonic())
        for i, (key, reverse) in enumerate((("up", False), ("down", True))):
            r[f"{kind}_{key}_mbps"] = iperf_row(lab, args.duration, reverse, port + i)
    finally:
        teardown(lab, client)
    return r


def pathmtu_rounds(lab, clients, available, args):
    """Per round: corridor on the full path, then every client on the narrow one. Returns
    (rounds, errors) by client name; the lab has its full path again afterwards."""
    rounds = {c.name: [] for c in clients}
    errors = {c.name: [] for c in clients}
    port = PATHMTU_PORT
    try:
        for i in range(args.rounds):
            plan = [(clients[0], False)] + [(c, True) for c in clients if available[c.name]]
            merged = {c.name: {} for c in clients}
            for client, narrow in plan:
                log(f"narrow-path round {i + 1}/{args.rounds}: {client.name}, "
                    f"{'path MTU ' + str(PATH_MTU) if narrow else 'full path'}")
                try:
                    merged[client.name].update(pathmtu_round(lab, client, args, narrow, port))
                except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
                    log(f"narrow-path round {i + 1}: {client.name} failed: {e}")
                    errors[client.name].append(f"round {i + 1}: {e}")
                port += 2
            for name, r in merged.items():
                if r:
                    rounds[name].append(r)
    finally:
        lab.path_mtu(None)
    return rounds, errors


def stall_median(values):
    """The median of the rounds that moved data, STALLED when none did, None when none ran."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    if numbers:
        return statistics.median(numbers)
    return STALLED if values else None


def render_pathmtu(names, medians, rounds, available):
    header = ["metric", "unit"] + names
    rows = []
    for key, label, unit, fmt in PATHMTU_METRICS:
        row = [label, unit]
        for n in names:
            v = medians[n].get(key)
            stalls = sum(1 for r in rounds[n] if r.get(key) == STALLED)
            if not available[n]:
                cell = "unavailable"
            elif v is None:
                cell = "n/a"
            elif v == STALLED:
                cell = STALLED
            else:
                cell = fmt.format(v) + (f" ({stalls} stalled)" if stalls else "")
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def narrow_ratio(medians):
    """corridor's narrow-path throughput over its full-path throughput, per direction."""
    out = {}
    for key in ("up", "down"):
        narrow, full = medians.get(f"narrow_{key}_mbps"), medians.get(f"full_{key}_mbps")
        if narrow == STALLED:
            out[key] = STALLED
        elif isinstance(narrow, (int, float)) and isinstance(full, (int, float)) and full:
            out[key] = narrow / full
        else:
            out[key] = None
    return out


def one_round(lab, client, args, qfile, ffile):
    """Up, measure, down. Returns the round's values; errors end the round, not the benchmark."""
    r = {}
    if lab.extra_links():
        raise RuntimeError(f"laptop namespace not clean before {client.name}: {lab.extra_links()}")
    try:
        t0 = time.monotonic()
        client.up()
        r["up_to_ping_ms"] = wait_first_ping(lab, t0)
        if args.only == "reliability":
            reliability(lab, client, r)
            return r
        if args.only == "dns":
            r.update(measure_dns(lab, client, args, qfile, ffile))
            return r
        r["ssh_first_ms"] = timed_ssh(lab)
        r["ssh_warm_ms"] = statistics.median(timed_ssh(lab) for _ in range(3))
        r["rtt_p50"], r["rtt_p99"], r["rtt_lost"] = ping_rtts(lab, "-6", lab.target)
        r["underlay_p50"], r["underlay_p99"], r["underlay_lost"] = ping_rtts(lab, "-4", lab.gw_underlay)
        gw = lab.gateway_pid()
        for key, reverse in (("up", False), ("down", True)):
            res = iperf(lab, client.pid, gw, args.duration, reverse)
            r[f"tcp_{key}_mbps"] = res["mbps"]
            r[f"tcp_{key}_bytes"] = res["bytes"]
            r[f"client_cpu_{key}"] = res["client_cpu_s_per_gb"]
            r[f"client_syscalls_{key}"] = res["client_ksyscalls_per_gb"]
            r[f"client_cswitches_{key}"] = res["client_kcswitches_per_gb"]
            r[f"gw_cpu_{key}"] = res["gw_cpu_s_per_gb"]
        r["rss_mib"] = rss_mib(client.pid)
        r.update(measure_dns(lab, client, args, qfile, ffile))
        reliability(lab, client, r)
    finally:
        teardown(lab, client)
    return r


def measure_dns(lab, client, args, qfile, ffile):
    """dnsmasq through the tunnel and in its own namespace, then corridor's responder on cached
    names and on names it must forward through the tunnel."""
    r = {}
    dns_secs = min(10, args.duration)
    r["dns_qps"], r["dns_lat_ms"], r["dns_lost"] = dnsperf(lab, lab.dns, 53, dns_secs, qfile)
    r["dns_direct_qps"], r["dns_direct_lat_ms"], r["dns_direct_lost"] = dnsperf(
        lab, lab.dns, 53, dns_secs, qfile, ns=lab.gw_ns)
    responder = client.responder()
    if responder:
        r["dns_corridor_qps"], r["dns_corridor_lat_ms"], r["dns_corridor_lost"] = dnsperf(
            lab, responder[0], responder[1], dns_secs, qfile)
        r["dns_forwarded_qps"], r["dns_forwarded_lat_ms"], r["dns_forwarded_lost"] = dnsperf(
            lab, responder[0], responder[1], dns_secs, ffile)
    return r


def teardown(lab, client):
    client.down()
    deadline = time.monotonic() + 10
    while lab.extra_links() and time.monotonic() < deadline:
        time.sleep(0.05)
    for link in lab.extra_links():  # a client that left its interface behind
        log(f"{client.name} left {link} behind; deleting it")
        run(["ip", "-n", lab.laptop, "link", "del", link], check=False)


def warm_up(lab, client):
    """Unmeasured: on a fresh lab the first packets forwarded to a container are lost (neighbour
    discovery in the gateway), which would cost whoever goes first a second or two; this also
    puts each client's binary in the page cache and opens sshd once."""
    try:
        client.up()
        wait_first_ping(lab, time.monotonic())
        timed_ssh(lab)
    finally:
        teardown(lab, client)


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    # What the lab's namespaces inherit; iperf3 runs CONGESTION whatever it is.
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        congestion = f.read().strip()
    return {"nproc": os.cpu_count(), "model_name": model, "kernel": platform.release(),
            "tcp_congestion_control": congestion}


def version(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def render(names, medians, available, ratio, keys, metrics=METRICS, ratio_label="corridor / wireguard-go"):
    header = ["metric", "unit"] + names + [ratio_label]
    rows = []
    for key, label, unit, fmt in metrics:
        if key not in keys:
            continue
        row = [label, unit]
        for n in names:
            v = medians[n].get(key)
            row.append("unavailable" if not available[n] else ("n/a" if v is None else fmt.format(v)))
        rv = ratio.get(key)
        row.append("n/a" if rv is None else f"{rv:.2f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description="corridor benchmark (run via scripts/bench.sh, as root)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of A B C (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run (default 10)")
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "bench", "results.json"),
                    help="where the JSON results go (default target/bench/results.json)")
    ap.add_argument("--lab", default=os.path.join(ROOT, "target", "release", "examples", "lab"))
    ap.add_argument("--corridor", default=os.path.join(ROOT, "target", "release", "corridor"))
    ap.add_argument("--boringtun", default=os.path.join(ROOT, "target", "bench-tools", "bin", "boringtun-cli"),
                    help="boringtun-cli binary ('' or missing: reported as unavailable)")
    ap.add_argument("--onetun", default=os.path.join(ROOT, "target", "bench-tools", "bin", "onetun"),
                    help="onetun binary ('' or missing: reported as unavailable)")
    ap.add_argument("--prefix", default="crbench")
    ap.add_argument("--slot", type=int, default=20)
    ap.add_argument("--only", choices=["reliability", "dns", "userspace", "pathmtu"],
                    help="measure only these rows: reliability = idle wakeups and recovery after a "
                         "gateway restart; dns = corridor's DNS rows (corridor only); userspace = "
                         "corridor forward against onetun; pathmtu = TCP both ways on a "
                         f"{PATH_MTU}-byte path (lab path-mtu) for every client, and corridor's "
                         "narrow / full path ratio")
    args = ap.parse_args()
    if args.rounds < 1 or args.duration < 1:
        ap.error("--rounds and --duration must be at least 1")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    logs = os.path.join(ROOT, "target", "bench", "logs")
    os.makedirs(logs, exist_ok=True)
    for name in os.listdir(logs):  # the clients' logs of this run only
        if name.endswith(".log"):
            os.remove(os.path.join(logs, name))
    work = tempfile.mkdtemp(prefix="corridor-bench-")
    lab = Lab(args)
    qfile = os.path.join(work, "queries.txt")
    with open(qfile, "w") as f:
        f.write(DNS_QUERIES)
    ffile = os.path.join(work, "forwarded.txt")
    with open(ffile, "w") as f:
        f.write(forwarded_queries())
    wg_go = shutil.which("wireguard-go")
    clients = [Corridor(lab, os.path.abspath(args.corridor), work)]
    available = {"corridor": True, "wireguard-go": bool(wg_go), "boringtun-cli": False}
    clients.append(Reference("wireguard-go", lab, [wg_go or "wireguard-go", "-f"], "crbench-wg", work))
    if args.only == "dns":
        clients, available["wireguard-go"] = clients[:1], False
    bt = args.boringtun
    if bt and os.access(bt, os.X_OK) and not args.only == "dns":
        available["boringtun-cli"] = True
        clients.append(Reference("boringtun-cli", lab,
                                 [os.path.abspath(bt), "--foreground", "--disable-drop-privileges"],
                                 "crbench-bt", work))
    names = ["corridor", "wireguard-go", "boringtun-cli"]
    us_names = ["corridor forward", "onetun"]
    us_available = {"corridor forward": True, "onetun": bool(args.onetun) and os.access(args.onetun, os.X_OK)}
    us_rounds, us_errors = {n: [] for n in us_names}, {n: [] for n in us_names}
    pm_rounds, pm_errors = {n: [] for n in names}, {n: [] for n in names}
    main_rounds = args.only not in ("userspace", "pathmtu")
    rounds = {n: [] for n in names}
    errors = {n: [] for n in names}
    try:
        for client in clients if args.only != "userspace" else []:
            if available[client.name]:
                log(f"warm-up (not measured): {client.name}")
                try:
                    warm_up(lab, client)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
                    log(f"warm-up: {client.name} failed: {e}")
        for i in range(args.rounds if main_rounds else 0):
            for client in clients:
                if not available[client.name]:
                    continue
                log(f"round {i + 1}/{args.rounds}: {client.name}")
                try:
                    r = one_round(lab, client, args, qfile, ffile)
                    rounds[client.name].append(r)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
                    log(f"round {i + 1}: {client.name} failed: {e}")
                    errors[client.name].append(f"round {i + 1}: {e}")
        if args.only in (None, "pathmtu"):
            pm_rounds, pm_errors = pathmtu_rounds(lab, clients, available, args)
        if args.only in (None, "userspace"):
            us_rounds, us_errors = userspace_rounds(lab, args, work, us_available)
    finally:
        for c in clients:
            try:
                c.down()
            except Exception as e:  # noqa: BLE001 - cleanup goes on whatever happens
                log(f"cleanup of {c.name}: {e}")
        for p in STARTED:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(work, ignore_errors=True)

    medians = {}
    for n in names:
        medians[n] = {}
        for key, *_ in METRICS:
            vals = [r[key] for r in rounds[n] if r.get(key) is not None]
            medians[n][key] = statistics.median(vals) if vals else None
    ratio = {}
    for key, *_ in METRICS:
        a, b = medians["corridor"].get(key), medians["wireguard-go"].get(key)
        ratio[key] = a / b if a is not None and b else None

    us_medians = {n: {key: (statistics.median(v) if (v := [r[key] for r in us_rounds[n] if r.get(key) is not None])
                            else None) for key, *_ in USERSPACE_METRICS} for n in us_names}
    us_ratio = {}
    for key, *_ in USERSPACE_METRICS:
        a, b = us_medians["corridor forward"].get(key), us_medians["onetun"].get(key)
        us_ratio[key] = a / b if a is not None and b else None

    pm_medians = {n: {key: stall_median([r[key] for r in pm_rounds[n] if key in r])
                      for key, *_ in PATHMTU_METRICS} for n in names}
    pm_ratio = narrow_ratio(pm_medians["corridor"])

    m = machine()
    commit = version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    results = {
        "machine": m,
        "config": {"rounds": args.rounds, "only": args.only, "idle_s": IDLE_SECONDS, "keepalive_s": KEEPALIVE,
                   "duration_s": args.duration, "iperf3_congestion": CONGESTION, "dns_duration_s": min(10, args.duration),
                   "lab_prefix": args.prefix, "lab_slot": args.slot, "target": lab.target,
                   "underlay_target": lab.gw_underlay, "dnsmasq": lab.dns},
        "versions": {"corridor": commit, "wireguard-go": version(["wireguard-go", "--version"]),
                     "boringtun-cli": version([bt, "--version"]) if available["boringtun-cli"] else None,
                     "iperf3": version(["iperf3", "--version"])},
        "metrics": [{"key": k, "label": lbl, "unit": u} for k, lbl, u, _ in METRICS],
        "clients": {n: {"available": available[n], "rounds": rounds[n], "errors": errors[n],
                        "median": medians[n]} for n in names},
        "ratio_corridor_to_wireguard_go": ratio,
        "pathmtu": {
            "path_mtu": PATH_MTU,
            "metrics": [{"key": k, "label": lbl, "unit": u} for k, lbl, u, _ in PATHMTU_METRICS],
            "clients": {n: {"available": available[n], "rounds": pm_rounds[n], "errors": pm_errors[n],
                            "median": pm_medians[n]} for n in names},
            "corridor_narrow_to_full": pm_ratio,
        },
        "userspace": {
            "metrics": [{"key": k, "label": lbl, "unit": u} for k, lbl, u, _ in USERSPACE_METRICS],
            "versions": {"onetun": version([args.onetun, "--version"]) if us_available["onetun"] else None},
            "clients": {n: {"available": us_available[n], "rounds": us_rounds[n], "errors": us_errors[n],
                            "median": us_medians[n]} for n in us_names},
            "ratio_corridor_to_onetun": us_ratio,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)

    print(f"machine: {m['nproc']} cpus, {m['model_name']}, kernel {m['kernel']}, host TCP congestion "
          f"control {m['tcp_congestion_control']} (iperf3 -C {CONGESTION})")
    print(f"medians of {args.rounds} round(s), iperf3 -t {args.duration}, corridor {commit}; "
          f"rounds ok: " + ", ".join(f"{n} {len((rounds if main_rounds else pm_rounds)[n])}"
                                      for n in names if available[n]))
    print()
    if main_rounds:
        if args.only == "reliability":
            keys = ("up_to_ping_ms",) + RELIABILITY
        elif args.only == "dns":
            keys = [k for k, *_ in METRICS if k.startswith("dns_")]
        else:
            keys = [k for k, *_ in METRICS]
        print(render(names, medians, available, ratio, keys))
        for n in names:
            for e in errors[n]:
                print(f"{n} {e}")
        print()
    if args.only in (None, "pathmtu"):
        print(f"narrow path: packets over {PATH_MTU} bytes between laptop and gateway dropped, no ICMP "
              f"(lab path-mtu {PATH_MTU}); iperf3 -t {args.duration}, each run ended after "
              f"{args.duration + 20} s:")
        print(render_pathmtu(names, pm_medians, pm_rounds, available))
        ratio_text = ", ".join(f"{k} " + (STALLED if v == STALLED else "n/a" if v is None else f"{v:.2f}")
                               for k, v in pm_ratio.items())
        print(f"corridor narrow / full path throughput: {ratio_text}")
        for n in names:
            for e in pm_errors[n]:
                print(f"{n} {e}")
        print()
    if args.only in (None, "userspace"):
        print("userspace mode (no TUN, no root), iperf3 via a forwarded port:")
        print(render(us_names, us_medians, us_available, us_ratio, [k for k, *_ in USERSPACE_METRICS],
                     USERSPACE_METRICS, "corridor / onetun"))
        print(f"corridor forward / vpn up throughput, same rounds: {forward_to_tunnel(us_rounds['corridor forward'])}")
        for n in us_names:
            for e in us_errors[n]:
                print(f"{n} {e}")
    print(f"\nJSON: {args.json}")
    return 0 if (any(rounds[n] for n in names) or any(us_rounds[n] for n in us_names)
                 or any(pm_rounds[n] for n in names)) else 1


if __name__ == "__main__":
    sys.exit(main())
