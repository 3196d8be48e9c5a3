//! What a large fleet needs, at the size of a test: connections bounded per host and at
//! the origin, a fleet that still completes through an origin that turns most of it
//! away, and a host that takes what its rack has from its rack.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn max_peers_bounds_every_host_and_the_origin_and_a_capped_origin_still_serves_the_fleet() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tracker) = tracked_release(t.path(), 8 << 20, 60);
    // The origin takes one peer at a time, and sends slowly enough that the fleet is
    // still fetching when the others dial it.
    let sport = free_port();
    let mut origin = seed(
        &torrent,
        &dir,
        sport,
        &["--max-peers", "1", "--upload-limit", "2M"],
    );
    // Four hosts that find the origin and each other only through the tracker, each
    // allowed two peers.
    let mounts: Vec<Mount> = (0..4)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", free_port());
            Mount::new(
                torrent.to_str().unwrap(),
                &t.path().join(format!("mnt{i}")),
                &t.path().join(format!("cache{i}")),
                &["--listen", &listen, "--max-peers", "2"],
            )
        })
        .collect();
    let mut prewarms: Vec<_> = mounts
        .iter()
        .map(|m| {
            Command::new(bin())
                .args(["prewarm", "--timeout", "120s", m.mnt.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every host keeps to its bound the whole time (librqbit counts live peers under the
    // same semaphore that admits them: no moment exceeds it).
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut most = 0;
    while prewarms.iter_mut().any(|p| p.try_wait().unwrap().is_none()) {
        assert!(Instant::now() < deadline, "the fleet did not complete");
        for m in &mounts {
            let peers = m.status()["peers"].as_u64().unwrap();
            most = most.max(peers);
            assert!(
                peers <= 2,
                "{} has {peers} peers with --max-peers 2",
                m.mnt.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in prewarms {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "prewarm: {}", stderr(&o));
    }
    assert!(most >= 1, "no host ever had a peer");
    for m in &mounts {
        assert_mount_matches(&dir, &m.mnt);
    }
    // Four hosts dialled an origin that admits one: it turned some away, and says so.
    assert_eq!(origin.terminate().code(), Some(0));
    origin.wait_for("stopping", Duration::from_secs(5));
    let last = origin
        .seen
        .iter()
        .rev()
        .find(|l| l.contains("stopping"))
        .unwrap();
    // Without the colour codes tracing may put around a field's name.
    let mut plain = String::new();
    let mut esc = false;
    for c in last.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    let refused: u64 = plain
        .split("over_max_peers=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no over_max_peers in {plain:?}"));
    assert!(refused > 0, "the origin refused nobody: {plain}");
}

#[test]
fn a_host_takes_from_its_subnet_what_a_peer_there_has() {
    // Two seeds of one release: one in the mount's /24 (127.1.1.0/24, its rack), one
    // outside it. Both have every piece and neither is busier; by default (`--local-net
    // auto`) the mount takes the release from its neighbour, and says so in `status`.
    // Without the preference the two split the bytes about evenly (measured: 8 MiB,
    // 88.7% from the neighbour with it).
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rel");
    sample(&dir, 24 << 20, 40);
    let torrent = t.path().join("rel.torrent");
    publish(&dir, &torrent, &[]);
    let near = format!("127.1.1.1:{}", free_port());
    let far = format!("127.1.2.1:{}", free_port());
    let _near_seed = seed_at(&torrent, &dir, &near, &[]);
    let _far_seed = seed_at(&torrent, &dir, &far, &[]);
    let listen = format!("127.1.1.2:{}", free_port());
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &t.path().join("mnt"),
        &t.path().join("cache"),
        &["--listen", &listen, "--peer", &far, "--peer", &near],
    );
    let o = swarmfs(&["prewarm", "--timeout", "120s", m.mnt.to_str().unwrap()]);
    assert!(o.status.success(), "prewarm: {}", stderr(&o));
    assert_mount_matches(&dir, &m.mnt);
    let s = m.status();
    let (all, from_near) = (
        s["downloaded_bytes"].as_u64().unwrap(),
        s["downloaded_near_bytes"].as_u64().unwrap(),
    );
    assert!(all >= 24 << 20, "downloaded only {all} bytes");
    // The far seed may answer first and gets a window of requests (up to 1 MiB) before
    // the neighbour has unchoked the mount.
    assert!(
        from_near * 10 >= all * 8,
        "{from_near} of {all} bytes came from the neighbour 127.1.1.1"
    );
}
