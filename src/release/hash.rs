//! Hashing a release's byte stream from a directory, on every core.
//!
//! The torrent's byte stream is the concatenation of its entries (padding reads as
//! zeros). Pieces are hashed in chunks of whole pieces, one rayon task per chunk, so the
//! work spreads over the cores whatever the file sizes; the BEP 47 whole-file SHA-1s are
//! tasks of their own that run beside the piece tasks. Every file is opened with
//! `O_NOFOLLOW`: a symlink swapped in after the scan is refused, never followed.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use super::model::{fill_from_stream, Entry, EntryKind};

/// Bytes hashed per task: big enough to amortise the task, small enough to balance cores.
const CHUNK_BYTES: u64 = 8 * 1024 * 1024;
const READ_BUF: usize = 1024 * 1024;

/// A file could not be read while hashing.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} changed while it was being read (it is shorter than {expected} bytes)")]
    Changed { path: PathBuf, expected: u64 },
}

/// Something that is told how many bytes were hashed, for progress bars.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// The stream described by `entries` (in torrent order), read from files under `root`.
pub(crate) struct Stream<'a> {
    pub root: &'a Path,
    pub entries: &'a [Entry],
    pub piece_length: u64,
    pub total_length: u64,
}

impl Stream<'_> {
    pub fn piece_count(&self) -> u64 {
        self.total_length.div_ceil(self.piece_length)
    }

    pub fn path_of(&self, e: &Entry) -> PathBuf {
        let mut p = self.root.to_path_buf();
        p.extend(&e.path);
        p
    }

    /// The SHA-1 of every piece, in order.
    pub fn piece_hashes(&self, progress: Progress) -> Result<Vec<[u8; 20]>, HashError> {
        let per_chunk = (CHUNK_BYTES / self.piece_length).max(1);
        let chunks = self.piece_count().div_ceil(per_chunk);
        let parts: Vec<Vec<[u8; 20]>> = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let first = c * per_chunk;
                let last = ((c + 1) * per_chunk).min(self.piece_count());
                self.hash_range(first..last, progress)
            })
            .collect::<Result<_, _>>()?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Piece hashes and the whole-file SHA-1 of every regular file (`None` elsewhere),
    /// computed side by side on the rayon pool.
    pub fn piece_and_file_hashes(
        &self,
        progress: Progress,
    ) -> Result<(Vec<[u8; 20]>, Vec<Option<[u8; 20]>>), HashError> {
        let (pieces, files) = rayon::join(
            || self.piece_hashes(progress),
            || {
                // Largest files first so that the longest sequential hash starts earliest.
                let mut order: Vec<usize> = (0..self.entries.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(self.entries[i].length));
                let mut hashed: Vec<(usize, Option<[u8; 20]>)> = order
                    .into_par_iter()
                    .map(|i| {
                        let e = &self.entries[i];
                        match e.kind {
                            EntryKind::File { .. } => {
                                Ok((i, Some(file_sha1(&self.path_of(e), e.length)?)))
                            }
                            _ => Ok((i, None)),
                        }
                    })
                    .collect::<Result<_, HashError>>()?;
                hashed.sort_by_key(|&(i, _)| i);
                Ok(hashed.into_iter().map(|(_, h)| h).collect())
            },
        );
        Ok((pieces?, files?))
    }

    /// For every piece, whether its bytes hash to `expected`; unreadable pieces do not.
    pub fn matching_pieces(&self, expected: &[[u8; 20]], progress: Progress) -> Vec<bool> {
        let per_chunk = (CHUNK_BYTES / self.piece_length).max(1);
        let chunks = self.piece_count().div_ceil(per_chunk);
        (0..chunks)
            .into_par_iter()
            .flat_map_iter(|c| {
                let mut buf = vec![0u8; self.piece_length as usize];
                let mut open = None;
                let first = c * per_chunk;
                let last = ((c + 1) * per_chunk).min(self.piece_count());
                (first..last)
                    .map(|p| {
                        let start = p * self.piece_length;
                        let len = self.piece_length.min(self.total_length - start) as usize;
                        let ok = self.read_at(start, &mut buf[..len], &mut open).is_ok()
                            && <[u8; 20]>::from(Sha1::digest(&buf[..len])) == expected[p as usize];
                        progress(len as u64);
                        ok
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn hash_range(
        &self,
        pieces: std::ops::Range<u64>,
        progress: Progress,
    ) -> Result<Vec<[u8; 20]>, HashError> {
        let mut out = Vec::with_capacity((pieces.end - pieces.start) as usize);
        let mut buf = vec![0u8; self.piece_length as usize];
        let mut open: Option<(usize, File)> = None;
        for p in pieces {
            let start = p * self.piece_length;
            let len = self.piece_length.min(self.total_length - start) as usize;
            self.read_at(start, &mut buf[..len], &mut open)?;
            out.push(Sha1::digest(&buf[..len]).into());
            progress(len as u64);
        }
        Ok(out)
    }

    /// Fills `buf` with the stream's bytes from `start`. `open` keeps the last file open.
    fn read_at(
        &self,
        start: u64,
        buf: &mut [u8],
        open: &mut Option<(usize, File)>,
    ) -> Result<(), HashError> {
        fill_from_stream(self.entries, start, buf, |i, e, in_entry, dst| {
            if open.as_ref().map(|(j, _)| *j) != Some(i) {
                *open = Some((i, open_nofollow(&self.path_of(e))?));
            }
            let f = &open.as_ref().expect("opened above").1;
            read_exact_at(f, dst, in_entry, &self.path_of(e), e.length)
        })
    }
}

/// Opens a file for reading, refusing to follow a symlink in its last component.
pub(crate) fn open_nofollow(path: &Path) -> Result<File, HashError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| HashError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_exact_at(
    f: &File,
    dst: &mut [u8],
    offset: u64,
    path: &Path,
    expected: u64,
) -> Result<(), HashError> {
    f.read_exact_at(dst, offset).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            HashError::Changed {
                path: path.to_path_buf(),
                expected,
            }
        } else {
            HashError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// The SHA-1 of a whole file of `length` bytes.
pub(crate) fn file_sha1(path: &Path, length: u64) -> Result<[u8; 20], HashError> {
    let f = open_nofollow(path)?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; READ_BUF.min(length as usize).max(1)];
    let mut pos = 0;
    while pos < length {
        let n = ((length - pos) as usize).min(buf.len());
        read_exact_at(&f, &mut buf[..n], pos, path, length)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}
