//! librqbit storage for a mount: regular files under the cache's `data/` folder, and a
//! hook that marks each verified piece in the [`PieceMap`] readers wait on.
//!
//! Padding and symlink entries get no file (the FUSE layer serves symlinks from the
//! metadata); only the cache directory is ever written.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use librqbit::storage::{StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ManagedTorrentShared, TorrentMetadata};
use librqbit_core::lengths::ValidPieceIndex;

use crate::fs::PieceMap;
use crate::release::{EntryKind, Release};

#[derive(Clone)]
pub(crate) struct CacheStorageFactory {
    pub release: Arc<Release>,
    pub data_dir: PathBuf,
    pub pieces: Arc<PieceMap>,
    /// True while librqbit runs its initial check (see [`CacheStorage::pread_exact`]).
    pub checking: Arc<AtomicBool>,
    /// The errno of the last failed write (0: none). librqbit stops the torrent on a
    /// write error; the swarm's supervisor reads this to say why and when to resume.
    pub write_errno: Arc<AtomicI32>,
}

impl StorageFactory for CacheStorageFactory {
    type Storage = CacheStorage;

    fn create(
        &self,
        _shared: &ManagedTorrentShared,
        metadata: &TorrentMetadata,
    ) -> anyhow::Result<CacheStorage> {
        if metadata.file_infos.len() != self.release.entries.len() {
            bail!("librqbit and swarmfs disagree on the torrent's file list");
        }
        // Cache files are created when first written or read, not here: creating the
        // ~5,000 files of a release took most of a mount's start-up CPU, and a fleet
        // starts every mount at once (8 mounts on 2 cores: ~0.6 s to mounted). Empty
        // files, which nothing writes, are created now: a complete file has a cache file
        // (the cache check and passthrough open it).
        let mut files = Vec::with_capacity(self.release.entries.len());
        for e in &self.release.entries {
            if !matches!(e.kind, EntryKind::File { .. }) {
                files.push(None);
                continue;
            }
            let mut path = self.data_dir.clone();
            path.extend(&e.path);
            let file = OnceLock::new();
            if e.length == 0 {
                let _ = file.set(open_sized(&path, 0)?);
            }
            files.push(Some(LazyFile {
                path,
                len: e.length,
                file,
            }));
        }
        // Bytes of file data in each piece (padding is never written by librqbit).
        let pl = self.release.piece_length;
        let mut data_len = vec![0u32; self.release.piece_count() as usize];
        for e in &self.release.entries {
            if matches!(e.kind, EntryKind::File { .. }) && e.length > 0 {
                let (start, end) = (e.offset, e.offset + e.length);
                for p in start / pl..end.div_ceil(pl) {
                    let (a, b) = (start.max(p * pl), end.min((p + 1) * pl));
                    data_len[p as usize] += (b - a) as u32;
                }
            }
        }
        Ok(CacheStorage {
            files: Arc::new(files),
            pieces: self.pieces.clone(),
            checking: self.checking.clone(),
            write_errno: self.write_errno.clone(),
            offsets: Arc::new(self.release.entries.iter().map(|e| e.offset).collect()),
            lengths: Arc::new(self.release.entries.iter().map(|e| e.length).collect()),
            piece_length: self.release.piece_length,
            written: Arc::new(Written {
                bytes: data_len.iter().map(|_| AtomicU32::new(0)).collect(),
                pending: data_len.iter().map(|_| AtomicBool::new(false)).collect(),
                data_len,
            }),
        })
    }

    fn clone_box(&self) -> librqbit::storage::BoxStorageFactory {
        self.clone().boxed()
    }
}

/// Opens (creating) a cache file and gives it its final length, sparse.
pub fn open_sized(path: &Path, len: u64) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening cache file {}", path.display()))?;
    if f.metadata()?.len() != len {
        f.set_len(len)
            .with_context(|| format!("sizing cache file {}", path.display()))?;
    }
    Ok(f)
}

/// A cache file, opened (created and sized, sparse) on first use.
struct LazyFile {
    path: PathBuf,
    len: u64,
    file: OnceLock<File>,
}

impl LazyFile {
    fn get(&self) -> anyhow::Result<&File> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = open_sized(&self.path, self.len)?;
        // Two first uses at once both open it; one handle is kept.
        Ok(self.file.get_or_init(|| f))
    }
}

pub(crate) struct CacheStorage {
    files: Arc<Vec<Option<LazyFile>>>,
    pieces: Arc<PieceMap>,
    checking: Arc<AtomicBool>,
    write_errno: Arc<AtomicI32>,
    offsets: Arc<Vec<u64>>,
    lengths: Arc<Vec<u64>>,
    piece_length: u64,
    written: Arc<Written>,
}

/// Per piece: bytes written since the piece was last complete, and whether a complete
/// write awaits its verdict. librqbit reports verified pieces but not failed ones: a
/// piece written whole a second time without a completion in between failed its SHA-1.
struct Written {
    data_len: Vec<u32>,
    bytes: Vec<AtomicU32>,
    pending: Vec<AtomicBool>,
}

impl Written {
    fn on_write(&self, pieces: &PieceMap, piece: usize, len: u32) {
        let Some(b) = self.bytes.get(piece) else {
            return;
        };
        let now = b.fetch_add(len, Ordering::AcqRel) + len;
        if now >= self.data_len[piece] {
            b.store(0, Ordering::Release);
            if self.pending[piece].swap(true, Ordering::AcqRel) {
                pieces.note_hash_failure();
            }
        }
    }

    /// Whether any byte of `piece` was written since it was last complete.
    fn touched(&self, piece: usize) -> bool {
        self.bytes
            .get(piece)
            .is_some_and(|b| b.load(Ordering::Acquire) > 0)
            || self
                .pending
                .get(piece)
                .is_some_and(|p| p.load(Ordering::Acquire))
    }

    fn on_verified(&self, piece: usize) {
        if let Some(p) = self.pending.get(piece) {
            p.store(false, Ordering::Release);
        }
    }
}

impl CacheStorage {
    fn file(&self, id: usize) -> anyhow::Result<&File> {
        self.files
            .get(id)
            .and_then(Option::as_ref)
            .with_context(|| format!("file index {id} holds no data"))?
            .get()
    }
}

impl TorrentStorage for CacheStorage {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        // librqbit's initial check hashes every byte of the (sparse) cache: 1 GiB of holes
        // cost ~0.8 s before the first read could start. `Store::open` has already
        // verified what the cache holds, so during the check a read of an absent piece
        // fails at once when nothing later in the file is present (librqbit then skips
        // the rest of the file, losing nothing), and reads as zeros otherwise (the piece
        // fails its hash, and the check goes on to the present pieces after it).
        if self.checking.load(Ordering::Acquire) {
            let start = self.offsets[file_id] + offset;
            let pieces =
                start / self.piece_length..(start + buf.len() as u64).div_ceil(self.piece_length);
            // A piece written since this mount started is being verified by a live swarm (the
            // check flag is cleared a moment after librqbit goes live): read its bytes.
            if let Some(missing) = self
                .pieces
                .first_missing(pieces)
                .filter(|&p| !self.written.touched(p as usize))
            {
                let file_end =
                    (self.offsets[file_id] + self.lengths[file_id]).div_ceil(self.piece_length);
                if !self.pieces.any_present(missing..file_end) {
                    bail!("not in the cache yet");
                }
                buf.fill(0);
                return Ok(());
            }
        }
        self.file(file_id)?
            .read_exact_at(buf, offset)
            .with_context(|| format!("reading cache file {file_id} at {offset}"))
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file(file_id)?.write_all_at(buf, offset) {
            self.write_errno
                .store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::Release);
            return Err(e).with_context(|| format!("writing cache file {file_id} at {offset}"));
        }
        // A chunk never spans pieces.
        let piece = (self.offsets[file_id] + offset) / self.piece_length;
        self.written
            .on_write(&self.pieces, piece as usize, buf.len() as u32);
        Ok(())
    }

    fn remove_file(&self, _file_id: usize, _filename: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, file_id: usize, length: u64) -> anyhow::Result<()> {
        // A file is given its length when it is first opened (`open_sized`).
        match self.files.get(file_id).and_then(Option::as_ref) {
            Some(f) => match f.file.get() {
                Some(f) if f.metadata()?.len() != length => Ok(f.set_len(length)?),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(CacheStorage {
            files: self.files.clone(),
            pieces: self.pieces.clone(),
            checking: self.checking.clone(),
            write_errno: self.write_errno.clone(),
            offsets: self.offsets.clone(),
            lengths: self.lengths.clone(),
            piece_length: self.piece_length,
            written: self.written.clone(),
        }))
    }

    fn on_piece_completed(&self, piece: ValidPieceIndex) -> anyhow::Result<()> {
        self.written.on_verified(piece.get() as usize);
        self.pieces.set(piece.get() as u64);
        Ok(())
    }
}

/// Bytes an unprivileged writer could still put on the filesystem holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    disk_space(dir).map(|(free, _)| free)
}

/// Bytes an unprivileged writer could still put on the filesystem holding `dir`, and
/// the filesystem's size.
pub fn disk_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte")
    })?;
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((
        s.f_bavail as u64 * s.f_frsize as u64,
        s.f_blocks as u64 * s.f_frsize as u64,
    ))
}
