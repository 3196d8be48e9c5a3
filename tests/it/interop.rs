//! Interoperability with real third-party BitTorrent software from Debian: Transmission's
//! `transmission-show`, python3-libtorrent, aria2c and opentracker.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

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

/// A network namespace joined to this one by a veth pair: `10.213.N.1` here, `10.213.N.2`
/// inside. Removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn new(n: u8) -> Netns {
        let name = format!("swarmfs-it-{n}");
        let host_if = format!("sfsit{n}a");
        let ns_if = format!("sfsit{n}b");
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        // Left over by a killed run: start clean.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("10.213.{n}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &name, "ip"];
            a.extend_from_slice(args);
            ip(&a);
        };
        inside(&["addr", "add", &format!("10.213.{n}.2/24"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        Netns { name, host_if }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The time of a Transmission debug log line (`[2026-12-06 19:48:35.381] ...`), in
/// seconds of the day.
fn tr_time(line: &str) -> Option<f64> {
    // The progress line, rewritten with \r, may stand before it.
    let t = line.get(line.find("[20")? + 12..)?.get(..12)?;
    let mut p = t.split(':');
    let (h, m, s) = (p.next()?, p.next()?, p.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

#[test]
fn transmission_in_its_own_namespace_completes_from_a_swarmfs_seed() {
    require("transmission-cli");
    require("opentracker");
    require("ip");
    let t = tempfile::tempdir().unwrap();
    let n = (std::process::id() % 200) as u8 + 20;
    let ns = Netns::new(n);
    let here = format!("10.213.{n}.1");

    // A 4 MB release announced to opentracker on the host side of the veth.
    let dir = t.path().join("rel");
    sample(&dir, 4 << 20, 40);
    let ih = publish(&dir, &t.path().join("probe.torrent"), &[]);
    let wl = t.path().join("tracker");
    std::fs::create_dir_all(&wl).unwrap();
    std::fs::write(wl.join("whitelist"), format!("{ih}\n")).unwrap();
    let tport = free_port().to_string();
    let _tracker = Proc::spawn(Command::new("opentracker").current_dir(&wl).args([
        "-i",
        &here,
        "-p",
        &tport,
        "-P",
        &tport,
        "-d",
        wl.to_str().unwrap(),
        "-w",
        "whitelist",
    ]));
    let torrent = t.path().join("rel.torrent");
    let url = format!("http://{here}:{tport}/announce");
    assert_eq!(publish(&dir, &torrent, &["--tracker", &url]), ih);
    let sport = free_port();
    let mut cmd = Command::new(bin());
    cmd.env("RUST_LOG", "swarmfs=info")
        .args(["seed", torrent.to_str().unwrap(), "--data"])
        .arg(&dir)
        .args(["--listen", &format!("{here}:{sport}"), "--no-lsd"]);
    let mut seeder = Proc::spawn(&mut cmd);
    seeder.wait_for("seeding ", Duration::from_secs(60));

    // Transmission 3.00 with its defaults (uTP first, encryption preferred), its debug log
    // (TR_DEBUG_FD) kept to show which of its timers each step waited for.
    let (dl, cfg) = (t.path().join("dl"), t.path().join("cfg"));
    std::fs::create_dir_all(&dl).unwrap();
    let log_path = t.path().join("transmission.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = std::time::Instant::now();
    let mut tr = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "env",
            "TR_DEBUG_FD=2",
            "transmission-cli",
            "-g",
        ])
        .arg(&cfg)
        .arg("-w")
        .arg(&dl)
        .arg(&torrent)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let done = "State changed from \"Incomplete\" to \"Complete\"";
    let deadline = started + Duration::from_secs(120);
    let text = loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).replace('\r', "\n");
        if text.contains(done) {
            break text;
        }
        if std::time::Instant::now() > deadline || tr.try_wait().unwrap().is_some() {
            let _ = tr.kill();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "Transmission did not complete within 120 s; its log ends:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = started.elapsed().as_secs_f64();
    let _ = tr.kill();
    let _ = tr.wait();
    // Transmission 3 creates no empty files (nor BEP 47 symlinks): compare the others.
    for f in regular_files(&dir) {
        let want = std::fs::read(dir.join(&f)).unwrap();
        if !want.is_empty() {
            let got = std::fs::read(dl.join("rel").join(&f)).unwrap_or_else(|e| {
                panic!("{} missing in Transmission's download: {e}", f.display())
            });
            assert!(got == want, "{} differs", f.display());
        }
    }

    // The timeline, from Transmission's own log: when it started, connected to the seed,
    // was unchoked, sent Interested, first requested, and completed.
    let first = |needle: &str| text.lines().find(|l| l.contains(needle)).and_then(tr_time);
    let t0 = first("Transmission 3.00").expect("Transmission's start line");
    let peer = |s: &str| {
        text.lines()
            .find(|l| l.contains(&format!("{here}]")) && l.contains(s))
            .and_then(tr_time)
    };
    let at = |x: Option<f64>| x.map_or("never".to_string(), |x| format!("+{:.2} s", x - t0));
    let (connected, unchoked, interested, requested, complete) = (
        peer("handshakeDone: connected"),
        peer("got Unchoke"),
        peer("Sending Interested"),
        peer("requesting "),
        first(done),
    );
    eprintln!(
        "transmission: complete in {wall:.2} s; its log: connected to the seed {}, unchoked {}, \
         Interested sent {} (its rechoke timer), first request {}, complete {}",
        at(connected),
        at(unchoked),
        at(interested),
        at(requested),
        at(complete)
    );
    // swarmfs's part: it unchokes with its bitfield as soon as the handshake is done;
    // what follows waits on Transmission's own timers.
    let (c, u) = (connected.unwrap(), unchoked.unwrap());
    assert!(u - c < 1.0, "unchoked {:.2} s after the handshake", u - c);
    assert!(interested.unwrap() >= u);
}
