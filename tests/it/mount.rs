//! `swarmfs mount`: real FUSE mounts fed by real swarms on 127.0.0.1.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

struct Fixture {
    t: tempfile::TempDir,
    dir: std::path::PathBuf,
    torrent: std::path::PathBuf,
}

fn fixture(size: u64, small: usize) -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, size, small);
    let torrent = t.path().join("rel.torrent");
    publish(&dir, &torrent, &[]);
    Fixture { t, dir, torrent }
}

#[test]
fn three_hosts_mount_from_one_seeder_and_read_every_byte() {
    let f = fixture(12 << 20, 120);
    let before = snapshot(&f.dir);
    let sport = free_port();
    let _seed = seed(&f.torrent, &f.dir, sport, &[]);
    let peer = format!("127.0.0.1:{sport}");
    let mut mounts = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        // Each host knows the seeder and the hosts before it: they trade among themselves.
        let mut args = vec![
            "--listen".to_string(),
            listen,
            "--peer".into(),
            peer.clone(),
        ];
        for p in &ports {
            args.push("--peer".into());
            args.push(format!("127.0.0.1:{p}"));
        }
        ports.push(port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mounts.push(Mount::new(
            f.torrent.to_str().unwrap(),
            &f.t.path().join(format!("mnt{i}")),
            &f.t.path().join(format!("cache{i}")),
            &args,
        ));
    }
    for m in &mounts {
        assert_mount_matches(&f.dir, &m.mnt);
    }
    // Read-only: every kind of write is refused with EROFS.
    let m = &mounts[0].mnt;
    let erofs = |r: std::io::Result<()>| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    };
    erofs(std::fs::write(m.join("new.txt"), b"x"));
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(m.join("config/app.yaml"))
            .map(|_| ()),
    );
    erofs(std::fs::create_dir(m.join("d")));
    erofs(std::fs::rename(
        m.join("config/app.yaml"),
        m.join("config/b.yaml"),
    ));
    erofs(std::fs::remove_file(m.join("config/app.yaml")));
    use std::os::unix::fs::PermissionsExt;
    erofs(std::fs::set_permissions(
        m.join("config/app.yaml"),
        std::fs::Permissions::from_mode(0o777),
    ));
    erofs(
        std::fs::File::options()
            .write(true)
            .open(m.join("bin/appserver"))
            .and_then(|f| f.set_len(0)),
    );
    // Padding is invisible; statfs is honest about the size.
    assert!(!m.join(".pad").exists());
    let st = nix_statvfs(m);
    assert!(
        st.0 * st.1 >= 12 << 20,
        "statfs reports {} blocks of {}",
        st.0,
        st.1
    );
    drop(mounts);
    assert_eq!(before, snapshot(&f.dir), "the published directory changed");
}

fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_blocks, s.f_frsize)
}

#[test]
fn a_file_reads_while_the_download_is_half_done_and_a_restart_needs_no_peer() {
    let f = fixture(24 << 20, 60);
    let sport = free_port();
    // A slow seeder: the whole release takes ~12 s, so reads happen mid-download.
    let mut seeder = seed(&f.torrent, &f.dir, sport, &["--upload-limit", "2M"]);
    let mnt = f.t.path().join("mnt");
    let cache = f.t.path().join("cache");
    let peer = format!("127.0.0.1:{sport}");
    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let start = Instant::now();
    let lib = std::fs::read(mnt.join("lib/libdb.so.1")).unwrap();
    let took = start.elapsed();
    assert_eq!(lib, std::fs::read(f.dir.join("lib/libdb.so.1")).unwrap());
    let s = m.status();
    assert_eq!(
        s["complete"], false,
        "the download should still be going on: {s}"
    );
    assert!(s["swarm_reads"].as_u64().unwrap() > 0);
    eprintln!(
        "read lib/libdb.so.1 ({} bytes) mid-download in {took:?}; status {s}",
        lib.len()
    );

    // prewarm returns once everything is local.
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_eq!(m.status()["complete"], true);
    m.unmount();
    drop(m);
    seeder.terminate();

    // No peer at all now: the cache alone serves every byte.
    let m = Mount::new(f.torrent.to_str().unwrap(), &mnt, &cache, &[]);
    let s = m.status();
    assert_eq!(s["complete"], true, "restart did not reuse the cache: {s}");
    assert_mount_matches(&f.dir, &mnt);
    assert_eq!(m.status()["downloaded_bytes"], 0);
}

#[test]
fn a_read_with_no_peer_fails_with_eio_after_the_timeout_and_the_mount_stays_up() {
    let f = fixture(4 << 20, 20);
    let mnt = f.t.path().join("mnt");
    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &f.t.path().join("cache"),
        &["--read-timeout", "1s"],
    );
    for _ in 0..2 {
        let start = Instant::now();
        let err = std::fs::read(mnt.join("bin/appserver")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{took:?}"
        );
    }
    assert!(mnt.join("config").is_dir(), "metadata still served");
    let o = swarmfs(&["prewarm", "--no-peer-timeout", "2s", mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("no peer reachable"), "{}", stderr(&o));
    let s = m.status();
    assert!(s["read_timeouts"].as_u64().unwrap() >= 2, "{s}");
    let log = std::fs::read_dir(&m.cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("bin/appserver: piece"),
        "log names file and piece: {log}"
    );
}

#[test]
fn mounts_a_mktorrent_torrent_seeded_only_by_aria2() {
    require("mktorrent");
    require("aria2c");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 6 << 20, 50);
    let torrent = t.path().join("mk.torrent");
    let o = Command::new("mktorrent")
        .args(["-l", "18", "-a", "http://127.0.0.1:1/announce", "-o"])
        .arg(&torrent)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let aport = free_port();
    let mut aria = Proc::spawn(
        Command::new("aria2c")
            .args([
                "--no-conf=true",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--seed-ratio=0.0",
                "--bt-seed-unverified=true",
                "--check-integrity=false",
                "--console-log-level=warn",
                "--listen-port",
                &aport.to_string(),
                "-d",
            ])
            .arg(t.path())
            .arg(&torrent),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", aport)).is_err() {
        assert!(Instant::now() < deadline, "aria2c did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &["--peer", &format!("127.0.0.1:{aport}")],
    );
    // mktorrent follows symlinks (copies) and carries no modes: compare bytes only.
    for f in regular_files(&dir) {
        let mut a = Vec::new();
        std::fs::File::open(mnt.join(&f))
            .unwrap()
            .read_to_end(&mut a)
            .unwrap();
        assert!(
            a == std::fs::read(dir.join(&f)).unwrap(),
            "{} differs",
            f.display()
        );
    }
    drop(m);
    let _ = aria.child.kill();
}

#[test]
fn bad_mountpoints_and_sources_get_clear_errors() {
    let f = fixture(2 << 20, 10);
    let cache = f.t.path().join("cache");
    let src = f.torrent.to_str().unwrap();
    let o = swarmfs(&[
        "mount",
        "--cache-dir",
        cache.to_str().unwrap(),
        src,
        f.t.path().join("nope").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("nope: no such directory"),
        "{}",
        stderr(&o)
    );
    let file = f.t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let o = swarmfs(&[
        "mount",
        "--cache-dir",
        cache.to_str().unwrap(),
        src,
        file.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    // Found before any daemon starts, and said once.
    let o = try_mount("/no/such.torrent", &f.t.path().join("m0"), &cache, &[]);
    assert_eq!(
        stderr(&o)
            .matches("cannot read the torrent /no/such.torrent")
            .count(),
        1,
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("daemon"), "{}", stderr(&o));
    let o = try_mount("deadbeef", &f.t.path().join("m0"), &cache, &[]);
    assert!(
        stderr(&o)
            .contains("deadbeef is not an infohash (an infohash has 40 hex digits; this has 8)"),
        "{}",
        stderr(&o)
    );
    // A path the host cannot hold (17 components of 250 bytes: 4266 bytes) is refused
    // at mount, naming it, as other invalid torrents are.
    let deep: Vec<String> = (0..17)
        .map(|i| format!("{i:02}{}", "d".repeat(248)))
        .collect();
    let mut path = String::new();
    for c in &deep {
        path.push_str(&format!("{}:{c}", c.len()));
    }
    let data = b"hello";
    let mut torrent = format!(
        "d4:infod5:filesld6:lengthi{}e4:pathl{path}eee4:name3:rel12:piece lengthi16384e6:pieces20:",
        data.len()
    )
    .into_bytes();
    use sha1::Digest;
    torrent.extend_from_slice(&sha1::Sha1::digest(data));
    torrent.extend_from_slice(b"ee");
    let long = f.t.path().join("long.torrent");
    std::fs::write(&long, &torrent).unwrap();
    let o = try_mount(long.to_str().unwrap(), &f.t.path().join("m0"), &cache, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("{}: this path of the release is", deep.join("/")))
            && stderr(&o).contains("more than the 4095"),
        "{}",
        stderr(&o)
    );

    let mnt = f.t.path().join("mnt");
    let m = Mount::new(src, &mnt, &cache, &[]);
    let o = try_mount(src, &mnt, &f.t.path().join("cache2"), &[]);
    assert!(stderr(&o).contains("is already mounted"), "{}", stderr(&o));
    // A killed daemon leaves a stale mount; the next mount clears it.
    let pid = m.status()["pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    let o = swarmfs(&["status", mnt.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "a dead daemon is reported, not hung on: {}",
        stderr(&o)
    );
    let _m2 = Mount::new(src, &mnt, &cache, &[]);
    assert!(mnt.join("config").is_dir());
    let o = swarmfs(&["prewarm", f.t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

/// A seed of the fixture on 127.0.0.1, and a mount of it at `mnt` that knows the seed.
fn mount_beside_a_seed(f: &Fixture, mount_args: &[&str]) -> (Proc, std::path::PathBuf, Mount) {
    let sport = free_port();
    let seed = seed(&f.torrent, &f.dir, sport, &[]);
    let mnt = f.t.path().join("mnt");
    let peer = format!("127.0.0.1:{sport}");
    let mut args = mount_args.to_vec();
    args.extend(["--peer", &peer]);
    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &f.t.path().join("cache"),
        &args,
    );
    (seed, mnt, m)
}

#[test]
fn a_file_that_completes_while_open_can_still_be_opened_and_read() {
    // The kernel keeps an inode in one I/O mode: a passthrough open of a file that is
    // still open through the daemon fails with EIO. Found by the 64-reader test.
    let f = fixture(4 << 20, 20);
    // Not learning: while a mount records its start-up, every read goes through the
    // daemon, and passthrough is what this tests.
    let (_seed, mnt, m) = mount_beside_a_seed(&f, &["--no-prefetch", "--no-learn"]);
    let want = std::fs::read(f.dir.join("bin/appserver")).unwrap();
    let mut first = std::fs::File::open(mnt.join("bin/appserver")).unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).unwrap();
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Complete now, but still open through the daemon.
    assert!(std::fs::read(mnt.join("bin/appserver")).unwrap() == want);
    drop(first);
    let before = m.status()["passthrough_opens"].as_u64().unwrap();
    assert!(std::fs::read(mnt.join("bin/appserver")).unwrap() == want);
    assert_eq!(
        m.status()["passthrough_opens"].as_u64().unwrap(),
        before + 1,
        "once no open is left, the next open is a passthrough one"
    );
}

#[test]
fn threads_opening_the_same_complete_files_at_once_all_read_them() {
    // open and release register and close backing ids outside the daemon's lock of
    // open files: two first opens of one file, or an open beside the last release, race.
    let f = fixture(2 << 20, 40);
    // Not learning: the start-up's reads (these) would go through the daemon.
    let (_seed, mnt, m) = mount_beside_a_seed(&f, &["--no-learn"]);
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files: Vec<_> = walk_files(&f.dir)
        .into_iter()
        .filter(|p| !p.is_symlink())
        .map(|p| {
            let rel = p.strip_prefix(&f.dir).unwrap().to_path_buf();
            let want = std::fs::read(&p).unwrap();
            (rel, want)
        })
        .collect();
    let not_empty = files.iter().filter(|(_, b)| !b.is_empty()).count() as u64;
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20 {
                    for (rel, want) in &files {
                        let got = std::fs::read(mnt.join(rel))
                            .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
                        assert!(&got == want, "{} differs", rel.display());
                    }
                }
            });
        }
    });
    let st = m.status();
    assert!(
        st["passthrough_opens"].as_u64().unwrap() >= 8 * 20 * not_empty,
        "every open of a complete file (not empty) is a passthrough one: {st}"
    );
    assert_eq!(st["read_errors"].as_u64().unwrap(), 0, "{st}");
    // A complete file's backing id outlives its last close: opened again and again, its
    // cache file is registered with the kernel once.
    let (rel, want) = files.iter().find(|(_, b)| !b.is_empty()).unwrap();
    let before = m.status();
    for _ in 0..3 {
        assert!(&std::fs::read(mnt.join(rel)).unwrap() == want);
    }
    let after = m.status();
    assert_eq!(
        after["backing_files"], before["backing_files"],
        "{before} -> {after}"
    );
    assert_eq!(
        after["passthrough_opens"].as_u64().unwrap(),
        before["passthrough_opens"].as_u64().unwrap() + 3
    );
    // Each file was registered by at most one first open per thread (first opens that
    // race each register one; all but one are closed at once).
    assert!(
        after["backing_files"].as_u64().unwrap() <= 8 * not_empty,
        "{after}"
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

#[test]
fn prewarm_paths_timeout_status_and_metrics() {
    let f = fixture(16 << 20, 40);
    let sport = free_port();
    let _seed = seed(&f.torrent, &f.dir, sport, &["--upload-limit", "2M"]);
    let mnt = f.t.path().join("mnt");
    let mport = free_port();
    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &f.t.path().join("cache"),
        &[
            "--no-prefetch",
            "--peer",
            &format!("127.0.0.1:{sport}"),
            "--metrics",
            &format!("127.0.0.1:{mport}"),
        ],
    );
    // Only the libraries: they become local, the rest does not.
    let o = swarmfs(&[
        "prewarm",
        "--paths",
        "lib/*.so.1",
        "--paths",
        "config/**",
        mnt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = m.status();
    assert_eq!(s["complete"], false, "{s}");
    let swarm_reads = s["swarm_reads"].as_u64().unwrap();
    for lib in [
        "lib/libcore.so.1",
        "lib/libnet.so.1",
        "lib/libdb.so.1",
        "lib/libui.so.1",
        "config/app.yaml",
    ] {
        assert_eq!(
            std::fs::read(mnt.join(lib)).unwrap(),
            std::fs::read(f.dir.join(lib)).unwrap()
        );
    }
    assert_eq!(
        m.status()["swarm_reads"].as_u64().unwrap(),
        swarm_reads,
        "prewarmed files were not local"
    );

    // A prewarm of everything that cannot finish in time: exit 5 and how far it got.
    let o = swarmfs(&["prewarm", "--timeout", "1s", mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out after"), "{}", stderr(&o));

    // `status` without a mountpoint lists every swarmfs mount.
    let o = swarmfs(&["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(mnt.to_str().unwrap()));

    // A read that needs the swarm lands in the latency histogram.
    {
        use std::os::unix::fs::FileExt;
        let len = std::fs::metadata(f.dir.join("bin/appserver"))
            .unwrap()
            .len();
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        std::fs::File::open(mnt.join("bin/appserver"))
            .unwrap()
            .read_exact_at(&mut a, len - 4096)
            .unwrap();
        std::fs::File::open(f.dir.join("bin/appserver"))
            .unwrap()
            .read_exact_at(&mut b, len - 4096)
            .unwrap();
        assert!(a == b);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let text = http_get(mport, "/metrics");
    for name in [
        "swarmfs_pieces_present",
        "swarmfs_bytes_uploaded_total",
        "swarmfs_read_seconds_bucket",
        "swarmfs_peers",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

#[test]
fn kill_9_mid_download_then_remount_reuses_verified_pieces_and_serves_only_verified_bytes() {
    let f = fixture(24 << 20, 40);
    let sport = free_port();
    let _seed = seed(&f.torrent, &f.dir, sport, &["--upload-limit", "3M"]);
    let mnt = f.t.path().join("mnt");
    let cache = f.t.path().join("cache");
    let peer = format!("127.0.0.1:{sport}");
    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    // Let it download part of the release, then kill the daemon without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = m.status();
        let have = s["present_bytes"].as_u64().unwrap();
        if have > 6 << 20 {
            assert_eq!(s["complete"], false);
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = m.status()["present_bytes"].as_u64().unwrap();
    let pid = m.status()["pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    std::mem::forget(m); // its mount is stale now; the next mount clears it

    let m = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let s = m.status();
    let reused = s["present_bytes"].as_u64().unwrap();
    assert!(
        reused + (1 << 20) >= before,
        "remount found {reused} bytes in the cache, had {before} before the kill"
    );
    assert_mount_matches(&f.dir, &mnt);
    let o = swarmfs(&["prewarm", "--timeout", "60s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = m.status();
    let total = s["total_bytes"].as_u64().unwrap();
    let downloaded = s["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded < total - reused / 2,
        "the remount downloaded {downloaded} of {total} bytes although {reused} were cached"
    );
}

#[test]
fn a_magnet_or_infohash_mount_fetches_metadata_once_and_remounts_from_the_cache() {
    let f = fixture(4 << 20, 20);
    let rel = swarmfs::release::Release::from_torrent(&std::fs::read(&f.torrent).unwrap()).unwrap();
    let sport = free_port();
    let mut seeder = seed(&f.torrent, &f.dir, sport, &[]);
    let mnt = f.t.path().join("mnt");
    let cache = f.t.path().join("cache");
    let peer = format!("127.0.0.1:{sport}");
    let m = Mount::new(&rel.magnet(), &mnt, &cache, &["--peer", &peer]);
    assert_mount_matches(&f.dir, &mnt);
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    m.unmount();
    drop(m);
    seeder.terminate();
    // No peer at all: the metadata and the pieces come from the cache.
    let ih = rel.info_hash.to_string();
    let m = Mount::new(&ih, &mnt, &cache, &[]);
    assert_eq!(m.status()["complete"], true);
    assert_mount_matches(&f.dir, &mnt);
    // An infohash nobody can describe gets a clear error, not a hang.
    let other = "0123456789abcdef0123456789abcdef01234567";
    let o = try_mount(other, &f.t.path().join("mnt2"), &cache, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("there is no way to find peers"),
        "{}",
        stderr(&o)
    );
    let dead = format!("127.0.0.1:{}", free_port());
    let o = try_mount(
        other,
        &f.t.path().join("mnt2"),
        &cache,
        &["--metadata-timeout", "2s", "--peer", &dead],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no peer sent the metadata"),
        "{}",
        stderr(&o)
    );
}

/// Bytes `range` of the cache's copy of `rel`, if the cache file exists.
fn cached_bytes(cache: &Path, rel: &str, range: std::ops::Range<u64>) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let found = walk_files(cache)
        .into_iter()
        .find(|p| p.ends_with(Path::new("data").join(rel)))?;
    let f = std::fs::File::open(found).ok()?;
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact_at(&mut buf, range.start).ok()?;
    Some(buf)
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_recorded_boot_profile_is_fetched_first_on_the_next_host() {
    let f = fixture(24 << 20, 60);
    let sport = free_port();
    let peer = format!("127.0.0.1:{sport}");
    // A slow seeder: the whole release takes ~12 s.
    let _seeder = seed(&f.torrent, &f.dir, sport, &["--upload-limit", "2M"]);
    // The start-up reads: two places deep inside the binary (its last class of
    // background pieces without a profile) and the end of a library.
    let bin_len = std::fs::metadata(f.dir.join("bin/appserver"))
        .unwrap()
        .len();
    let lib_len = std::fs::metadata(f.dir.join("lib/libui.so.1"))
        .unwrap()
        .len();
    let reads: Vec<(&str, u64, u64)> = vec![
        ("bin/appserver", bin_len / 2, 4096),
        ("lib/libui.so.1", lib_len - 1000, 1000),
        ("bin/appserver", bin_len * 3 / 4, 4096),
    ];
    let read_at = |root: &Path, rel: &str, off: u64, len: u64| {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        std::fs::File::open(root.join(rel))
            .unwrap()
            .read_exact_at(&mut buf, off)
            .unwrap();
        buf
    };

    // Host 1 records while "the service starts".
    let profile = f.t.path().join("boot.profile");
    let mnt1 = f.t.path().join("mnt1");
    let m1 = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt1,
        &f.t.path().join("cache1"),
        &[
            "--peer",
            &peer,
            "--no-prefetch",
            "--record-profile",
            profile.to_str().unwrap(),
        ],
    );
    for &(rel, off, len) in &reads {
        assert_eq!(
            read_at(&mnt1, rel, off, len),
            read_at(&f.dir, rel, off, len)
        );
    }
    m1.unmount();
    let text = std::fs::read_to_string(&profile).unwrap();
    let lines: Vec<(String, u64, u64)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let v: Vec<&str> = l.split('\t').collect();
            (
                v[0].to_string(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
            )
        })
        .collect();
    // Every read is covered by a line, in the order read, and nothing else was recorded
    // (the kernel may have read ahead, so lines can be longer than the reads).
    let mut at = 0;
    for &(rel, off, len) in &reads {
        let i = lines[at..]
            .iter()
            .position(|(p, o, l)| p == rel && *o <= off && off + len <= o + l)
            .unwrap_or_else(|| panic!("{rel} at {off} not recorded in order: {text}"));
        at += i + 1;
    }
    assert!(
        lines.iter().all(|(p, _, _)| reads.iter().any(|r| r.0 == p)),
        "only the files read are in the profile: {text}"
    );

    // Host 2 mounts with the profile: those bytes arrive long before the rest.
    let mnt2 = f.t.path().join("mnt2");
    let cache2 = f.t.path().join("cache2");
    let m2 = Mount::new(
        f.torrent.to_str().unwrap(),
        &mnt2,
        &cache2,
        &["--peer", &peer, "--boot-profile", profile.to_str().unwrap()],
    );
    // Without the profile these pieces are in the last class of the background: at
    // 2 MB/s, 4 s is a third of the release, taken early tier first.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(4);
    loop {
        let all_here = reads.iter().all(|&(rel, off, len)| {
            cached_bytes(&cache2, rel, off..off + len) == Some(read_at(&f.dir, rel, off, len))
        });
        if all_here {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the profile's bytes are not in the cache after 4 s: {}",
            m2.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the profile's bytes were cached {:?} after the mount",
        start.elapsed()
    );
    let s = m2.status();
    assert_eq!(s["complete"], false, "the rest should still be coming: {s}");
    assert_eq!(
        s["swarm_reads"], 0,
        "nothing was read through the mount: {s}"
    );
    drop(m2);

    // A bad profile is refused naming the file and line; a missing one names the file.
    let bad = f.t.path().join("bad.profile");
    std::fs::write(&bad, "bin/appserver\tten\t4\n").unwrap();
    let o = try_mount(
        f.torrent.to_str().unwrap(),
        &f.t.path().join("mnt3"),
        &f.t.path().join("cache3"),
        &["--peer", &peer, "--boot-profile", bad.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("bad.profile, line 1") && e.contains("not a number"),
        "{e}"
    );
    let o = try_mount(
        f.torrent.to_str().unwrap(),
        &f.t.path().join("mnt3"),
        &f.t.path().join("cache3"),
        &[
            "--peer",
            &peer,
            "--boot-profile",
            "/nonexistent/boot.profile",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/boot.profile"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn two_hosts_that_find_each_other_at_once_keep_one_connection() {
    // Two mounts that learn of each other from the tracker dial each other; the peer
    // table, keyed by address, counted the other host twice (each connection sent every
    // `have`). One connection per peer id stays: each mount has the seed and the other.
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 4 << 20, 20);
    let _origin = seed(&torrent, &dir, free_port(), &[]);
    let mount = |name: &str| {
        let mnt = t.path().join(format!("mnt-{name}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        Mount::new(
            torrent.to_str().unwrap(),
            &mnt,
            &t.path().join(format!("cache-{name}")),
            &[
                "--no-prefetch",
                "--announce-interval",
                "1s",
                "--listen",
                &listen,
            ],
        )
    };
    let (a, b) = (mount("a"), mount("b"));
    let peers = |m: &Mount| m.status()["peers"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while !(peers(&a) == 2 && peers(&b) == 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the mounts never had the seed and each other (a {} b {})",
            peers(&a),
            peers(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each has dialled the other by its next announces (every 0.75-1.25 s): the second
    // connection to a peer exists for a moment on each side, until the handshake's rule
    // closes one (a sample in that moment sees 3). After three announces, no address is
    // new to either mount: what is left is what stays, and it is one connection a peer.
    std::thread::sleep(Duration::from_secs(3));
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push((peers(&a), peers(&b)));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("peers over the last 3 s (a, b): {seen:?}");
    assert!(
        seen.iter().all(|&(pa, pb)| pa == 2 && pb == 2),
        "a mount kept two connections to one peer: {seen:?}"
    );
}
