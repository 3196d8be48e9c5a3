//! Making a torrent from a release directory, deterministically.
//!
//! The same tree gives the same bytes on every run and machine: entries in component-wise
//! byte order (a depth-first walk with each directory's names sorted), no timestamps
//! unless asked, fixed fields. Each file of a piece or more starts on a piece boundary
//! and owns its pieces (BEP 47 padding `.pad/N`), so an unchanged large file hashes to
//! the same pieces in the next release and a read of it never waits for a neighbour. Executables get attr `x`,
//! symlinks attr `l` with a `symlink path` relative to the release root, and every file
//! its whole-file `sha1`. Files smaller than a piece are packed (see [`layout`]). Nothing is written here: the caller decides where the bytes go.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_bytes::ByteBuf;

use super::hash::{self, HashError, Progress};
use super::metainfo::{FileEntry, Info, MetaInfo};
use super::model::{check_component, Entry, EntryKind, Release, TorrentError};

/// Smallest piece length chosen by default. A fleet's boot waits for every piece its
/// start-up reads touch, which only the origin has at first: 8 hosts, 256 MB, the fleet
/// benchmark's start-up reads (18.7 MB) touch 79 MB in 256 KiB pieces, 42 MB in 64 KiB
/// and 32 MB in 32 KiB; boot median 10.4 s, 5.2 s and 4.2 s, slowest host complete
/// within 2 s of each other. Smaller pieces cost CPU (10.8, 13.7 and 17.1 s per GB
/// received) and a larger piece table; 16 KiB, the smallest, was not measured (the
/// benchmark's mktorrent makes no pieces under 32 KiB). ARCHITECTURE.md, "Piece size".
pub const MIN_DEFAULT_PIECE_LENGTH: u64 = 32 * 1024;

/// The default keeps a release to at most this many pieces (a 320 KiB piece table):
/// 32 KiB up to 512 MiB, then doubling.
pub const MAX_DEFAULT_PIECES: u64 = 16 * 1024;

/// The piece length `publish` chooses for `bytes` of content when none is given.
pub fn default_piece_length(bytes: u64) -> u64 {
    let mut pl = MIN_DEFAULT_PIECE_LENGTH;
    while bytes.div_ceil(pl) > MAX_DEFAULT_PIECES && pl < 16 * 1024 * 1024 {
        pl *= 2;
    }
    pl
}

/// What goes into the torrent besides the tree.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Release name (the torrent's `name`); defaults to the directory's name.
    pub name: Option<String>,
    /// Piece length in bytes: a power of two from 16 KiB to 16 MiB; 0 chooses one from
    /// the content's size ([`default_piece_length`]).
    pub piece_length: u64,
    /// Tracker URLs: the first is `announce`, all are in `announce-list`, one tier each.
    pub trackers: Vec<String>,
    pub comment: Option<String>,
    /// `creation date` (seconds since the epoch); `None` keeps the torrent reproducible.
    pub creation_date: Option<i64>,
    /// Sets the private bit (BEP 27): peers then come from trackers only.
    pub private: bool,
}

/// A torrent made from a directory.
#[derive(Debug)]
pub struct Published {
    pub release: Release,
    /// Directories that hold nothing: v1 torrents cannot carry them.
    pub empty_dirs: Vec<String>,
}

/// Why a directory could not be published. Nothing has been written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}: no such directory; give the path of the release directory")]
    NotFound(PathBuf),
    #[error("{0}: not a directory; `swarmfs publish` takes the release directory")]
    NotADirectory(PathBuf),
    #[error("{0}: the release is empty (no file with data); put the release's files in it")]
    Empty(PathBuf),
    #[error("{path}: symlink target {target:?} is absolute; make it relative to stay inside the release")]
    AbsoluteSymlink { path: PathBuf, target: String },
    #[error("{path}: symlink target {target:?} leaves the release; only links inside the release can be published")]
    EscapingSymlink { path: PathBuf, target: String },
    #[error("{path}: {kind} cannot be published; remove it from the release")]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("{}: name is not valid UTF-8; rename it", .0.display())]
    NonUtf8(PathBuf),
    #[error("{path}: name cannot be published: {why}")]
    BadName { path: PathBuf, why: &'static str },
    #[error("{path}: cannot read: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("piece size {0} is not a power of two from 16 KiB to 16 MiB")]
    BadPieceSize(u64),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("internal error: the torrent made does not validate: {0}")]
    Invalid(#[from] TorrentError),
}

/// One thing found by the scan, before layout.
#[derive(Debug)]
enum Found {
    File { len: u64, executable: bool },
    Symlink { target: Vec<String> },
}

/// Scans `dir`, hashes it and returns the torrent. Reads only; writes nothing.
pub fn publish(
    dir: &Path,
    opts: &PublishOptions,
    progress: Progress,
) -> Result<Published, PublishError> {
    let pl = opts.piece_length;
    if pl != 0 && (!pl.is_power_of_two() || !(16 * 1024..=16 * 1024 * 1024).contains(&pl)) {
        return Err(PublishError::BadPieceSize(pl));
    }
    let meta = fs::metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PublishError::NotFound(dir.to_path_buf()),
        _ => PublishError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(PublishError::NotADirectory(dir.to_path_buf()));
    }
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => default_name(dir)?,
    };
    check_component(&name).map_err(|why| PublishError::BadName {
        path: PathBuf::from(&name),
        why,
    })?;

    let mut found = Vec::new();
    let mut empty_dirs = Vec::new();
    scan(dir, &mut Vec::new(), &mut found, &mut empty_dirs)?;
    if !found
        .iter()
        .any(|(_, f)| matches!(f, Found::File { len, .. } if *len > 0))
    {
        return Err(PublishError::Empty(dir.to_path_buf()));
    }

    let pl = match pl {
        0 => default_piece_length(
            found
                .iter()
                .map(|(_, f)| match f {
                    Found::File { len, .. } => *len,
                    Found::Symlink { .. } => 0,
                })
                .sum(),
        ),
        pl => pl,
    };
    let entries = layout(found, pl);
    let total_length = entries.last().map_or(0, |e| e.offset + e.length);
    let stream = hash::Stream {
        root: dir,
        entries: &entries,
        piece_length: pl,
        total_length,
    };
    let (pieces, file_sha1s) = stream.piece_and_file_hashes(progress)?;

    let files = entries
        .iter()
        .zip(file_sha1s)
        .map(|(e, sha1)| {
            let (attr, symlink_path) = match &e.kind {
                EntryKind::Padding => (Some("p".to_string()), None),
                EntryKind::Symlink { target } => (Some("l".to_string()), Some(target.clone())),
                EntryKind::File { executable: true } => (Some("x".to_string()), None),
                EntryKind::File { executable: false } => (None, None),
            };
            FileEntry {
                attr,
                length: e.length as i64,
                path: e.path.clone(),
                sha1: sha1.map(|h| ByteBuf::from(h.to_vec())),
                symlink_path,
            }
        })
        .collect();
    let meta = MetaInfo {
        announce: opts.trackers.first().cloned(),
        announce_list: (!opts.trackers.is_empty())
            .then(|| opts.trackers.iter().map(|t| vec![t.clone()]).collect()),
        comment: opts.comment.clone(),
        created_by: Some(concat!("swarmfs ", env!("CARGO_PKG_VERSION")).to_string()),
        creation_date: opts.creation_date,
        info: Info {
            files: Some(files),
            length: None,
            name,
            piece_length: pl as i64,
            pieces: ByteBuf::from(pieces.concat()),
            private: opts.private.then_some(1),
        },
    };
    let bytes = serde_bencode::to_bytes(&meta)
        .map_err(|e| TorrentError::Decode(format!("encoding failed: {e}")))?;
    let release = Release::from_torrent(&bytes)?;
    Ok(Published {
        release,
        empty_dirs,
    })
}

fn default_name(dir: &Path) -> Result<String, PublishError> {
    let canon = fs::canonicalize(dir).map_err(|source| PublishError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    let base = canon.file_name().ok_or(PublishError::BadName {
        path: canon.clone(),
        why: "the root directory has no name; pass --name",
    })?;
    base.to_str()
        .map(str::to_string)
        .ok_or_else(|| PublishError::NonUtf8(canon.clone()))
}

/// Depth-first walk, each directory's names in byte order, collecting files and symlinks.
fn scan(
    dir: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Found)>,
    empty_dirs: &mut Vec<String>,
) -> Result<(), PublishError> {
    let unreadable = |source| PublishError::Unreadable {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let path = entry.path();
        let name = name
            .into_string()
            .map_err(|_| PublishError::NonUtf8(path.clone()))?;
        names.push(name);
    }
    names.sort();
    let before = out.len();
    for name in names {
        let path = dir.join(&name);
        check_component(&name).map_err(|why| PublishError::BadName {
            path: path.clone(),
            why,
        })?;
        let md = fs::symlink_metadata(&path).map_err(|source| PublishError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let ft = md.file_type();
        rel.push(name);
        if ft.is_dir() {
            scan(&path, rel, out, empty_dirs)?;
        } else if ft.is_file() {
            // Open now so that an unreadable file is refused before any hashing.
            hash::open_nofollow(&path).map_err(|e| match e {
                HashError::Read { path, source } => PublishError::Unreadable { path, source },
                other => PublishError::Hash(other),
            })?;
            let executable = md.permissions().mode() & 0o111 != 0;
            out.push((
                rel.clone(),
                Found::File {
                    len: md.len(),
                    executable,
                },
            ));
        } else if ft.is_symlink() {
            let target = symlink_target(&path, &rel[..rel.len() - 1])?;
            out.push((rel.clone(), Found::Symlink { target }));
        } else {
            let kind = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_block_device() {
                "a block device"
            } else if ft.is_char_device() {
                "a character device"
            } else {
                "a special file"
            };
            return Err(PublishError::SpecialFile { path, kind });
        }
        rel.pop();
    }
    if out.len() == before && !rel.is_empty() {
        empty_dirs.push(rel.join("/"));
    }
    Ok(())
}

/// Resolves a symlink's target lexically against the link's directory and returns it
/// relative to the release root, refusing targets that are absolute or climb out.
fn symlink_target(path: &Path, link_dir: &[String]) -> Result<Vec<String>, PublishError> {
    let raw = fs::read_link(path).map_err(|source| PublishError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let target = raw
        .to_str()
        .ok_or_else(|| PublishError::NonUtf8(path.to_path_buf()))?
        .to_string();
    if raw.is_absolute() {
        return Err(PublishError::AbsoluteSymlink {
            path: path.to_path_buf(),
            target,
        });
    }
    let escaping = || PublishError::EscapingSymlink {
        path: path.to_path_buf(),
        target: target.clone(),
    };
    let mut resolved: Vec<String> = link_dir.to_vec();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                resolved.pop().ok_or_else(escaping)?;
            }
            c => resolved.push(c.to_string()),
        }
    }
    if resolved.is_empty() {
        // A link to the release root itself cannot be expressed in BEP 47.
        return Err(escaping());
    }
    Ok(resolved)
}

/// Assigns offsets in scan order. A file of at least one piece owns its pieces: padding
/// aligns its start, and the next file starts on a fresh piece too. Smaller files are
/// packed back to back: padding each of them would multiply a release of small files
/// several times over (measured in ARCHITECTURE.md), and librqbit and aria2 fetch the
/// zeros like any other bytes.
fn layout(found: Vec<(Vec<String>, Found)>, pl: u64) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(found.len() + found.len() / 4);
    let mut offset = 0u64;
    let mut after_big = false;
    for (path, f) in found {
        match f {
            Found::File { len, executable } => {
                let misalign = offset % pl;
                let big = len >= pl;
                if len > 0 && misalign != 0 && (big || after_big) {
                    let pad = pl - misalign;
                    entries.push(Entry {
                        path: vec![".pad".to_string(), pad.to_string()],
                        offset,
                        length: pad,
                        kind: EntryKind::Padding,
                        sha1: None,
                    });
                    offset += pad;
                }
                entries.push(Entry {
                    path,
                    offset,
                    length: len,
                    kind: EntryKind::File { executable },
                    sha1: None,
                });
                offset += len;
                if len > 0 {
                    after_big = big;
                }
            }
            Found::Symlink { target } => entries.push(Entry {
                path,
                offset,
                length: 0,
                kind: EntryKind::Symlink { target },
                sha1: None,
            }),
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_piece_length_is_32k_until_the_piece_table_grows_past_16384() {
        let mib = 1 << 20;
        assert_eq!(default_piece_length(1), 32 << 10);
        assert_eq!(default_piece_length(256 * mib), 32 << 10);
        assert_eq!(default_piece_length(512 * mib), 32 << 10);
        assert_eq!(default_piece_length(512 * mib + 1), 64 << 10);
        assert_eq!(default_piece_length(10 << 30), 1 << 20);
        assert_eq!(default_piece_length(u64::MAX / 2), 16 * mib, "capped");
        for bytes in [1, 300 * mib, 3 << 30, 100 << 30] {
            let pl = default_piece_length(bytes);
            assert!(pl.is_power_of_two());
            assert!(bytes.div_ceil(pl) <= MAX_DEFAULT_PIECES, "{bytes}");
        }
    }

    #[test]
    fn publish_chooses_the_piece_length_when_none_is_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let opts = PublishOptions::default();
        let p = publish(dir.path(), &opts, &|_| {}).unwrap();
        assert_eq!(p.release.piece_length, 32 << 10);
    }
}
