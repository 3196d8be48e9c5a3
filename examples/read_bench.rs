//! The local read path, measured: run as root with `scripts/bench-read.sh` (it builds
//! the binary and this example, then runs it). Prints one JSON line:
//!
//! - `first_byte_ms_p50`/`_max`: from `swarmfs mount` returning to the first byte of a file
//!   in the middle of the release, fresh cache each time, one seeder on 127.0.0.1;
//! - `seq_ratio_cold`/`_warm`: sequential read of a complete 1 GiB file through the mount
//!   against the same bytes read natively (the cache file), page cache dropped / warm;
//! - `rand4k_ratio`: random 4 KiB preads through the mount against natively (warm);
//! - `open_us_mount`/`_native`: open, read to the end and close each file of at most
//!   64 KiB, five rounds (a service opening its files again and again), per open;
//! - `rss_peak_mib`: the mount daemon's peak RSS after prewarm and all of the above.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/swarmfs")
}

fn run(args: &[&str]) {
    let o = Command::new(bin())
        .args(args)
        .output()
        .expect("run swarmfs");
    assert!(
        o.status.success(),
        "swarmfs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn seq_read(path: &Path) -> f64 {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let t = Instant::now();
    loop {
        let n = f.read_at(&mut buf, off).unwrap();
        if n == 0 {
            break;
        }
        off += n as u64;
    }
    t.elapsed().as_secs_f64()
}

fn rand_read(path: &Path, n: usize) -> f64 {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = [0u8; 4096];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let t = Instant::now();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (len / 4096)) * 4096;
        f.read_exact_at(&mut buf, off).unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Regular files of at most 64 KiB under `dir`, relative to it.
fn small_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir.join(rel)).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            small_files(dir, &r, out);
        } else if t.is_file() && e.metadata().unwrap().len() <= 64 << 10 {
            out.push(r);
        }
    }
}

/// Microseconds per open, read to the end and close of each file under `root`.
fn open_read_close(root: &Path, files: &[PathBuf]) -> f64 {
    use std::io::Read;
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..5 {
        for f in files {
            buf.clear();
            File::open(root.join(f))
                .unwrap()
                .read_to_end(&mut buf)
                .unwrap();
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / (5 * files.len()) as f64
}

fn unmount(mnt: &Path) {
    let _ = Command::new(bin()).arg("unmount").arg(mnt).output();
}

fn main() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = work.path().join("rel");
    swarmfs::sample::write_sample(
        &dir,
        &swarmfs::sample::SampleSpec {
            size: 128 << 20,
            small_files: 400,
            seed: 3,
        },
    )
    .unwrap();
    // A 1 GiB file of incompressible bytes.
    {
        let f = File::create(dir.join("data.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut x: u64 = 1;
        for i in 0..1024u64 {
            for c in buf.chunks_mut(8) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all_at(&buf, i << 20).unwrap();
        }
    }
    let torrent = work.path().join("rel.torrent");
    run(&[
        "publish",
        dir.to_str().unwrap(),
        "--out",
        torrent.to_str().unwrap(),
    ]);
    let sport = free_port();
    let mut seeder: Child = Command::new(bin())
        .args([
            "seed",
            torrent.to_str().unwrap(),
            "--data",
            dir.to_str().unwrap(),
            "--no-lsd",
        ])
        .args(["--listen", &format!("127.0.0.1:{sport}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let peer = format!("127.0.0.1:{sport}");
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    // First byte of a file in the middle of the release, fresh cache each time.
    let mut first = Vec::new();
    for i in 0..9 {
        let cache = work.path().join(format!("cache-fb{i}"));
        let c = cache.to_str().unwrap();
        run(&[
            "mount",
            "--no-lsd",
            "--no-prefetch",
            "--cache-dir",
            c,
            "--peer",
            &peer,
            torrent.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ]);
        let t = Instant::now();
        let f = File::open(mnt.join("lib/libdb.so.1")).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 1 << 20).unwrap();
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(f);
        unmount(&mnt);
        let _ = std::fs::remove_dir_all(&cache);
    }
    first.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // A complete mount: prewarm, then compare reads with the cache file read natively.
    let cache = work.path().join("cache");
    let c = cache.to_str().unwrap();
    run(&[
        "mount",
        "--no-lsd",
        "--cache-dir",
        c,
        "--peer",
        &peer,
        torrent.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    let t = Instant::now();
    run(&["prewarm", mnt.to_str().unwrap()]);
    let prewarm_s = t.elapsed().as_secs_f64();
    let ih = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let native = ih.join("data/data.bin");
    let through = mnt.join("data.bin");
    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::MAX, f64::min);
    let native_cold = best(&|| {
        drop_caches();
        seq_read(&native)
    });
    let mount_cold = best(&|| {
        drop_caches();
        seq_read(&through)
    });
    seq_read(&native);
    let native_warm = best(&|| seq_read(&native));
    let mount_warm = best(&|| seq_read(&through));
    let native_rand = best(&|| rand_read(&native, 50_000));
    let mount_rand = best(&|| rand_read(&through, 50_000));
    let mut files = Vec::new();
    small_files(&dir, Path::new(""), &mut files);
    let native_open = best(&|| open_read_close(&ih.join("data"), &files));
    let mount_open = best(&|| open_read_close(&mnt, &files));
    let status = Command::new(bin())
        .args(["status", "--json"])
        .arg(&mnt)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let pid = status["pid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = proc_status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    unmount(&mnt);
    let _ = seeder.kill();
    let gib = 1024.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "read",
            "release_bytes": status["total_bytes"],
            "first_byte_ms_p50": (first[first.len() / 2] * 10.0).round() / 10.0,
            "first_byte_ms_max": (first[first.len() - 1] * 10.0).round() / 10.0,
            "prewarm_s": (prewarm_s * 100.0).round() / 100.0,
            "seq_native_cold_mib_s": (gib / native_cold).round(),
            "seq_mount_cold_mib_s": (gib / mount_cold).round(),
            "seq_ratio_cold": ((native_cold / mount_cold) * 1000.0).round() / 1000.0,
            "seq_native_warm_mib_s": (gib / native_warm).round(),
            "seq_mount_warm_mib_s": (gib / mount_warm).round(),
            "seq_ratio_warm": ((native_warm / mount_warm) * 1000.0).round() / 1000.0,
            "rand4k_ratio": ((native_rand / mount_rand) * 1000.0).round() / 1000.0,
            "open_us_native": (native_open * 10.0).round() / 10.0,
            "open_us_mount": (mount_open * 10.0).round() / 10.0,
            "small_files": files.len(),
            "passthrough_opens": status["passthrough_opens"],
            "backing_files": status["backing_files"],
            "rss_peak_mib": hwm_kb / 1024,
        })
    );
}
