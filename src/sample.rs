//! A generated sample release for the demo, the tests and the benchmarks.
//!
//! Shaped like a code release: one large executable (about half the bytes), a few
//! shared libraries, many small source and config files in nested directories, scripts
//! with the executable bit, an empty file and two symlinks. The content is a
//! deterministic pseudo-random stream (incompressible): the same size and seed give a
//! byte-identical tree, hence the same infohash.
//!
//! It imports nothing of the crate and writes only into the directory it is given.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// Total bytes of file content, roughly.
    pub size: u64,
    /// Number of small files.
    pub small_files: usize,
    pub seed: u64,
}

impl Default for SampleSpec {
    fn default() -> Self {
        SampleSpec {
            size: 64 << 20,
            small_files: 400,
            seed: 1,
        }
    }
}

/// The paths a server reads at start-up, in order: the binary, the libraries, configs.
pub const BOOT_PATHS: &[&str] = &[
    "bin/appserver",
    "lib/libcore.so.1",
    "lib/libnet.so.1",
    "config/app.yaml",
    "config/current.yaml",
];

/// Writes the sample release into `dir`, which must not exist yet. Returns the paths
/// of the regular files written, relative to `dir`.
pub fn write_sample(dir: &Path, spec: &SampleSpec) -> io::Result<Vec<PathBuf>> {
    if dir.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists; give a new directory", dir.display()),
        ));
    }
    let mut rng = XorShift(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut written = Vec::new();
    let mut put = |rel: &str, len: u64, mode: u32, rng: &mut XorShift| -> io::Result<()> {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().expect("relative path has a parent"))?;
        let mut f = io::BufWriter::new(fs::File::create(&path)?);
        let mut left = len;
        let mut buf = [0u8; 8192];
        while left > 0 {
            rng.fill(&mut buf);
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.into_inner()?.sync_all()?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        written.push(PathBuf::from(rel));
        Ok(())
    };

    let small_total: u64 = (spec.size / 5).max(spec.small_files as u64 * 512);
    let lib_total = spec.size / 4;
    let bin = spec.size.saturating_sub(small_total + lib_total).max(4096);
    put("bin/appserver", bin, 0o755, &mut rng)?;
    put("bin/start.sh", 700, 0o755, &mut rng)?;
    put("app/manage.py", 1500, 0o755, &mut rng)?;
    for (i, name) in ["core", "net", "db", "ui"].iter().enumerate() {
        let len = lib_total / 10 * (i as u64 + 1);
        put(&format!("lib/lib{name}.so.1"), len.max(1), 0o644, &mut rng)?;
    }
    put("config/app.yaml", 3000, 0o644, &mut rng)?;
    put("config/empty.conf", 0, 0o644, &mut rng)?;
    let dirs = [
        "app/views",
        "app/models",
        "templates",
        "static/css",
        "static/js",
    ];
    let per_file = small_total / spec.small_files.max(1) as u64;
    for i in 0..spec.small_files {
        let d = dirs[i % dirs.len()];
        let sub = i / 50;
        let len = 1 + rng.next() % (2 * per_file.max(1));
        put(&format!("{d}/m{sub}/f{i:05}.txt"), len, 0o644, &mut rng)?;
    }
    std::os::unix::fs::symlink("app.yaml", dir.join("config/current.yaml"))?;
    std::os::unix::fs::symlink("../../templates", dir.join("static/js/templates"))?;
    Ok(written)
}

/// xorshift64*: fast, deterministic, good enough for incompressible filler.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
