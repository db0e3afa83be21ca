#!/usr/bin/env python3
"""Two corridor builds side by side in one lab, alternating, to tell a change from the day's
noise: `vpn up` time and time to the first answered ping, then (with --throughput) iperf3 both
ways, client and gateway CPU per GB and the daemon's memory (RSS, private); or (with --forward) the same
iperf3 rows through `corridor forward` run unprivileged, the rootless mode. As root:

    sudo python3 scripts/bench-ab.py OLD/corridor NEW/corridor [--rounds 8] [--throughput | --forward] [-- UP-ARGS]

Each binary needs its corridor-daemon beside it if it has one (builds from before d960cc4 do
not). Uses scripts/bench.py's lab helpers; brings up its own lab (prefix crab, slot 23) and
removes it at exit."""
import argparse, os, shutil, statistics, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def memory_kib(pid):
    roll = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                roll[parts[0][:-1]] = int(parts[1])
    return roll["Rss"], roll["Anonymous"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--throughput", action="store_true", help="also iperf3 -t 10 both ways and memory")
    ap.add_argument("--forward", action="store_true", help="iperf3 both ways through `forward` instead of `vpn up`")
    argv = sys.argv[1:]
    up_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.up_args = up_args
    lab_args = argparse.Namespace(lab=os.path.join(bench.ROOT, "target", "release", "examples", "lab"),
                                  prefix="crab", slot=23)
    lab_cmd = [lab_args.lab, "--prefix", lab_args.prefix, "--slot", str(lab_args.slot)]
    bench.run(lab_cmd + ["up"], timeout=120)
    work = tempfile.mkdtemp(prefix="bench-ab-")
    try:
        lab = bench.Lab(lab_args)
        if args.forward:
            forward_rounds(lab, args, work)
            return
        clients = {}
        for name in ("old", "new"):
            c = bench.Corridor(lab, os.path.abspath(getattr(args, name)), os.path.join(work, name))
            c.up()  # logs in; an unmeasured warm-up
            c.down()
            clients[name] = c
        rows = {name: [] for name in clients}
        for i in range(args.rounds):
            for name, c in turns(i, clients):
                t0 = time.monotonic()
                c.cmd(["--api", lab.api, "vpn", "up", "demo"] + args.up_args, timeout=60)
                row = {"up_ms": (time.monotonic() - t0) * 1000, "ping_ms": bench.wait_first_ping(lab, t0)}
                if args.throughput:
                    c.status = None
                    pid = int(bench.json.loads(c.cmd(["vpn", "status", "--json"]).stdout)["connections"][0]["pid"])
                    for reverse, key in ((False, "up"), (True, "down")):
                        iperf_row(row, key, bench.iperf(lab, pid, lab.gateway_pid(), 10, reverse))
                    rss, anon = memory_kib(pid)
                    row["rss_mib"], row["private_mib"] = rss / 1024, anon / 1024
                c.down()
                record(rows, i, name, row)
        medians(rows, args.rounds)
    finally:
        for c in locals().get("clients", {}).values():
            c.down()
        bench.run(lab_cmd + ["down"], timeout=120, check=False)
        shutil.rmtree(work, ignore_errors=True)


def turns(i, builds):
    """The builds in round `i`'s order: which goes first alternates, since the second of a
    round measured a few percent slower on this machine whichever build it was."""
    order = list(builds.items())
    return order if i % 2 == 0 else order[::-1]


def iperf_row(row, key, res):
    row[f"{key}_mbps"], row[f"{key}_s_per_gb"] = res["mbps"], res["client_cpu_s_per_gb"]
    row[f"{key}_gw_s_per_gb"] = res["gw_cpu_s_per_gb"]
    if res["client_ksyscalls_per_gb"] is not None:
        row[f"{key}_ksys_per_gb"] = res["client_ksyscalls_per_gb"]
        row[f"{key}_kcsw_per_gb"] = res["client_kcswitches_per_gb"]


def record(rows, i, name, row):
    rows[name].append(row)
    print(f"round {i + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)


def medians(rows, rounds):
    print(f"medians of {rounds} rounds")
    for key in rows["old"][0]:
        old, new = (statistics.median(r[key] for r in rows[n]) for n in ("old", "new"))
        print(f"  {key:14} old {old:9.2f}  new {new:9.2f}  new/old {new / old:5.2f}")


def forward_rounds(lab, args, work):
    """`corridor forward` of each build in turn, iperf3 both ways through its local port."""
    os.makedirs(os.path.join(bench.ROOT, "target", "bench", "logs"), exist_ok=True)
    os.chmod(work, 0o711)  # forward runs as nobody, in a directory of its own below
    forwarders = {}
    for name in ("old", "new"):
        os.makedirs(os.path.join(work, name))
        forwarders[name] = bench.CorridorForward(lab, os.path.abspath(getattr(args, name)), os.path.join(work, name))
    rows = {name: [] for name in forwarders}
    for i in range(args.rounds):
        for name, f in turns(i, forwarders):
            row = {}
            f.up()
            try:
                for reverse, key in ((False, "up"), (True, "down")):
                    res = bench.iperf(lab, f.pid, lab.gateway_pid(), 10, reverse, target="127.0.0.1", port=bench.FWD_PORT)
                    iperf_row(row, key, res)
                row["rss_mib"] = memory_kib(f.pid)[0] / 1024
            finally:
                f.down()
            record(rows, i, name, row)
    medians(rows, args.rounds)


if __name__ == "__main__":
    main()
