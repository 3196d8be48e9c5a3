//! The cache store of a mount: where the verified pieces of a mounted release live on
//! disk, and the check of what an earlier mount left there.
//!
//! Layout under the cache directory, one folder per release:
//! `<cache>/<infohash>/torrent` (the metadata, so a remount needs no metadata peer),
//! `<cache>/<infohash>/data/<path>` (regular files, sparse until their pieces arrive),
//! `<cache>/<infohash>/lock` (held by the mount using it).
//!
//! It owns the folder's layout, its lock and the reads of cached bytes; the swarm's
//! storage writes into the same `data/` files. Which pieces may be served is the
//! [`PieceMap`]'s to say (in `fs`): `Store::open` sets a bit only for a piece whose bytes
//! pass their SHA-1 check, so a half-written piece left by `kill -9` is fetched again.
//! It may not touch anything outside the cache directory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::fs::PieceMap;
use crate::release::{self, EntryKind, Release};

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: this path of the release is {len} bytes long under {under}, more than the {max} a path can hold on this host; mount it on a shorter mountpoint or --cache-dir if that saves enough, or publish the release with shorter paths")]
    PathTooLong {
        path: String,
        under: PathBuf,
        len: usize,
        max: usize,
    },
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
    /// Cache files opened for writing pieces rebuilt from local data.
    writers: Vec<OnceLock<File>>,
    _lock: File,
}

/// Longest path this host can open, in bytes, without its final NUL (Linux PATH_MAX).
pub const PATH_MAX: usize = libc::PATH_MAX as usize - 1;

impl Store {
    /// Refuses a release whose paths the host cannot hold: every file's path under the
    /// mountpoint and under the cache directory must fit in [`PATH_MAX`] (components are
    /// already at most 255 bytes). A mount of such a release would fail its reads later.
    pub fn check_paths(
        release: &Release,
        cache_dir: &Path,
        mountpoint: &Path,
    ) -> Result<(), StoreError> {
        let data = Self::release_dir(cache_dir, &release.info_hash.to_string()).join("data");
        for under in [mountpoint, data.as_path()] {
            let base = under.as_os_str().len() + 1;
            for e in release.visible_entries() {
                let len = base + e.path.iter().map(|c| c.len() + 1).sum::<usize>() - 1;
                if len > PATH_MAX {
                    return Err(StoreError::PathTooLong {
                        path: e.display_path(),
                        under: under.to_path_buf(),
                        len,
                        max: PATH_MAX,
                    });
                }
            }
        }
        Ok(())
    }

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
        // Another mount holds it, or `swarmfs cache` looks at it for a moment: wait a
        // little before calling it busy.
        let mut tries = 0;
        while !super::cache::try_lock(&lock) {
            tries += 1;
            if tries == 25 {
                return Err(StoreError::Busy { path: root });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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
            writers: release.entries.iter().map(|_| OnceLock::new()).collect(),
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

    /// Writes the bytes of piece `piece` (checked against its SHA-1 by the caller) into
    /// the cache files it covers, created as the swarm's storage creates them (sparse, at
    /// their full length). Padding is not stored.
    pub fn write_piece(&self, piece: u64, buf: &[u8]) -> io::Result<()> {
        self.write_at(piece * self.release.piece_length, buf)
    }

    /// Writes `ranges` (within piece `piece`) of `buf` (the piece's bytes) into the cache
    /// files, as [`Store::write_piece`] does: the known part of a piece whose rest comes
    /// from the swarm.
    pub fn write_ranges(
        &self,
        piece: u64,
        buf: &[u8],
        ranges: &[std::ops::Range<u32>],
    ) -> io::Result<()> {
        let start = piece * self.release.piece_length;
        for r in ranges {
            self.write_at(
                start + r.start as u64,
                &buf[r.start as usize..r.end as usize],
            )?;
        }
        Ok(())
    }

    /// Writes `buf` at `start` in the release's byte stream (padding is not stored).
    fn write_at(&self, start: u64, buf: &[u8]) -> io::Result<()> {
        let end = start + buf.len() as u64;
        let first = self
            .release
            .entries
            .partition_point(|e| e.offset + e.length <= start);
        for (i, e) in self.release.entries.iter().enumerate().skip(first) {
            if e.offset >= end {
                break;
            }
            if !matches!(e.kind, EntryKind::File { .. }) || e.length == 0 {
                continue;
            }
            let from = start.max(e.offset);
            let to = end.min(e.offset + e.length);
            let f = match self.writers[i].get() {
                Some(f) => f,
                None => {
                    let f = crate::swarm::open_cache_file(&self.data_path(i), e.length)
                        .map_err(io::Error::other)?;
                    self.writers[i].get_or_init(|| f)
                }
            };
            f.write_all_at(
                &buf[(from - start) as usize..(to - start) as usize],
                from - e.offset,
            )?;
        }
        Ok(())
    }
}
