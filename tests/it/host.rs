//! Faults of the host itself: a cache disk that fills up, and a big release read by many
//! readers at once while the mount prefetches and seeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_full_cache_disk_fails_missing_reads_at_once_keeps_cached_bytes_and_recovers() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, ih, _tr) = tracked_release(t.path(), 24 << 20, 40);
    // A slow origin, so that a first read lands before the disk fills.
    let _origin = seed(&torrent, &dir, free_port(), &["--upload-limit", "2M"]);
    let cache = t.path().join("cache");
    // Only the pieces' disk is small: the mount's log stays readable.
    let disk = Tmpfs::new(&cache.join(&ih).join("data"), "6m");
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--read-timeout", "60s"],
    );
    let app = std::fs::read(mnt.join("config/app.yaml")).unwrap();
    assert_eq!(app, std::fs::read(dir.join("config/app.yaml")).unwrap());

    // Prefetch fills the 6 MiB disk; the mount says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let why = loop {
        match m.status()["swarm_error"].as_str() {
            Some(e) if e.contains("cache disk is full") => break e.to_string(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the disk never filled up");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("status says: {why}");
    let log = std::fs::read_to_string(cache.join(format!(
        "mount-{}.log",
        swarmfs::mount::control::mount_id(&mnt)
    )))
    .unwrap();
    assert!(log.contains("cache disk is full"), "log:\n{log}");

    // Every file reads either as published or, at once, as EIO: never wrong bytes,
    // never a wait for the 60 s read timeout.
    let (mut ok, mut eio) = (0, 0);
    for f in regular_files(&dir) {
        let start = Instant::now();
        match std::fs::read(mnt.join(&f)) {
            Ok(b) => {
                assert!(b == std::fs::read(dir.join(&f)).unwrap(), "{f:?} differs");
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f:?}: {e}");
                assert!(start.elapsed() < Duration::from_secs(5), "{f:?} waited");
                eio += 1;
            }
        }
    }
    eprintln!("disk full: {ok} files readable, {eio} EIO");
    assert!(ok > 0 && eio > 0, "{ok} readable, {eio} EIO");

    // Space returns: the mount resumes by itself and finishes; every byte is right.
    disk.resize("64m");
    let o = swarmfs(&["prewarm", "--timeout", "90s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert!(m.status()["swarm_error"].is_null());
    assert_mount_matches(&dir, &mnt);
    m.unmount();
}

#[test]
fn sixty_four_readers_prefetch_and_seeding_on_a_1_gib_release_finish_in_bounded_memory() {
    // In RAM: three copies of 1 GiB on a disk would make this test about the disk.
    let t = tempfile::tempdir_in("/dev/shm").unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 1 << 30, 2000);
    let _origin = seed(&torrent, &dir, free_port(), &[]);
    let a = Mount::new(
        torrent.to_str().unwrap(),
        &t.path().join("a"),
        &t.path().join("cache-a"),
        &["--read-timeout", "120s"],
    );
    // A second mount fetches from the origin and from the first one, which so seeds.
    let b = Mount::new(
        torrent.to_str().unwrap(),
        &t.path().join("b"),
        &t.path().join("cache-b"),
        &[],
    );

    let files = Arc::new(regular_files(&dir));
    let read_bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let readers: Vec<_> = (0..64)
        .map(|r| {
            let (files, dir, mnt) = (files.clone(), dir.clone(), a.mnt.clone());
            let read_bytes = read_bytes.clone();
            std::thread::spawn(move || {
                // Eight readers share every file, each group in its own order: big files
                // are read by many readers at once, small ones one after another.
                let n = files.len();
                for i in 0..n {
                    let f = &files[(r * 997 + i * 31) % n];
                    if (r * 997 + i * 31) % n % 8 != r % 8 {
                        continue;
                    }
                    let got = std::fs::read(mnt.join(f))
                        .unwrap_or_else(|e| panic!("reader {r}: {f:?}: {e}"));
                    let want = std::fs::read(dir.join(f)).unwrap();
                    assert!(got == want, "reader {r}: {f:?} differs");
                    read_bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let b_prewarm = {
        let mnt = b.mnt.clone();
        std::thread::spawn(move || {
            swarmfs(&["prewarm", "--timeout", "240s", mnt.to_str().unwrap()])
        })
    };
    // No deadlock: everything ends well inside the read timeout.
    let deadline = started + Duration::from_secs(240);
    for r in readers {
        while !r.is_finished() {
            assert!(Instant::now() < deadline, "readers hung (deadlock?)");
            std::thread::sleep(Duration::from_millis(100));
        }
        r.join().expect("a reader failed");
    }
    let readers_s = started.elapsed().as_secs_f64();
    let o = b_prewarm.join().unwrap();
    assert!(o.status.success(), "second mount: {}", stderr(&o));
    let o = swarmfs(&["prewarm", "--timeout", "120s", a.mnt.to_str().unwrap()]);
    assert!(o.status.success(), "first mount: {}", stderr(&o));
    let st = a.status();
    let rss = st["peak_rss_bytes"]
        .as_u64()
        .expect("status has the peak RSS");
    eprintln!(
        "64 readers: {} MiB read in {readers_s:.1} s; first mount peak RSS {} MiB, uploaded {} MiB",
        read_bytes.load(Ordering::Relaxed) >> 20,
        rss >> 20,
        st["uploaded_bytes"].as_u64().unwrap_or(0) >> 20
    );
    // Memory does not grow with the release: cached bytes live in the page cache, not
    // in the daemon.
    assert!(rss < 512 << 20, "peak RSS {} MiB", rss >> 20);
    assert!(
        st["uploaded_bytes"].as_u64().unwrap() > 0,
        "the first mount did not seed"
    );
    assert_same_files(&dir, &b.mnt);
}
