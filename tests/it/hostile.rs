//! Hostile peers: a small BitTorrent peer written here that lies, stalls, floods or
//! speaks nonsense, mixed with an honest swarmfs seeder. Readers must only ever see the
//! published bytes, and the mount must finish from the honest peer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Evil {
    /// Answers every request with wrong bytes.
    WrongBytes,
    /// Unchokes, then never answers a request.
    Stall,
    /// As `Stall`, but sends a keep-alive every second, so no read timeout drops it.
    StallAlive,
    /// Answers with more bytes than asked.
    Oversize,
    /// Sends a message whose length field is absurd.
    Malformed,
}

/// Counters of what the evil peer did.
#[derive(Default)]
struct EvilStats {
    connections: AtomicU64,
    blocks_sent: AtomicU64,
}

/// Starts an evil peer for `infohash` with `pieces` pieces; returns its port.
fn evil_peer(mode: Evil, infohash: [u8; 20], pieces: usize, stats: Arc<EvilStats>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { break };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let stats = stats.clone();
            std::thread::spawn(move || {
                let _ = serve_evil(conn, mode, infohash, pieces, &stats);
            });
        }
    });
    port
}

fn serve_evil(
    mut c: TcpStream,
    mode: Evil,
    ih: [u8; 20],
    pieces: usize,
    stats: &EvilStats,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut hs = [0u8; 68];
    c.read_exact(&mut hs)?;
    if hs[28..48] != ih {
        return Ok(());
    }
    let mut out = vec![19u8];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&ih);
    out.extend_from_slice(b"-EV0001-evilevilevil");
    // bitfield: we claim every piece
    let mut bf = vec![0u8; pieces.div_ceil(8)];
    for i in 0..pieces {
        bf[i / 8] |= 0x80 >> (i % 8);
    }
    out.extend_from_slice(&((bf.len() + 1) as u32).to_be_bytes());
    out.push(5);
    out.extend_from_slice(&bf);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.push(1); // unchoke
    c.write_all(&out)?;
    if let Evil::StallAlive = mode {
        let mut w = c.try_clone()?;
        std::thread::spawn(move || {
            while w.write_all(&[0u8; 4]).is_ok() {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    }
    if let Evil::Malformed = mode {
        c.write_all(&0xFFFF_FFF0u32.to_be_bytes())?;
        c.write_all(&[7u8; 64])?;
    }
    loop {
        let mut len = [0u8; 4];
        c.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            continue;
        }
        let mut msg = vec![0u8; len.min(1 << 20)];
        c.read_exact(&mut msg)?;
        if msg[0] != 6 || msg.len() < 13 {
            continue;
        }
        let index = &msg[1..5];
        let begin = &msg[5..9];
        let want = u32::from_be_bytes(msg[9..13].try_into().unwrap()) as usize;
        let n = match mode {
            Evil::Stall | Evil::StallAlive => continue,
            Evil::Oversize => want + 4096,
            _ => want,
        };
        let mut reply = Vec::with_capacity(n + 13);
        reply.extend_from_slice(&((n + 9) as u32).to_be_bytes());
        reply.push(7);
        reply.extend_from_slice(index);
        reply.extend_from_slice(begin);
        reply.extend(std::iter::repeat_n(0xA5u8, n));
        c.write_all(&reply)?;
        stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn hostile_peers_never_reach_a_reader_and_the_honest_peer_finishes_the_job() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 8 << 20, 40);
    let torrent = t.path().join("rel.torrent");
    publish(&dir, &torrent, &[]);
    let rel = swarmfs::release::Release::from_torrent(&std::fs::read(&torrent).unwrap()).unwrap();
    let pieces = rel.piece_count() as usize;

    let mut args: Vec<String> = Vec::new();
    let mut evils = Vec::new();
    for mode in [
        Evil::WrongBytes,
        Evil::Stall,
        Evil::Oversize,
        Evil::Malformed,
    ] {
        let stats = Arc::new(EvilStats::default());
        let port = evil_peer(mode, rel.info_hash.0, pieces, stats.clone());
        args.push("--peer".into());
        args.push(format!("127.0.0.1:{port}"));
        evils.push((mode, stats));
    }
    // The honest seeder is slow, so the evil peers get plenty of requests.
    let sport = free_port();
    let _seed = seed(&torrent, &dir, sport, &["--upload-limit", "2M"]);
    args.push("--peer".into());
    args.push(format!("127.0.0.1:{sport}"));
    args.push("--read-timeout".into());
    args.push("60s".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &args,
    );

    // Every byte any reader sees is the published byte.
    assert_mount_matches(&dir, &mnt);
    let o = swarmfs(&["prewarm", "--timeout", "120s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = m.status();
    assert_eq!(s["complete"], true);
    for (mode, st) in &evils {
        eprintln!(
            "{mode:?}: {} connections, {} blocks sent",
            st.connections.load(Ordering::Relaxed),
            st.blocks_sent.load(Ordering::Relaxed)
        );
        assert!(
            st.connections.load(Ordering::Relaxed) > 0,
            "{mode:?} peer was never contacted"
        );
    }
    let wrong = &evils[0].1;
    assert!(
        wrong.blocks_sent.load(Ordering::Relaxed) > 0,
        "the liar was never asked"
    );
    assert!(
        s["hash_failures"].as_u64().unwrap() >= 1,
        "hash failures not counted: {s}"
    );
    // Dropped after its bad pieces: it served a small share of the release, not all of it.
    assert!(
        (wrong.blocks_sent.load(Ordering::Relaxed) as usize) < pieces * 16 / 2,
        "the liar kept being asked"
    );
}

#[test]
fn a_mount_with_no_peer_recovers_when_a_seeder_appears_through_the_tracker() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 4 << 20, 20);
    let mnt = t.path().join("mnt");
    let _m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &["--read-timeout", "1s"],
    );
    let err = std::fs::read(mnt.join("config/app.yaml")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "no peer yet");
    let _seed = seed(&torrent, &dir, free_port(), &[]);
    // The mount announces every 5 s: it finds the seeder and the next reads succeed.
    let start = std::time::Instant::now();
    loop {
        match std::fs::read(mnt.join("config/app.yaml")) {
            Ok(b) => {
                assert_eq!(b, std::fs::read(dir.join("config/app.yaml")).unwrap());
                break;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO));
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no recovery within 30 s"
                );
            }
        }
    }
    eprintln!("recovered {:?} after the seeder started", start.elapsed());
}

#[test]
fn the_origin_going_away_and_coming_back_resumes_the_download_within_seconds() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 16 << 20, 20);
    let port = free_port();
    let mut origin = seed(&torrent, &dir, port, &["--upload-limit", "2M"]);
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &[],
    );
    let present = || m.status()["present_bytes"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while present() < 4 << 20 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    origin.terminate();
    std::thread::sleep(Duration::from_secs(2));
    let stalled = present();
    let _origin = seed(&torrent, &dir, port, &["--upload-limit", "2M"]);
    let back = std::time::Instant::now();
    while present() <= stalled + (1 << 20) {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the download did not resume"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "download resumed {:?} after the origin came back",
        back.elapsed()
    );
    let o = swarmfs(&["prewarm", "--timeout", "60s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_mount_matches(&dir, &mnt);
}

#[test]
fn the_fleet_finishes_from_each_other_once_the_origin_is_gone_for_good() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 16 << 20, 60);
    let mut origin = seed(&torrent, &dir, free_port(), &[]);
    // Three hosts that fetch only what they are asked for, so what each holds is known.
    let mount = |name: &str| {
        Mount::new(
            torrent.to_str().unwrap(),
            &t.path().join(name),
            &t.path().join(format!("cache-{name}")),
            &["--no-prefetch", "--read-timeout", "30s"],
        )
    };
    let (a, b, c) = (mount("a"), mount("b"), mount("c"));
    // Between them, a and b take every byte from the origin, each about half.
    let prewarm = |m: &Mount, globs: &[&str]| {
        let mut args = vec!["prewarm", "--timeout", "60s"];
        for g in globs {
            args.extend(["--paths", g]);
        }
        args.push(m.mnt.to_str().unwrap());
        let o = swarmfs(&args);
        assert!(o.status.success(), "prewarm {globs:?}: {}", stderr(&o));
    };
    prewarm(&a, &["bin/**", "app/**", "config/**"]);
    prewarm(&b, &["lib/**", "templates/**", "static/**"]);
    let (ha, hb) = (
        a.status()["present_bytes"].as_u64().unwrap(),
        b.status()["present_bytes"].as_u64().unwrap(),
    );
    let total = a.status()["total_bytes"].as_u64().unwrap();
    assert!(
        ha < total && hb < total,
        "a has {ha}, b has {hb} of {total}"
    );
    assert_eq!(c.status()["present_bytes"].as_u64().unwrap(), 0);

    origin.terminate();
    let gone = std::time::Instant::now();
    for m in [&a, &b, &c] {
        prewarm(m, &[]);
    }
    eprintln!(
        "the fleet finished {:?} after the origin left",
        gone.elapsed()
    );
    for m in [&a, &b, &c] {
        assert_mount_matches(&dir, &m.mnt);
    }
}

#[test]
fn a_private_release_is_never_looked_up_on_the_lan() {
    // Control: a public release without trackers is found on the LAN (BEP 14)...
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 2 << 20, 10);
    let run = |name: &str, extra: &[&str]| -> std::io::Result<Vec<u8>> {
        let torrent = t.path().join(format!("{name}.torrent"));
        publish(&dir, &torrent, extra);
        let mut s = Command::new(bin());
        s.env("RUST_LOG", "swarmfs=info")
            .args(["seed", torrent.to_str().unwrap(), "--data"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
        let mut seeder = Proc::spawn(&mut s);
        seeder.wait_for("seeding ", Duration::from_secs(60));
        let mnt = t.path().join(format!("mnt-{name}"));
        std::fs::create_dir_all(&mnt).unwrap();
        // Local service discovery on (no --no-lsd), no tracker, no --peer.
        let o = swarmfs(&[
            "mount",
            "--cache-dir",
            t.path().join(format!("cache-{name}")).to_str().unwrap(),
            "--read-timeout",
            "8s",
            torrent.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "mount: {}", stderr(&o));
        let r = std::fs::read(mnt.join("config/app.yaml"));
        swarmfs(&["unmount", mnt.to_str().unwrap()]);
        r
    };
    let public = run("public", &[]).expect("a public release is found through LSD");
    assert_eq!(public, std::fs::read(dir.join("config/app.yaml")).unwrap());
    // ...a private one is not: it uses its trackers only (and has none here).
    let e = run("private", &["--private"]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
}

#[test]
fn a_read_no_peer_can_serve_does_not_hold_back_the_rest_of_the_download() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 16 << 20, 40);
    let mut origin = seed(&torrent, &dir, free_port(), &[]);
    // `a` holds the libraries and configs, then the origin leaves: nobody has the binary.
    let a = Mount::new(
        torrent.to_str().unwrap(),
        &t.path().join("a"),
        &t.path().join("cache-a"),
        &["--no-prefetch"],
    );
    let o = swarmfs(&[
        "prewarm",
        "--paths",
        "lib/**",
        "--paths",
        "config/**",
        a.mnt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a_has = a.status()["present_bytes"].as_u64().unwrap();
    origin.terminate();

    let c = Mount::new(
        torrent.to_str().unwrap(),
        &t.path().join("c"),
        &t.path().join("cache-c"),
        &["--read-timeout", "10s"],
    );
    let bin = c.mnt.join("bin/appserver");
    let reader = std::thread::spawn(move || std::fs::read(bin));
    // While that read waits, the background still takes what `a` can give.
    let start = std::time::Instant::now();
    while c.status()["present_bytes"].as_u64().unwrap() < a_has {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "the background stalled behind a read nobody can serve: {} of {a_has} bytes",
            c.status()["present_bytes"]
        );
        assert!(!reader.is_finished(), "the read ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = reader.join().unwrap().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_same_files(&dir.join("lib"), &c.mnt.join("lib"));
}

#[test]
fn a_neighbour_that_announces_everything_and_sends_nothing_does_not_hold_up_the_download() {
    // The stalling peer is in the mount's /24 (127.0.0.0/24, a neighbour by default): it
    // claims every piece, unchokes, never answers and sends keep-alives (no read timeout
    // drops it). The only honest seed is outside the /24. Far peers are not asked for
    // what a neighbour has, until a neighbour with a full window has sent nothing for a
    // while (5 s): then they are. Without that the download never ended.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 4 << 20, 20);
    let torrent = t.path().join("rel.torrent");
    publish(&dir, &torrent, &[]);
    let rel = swarmfs::release::Release::from_torrent(&std::fs::read(&torrent).unwrap()).unwrap();
    let stats = Arc::new(EvilStats::default());
    let evil = evil_peer(
        Evil::StallAlive,
        rel.info_hash.0,
        rel.piece_count() as usize,
        stats.clone(),
    );
    let far = format!("127.1.2.1:{}", free_port());
    let _seed = seed_at(&torrent, &dir, &far, &[]);
    let listen = format!("127.0.0.2:{}", free_port());
    let evil = format!("127.0.0.1:{evil}");
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &["--listen", &listen, "--peer", &evil, "--peer", &far],
    );
    let o = swarmfs(&["prewarm", "--timeout", "90s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&dir, &mnt);
    assert!(
        stats.connections.load(Ordering::Relaxed) > 0,
        "the stalling neighbour was never contacted"
    );
    assert_eq!(m.status()["downloaded_near_bytes"], 0);
}
