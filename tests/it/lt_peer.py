"""A python3-libtorrent peer for the interoperability tests.

    lt_peer.py info TORRENT            print infohash and file list (with BEP 47 flags) as JSON
    lt_peer.py download TORRENT DIR PORT [utp]
                                       download from 127.0.0.1:PORT into DIR; with "utp" only
                                       uTP connections are allowed. Exit 0 once seeding.
    lt_peer.py seed TORRENT DIR PORT   seed the release in DIR (its parent holds it under the
                                       torrent's name) on 127.0.0.1:PORT, unchecked, until
                                       killed; prints "seeding" once listening.
"""
import json
import sys
import time

import libtorrent as lt


def info(path):
    ti = lt.torrent_info(path)
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        flags = fs.file_flags(i)
        files.append({
            "path": fs.file_path(i),
            "size": fs.file_size(i),
            "pad": bool(flags & fs.flag_pad_file),
            "exec": bool(flags & fs.flag_executable),
            "symlink": fs.symlink(i) if flags & fs.flag_symlink else None,
        })
    print(json.dumps({"infohash": str(ti.info_hash()), "name": ti.name(), "files": files}))


def download(path, save, port, utp_only, timeout=90):
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_tcp": not utp_only,
        "enable_incoming_tcp": not utp_only,
        "enable_outgoing_utp": True,
        "enable_incoming_utp": True,
        "allow_multiple_connections_per_ip": True,
    }
    ses = lt.session(settings)
    h = ses.add_torrent({"ti": lt.torrent_info(path), "save_path": save})
    peer = ("127.0.0.1", port)
    h.connect_peer(peer)
    start = time.time()
    last = 0
    while time.time() - start < timeout:
        s = h.status()
        if s.is_seeding:
            print(json.dumps({"ok": True, "seconds": round(time.time() - start, 2),
                              "bytes": s.total_wanted_done, "utp_only": utp_only}))
            return 0
        if s.num_peers == 0 and time.time() - last > 2:
            h.connect_peer(peer)
            last = time.time()
        time.sleep(0.2)
    s = h.status()
    print(json.dumps({"ok": False, "state": str(s.state), "progress": s.progress,
                      "peers": s.num_peers, "error": str(s.errc.message())}))
    return 1


def seed(path, save, port):
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
    })
    ses.add_torrent({"ti": lt.torrent_info(path), "save_path": save,
                     "flags": lt.torrent_flags.seed_mode})
    while not ses.is_listening():
        time.sleep(0.05)
    print("seeding", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1] == "info":
        info(sys.argv[2])
    elif sys.argv[1] == "seed":
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(download(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                          len(sys.argv) > 5 and sys.argv[5] == "utp"))
