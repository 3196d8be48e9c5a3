//! Boot profiles with nothing to configure: every mount records its start-up, the next
//! mount of the release or of its successor boots from it, and a release can carry one.
//! Real mounts and seeders on 127.0.0.1.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Reads `len` bytes at `off` of `rel` under `root`.
fn read_at(root: &Path, rel: &str, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(root.join(rel))
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    buf
}

/// "The service starts": these reads, in this order.
const START_UP: [(&str, u64, usize); 3] = [
    ("bin/appserver", 0, 64 << 10),
    ("lib/libcore.so.1", 0, 4096),
    ("app/views/m0/f00000.txt", 0, 100),
];

fn start_up(mnt: &Path, data: &Path) {
    for (rel, off, len) in START_UP {
        assert!(
            read_at(mnt, rel, off, len) == read_at(data, rel, off, len),
            "{rel} differs"
        );
    }
}

/// The reads of a recording, in order (comments skipped).
fn recorded(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let v: Vec<&str> = l.split('\t').collect();
            (v[0].to_string(), v[1].parse().unwrap())
        })
        .collect()
}

fn assert_start_up_recorded(path: &Path) {
    let lines = recorded(path);
    let mut at = 0;
    for (rel, off, _) in START_UP {
        let i = lines[at..]
            .iter()
            .position(|(p, o)| p == rel && *o <= off)
            .unwrap_or_else(|| panic!("{rel} not recorded in order: {lines:?}"));
        at += i + 1;
    }
}

fn kill_9(m: &Mount) {
    let pid = m.status()["pid"].as_i64().unwrap();
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // The daemon is gone once its mount answers ENOTCONN.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&m.mnt).is_ok() {
        assert!(std::time::Instant::now() < deadline, "the daemon lives on");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Release N and N+1 (one small file changed, N+1 published against N).
fn two_releases(t: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, String, String) {
    let n = t.join("n");
    sample(&n, 4 << 20, 40);
    let m = t.join("m");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&n)
        .arg(&m)
        .status()
        .unwrap()
        .success());
    std::fs::write(m.join("app/views/m0/f00001.txt"), b"changed").unwrap();
    let n_torrent = t.join("n.torrent");
    let n_ih = publish(&n, &n_torrent, &[]);
    let m_torrent = t.join("m.torrent");
    let m_ih = publish(&m, &m_torrent, &["--base", n_torrent.to_str().unwrap()]);
    (n, m, n_torrent, m_torrent, n_ih, m_ih)
}

#[test]
fn a_mount_learns_its_start_up_and_the_next_release_boots_from_it() {
    let t = tempfile::tempdir().unwrap();
    let (n, m, n_torrent, m_torrent, n_ih, m_ih) = two_releases(t.path());
    let cache = t.path().join("cache");
    let port = free_port();
    let mut seeder = seed(&n_torrent, &n, port, &[]);
    let peer = format!("127.0.0.1:{port}");

    // Release N's first mount: no profile anywhere, so it records its start-up.
    let mnt = t.path().join("mnt");
    let mount = Mount::new(
        n_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let s = mount.status();
    assert!(s["boot_profile"].is_null(), "{s}");
    start_up(&mnt, &n);
    let s = mount.status();
    assert_eq!(s["recording"], true, "{s}");
    assert!(s["recorded_reads"].as_u64().unwrap() >= 3, "{s}");
    mount.unmount();
    let learnt = cache.join(&n_ih).join("startup.profile");
    assert_start_up_recorded(&learnt);

    // Mounted again, it boots from its own recording and keeps it.
    let mount = Mount::new(
        n_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let s = mount.status();
    assert_eq!(
        s["boot_profile"], "learnt at this release's last start-up here",
        "{s}"
    );
    assert!(s["boot_pieces_total"].as_u64().unwrap() >= 3, "{s}");
    assert!(s["recorded_reads"].is_null(), "{s}");
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    mount.unmount();
    assert_start_up_recorded(&learnt);
    seeder.terminate();

    // N+1, published against N, mounted with no flag: it boots from N's recording, and
    // records its own; killed -9, what it recorded stays and the next mount uses it.
    let mut seeder = seed(&m_torrent, &m, port, &[]);
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    let s = mount.status();
    let source = s["boot_profile"].as_str().unwrap_or_default().to_string();
    assert!(
        source.starts_with("learnt at the start-up of") && source.contains(&n_ih),
        "{s}"
    );
    assert!(s["boot_pieces_total"].as_u64().unwrap() >= 3, "{s}");
    start_up(&mnt, &m);
    kill_9(&mount);
    let learnt_m = cache.join(&m_ih).join("startup.profile");
    assert_start_up_recorded(&learnt_m);
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &cache,
        &["--peer", &peer],
    );
    assert_eq!(
        mount.status()["boot_profile"],
        "learnt at this release's last start-up here"
    );
    let o = swarmfs(&["prewarm", mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&m, &mnt);
    mount.unmount();

    // --no-learn: nothing recorded, no recording used.
    let plain = t.path().join("cache-plain");
    let mount = Mount::new(
        m_torrent.to_str().unwrap(),
        &mnt,
        &plain,
        &["--peer", &peer, "--no-learn"],
    );
    start_up(&mnt, &m);
    let s = mount.status();
    assert!(
        s["boot_profile"].is_null() && s["recorded_reads"].is_null(),
        "{s}"
    );
    mount.unmount();
    assert!(!plain.join(&m_ih).join("startup.profile").exists());
    seeder.terminate();
}

#[test]
fn a_release_carries_its_boot_profile_to_infohash_mounts() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 2 << 20, 20);
    let profile = t.path().join("boot.profile");
    std::fs::write(
        &profile,
        "# the service's start-up\nbin/appserver\t0\t65536\ngone/file\t0\t10\nlib/libcore.so.1\n",
    )
    .unwrap();
    let torrent = t.path().join("rel.torrent");
    let args = ["--boot-profile", profile.to_str().unwrap()];
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        torrent.to_str().unwrap(),
        args[0],
        args[1],
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 lines name files that") && stderr(&o).contains("gone/file"),
        "a line naming no file of the release is dropped with a warning: {}",
        stderr(&o)
    );
    let ih = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    // Deterministic: the same tree and profile give the same infohash; the profile is in it.
    assert_eq!(publish(&dir, &t.path().join("again.torrent"), &args), ih);
    assert_ne!(publish(&dir, &t.path().join("plain.torrent"), &[]), ih);

    // A mount by infohash (the metadata from the peer) on an empty cache boots from it.
    let port = free_port();
    let mut seeder = seed(&torrent, &dir, port, &[]);
    let peer = format!("127.0.0.1:{port}");
    let mnt = t.path().join("mnt");
    let mount = Mount::new(&ih, &mnt, &t.path().join("cache"), &["--peer", &peer]);
    let s = mount.status();
    assert_eq!(s["boot_profile"], "carried in the release", "{s}");
    assert!(s["boot_pieces_total"].as_u64().unwrap() >= 2, "{s}");
    mount.unmount();
    seeder.terminate();

    // A bad profile is refused naming the file and line; one too large names the limit.
    std::fs::write(&profile, "bin/appserver\tten\t4\n").unwrap();
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        t.path().join("bad.torrent").to_str().unwrap(),
        args[0],
        args[1],
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("boot.profile, line 1"),
        "{}",
        stderr(&o)
    );
    let big: String = (0..20_000)
        .map(|i| format!("bin/appserver\t{}\t4096\n", i * 4096))
        .collect();
    std::fs::write(&profile, big).unwrap();
    let o = swarmfs(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        t.path().join("big.torrent").to_str().unwrap(),
        args[0],
        args[1],
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a release carries at most"),
        "{}",
        stderr(&o)
    );
    assert!(!t.path().join("big.torrent").exists());
}

#[test]
fn a_host_with_no_profile_gets_one_from_a_peer_that_has_one() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 4 << 20, 40);
    let torrent = t.path().join("rel.torrent");
    publish(&dir, &torrent, &[]);
    let port = free_port();
    let mut seeder = seed(&torrent, &dir, port, &[]);
    let origin = format!("127.0.0.1:{port}");

    // Host A booted the release once: it has a recording of its start-up.
    let cache_a = t.path().join("cache-a");
    let mnt_a = t.path().join("mnt-a");
    let a = Mount::new(
        torrent.to_str().unwrap(),
        &mnt_a,
        &cache_a,
        &["--peer", &origin],
    );
    start_up(&mnt_a, &dir);
    a.unmount();
    let a_port = free_port();
    let a_addr = format!("127.0.0.1:{a_port}");
    let a = Mount::new(
        torrent.to_str().unwrap(),
        &mnt_a,
        &cache_a,
        &["--peer", &origin, "--listen", &a_addr],
    );
    assert_eq!(
        a.status()["boot_profile"],
        "learnt at this release's last start-up here"
    );

    // Host B has none: it asks its peers (the origin, a plain seeder, rejects) and boots
    // from A's.
    let mnt_b = t.path().join("mnt-b");
    let b = Mount::new(
        torrent.to_str().unwrap(),
        &mnt_b,
        &t.path().join("cache-b"),
        &["--peer", &origin, "--peer", &a_addr],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let s = loop {
        let s = b.status();
        if s["boot_profile"] == "received from the peer 127.0.0.1" {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no profile from host A: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(s["boot_pieces_total"].as_u64().unwrap() >= 3, "{s}");
    let o = swarmfs(&["prewarm", mnt_b.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&dir, &mnt_b);
    b.unmount();
    a.unmount();
    seeder.terminate();
}
