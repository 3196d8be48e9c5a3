#!/usr/bin/env python3
"""The fleet benchmark's floor: the cheapest full mesh its links and this machine's kernel allow.

Every node serves BYTES bytes of a tmpfs file to each connection with sendfile; every
host fetches BYTES from each other node at once into one buffer (no protocol, no hashing,
no cache writes). What a real client does comes on top of this. Driven by
scripts/bench-mesh.sh inside ../shared/bench's topology:

    mesh-floor.py serve IP PORT FILE BYTES CONNS   serves CONNS connections, prints its CPU seconds
    mesh-floor.py fetch T0 BYTES IP:PORT...    prints seconds from T0 until all are in, and its CPU seconds

The CPU seconds (user + system, every thread) are the floor under a client's cost per
byte on these links: the kernel's work for each packet sent and received (the shaper,
the bridge, the veth pair and TCP run in the sending and receiving process's context).
"""
import resource
import os
import socket
import sys
import threading
import time


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def serve(ip, port, path, size, conns):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(256)

    def one(c):
        with c, open(path, "rb") as f:
            off = 0
            while off < size:
                n = os.sendfile(c.fileno(), f.fileno(), off, size - off)
                if n == 0:
                    break
                off += n

    threads = []
    for _ in range(conns):
        c, _ = s.accept()
        threads.append(threading.Thread(target=one, args=(c,)))
        threads[-1].start()
    for t in threads:
        t.join()
    print(f"{cpu_seconds():.3f}", flush=True)


def fetch(t0, size, peers):
    while time.time() < t0:
        time.sleep(0.001)

    def one(peer):
        ip, port = peer.rsplit(":", 1)
        with socket.create_connection((ip, int(port))) as c:
            buf, got = bytearray(1 << 20), 0
            while got < size:
                n = c.recv_into(buf)
                if not n:
                    sys.exit(f"{peer}: closed after {got} of {size} bytes")
                got += n

    threads = [threading.Thread(target=one, args=(p,)) for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{time.time() - t0:.3f} {cpu_seconds():.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "fetch":
        fetch(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(__doc__)
