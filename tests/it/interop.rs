//! Interoperability with real third-party BitTorrent software from Debian: Transmission's
//! `transmission-show`, python3-libtorrent, aria2c and opentracker.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn lt_peer() -> String {
    format!("{}/tests/it/lt_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// Debian's python3 (python3-libtorrent is installed for it, not for other pythons).
fn python() -> Command {
    let py = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    Command::new(py)
}

fn release_with_torrent(
    t: &Path,
    extra: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = t.join("rel");
    sample(&dir, 6 << 20, 80);
    let torrent = t.join("rel.torrent");
    let ih = publish(&dir, &torrent, extra);
    (dir, torrent, ih)
}

#[test]
fn transmission_and_libtorrent_read_the_same_torrent() {
    require("transmission-show");
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, ih) = release_with_torrent(t.path(), &[]);
    let ours: Vec<String> =
        swarmfs::release::Release::from_torrent(&std::fs::read(&torrent).unwrap())
            .unwrap()
            .visible_entries()
            .map(|e| e.display_path())
            .collect();

    let o = Command::new("transmission-show")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("Hash: {ih}")), "{text}");
    // Transmission 3.00 knows no BEP 47: it lists padding files as files. Hide them.
    let mut shown: Vec<String> = text
        .lines()
        .skip_while(|l| l.trim() != "FILES")
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            let path = &l[..l.rfind(" (").unwrap()];
            path.strip_prefix("rel/").unwrap().to_string()
        })
        .filter(|p| !p.starts_with(".pad/"))
        .collect();
    let mut expected = ours.clone();
    shown.sort();
    expected.sort();
    assert_eq!(shown, expected);

    let o = python()
        .arg(lt_peer())
        .args(["info", torrent.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["infohash"], ih);
    let files = v["files"].as_array().unwrap();
    let visible: Vec<String> = files
        .iter()
        .filter(|f| !f["pad"].as_bool().unwrap())
        .map(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .strip_prefix("rel/")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        visible, ours,
        "libtorrent sees the same files in the same order, padding hidden"
    );
    assert!(
        files.iter().any(|f| f["pad"].as_bool().unwrap()),
        "padding present"
    );
    let find = |p: &str| {
        files
            .iter()
            .find(|f| f["path"] == format!("rel/{p}"))
            .unwrap()
    };
    assert_eq!(find("bin/appserver")["exec"], true);
    assert_eq!(find("config/app.yaml")["exec"], false);
    let link = find("config/current.yaml")["symlink"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.ends_with("config/app.yaml"),
        "symlink target as libtorrent sees it: {link}"
    );
    drop(dir);
}

#[test]
fn aria2_downloads_from_swarmfs_seed_via_opentracker() {
    require("aria2c");
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _ih, _tr) = tracked_release(t.path(), 6 << 20, 80);
    let before = snapshot(&dir);

    let port = free_port();
    let mut seeder = seed(&torrent, &dir, port, &[]);
    let dl = t.path().join("dl");
    let o = Command::new("aria2c")
        .args([
            "--no-conf=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--seed-time=0",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--stop=120",
            "--listen-port",
            &free_port().to_string(),
            "-d",
        ])
        .arg(&dl)
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "aria2c failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // aria2 has no BEP 47 symlinks (it writes empty files): compare the regular files.
    assert_same_files(&dir, &dl.join("rel"));
    assert_eq!(
        seeder.terminate().code(),
        Some(0),
        "seed exits cleanly on SIGTERM"
    );
    assert_eq!(
        before,
        snapshot(&dir),
        "seeding changed the published directory"
    );
}

#[test]
fn libtorrent_downloads_from_swarmfs_seed_over_utp_with_symlinks_and_modes() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _) = release_with_torrent(t.path(), &[]);
    let before = snapshot(&dir);
    let port = free_port();
    let _seeder = seed(&torrent, &dir, port, &[]);
    let dl = t.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    // uTP only: Transmission and libtorrent try uTP first; a seeder without it loses them.
    let o = python()
        .arg(lt_peer())
        .args([
            "download",
            torrent.to_str().unwrap(),
            dl.to_str().unwrap(),
            &port.to_string(),
            "utp",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "libtorrent download failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let got = dl.join("rel");
    assert_same_files(&dir, &got);
    // libtorrent understands BEP 47: symlinks and executable bits arrive too.
    assert_eq!(
        std::fs::read_link(got.join("config/current.yaml"))
            .unwrap()
            .to_str(),
        Some("app.yaml")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(got.join("bin/appserver"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o100 != 0, "executable bit lost: {mode:o}");
    assert_eq!(
        before,
        snapshot(&dir),
        "seeding changed the published directory"
    );
}

#[test]
fn seed_refuses_a_directory_that_is_not_the_release() {
    let t = tempfile::tempdir().unwrap();
    let (dir, torrent, _) = release_with_torrent(t.path(), &[]);
    // Same size, one byte different.
    let victim = dir.join("lib/libnet.so.1");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let o = swarmfs(&[
        "seed",
        torrent.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("lib/libnet.so.1: content differs"), "{err}");

    std::fs::remove_file(dir.join("config/app.yaml")).unwrap();
    let o = swarmfs(&[
        "seed",
        torrent.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("config/app.yaml: missing"),
        "{}",
        stderr(&o)
    );

    std::fs::write(t.path().join("junk.torrent"), b"d4:infoi3ee").unwrap();
    let o = swarmfs(&[
        "seed",
        t.path().join("junk.torrent").to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("junk.torrent is not a usable torrent"),
        "{}",
        stderr(&o)
    );
}
