//! Delta deploys: a host that holds release N mounts N+1 and fetches only what changed,
//! with real mounts and real seeders on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Release N (a sample) and N+1: three files changed in place (two small ones and 100
/// bytes in the middle of the binary), two added, one removed, one renamed. Returns N's
/// and N+1's directories and the bytes of the changed and added files.
fn two_releases(t: &Path, size: u64) -> (PathBuf, PathBuf, u64, usize) {
    let n = t.join("n");
    sample(&n, size, 100);
    let m = t.join("m");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&n)
        .arg(&m)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut changed = 0u64;
    for f in ["app/views/m0/f00000.txt", "static/css/m0/f00003.txt"] {
        let p = m.join(f);
        let b: Vec<u8> = std::fs::read(&p).unwrap().iter().map(|x| !x).collect();
        changed += b.len() as u64;
        std::fs::write(&p, b).unwrap();
    }
    let bin = m.join("bin/appserver");
    let mut b = std::fs::read(&bin).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 100] {
        *x = !*x;
    }
    std::fs::write(&bin, b).unwrap();
    changed += 100;
    std::fs::write(m.join("app/views/m0/f00000a.txt"), vec![b'a'; 1000]).unwrap();
    std::fs::write(m.join("templates/new.html"), vec![b'n'; 5000]).unwrap();
    changed += 6000;
    std::fs::remove_file(m.join("static/js/m0/f00004.txt")).unwrap();
    std::fs::rename(m.join("lib/libdb.so.1"), m.join("lib/libdb2.so.1")).unwrap();
    (n, m, changed, 5)
}

/// Releases N and N+1 (of about `size` bytes; N+1 published against N), N complete in
/// the returned cache directory: the state a host is in before a delta deploy.
struct Deployed {
    m: PathBuf,
    m_ih: String,
    m_torrent: PathBuf,
    cache: PathBuf,
    changed: u64,
    changes: usize,
}

fn holding_n(t: &Path, size: u64) -> Deployed {
    let (n, m, changed, changes) = two_releases(t, size);
    let n_torrent = t.join("n.torrent");
    publish(&n, &n_torrent, &[]);
    let m_torrent = t.join("m.torrent");
    let m_ih = publish(&m, &m_torrent, &["--base", n_torrent.to_str().unwrap()]);
    let cache = t.join("cache");
    mount_complete(t, &n_torrent, &n, &cache, "mnt-n");
    Deployed {
        m,
        m_ih,
        m_torrent,
        cache,
        changed,
        changes,
    }
}

/// Mounts `torrent` on `cache` from a seeder of `data`, waits for every byte, checks
/// them, and returns the status.
fn mount_complete(
    t: &Path,
    torrent: &Path,
    data: &Path,
    cache: &Path,
    name: &str,
) -> serde_json::Value {
    let port = free_port();
    let mut seeder = seed(torrent, data, port, &[]);
    let s = mount_from(&t.join(name), torrent, data, cache, port, &[]);
    seeder.terminate();
    s
}

/// Mounts `torrent` on `mnt` and `cache` from the peer on 127.0.0.1:`port`, prewarms it
/// (with `prewarm_args`), checks every byte against `data`, and returns the status.
fn mount_from(
    mnt: &Path,
    torrent: &Path,
    data: &Path,
    cache: &Path,
    port: u16,
    prewarm_args: &[&str],
) -> serde_json::Value {
    let peer = format!("127.0.0.1:{port}");
    let m = Mount::new(torrent.to_str().unwrap(), mnt, cache, &["--peer", &peer]);
    let mut args = vec!["prewarm"];
    args.extend_from_slice(prewarm_args);
    args.push(mnt.to_str().unwrap());
    let o = swarmfs(&args);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(data, mnt);
    let s = m.status();
    m.unmount();
    s
}

#[test]
fn a_host_holding_release_n_fetches_only_what_n_plus_1_changed() {
    let t = tempfile::tempdir().unwrap();
    let (n, m, changed, changes) = two_releases(t.path(), 8 << 20);
    let n_torrent = t.path().join("n.torrent");
    let n_ih = publish(&n, &n_torrent, &[]);
    let m_torrent = t.path().join("m.torrent");
    let o = swarmfs(&[
        "publish",
        m.to_str().unwrap(),
        "--out",
        m_torrent.to_str().unwrap(),
        "--base",
        n_torrent.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "publish --base: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &report["delta"];
    assert_eq!(d["base"], n_ih.as_str());
    assert_eq!(d["files_changed"], 3, "{d}");
    assert_eq!(d["files_removed"], 2, "removed and renamed away: {d}");
    eprintln!("publish --base: {d}");

    // The host holds N, complete.
    let cache = t.path().join("cache");
    let s = mount_complete(t.path(), &n_torrent, &n, &cache, "mnt-n");
    assert_eq!(s["complete"], true);
    // A byte of N's cached copy of a file N+1 keeps rots on disk: N+1's hash refuses
    // it, and that piece comes from the swarm.
    let rotten = cache.join(&n_ih).join("data/lib/libcore.so.1");
    let mut b = std::fs::read(&rotten).unwrap();
    b[1000] ^= 0xff;
    std::fs::write(&rotten, &b).unwrap();
    let copy_cache = |name: &str| {
        let to = t.path().join(name);
        let ok = Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(&cache)
            .arg(&to)
            .status()
            .unwrap();
        assert!(ok.success());
        to
    };
    let cache_without_base = copy_cache("cache-plain");
    // And one where the unchanged neighbours of a changed small file rot too: the piece
    // they share with it is written here only in part, and its hash refuses it whole.
    let cache_rotten_neighbours = copy_cache("cache-rotten");
    for f in ["f00005.txt", "f00010.txt"] {
        let p = cache_rotten_neighbours
            .join(&n_ih)
            .join("data/app/views/m0")
            .join(f);
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 0xff;
        std::fs::write(&p, &b).unwrap();
    }

    // N+1 published against N: only the changed bytes cross the network.
    let s = mount_complete(t.path(), &m_torrent, &m, &cache, "mnt-m");
    let downloaded = s["downloaded_bytes"].as_u64().unwrap();
    let reused = s["reused_bytes"].as_u64().unwrap();
    eprintln!(
        "N+1 with --base: changed {changed} bytes, downloaded {downloaded}, reused {reused}; {s}"
    );
    let rotten_piece = 32 << 10;
    assert!(
        downloaded <= changed + changes as u64 * (64 << 10) + rotten_piece,
        "downloaded {downloaded} for {changed} changed bytes"
    );
    assert!(reused > 6 << 20, "reused {reused}");
    // Nothing of N changed but the byte rotted above.
    let n_data = cache.join(&n_ih).join("data");
    for f in regular_files(&n) {
        let cached = std::fs::read(n_data.join(&f)).unwrap();
        let original = std::fs::read(n.join(&f)).unwrap();
        if f != Path::new("lib/libcore.so.1") {
            assert!(cached == original, "{} of N changed", f.display());
        }
    }

    // N+1 published without a base: reuse by file still finds the unchanged files. A
    // packed piece that holds a changed or added file is written here in part (its
    // unchanged files, found by `sha1`), and only the rest crosses the network: no more
    // than with a base.
    let plain_torrent = t.path().join("plain.torrent");
    publish(&m, &plain_torrent, &[]);
    let s = mount_complete(
        t.path(),
        &plain_torrent,
        &m,
        &cache_without_base,
        "mnt-plain",
    );
    let downloaded = s["downloaded_bytes"].as_u64().unwrap();
    eprintln!("N+1 without --base: changed {changed} bytes, downloaded {downloaded}; {s}");
    assert!(
        downloaded <= changed + changes as u64 * (64 << 10) + rotten_piece,
        "downloaded {downloaded} for {changed} changed bytes"
    );
    assert!(s["reused_partial_pieces"].as_u64().unwrap() >= 1, "{s}");

    // The same with rotten neighbours: every byte right all the same (`mount_complete`
    // compares them), the refused piece fetched whole.
    let s = mount_complete(
        t.path(),
        &plain_torrent,
        &m,
        &cache_rotten_neighbours,
        "mnt-rotten",
    );
    let downloaded_rotten = s["downloaded_bytes"].as_u64().unwrap();
    eprintln!("N+1 without --base, rotten neighbours: downloaded {downloaded_rotten}; {s}");
    assert!(s["hash_failures"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        downloaded_rotten > downloaded,
        "the piece of the rotten neighbours came from the swarm: {downloaded_rotten} against {downloaded}"
    );
}

#[test]
fn with_reuse_off_or_no_other_release_a_mount_downloads_everything_as_before() {
    let t = tempfile::tempdir().unwrap();
    let Deployed {
        m,
        m_torrent,
        cache,
        ..
    } = holding_n(t.path(), 8 << 20);

    let port = free_port();
    let mut seeder = seed(&m_torrent, &m, port, &[]);
    let mnt = t.path().join("mnt-m");
    let peer = format!("127.0.0.1:{port}");
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer, "--no-reuse"],
    );
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&m, &mnt);
    let s = mount.status();
    assert_eq!(s["reused_bytes"], 0, "{s}");
    assert!(s["downloaded_bytes"].as_u64().unwrap() >= s["total_bytes"].as_u64().unwrap() * 9 / 10);
    mount.unmount();
    seeder.terminate();
}

fn cache_list(cache: &Path) -> Vec<serde_json::Value> {
    let o = swarmfs(&[
        "cache",
        "--cache-dir",
        cache.to_str().unwrap(),
        "list",
        "--json",
    ]);
    assert!(o.status.success(), "cache list: {}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_cache_keeps_to_its_budget_and_never_evicts_a_mounted_release_or_the_base() {
    let t = tempfile::tempdir().unwrap();
    let (n, m, _, _) = two_releases(t.path(), 8 << 20);
    let a = t.path().join("a");
    sample(&a, 3 << 20, 30);
    let (a_torrent, n_torrent, m_torrent) = (
        t.path().join("a.torrent"),
        t.path().join("n.torrent"),
        t.path().join("m.torrent"),
    );
    let a_ih = publish(&a, &a_torrent, &[]);
    let n_ih = publish(&n, &n_torrent, &[]);
    let m_ih = publish(&m, &m_torrent, &["--base", n_torrent.to_str().unwrap()]);
    let cache = t.path().join("cache");
    let c = cache.to_str().unwrap();
    mount_complete(t.path(), &a_torrent, &a, &cache, "mnt-a");
    // Mount times are compared in seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // N stays mounted: it cannot be removed.
    let port = free_port();
    let mut seeder = seed(&n_torrent, &n, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    let mnt_n = t.path().join("mnt-n");
    let mount_n = Mount::new(
        n_torrent.to_str().unwrap(),
        &mnt_n,
        &cache,
        &["--peer", &peer],
    );
    assert!(swarmfs(&["prewarm", mnt_n.to_str().unwrap()])
        .status
        .success());
    let o = swarmfs(&["cache", "--cache-dir", c, "remove", &n_ih]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is mounted; unmount it first"),
        "{}",
        stderr(&o)
    );
    let listed = cache_list(&cache);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[0]["infohash"],
        a_ih.as_str(),
        "least recently mounted first"
    );
    assert_eq!(listed[1]["mounted"], true);

    // Room for N and M only: A (least recently mounted) goes; N, the base M is rebuilt
    // from (and mounted beside it, sharing the cache directory, as a deploy keeps the
    // previous release for rollback), stays.
    let n_bytes = listed[1]["bytes"].as_u64().unwrap();
    let m_total = swarmfs::release::Release::from_torrent(&std::fs::read(&m_torrent).unwrap())
        .unwrap()
        .total_length;
    let budget = (n_bytes + m_total + (1 << 20)).to_string();
    let port = free_port();
    let mut m_seeder = seed(&m_torrent, &m, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    let mnt_m = t.path().join("mnt-m");
    let mount_m = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt_m,
        &cache,
        &["--peer", &peer, "--cache-size", &budget],
    );
    assert!(swarmfs(&["prewarm", mnt_m.to_str().unwrap()])
        .status
        .success());
    assert_mount_matches(&m, &mnt_m);
    assert!(mount_m.status()["reused_bytes"].as_u64().unwrap() > 4 << 20);
    let left: Vec<String> = cache_list(&cache)
        .iter()
        .map(|c| c["infohash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        left,
        vec![n_ih.clone(), m_ih.clone()],
        "A evicted, N and M kept"
    );
    assert_mount_matches(&n, &mnt_n);
    mount_n.unmount();
    drop(mount_n);
    seeder.terminate();

    // Pruning to nothing removes what is not mounted, and M is still read whole.
    let o = swarmfs(&["cache", "--cache-dir", c, "prune", "--max-size", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("the rest is mounted"), "{}", stderr(&o));
    let left = cache_list(&cache);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["infohash"], m_ih.as_str());
    assert_mount_matches(&m, &mnt_m);
    mount_m.unmount();
    m_seeder.terminate();
}

#[test]
fn kill_9_while_rebuilding_then_remount_finishes_the_rebuild_and_serves_only_verified_bytes() {
    let t = tempfile::tempdir().unwrap();
    let Deployed {
        m,
        m_torrent,
        cache,
        changed,
        changes,
        ..
    } = holding_n(t.path(), 48 << 20);

    let port = free_port();
    let mut seeder = seed(&m_torrent, &m, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    let mnt = t.path().join("mnt-m");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut daemon = Proc::spawn(
        Command::new(bin())
            .env("RUST_LOG", "swarmfs=info")
            .args(["mount", "--foreground", "--no-lsd", "--cache-dir"])
            .arg(&cache)
            .args(["--peer", &peer])
            .arg(&m_torrent)
            .arg(&mnt),
    );
    // Killed once the rebuild has written something (or finished: either way the next
    // mount must serve only verified bytes).
    daemon.wait_for("rebuilding pieces from releases", Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reused_at_kill = loop {
        let o = swarmfs(&["status", "--json", mnt.to_str().unwrap()]);
        if o.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let r = s["reused_bytes"].as_u64().unwrap();
            if r > 0 {
                daemon.child.kill().unwrap();
                break r;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    daemon.child.wait().unwrap();

    // The next mount clears the stale mount, keeps what was written and verified, and
    // rebuilds the rest.
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&m, &mnt);
    let s = mount.status();
    let downloaded = s["downloaded_bytes"].as_u64().unwrap();
    eprintln!(
        "killed with {reused_at_kill} bytes rebuilt; after the remount: {changed} changed, \
         downloaded {downloaded}, rebuilt {}",
        s["reused_bytes"]
    );
    assert!(
        downloaded <= changed + changes as u64 * (64 << 10),
        "downloaded {downloaded} for {changed} changed bytes"
    );
    mount.unmount();
    seeder.terminate();
}

#[test]
fn a_cache_disk_that_fills_during_the_rebuild_loses_nothing_and_the_mount_finishes_later() {
    let t = tempfile::tempdir().unwrap();
    let Deployed {
        m,
        m_ih,
        m_torrent,
        cache,
        ..
    } = holding_n(t.path(), 24 << 20);
    // N+1's pieces go to a disk that holds a sixth of it.
    let disk = Tmpfs::new(&cache.join(&m_ih).join("data"), "4m");
    let port = free_port();
    let mut seeder = seed(&m_torrent, &m, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    let mnt = t.path().join("mnt-m");
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let log = cache.join(format!(
        "mount-{}.log",
        swarmfs::mount::control::mount_id(&mnt)
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("rebuilding from local releases stopped: cannot write the cache")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild never hit the full disk; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Room again: the rest comes (rebuilt before, or from the swarm), every byte right.
    disk.resize("64m");
    let o = swarmfs(&["prewarm", "--timeout", "90s", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&m, &mnt);
    // The error clears when the supervisor next sees the engine live (every 500 ms); the
    // engine may finish before that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = mount.status();
        if s["swarm_error"].is_null() || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(s["swarm_error"].is_null(), "{s}");
    assert!(s["reused_bytes"].as_u64().unwrap() > 0, "{s}");
    mount.unmount();
    seeder.terminate();
}

#[test]
fn a_piece_written_in_part_completes_from_a_seeder_that_is_not_swarmfs() {
    // libtorrent declares no `swarmfs_spans`: it is asked for whole chunks, never for the
    // span of one (swarmfs before `swarmfs_spans`, and stock librqbit, drop a peer that
    // asks).
    let t = tempfile::tempdir().unwrap();
    let (n, m, changed, changes) = two_releases(t.path(), 8 << 20);
    let n_torrent = t.path().join("n.torrent");
    publish(&n, &n_torrent, &[]);
    let cache = t.path().join("cache");
    mount_complete(t.path(), &n_torrent, &n, &cache, "mnt-n");
    let plain_torrent = t.path().join("plain.torrent");
    publish(&m, &plain_torrent, &[]);

    let port = free_port();
    let mut lt = Proc::spawn(
        python()
            .arg(lt_peer())
            .arg("seed")
            .arg(&plain_torrent)
            .arg(t.path())
            .arg(port.to_string()),
    );
    // (Its "seeding" goes to stdout, which Proc discards: wait for the port.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the libtorrent seeder never listened: {:?}",
            lt.child.try_wait()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = mount_from(
        &t.path().join("mnt-m"),
        &plain_torrent,
        &m,
        &cache,
        port,
        &["--timeout", "90s"],
    );
    let downloaded = s["downloaded_bytes"].as_u64().unwrap();
    eprintln!(
        "N+1 without --base from libtorrent: changed {changed}, downloaded {downloaded}; {s}"
    );
    assert!(s["reused_partial_pieces"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        downloaded <= changed + changes as u64 * (64 << 10),
        "downloaded {downloaded} for {changed} changed bytes"
    );
}
