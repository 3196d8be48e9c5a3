#!/usr/bin/env python3
"""One run of the delta benchmark inside ../shared/bench/topology.sh's namespaces
(scripts/bench-delta.sh starts it; root). Prints one JSON line.

    delta-fleet.py swarmfs|aria2 --hosts H --torrent M.torrent --data M_DIR
        --infohash IH --work DIR [--base-torrent N.torrent --base-data N_DIR
        --base-infohash IHN] [--bootset N.bootset] [--learnt none|one|all] [--meta JSON]
        [--bin SWARMFS]

The origin (10.77.0.1) runs opentracker and `swarmfs seed` of N+1. swarmfs: every host
holds N in its cache (its torrent and its files, hard-linked: only read) and mounts N+1
at once; boot = the boot set's reads answered through the mount, complete = `swarmfs
prewarm` returned. aria2: every host downloads N+1 whole (it has no way to use N);
complete = its download-complete hook. Afterwards every host's files are compared with
N+1's, byte for byte. The origin's bytes sent are its interface's counter over the run.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

ORIGIN = "10.77.0.1"
TRACKER = f"http://{ORIGIN}:6969/announce"


def ns(name, *cmd, **kw):
    return ["nsenter", f"--net=/run/netns/fleetb-{name}", "--", *cmd]


def tx_bytes(name):
    out = subprocess.run(["ip", "-n", f"fleetb-{name}", "-s", "-j", "link", "show", "eth0"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def wait(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"delta-fleet: timed out waiting for {what}")


def file_digests(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, root)
            if rel.startswith(".pad/") or rel.startswith(".pad" + os.sep):
                continue
            h = hashlib.sha1()
            with open(p, "rb") as fh:
                while True:
                    b = fh.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            out[rel] = h.hexdigest()
    return out


def read_boot(mnt, bootset, want):
    """Reads every range of the boot set that N+1 still has."""
    with open(bootset) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0] not in want:
                continue
            with open(os.path.join(mnt, parts[0]), "rb") as fh:
                fh.seek(int(parts[1]))
                fh.read(int(parts[2]))


def rebuilt_at(log_path):
    """When the mount's rebuild from local releases ended (epoch seconds, from the
    timestamp of its log line), or None."""
    import datetime
    import re
    try:
        text = open(log_path, errors="replace").read()
    except OSError:
        return None
    for line in text.splitlines():
        if "rebuilt pieces from releases already in the cache" in line:
            m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
            if m:
                return datetime.datetime.fromisoformat(m.group(1)).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
    return None


def main():
    # Stopped from outside (the benchmark interrupted): still unmount and stop everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("delta-fleet: terminated"))
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=["swarmfs", "aria2"])
    ap.add_argument("--hosts", type=int, required=True)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--infohash", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--base-torrent")
    ap.add_argument("--base-data")
    ap.add_argument("--base-infohash")
    ap.add_argument("--bootset")
    ap.add_argument("--learnt", choices=["none", "one", "all"], default="none",
                    help="which hosts booted N before (swarmfs): N mounted from their cache, "
                         "its boot set read through the mount, unmounted, so that the mount "
                         "recorded its start-up; N+1's mounts then boot from that recording")
    ap.add_argument("--meta", default="{}")
    ap.add_argument("--bin", default="swarmfs")
    ap.add_argument("--seeder", choices=["swarmfs", "aria2"], default="swarmfs",
                    help="the origin's client (aria2 for torrents of other tools: mktorrent "
                         "stores symlinks as files, which swarmfs seed refuses)")
    ap.add_argument("--bench", help="../shared/bench, for its tracker scrape")
    a = ap.parse_args()
    work = a.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    procs = []
    try:
        # The origin: a tracker and the seeder of N+1.
        tr = os.path.join(work, "tracker")
        os.makedirs(tr)
        with open(os.path.join(tr, "whitelist"), "w") as f:
            f.write(a.infohash + "\n")
        procs.append(subprocess.Popen(
            ns("origin", "env", "-C", tr, "opentracker", "-i", ORIGIN, "-p", "6969", "-P", "6969",
               "-d", tr, "-w", "whitelist"),
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tr, "log"), "w")))
        seed_log = os.path.join(work, "seed.log")
        if a.seeder == "swarmfs":
            procs.append(subprocess.Popen(
                ns("origin", a.bin, "seed", a.torrent, "--data", a.data, "--listen",
                   f"{ORIGIN}:6881", "--tracker", TRACKER, "--no-lsd"),
                stdout=subprocess.DEVNULL, stderr=open(seed_log, "w"),
                env={**os.environ, "RUST_LOG": "swarmfs=info"}))
            wait(lambda: "seeding " in open(seed_log).read(), 120, "the seeder")
        else:
            procs.append(subprocess.Popen(
                ns("origin", "aria2c", "--no-conf=true", "-T", a.torrent,
                   f"--dir={os.path.dirname(a.data.rstrip('/'))}", "--seed-ratio=0.0",
                   "--bt-seed-unverified=true", "--check-integrity=false", "--enable-dht=false",
                   "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=true",
                   "--listen-port=6881-6889", "--disable-ipv6=true", "--bt-max-peers=0",
                   "--file-allocation=none", "--console-log-level=error",
                   "--summary-interval=0", "--download-result=hide", "--stop=900",
                   f"--bt-tracker={TRACKER}"),
                stdout=subprocess.DEVNULL, stderr=open(seed_log, "w")))
            subprocess.run(ns("origin", sys.executable, os.path.join(a.bench, "fbtool.py"),
                              "wait-seeder", "--tracker", TRACKER, "--infohash", a.infohash,
                              "--min-complete", "1", "--timeout", "40"),
                           check=True, stdout=subprocess.DEVNULL)
        want = set(file_digests(a.data)) if a.bootset else set()

        hosts = range(1, a.hosts + 1)
        for i in hosts:
            h = os.path.join(work, f"h{i}")
            os.makedirs(os.path.join(h, "mnt"))
            if a.client == "swarmfs" and a.base_data:
                rel = os.path.join(h, "cache", a.base_infohash)
                os.makedirs(rel)
                shutil.copy(a.base_torrent, os.path.join(rel, "torrent"))
                subprocess.run(["cp", "-al", a.base_data, os.path.join(rel, "data")], check=True)
        if a.client == "swarmfs" and a.bootset and a.base_data:
            base_files = set(file_digests(a.base_data))
            for i in {"none": [], "one": [1], "all": list(hosts)}[a.learnt]:
                h = os.path.join(work, f"h{i}")
                mnt = os.path.join(h, "mnt-n")
                os.makedirs(mnt)
                subprocess.run([a.bin, "mount", "--cache-dir", os.path.join(h, "cache"),
                                "--no-lsd", "--no-prefetch", a.base_torrent, mnt],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                read_boot(mnt, a.bootset, base_files)
                subprocess.run([a.bin, "unmount", mnt], check=True)
                if not os.path.exists(os.path.join(h, "cache", a.base_infohash,
                                                   "startup.profile")):
                    raise RuntimeError(f"host {i} recorded no start-up of N")
        # aria2's download-complete hook: a file holding the time.
        hook = os.path.join(work, "done-hook.sh")
        with open(hook, "w") as f:
            f.write('#!/bin/sh\ndate +%s.%N > "$DONE_FILE.tmp" && mv "$DONE_FILE.tmp" "$DONE_FILE"\n')
        os.chmod(hook, 0o755)
        tx0 = tx_bytes("origin")
        t0 = time.time()
        runs = {}
        for i in hosts:
            h = os.path.join(work, f"h{i}")
            log = open(os.path.join(h, "client.log"), "w")
            if a.client == "swarmfs":
                cmd = [a.bin, "mount", "--foreground", "--cache-dir", os.path.join(h, "cache"),
                       "--listen", f"10.77.0.{10 + i}:6881", "--tracker", TRACKER, "--no-lsd",
                       a.torrent, os.path.join(h, "mnt")]
            else:
                cmd = ["aria2c", "--no-conf=true", "-T", a.torrent, f"--dir={h}/dl",
                       "--seed-ratio=0.0", "--enable-dht=false", "--enable-dht6=false",
                       "--bt-enable-lpd=false", "--enable-peer-exchange=true",
                       "--listen-port=6881-6889", "--disable-ipv6=true", "--file-allocation=none",
                       "--check-integrity=false", "--bt-max-peers=0",
                       f"--on-bt-download-complete={hook}", "--console-log-level=error",
                       "--summary-interval=0", "--download-result=hide", "--stop=600",
                       f"--bt-tracker={TRACKER}"]
            runs[i] = subprocess.Popen(ns(f"h{i}", *cmd), stdout=subprocess.DEVNULL, stderr=log,
                                       env={**os.environ,
                                            "RUST_LOG": os.environ.get("RUST_LOG", "swarmfs=info"),
                                            "DONE_FILE": os.path.join(h, "done")})
            procs.append(runs[i])

        boot, full, status = {}, {}, {}
        if a.client == "swarmfs":
            # Each host on its own: mounted, its boot reads answered, every byte local.
            def host(i):
                mnt = os.path.join(work, f"h{i}", "mnt")
                wait(lambda: os.path.ismount(mnt), 120, f"host {i}'s mount")
                if a.bootset:
                    read_boot(mnt, a.bootset, want)
                boot[i] = time.time() - t0
                if subprocess.run([a.bin, "prewarm", mnt], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=900).returncode != 0:
                    raise RuntimeError(f"prewarm failed on host {i}")
                full[i] = time.time() - t0
            with concurrent.futures.ThreadPoolExecutor(a.hosts) as pool:
                for f in [pool.submit(host, i) for i in hosts]:
                    f.result()
            for i in hosts:
                mnt = os.path.join(work, f"h{i}", "mnt")
                out = subprocess.run([a.bin, "status", "--json", mnt], check=True,
                                     capture_output=True, text=True).stdout
                status[i] = json.loads(out)
        else:
            for i in hosts:
                done = os.path.join(work, f"h{i}", "done")
                wait(lambda: os.path.exists(done), 900, f"host {i}'s download")
                full[i] = float(open(done).read()) - t0
                boot[i] = full[i]
        tx = tx_bytes("origin") - tx0

        # Every byte of N+1, on every host.
        expected = file_digests(a.data)
        mismatches = 0
        for i in hosts:
            h = os.path.join(work, f"h{i}")
            root = os.path.join(h, "mnt") if a.client == "swarmfs" else \
                os.path.join(h, "dl", os.path.basename(a.data.rstrip("/")))
            if a.client == "aria2" and not os.path.isdir(root):
                root = os.path.join(h, "dl", next(iter(os.listdir(os.path.join(h, "dl")))))
            got = file_digests(root)
            mismatches += sum(1 for k, v in expected.items() if got.get(k) != v)
        size = sum(os.path.getsize(os.path.join(a.data, k)) for k in expected)
        meta = json.loads(a.meta)
        line = {"bench": "delta", "client": a.client, "hosts": a.hosts, **meta,
                "size_bytes": size}
        if a.client == "swarmfs":
            dl = [status[i]["downloaded_bytes"] for i in hosts]
            reused = [status[i]["reused_bytes"] for i in hosts]
            line.update({
                "downloaded_median": int(statistics.median(dl)), "downloaded_max": max(dl),
                "reused_median": int(statistics.median(reused)),
                "reuse_s_max": max((status[i].get("reuse_seconds") or 0) for i in hosts),
                # The rebuild's end on the last host to end it, from the start of the run
                # (the mount's start-up and cache check included).
                "rebuilt_at_max_s": round(max(
                    (t - t0 for t in (rebuilt_at(os.path.join(work, f"h{i}", "client.log"))
                                      for i in hosts) if t is not None), default=0), 2),
                "cpu_s_max": round(max(status[i]["cpu_seconds"] for i in hosts), 2),
            })
        else:
            line.update({"downloaded_median": size, "downloaded_max": size, "reused_median": 0})
        line.update({
            "origin_tx_bytes": tx,
            "boot_median_s": round(statistics.median(boot.values()), 2),
            "full_median_s": round(statistics.median(full.values()), 2),
            "full_max_s": round(max(full.values()), 2),
            "mismatches": mismatches,
        })
        print(json.dumps(line), flush=True)
    finally:
        if a.client == "swarmfs":
            for i in range(1, a.hosts + 1):
                mnt = os.path.join(work, f"h{i}", "mnt")
                if os.path.ismount(mnt):
                    subprocess.run([a.bin, "unmount", mnt], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
