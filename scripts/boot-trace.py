#!/usr/bin/env python3
"""Where a fleet's boot time went, from the swarmfs logs of one ../shared/bench run.

    scripts/boot-trace.py /dev/shm/swarmfs-fleet/runs/<id>

Needs the mounts' debug events on target swarmfs::piece (scripts/bench-fleet.sh turns
them on). Every read that waited for the swarm is split by what it waited for, per the
last piece it needed:
  in flight before the read   the piece was already being fetched (read-ahead, background)
  from the origin / a peer    nobody had announced it: read -> asked for -> verified
  after an announce           some host got it first: read -> first announce ->
                              asked for -> verified
Prints one JSON object: per category the count, median, p90 and total seconds; and
what the origin sent: pieces, second copies (a piece it sent to more than one host) and
how many pieces each host got from it.
"""
import datetime
import glob
import json
import os
import re
import statistics
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELDS = re.compile(r"(\w+)=(\S+)")


def stamp(line):
    return datetime.datetime.fromisoformat(line[:26]).timestamp()


def main(run):
    verified, announced, waits = {}, {}, {}
    hosts = sorted(glob.glob(os.path.join(run, "swarmfs-lazy", "h*")))
    if not hosts:
        sys.exit(f"boot-trace: no swarmfs-lazy host logs under {run}")
    for d in hosts:
        h = os.path.basename(d)
        waits[h] = []
        with open(os.path.join(d, "client.log"), errors="replace") as f:
            for line in f:
                line = ANSI.sub("", line)
                if "swarmfs::piece" not in line:
                    continue
                f_ = dict(FIELDS.findall(line))
                t = stamp(line)
                if "piece verified" in line:
                    verified[(h, int(f_["piece"]))] = (t, f_["peer"], int(f_["ms"]))
                elif "read waited" in line:
                    last = int(f_["first_piece"]) + int(f_["pieces"]) - 1
                    waits[h].append((t - int(f_["ms"]) / 1000, last, int(f_["ms"])))
                elif "urgent piece announced" in line:
                    announced.setdefault((h, int(f_["piece"])), []).append(t)
    if not any(waits.values()):
        sys.exit("boot-trace: no 'read waited' events: run the mounts with "
                 "RUST_LOG=swarmfs=info,swarmfs::piece=debug")
    origin = None
    cats = {}

    def add(k, v):
        cats.setdefault(k, []).append(v)

    # The origin is the peer every host got pieces from that is not a host.
    peers = {}
    for (h, _), (_, peer, _) in verified.items():
        peers.setdefault(peer.split(":")[0], set()).add(h)
    host_ips = set()
    for d in hosts:
        with open(os.path.join(d, "client.log"), errors="replace") as f:
            m = re.search(r"listen\S*?Some\(([\d.]+):", ANSI.sub("", f.read(20000)))
        if m:
            host_ips.add(m.group(1))
    others = [ip for ip in peers if ip not in host_ips]
    origin = max(others, key=lambda ip: len(peers[ip])) if others else None
    for h, ws in waits.items():
        for start, p, ms in ws:
            add("read waited", ms)
            v = verified.get((h, p))
            if not v:
                continue
            asked = v[0] - v[2] / 1000
            if asked < start - 0.001:
                add("in flight before the read", ms)
                continue
            ann = [t for t in announced.get((h, p), []) if t >= start]
            if ann and ann[0] <= asked + 0.001:
                add("after an announce: read -> announce", (ann[0] - start) * 1000)
                add("after an announce: announce -> asked", (asked - ann[0]) * 1000)
                add("after an announce: asked -> verified", v[2])
            else:
                src = "the origin" if v[1].split(":")[0] == origin else "a peer"
                add(f"from {src}: read -> asked", (asked - start) * 1000)
                add(f"from {src}: asked -> verified", v[2])
    out = {}
    for k in sorted(cats):
        v = sorted(cats[k])
        out[k] = {"n": len(v), "p50_ms": round(statistics.median(v)),
                  "p90_ms": round(v[int(len(v) * 0.9)]), "total_s": round(sum(v) / 1000, 1)}
    # What the origin sent (second copies cost its scarce uplink; a host it sends nothing
    # to is one it keeps choked).
    sent = {}
    per_host = {os.path.basename(d): 0 for d in hosts}
    for (h, p), (_, peer, _) in verified.items():
        if peer.split(":")[0] == origin:
            per_host[h] += 1
            sent[p] = sent.get(p, 0) + 1
    origin_out = {"pieces": len(sent), "second_copies": sum(n - 1 for n in sent.values()),
                  "pieces_per_host": per_host}
    print(json.dumps({"run": run, "hosts": len(hosts), "waits_ms": out, "origin": origin_out}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
