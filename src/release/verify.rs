//! Checking that a directory holds a release, before it is served.

use std::fs;
use std::path::{Path, PathBuf};

use super::hash::{HashError, Progress, Stream};
use super::model::{EntryKind, Release};

/// How a directory differs from the release. The first difference found is named.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}: missing; is this the release's directory?")]
    Missing(PathBuf),
    #[error("{0}: not a regular file, but the release has a file there")]
    NotAFile(PathBuf),
    #[error(
        "{path}: {actual} bytes, but the release has {expected}; the directory is not this release"
    )]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: content differs from the release (piece {piece} fails its SHA-1); the directory is not this release")]
    Mismatch { path: PathBuf, piece: u64 },
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// Checks every regular file's type and size, then every piece's SHA-1. Reads only.
pub fn verify_dir(release: &Release, dir: &Path, progress: Progress) -> Result<(), VerifyError> {
    let stream = Stream {
        root: dir,
        entries: &release.entries,
        piece_length: release.piece_length,
        total_length: release.total_length,
    };
    for e in &release.entries {
        if !matches!(e.kind, EntryKind::File { .. }) {
            continue;
        }
        let path = stream.path_of(e);
        let md = fs::symlink_metadata(&path).map_err(|_| VerifyError::Missing(path.clone()))?;
        if !md.is_file() {
            return Err(VerifyError::NotAFile(path));
        }
        if md.len() != e.length {
            return Err(VerifyError::WrongSize {
                path,
                expected: e.length,
                actual: md.len(),
            });
        }
    }
    let hashes = stream.piece_hashes(progress)?;
    if let Some(piece) = hashes
        .iter()
        .zip(&release.piece_hashes)
        .position(|(a, b)| a != b)
    {
        let start = piece as u64 * release.piece_length;
        let end = start + release.piece_length;
        let culprit = release
            .entries
            .iter()
            .find(|e| {
                matches!(e.kind, EntryKind::File { .. })
                    && e.length > 0
                    && e.offset < end
                    && e.offset + e.length > start
            })
            .expect("every piece holds file data");
        return Err(VerifyError::Mismatch {
            path: stream.path_of(culprit),
            piece: piece as u64,
        });
    }
    Ok(())
}

/// Which pieces of `release` the files under `dir` hold intact: read errors, missing
/// files and holes count as absent. Used to take stock of a cache after a restart.
pub fn present_pieces(release: &Release, dir: &Path, progress: Progress) -> Vec<bool> {
    let stream = Stream {
        root: dir,
        entries: &release.entries,
        piece_length: release.piece_length,
        total_length: release.total_length,
    };
    stream.matching_pieces(&release.piece_hashes, progress)
}
