//! The cache: where verified pieces of a mounted release live, and which ones are there.
//!
//! Layout under the cache directory, one folder per release:
//! `<cache>/<infohash>/torrent` (the metadata, so a remount needs no metadata peer),
//! `<cache>/<infohash>/data/<path>` (regular files, sparse until their pieces arrive),
//! `<cache>/<infohash>/lock` (held by the mount using it).
//!
//! [`PieceMap`] is the truth about what may be served: a bit is set only after librqbit
//! verified the piece's SHA-1 and wrote it (`on_piece_completed`), or after our own
//! SHA-1 check of the cache at start-up. Nothing is served from a piece whose bit is
//! clear, so a half-written piece left by `kill -9` is never seen: it fails the start-up
//! check and is fetched again.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::release::{self, EntryKind, Release};

/// Which pieces are present and verified; waitable.
pub struct PieceMap {
    bits: Vec<AtomicU64>,
    count: AtomicU64,
    total: u64,
    changed: watch::Sender<u64>,
    hash_failures: AtomicU64,
}

impl PieceMap {
    pub fn new(total: u64) -> PieceMap {
        PieceMap {
            bits: (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            total,
            changed: watch::channel(0).0,
            hash_failures: AtomicU64::new(0),
        }
    }

    /// Counts a piece that was downloaded whole but failed its SHA-1 check.
    pub fn note_hash_failure(&self) {
        self.hash_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hash_failures(&self) -> u64 {
        self.hash_failures.load(Ordering::Relaxed)
    }

    pub fn has(&self, piece: u64) -> bool {
        piece < self.total
            && self.bits[(piece / 64) as usize].load(Ordering::Acquire) & (1 << (piece % 64)) != 0
    }

    /// The first piece of `range` that is missing.
    pub fn first_missing(&self, range: Range<u64>) -> Option<u64> {
        range.into_iter().find(|&p| !self.has(p))
    }

    /// Whether any piece of `range` is present.
    pub fn any_present(&self, range: Range<u64>) -> bool {
        range.into_iter().any(|p| self.has(p))
    }

    /// Marks a verified piece; wakes waiters. Returns whether it was new.
    pub fn set(&self, piece: u64) -> bool {
        if piece >= self.total {
            return false;
        }
        let bit = 1 << (piece % 64);
        let old = self.bits[(piece / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        if old & bit == 0 {
            let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
            self.changed.send_replace(n);
            true
        } else {
            false
        }
    }

    pub fn present(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn complete(&self) -> bool {
        self.present() == self.total
    }

    /// Resolves once every piece of `range` is present.
    pub async fn wait_all(&self, range: Range<u64>) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.first_missing(range.clone()).is_none() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves when the count of present pieces changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the cache directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the cache {path} is in use by another swarmfs mount of this release; unmount it first"
    )]
    Busy { path: PathBuf },
}

/// One release's cache folder.
pub struct Store {
    root: PathBuf,
    release: Arc<Release>,
    pieces: Arc<PieceMap>,
    files: Vec<OnceLock<File>>,
    _lock: File,
}

impl Store {
    /// The folder of a release in a cache directory.
    pub fn release_dir(cache_dir: &Path, infohash: &str) -> PathBuf {
        cache_dir.join(infohash)
    }

    /// Metadata kept by an earlier mount, if any.
    pub fn cached_torrent(cache_dir: &Path, infohash: &str) -> Option<Vec<u8>> {
        fs::read(Self::release_dir(cache_dir, infohash).join("torrent")).ok()
    }

    /// Opens (creating) the release's cache folder, takes its lock, keeps the metadata,
    /// and checks which pieces the data already holds.
    pub fn open(cache_dir: &Path, release: Arc<Release>) -> Result<Store, StoreError> {
        let root = Self::release_dir(cache_dir, &release.info_hash.to_string());
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(root.join("data")).map_err(io_err(&root))?;
        let lock_path = root.join("lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        // SAFETY: flock on an fd we own.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(StoreError::Busy { path: root });
        }
        let torrent = root.join("torrent");
        if fs::read(&torrent).ok().as_deref() != Some(&release.torrent_bytes[..]) {
            let tmp = root.join("torrent.tmp");
            fs::write(&tmp, &release.torrent_bytes)
                .and_then(|_| fs::rename(&tmp, &torrent))
                .map_err(io_err(&torrent))?;
        }
        let pieces = Arc::new(PieceMap::new(release.piece_count()));
        let data = root.join("data");
        if data
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            let present = release::present_pieces(&release, &data, &|_| {});
            for (p, ok) in present.into_iter().enumerate() {
                if ok {
                    pieces.set(p as u64);
                }
            }
        }
        Ok(Store {
            files: release.entries.iter().map(|_| OnceLock::new()).collect(),
            root,
            release,
            pieces,
            _lock: lock,
        })
    }

    pub fn pieces(&self) -> &Arc<PieceMap> {
        &self.pieces
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where entry `i`'s bytes are cached.
    pub fn data_path(&self, entry: usize) -> PathBuf {
        let mut p = self.data_dir();
        p.extend(&self.release.entries[entry].path);
        p
    }

    /// Reads cached bytes of entry `entry`. The caller has checked the pieces are present.
    pub fn read(&self, entry: usize, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        debug_assert!(matches!(
            self.release.entries[entry].kind,
            EntryKind::File { .. }
        ));
        let f = match self.files[entry].get() {
            Some(f) => f,
            None => {
                let f = File::open(self.data_path(entry))?;
                self.files[entry].get_or_init(|| f)
            }
        };
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Bytes an unprivileged writer could still put on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}
