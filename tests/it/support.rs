//! Shared helpers: the binary, temporary releases, real third-party processes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
#[allow(unused_imports)]
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use swarmfs::sample::{write_sample, SampleSpec};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_swarmfs")
}

/// Runs `swarmfs ARGS` to completion.
pub fn swarmfs(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "swarmfs=info")
        .output()
        .expect("run swarmfs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small sample release: about `size` bytes, `small` small files.
pub fn sample(dir: &Path, size: u64, small: usize) {
    write_sample(
        dir,
        &SampleSpec {
            size,
            small_files: small,
            seed: 7,
        },
    )
    .expect("write sample");
}

/// Publishes `dir` to `out` (with optional trackers) and returns the infohash.
pub fn publish(dir: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "publish",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = swarmfs(&args);
    assert!(o.status.success(), "publish failed: {}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let ih = stdout.lines().next().unwrap().to_string();
    assert_eq!(ih.len(), 40, "first line is the infohash: {stdout}");
    ih
}

/// A port free on 127.0.0.1 for TCP and UDP.
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Fails loudly when a third-party tool is missing: `.ci/run` installs them all.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; run .ci/run or install it (scripts/install-deps.sh installs them all)"
    );
}

/// A child process killed on drop, with its stderr collected line by line.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle`; panics with the output on timeout.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        self.drain();
                        panic!(
                            "process exited ({st}) before {needle:?}:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.drain();
        panic!(
            "no {needle:?} within {timeout:?}:\n{}",
            self.seen.join("\n")
        );
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "process ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `swarmfs seed TORRENT --data DIR --listen 127.0.0.1:PORT`, ready to serve.
pub fn seed(torrent: &Path, data: &Path, port: u16, extra: &[&str]) -> Proc {
    seed_at(torrent, data, &format!("127.0.0.1:{port}"), extra)
}

/// `swarmfs seed TORRENT --data DIR --listen LISTEN`, ready to serve.
pub fn seed_at(torrent: &Path, data: &Path, listen: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.env("RUST_LOG", "swarmfs=info")
        .args(["seed", torrent.to_str().unwrap(), "--data"])
        .arg(data)
        .args(["--listen", listen, "--no-lsd"])
        .args(extra);
    let mut p = Proc::spawn(&mut cmd);
    p.wait_for("seeding ", Duration::from_secs(60));
    p
}

/// Debian's opentracker on 127.0.0.1, whitelisting the given infohashes (the Debian build
/// is whitelist-only; as root it chroots into its directory).
pub struct Tracker {
    _proc: Proc,
    _dir: tempfile::TempDir,
    pub url: String,
}

pub fn tracker(infohashes: &[&str]) -> Tracker {
    require("opentracker");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("whitelist"), infohashes.join("\n") + "\n").unwrap();
    let port = free_port();
    let mut cmd = Command::new("opentracker");
    cmd.current_dir(dir.path()).args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-P",
        &port.to_string(),
        "-d",
        dir.path().to_str().unwrap(),
        "-w",
        "whitelist",
    ]);
    let proc = Proc::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "opentracker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Tracker {
        _proc: proc,
        _dir: dir,
        url: format!("http://127.0.0.1:{port}/announce"),
    }
}

/// A sample release in `t/rel`, its torrent `t/rel.torrent` announcing to a fresh
/// opentracker that whitelists it. The infohash does not depend on trackers, so a first
/// publish learns it for the whitelist.
pub fn tracked_release(t: &Path, size: u64, small: usize) -> (PathBuf, PathBuf, String, Tracker) {
    let dir = t.join("rel");
    sample(&dir, size, small);
    let ih = publish(&dir, &t.join("probe.torrent"), &[]);
    let tr = tracker(&[&ih]);
    let torrent = t.join("rel.torrent");
    assert_eq!(publish(&dir, &torrent, &["--tracker", &tr.url]), ih);
    (dir, torrent, ih, tr)
}

/// Everything about a tree that must not change: type, mode, mtime, size, content, target.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let common = format!(
                "mode={:o} mtime={}.{} size={}",
                md.permissions().mode(),
                md.mtime(),
                md.mtime_nsec(),
                md.len()
            );
            let desc = if md.file_type().is_symlink() {
                format!("link -> {:?} {common}", std::fs::read_link(&p).unwrap())
            } else if md.is_dir() {
                walk(root, &p, out);
                format!("dir {common}")
            } else {
                format!(
                    "file sha1={} {common}",
                    sha1_hex(&std::fs::read(&p).unwrap())
                )
            };
            out.insert(rel, desc);
        }
    }
    walk(dir, dir, &mut out);
    out
}

pub fn sha1_hex(b: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(b))
}

/// Regular files below `dir` (relative paths), skipping `.pad` directories.
pub fn regular_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, d)| d.starts_with("file") && !p.starts_with(".pad"))
        .map(|(p, _)| p)
        .collect()
}

/// Asserts every regular file of `src` exists in `dst` with the same bytes.
pub fn assert_same_files(src: &Path, dst: &Path) {
    let files = regular_files(src);
    assert!(!files.is_empty());
    for f in files {
        let a = std::fs::read(src.join(&f)).unwrap();
        let b = std::fs::read(dst.join(&f))
            .unwrap_or_else(|e| panic!("{} missing in download: {e}", f.display()));
        assert!(a == b, "{} differs after download", f.display());
    }
}

/// A swarmfs mount (daemon mode), unmounted on drop.
pub struct Mount {
    pub mnt: PathBuf,
    pub cache: PathBuf,
}

impl Mount {
    /// `swarmfs mount --cache-dir CACHE ARGS SOURCE MNT`; panics with the error if it fails.
    pub fn new(source: &str, mnt: &Path, cache: &Path, args: &[&str]) -> Mount {
        let o = try_mount(source, mnt, cache, args);
        assert!(o.status.success(), "mount failed: {}", stderr(&o));
        Mount {
            mnt: mnt.to_path_buf(),
            cache: cache.to_path_buf(),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let o = swarmfs(&["status", "--json", self.mnt.to_str().unwrap()]);
        assert!(o.status.success(), "status failed: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn unmount(&self) {
        let o = swarmfs(&["unmount", self.mnt.to_str().unwrap()]);
        assert!(o.status.success(), "unmount failed: {}", stderr(&o));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if swarmfs::mount::table::mount_at(&self.mnt)
            .ok()
            .flatten()
            .is_some()
        {
            let _ = swarmfs(&["unmount", self.mnt.to_str().unwrap()]);
        }
        if swarmfs::mount::table::mount_at(&self.mnt)
            .ok()
            .flatten()
            .is_some()
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

pub fn try_mount(source: &str, mnt: &Path, cache: &Path, args: &[&str]) -> Output {
    // A stale mount (ENOTCONN) already exists: leave it to `swarmfs mount` to clear.
    if let Err(e) = std::fs::create_dir_all(mnt) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::AlreadyExists,
            "{}: {e}",
            mnt.display()
        );
    }
    let mut a = vec!["mount", "--cache-dir", cache.to_str().unwrap(), "--no-lsd"];
    a.extend_from_slice(args);
    a.push(source);
    a.push(mnt.to_str().unwrap());
    swarmfs(&a)
}

/// Every regular file, symlink and mode of `src` is in `mnt` with the same bytes.
pub fn assert_mount_matches(src: &Path, mnt: &Path) {
    for (rel, desc) in snapshot(src) {
        let got = mnt.join(&rel);
        let md = std::fs::symlink_metadata(&got)
            .unwrap_or_else(|e| panic!("{} missing in the mount: {e}", rel.display()));
        if desc.starts_with("link") {
            assert!(
                md.file_type().is_symlink(),
                "{} is not a symlink",
                rel.display()
            );
            assert_eq!(
                std::fs::read_link(&got).unwrap(),
                std::fs::read_link(src.join(&rel)).unwrap()
            );
        } else if desc.starts_with("dir") {
            assert!(md.is_dir());
            assert_eq!(md.permissions().mode() & 0o7777, 0o555);
        } else {
            let src_exec = std::fs::metadata(src.join(&rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o111
                != 0;
            let want = if src_exec { 0o555 } else { 0o444 };
            assert_eq!(
                md.permissions().mode() & 0o7777,
                want,
                "mode of {}",
                rel.display()
            );
            let a = std::fs::read(src.join(&rel)).unwrap();
            let b = std::fs::read(&got).unwrap();
            assert!(a == b, "{} differs in the mount", rel.display());
        }
    }
}

/// A tmpfs of a given size mounted on a directory (a small disk), detached on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    pub fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot resize the tmpfs on {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The python3-libtorrent peer (tests/it/lt_peer.py).
pub fn lt_peer() -> String {
    format!("{}/tests/it/lt_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// Debian's python3 (python3-libtorrent is installed for it, not for other pythons).
pub fn python() -> Command {
    let py = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    Command::new(py)
}
