//! Signed releases and no rollback (`keygen`, `publish --sign`, `mount --trust`): every
//! refusal is named and mounts nothing; the accepted sequence survives kill -9.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

fn mounted(mnt: &Path) -> bool {
    swarmfs::mount::table::mount_at(mnt)
        .ok()
        .flatten()
        .is_some()
}

/// Mounting `torrent` with `args` fails, says `needle`, and mounts nothing.
fn refused(torrent: &Path, mnt: &Path, cache: &Path, args: &[&str], needle: &str) {
    let o = try_mount(torrent.to_str().unwrap(), mnt, cache, args);
    assert!(!o.status.success(), "{} mounted", torrent.display());
    let err = stderr(&o);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        err.contains("refusing to mount") || err.contains("--trust"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "said once: {err:?}");
    assert!(
        !mounted(mnt),
        "{} is mounted after a refusal",
        mnt.display()
    );
}

fn keygen(path: &Path) -> String {
    let o = swarmfs(&["keygen", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn signed_releases_mount_only_from_trusted_keys_and_never_roll_back() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    let key_hex = keygen(&p("team"));
    keygen(&p("other"));
    assert!(!swarmfs(&["keygen", p("team").to_str().unwrap()])
        .status
        .success());
    let pubkey = p("team.pub");
    let trust = ["--trust", pubkey.to_str().unwrap()];

    // Release 1 (sequence 5), release 2 published against it (sequence 6, from the base).
    let v1 = p("v1");
    sample(&v1, 256 << 10, 20);
    let ih1 = publish(
        &v1,
        &p("v1.torrent"),
        &[
            "--name",
            "app",
            "--sign",
            p("team").to_str().unwrap(),
            "--seq",
            "5",
        ],
    );
    let v2 = p("v2");
    sample(&v2, 256 << 10, 20);
    std::fs::write(v2.join("NEW"), b"release 2").unwrap();
    let o = swarmfs(&[
        "publish",
        v2.to_str().unwrap(),
        "--out",
        p("v2.torrent").to_str().unwrap(),
        "--name",
        "app",
        "--sign",
        p("team").to_str().unwrap(),
        "--base",
        p("v1.torrent").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["seq"], 6, "one more than the base's: {j}");
    assert_eq!(j["signed_by"], key_hex.as_str());
    let ih2 = j["infohash"].as_str().unwrap().to_string();
    // Signing keeps the infohash: the same tree unsigned has the same one.
    assert_eq!(
        publish(&v1, &p("v1-unsigned.torrent"), &["--name", "app"]),
        ih1
    );
    let o = swarmfs(&["info", "--json", p("v2.torrent").to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (j["signed_by"].as_str(), j["seq"].as_u64()),
        (Some(key_hex.as_str()), Some(6))
    );

    let cache = p("cache");
    let mnt = p("mnt");
    // Unsigned, another key, a changed sequence number, a changed info dict.
    refused(
        &p("v1-unsigned.torrent"),
        &mnt,
        &cache,
        &trust,
        "is not signed",
    );
    let other = p("other.pub");
    refused(
        &p("v1.torrent"),
        &mnt,
        &cache,
        &["--trust", other.to_str().unwrap()],
        "not a trusted key",
    );
    let bytes = std::fs::read(p("v1.torrent")).unwrap();
    let at = bytes.windows(8).position(|w| w == b"3:seqi5e").unwrap();
    let mut t1 = bytes.clone();
    t1[at + 6] = b'9';
    std::fs::write(p("seq.torrent"), &t1).unwrap();
    refused(
        &p("seq.torrent"),
        &mnt,
        &cache,
        &trust,
        "does not match the release",
    );
    let at = bytes.windows(8).position(|w| w == b"6:pieces").unwrap();
    let mut t2 = bytes.clone();
    let colon = at + 8 + t2[at + 8..].iter().position(|&b| b == b':').unwrap();
    t2[colon + 1] ^= 0xff;
    std::fs::write(p("info.torrent"), &t2).unwrap();
    refused(
        &p("info.torrent"),
        &mnt,
        &cache,
        &trust,
        "does not match the release",
    );
    // An infohash never mounted from its signed torrent cannot be checked.
    let o = try_mount(&ih2, &mnt, &cache, &trust);
    assert!(
        !o.status.success() && stderr(&o).contains("mount the signed .torrent file"),
        "{}",
        stderr(&o)
    );
    assert!(!mounted(&mnt));

    // Release 2 is accepted (the key given as hex); its daemon is killed.
    let m = Mount::new(
        p("v2.torrent").to_str().unwrap(),
        &mnt,
        &cache,
        &["--trust", &key_hex],
    );
    assert!(mnt.join("NEW").exists());
    let pid = m.status()["pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    drop(m);

    // Release 1 is now a rollback: refused, naming both numbers, until asked for.
    let mnt1 = p("mnt1");
    refused(&p("v1.torrent"), &mnt1, &cache, &trust, "sequence 5");
    let o = try_mount(p("v1.torrent").to_str().unwrap(), &mnt1, &cache, &trust);
    let err = stderr(&o);
    assert!(
        err.contains("older than sequence 6")
            && err.contains(&ih2)
            && err.contains("--allow-rollback"),
        "{err}"
    );
    let m1 = Mount::new(
        p("v1.torrent").to_str().unwrap(),
        &mnt1,
        &cache,
        &["--trust", pubkey.to_str().unwrap(), "--allow-rollback"],
    );
    assert!(!mnt1.join("NEW").exists());
    m1.unmount();
    // The rollback did not lower the record; release 2 by its infohash (cached) mounts.
    refused(
        &p("v1.torrent"),
        &mnt1,
        &cache,
        &trust,
        "older than sequence 6",
    );
    let m2 = Mount::new(&ih2, &mnt, &cache, &trust);
    assert!(mnt.join("NEW").exists());
    m2.unmount();
}

/// The release's files (those of `src`) that arrived, whole or in part, under `got`
/// (aria2's control file `*.aria2` is its own, not the release's).
fn arrived(src: &Path, got: &Path) -> Vec<std::path::PathBuf> {
    regular_files(src)
        .into_iter()
        .filter(|f| {
            std::fs::read(got.join(f))
                .map(|b| b.iter().any(|&x| x != 0))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_peer_outside_allow_peers_gets_no_byte_whichever_way_it_learnt_of_the_host() {
    require("aria2c");
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 2 << 20, 20);
    let allow = ["--allow-peers", "127.0.0.1/32"];
    let mut seeder = seed(&torrent, &dir, free_port(), &allow);

    // aria2 from 127.0.0.2, outside the list: it learns of the seed and the mount from the
    // tracker and dials them; they learn of it from the tracker and must not dial it.
    let dl = t.path().join("outside");
    let mut aria = Proc::spawn(
        Command::new("aria2c")
            .args([
                "--no-conf=true",
                "--interface=127.0.0.2",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--bt-tracker-interval=1",
                "--file-allocation=none",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--stop=120",
                "--listen-port",
                &free_port().to_string(),
                "-d",
            ])
            .arg(&dl)
            .arg(&torrent),
    );

    // A mount inside the list gets everything (from the seed, through the tracker).
    let mnt = t.path().join("mnt");
    let m = Mount::new(
        torrent.to_str().unwrap(),
        &mnt,
        &t.path().join("cache"),
        &allow,
    );
    assert_mount_matches(&dir, &mnt);

    // Both ways refused at the mount: aria2's connections, and dialling aria2.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = m.status();
        let (i, o) = (
            s["peers_refused_incoming"].as_u64().unwrap(),
            s["peers_refused_outgoing"].as_u64().unwrap(),
        );
        if i >= 1 && o >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mount saw no refused connection both ways within 60 s: {i} incoming, {o} outgoing; aria2 says:\n{}",
            aria.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    seeder.wait_for(
        "refused a connection from 127.0.0.2",
        Duration::from_secs(30),
    );
    let _ = aria.child.kill();
    let _ = aria.child.wait();
    let got = arrived(&dir, &dl.join("rel"));
    assert!(
        got.is_empty(),
        "a peer outside --allow-peers received release data: {got:?}\naria2: {}",
        aria.seen.join("\n")
    );
    assert!(
        !arrived(&dir, &mnt).is_empty(),
        "the check sees data where it is"
    );
    let o = swarmfs(&["status", mnt.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("refused by --allow-peers"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    m.unmount();
}
