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
    /// The release this one follows (`publish --base`): its piece length is kept, its
    /// unchanged small files stay where they were, and `similar` names it, so that the
    /// pieces of unchanged files are identical in both ([`layout_with_base`]).
    pub base: Option<Release>,
    /// A boot profile's text to carry in the info dict (`publish --boot-profile`), at
    /// most [`MAX_BOOT_PROFILE`] bytes.
    pub boot_profile: Option<String>,
}

/// A torrent made from a directory.
#[derive(Debug)]
pub struct Published {
    pub release: Release,
    /// Directories that hold nothing: v1 torrents cannot carry them.
    pub empty_dirs: Vec<String>,
    /// Against the base, when there is one: what is new.
    pub delta: Option<Delta>,
}

/// What a release published against a base holds that the base does not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    /// The base's infohash.
    pub base: String,
    /// Pieces of the new release, and those whose SHA-1 no piece of the base has: what a
    /// host holding the base must fetch at most (fewer where its files rebuild them).
    pub pieces: u64,
    pub pieces_new: u64,
    pub bytes_new: u64,
    /// Regular files by path against the base: same content, other content, not in the
    /// base, gone; and the bytes of the changed and added ones.
    pub files_unchanged: u64,
    pub files_changed: u64,
    pub files_added: u64,
    pub files_removed: u64,
    pub bytes_changed: u64,
    /// Padding left where removed or changed small files were in the packed region.
    pub hole_bytes: u64,
    /// The small files were laid out afresh: the holes passed [`REPACK_HOLE_FRACTION`].
    pub repacked: bool,
}

/// Holes (padding where a removed or changed small file was) above this fraction of the
/// kept small files' bytes make `publish --base` lay the small files out afresh. A hole
/// is downloaded by every host that does not hold the base (librqbit and aria2 fetch
/// padding like any bytes), while keeping the offsets saves only clients that match
/// pieces by hash (BEP 38): swarmfs hosts rebuild shifted small files from their own
/// copies either way. So holes are kept small: at most a tenth of the packed bytes.
pub const REPACK_HOLE_FRACTION: f64 = 0.10;

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
    #[error("piece size {asked} differs from the base's {base}: a delta keeps the base's piece size; leave --piece-size out")]
    BasePieceSize { asked: u64, base: u64 },
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

    let pl = match (&opts.base, pl) {
        (Some(b), 0) => b.piece_length,
        (Some(b), pl) if pl != b.piece_length => {
            return Err(PublishError::BasePieceSize {
                asked: pl,
                base: b.piece_length,
            })
        }
        (_, 0) => default_piece_length(
            found
                .iter()
                .map(|(_, f)| match f {
                    Found::File { len, .. } => *len,
                    Found::Symlink { .. } => 0,
                })
                .sum(),
        ),
        (_, pl) => pl,
    };
    let (entries, holes) = match &opts.base {
        None => (layout(found, pl), None),
        Some(base) => {
            let (e, h) = layout_with_base(found, pl, base, dir)?;
            (e, Some(h))
        }
    };
    let total_length = entries.last().map_or(0, |e| e.offset + e.length);
    let stream = hash::Stream {
        root: dir,
        entries: &entries,
        piece_length: pl,
        total_length,
    };
    let (pieces, file_sha1s) = stream.piece_and_file_hashes(progress)?;
    let delta = opts
        .base
        .as_ref()
        .zip(holes)
        .map(|(base, (hole_bytes, repacked))| {
            delta(
                base,
                &entries,
                &pieces,
                &file_sha1s,
                pl,
                total_length,
                hole_bytes,
                repacked,
            )
        });

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
            similar: opts
                .base
                .as_ref()
                .map(|b| vec![ByteBuf::from(b.info_hash.0.to_vec())]),
            boot_profile: opts
                .boot_profile
                .as_ref()
                .map(|t| ByteBuf::from(t.as_bytes().to_vec())),
        },
        similar: None,
        signature: None,
    };
    let bytes = serde_bencode::to_bytes(&meta)
        .map_err(|e| TorrentError::Decode(format!("encoding failed: {e}")))?;
    let release = Release::from_torrent(&bytes)?;
    Ok(Published {
        release,
        empty_dirs,
        delta,
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
        // The release's padding is named `.pad/N` (BEP 47): files there would collide
        // with it. A BitTorrent client asked to seed a published tree in place writes
        // them (aria2 does).
        if rel.is_empty() && name == ".pad" {
            return Err(PublishError::BadName {
                path,
                why: "`.pad` at the top of a release is where BEP 47 padding is named (a \
                      BitTorrent client that seeded this tree may have written it); remove it",
            });
        }
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

/// The layout of a release published against `base`: the files the base had, unchanged,
/// keep pieces identical to the base's.
///
/// The base's stream is a sequence of blocks, each starting on a piece boundary: a file
/// of a piece or more (its pieces are its own wherever it starts), or a packed run of
/// small files. They are laid out again in the base's order: a file of a piece or more
/// that is still one, and in each run the unchanged small files at their offsets within
/// the run, with padding where a file is gone or changed. A small file is unchanged when
/// the base has it at the same path with the same length and BEP 47 `sha1`. Everything
/// else (new files, changed small files, empty files, symlinks) follows in scan order,
/// laid out as without a base from a fresh piece. When the last file is a piece or more,
/// a pad follows it too, so that its tail piece is the same when a later release appends
/// after it. When the holes pass [`REPACK_HOLE_FRACTION`] of the kept bytes, the files
/// are laid out afresh (the base's piece length is kept). Returns the entries, the hole
/// bytes and whether it repacked.
fn layout_with_base(
    found: Vec<(Vec<String>, Found)>,
    pl: u64,
    base: &Release,
    dir: &Path,
) -> Result<(Vec<Entry>, (u64, bool)), PublishError> {
    use std::collections::{HashMap, HashSet};
    let base_files: HashMap<&[String], &Entry> = base
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }) && e.length > 0)
        .map(|e| (e.path.as_slice(), e))
        .collect();
    // Small files the base has with the same length and content.
    let mut kept: HashSet<Vec<String>> = HashSet::new();
    for (path, f) in &found {
        let Found::File { len, .. } = f else { continue };
        let Some(b) = base_files.get(path.as_slice()) else {
            continue;
        };
        if *len == 0 || *len >= pl || b.length != *len {
            continue;
        }
        let Some(want) = b.sha1 else { continue };
        let mut full = dir.to_path_buf();
        full.extend(path);
        if hash::file_sha1(&full, *len)? == want {
            kept.insert(path.clone());
        }
    }
    // The base's blocks, in order: a file of a piece or more, or a packed run of small
    // files between two boundaries.
    enum Block<'a> {
        Large(&'a Entry),
        Run(Vec<&'a Entry>),
    }
    let mut blocks: Vec<Block> = Vec::new();
    for e in &base.entries {
        match e.kind {
            EntryKind::File { .. } if e.length > 0 && e.length < pl => match blocks.last_mut() {
                Some(Block::Run(r)) => r.push(e),
                _ => blocks.push(Block::Run(vec![e])),
            },
            EntryKind::File { .. } if e.length >= pl => blocks.push(Block::Large(e)),
            EntryKind::Padding if e.length > 0 => blocks.push(Block::Run(Vec::new())),
            _ => {}
        }
    }
    let mut large_now: HashMap<Vec<String>, (u64, bool)> = HashMap::new();
    let mut by_path: HashMap<Vec<String>, bool> = HashMap::new();
    for (path, f) in &found {
        if let Found::File { len, executable } = f {
            by_path.insert(path.clone(), *executable);
            if *len >= pl {
                large_now.insert(path.clone(), (*len, *executable));
            }
        }
    }
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut holes = 0u64;
    let mut kept_bytes = 0u64;
    let mut placed: HashSet<Vec<String>> = HashSet::new();
    for block in blocks {
        match block {
            // Still a file of a piece or more: it stays in the base's order (its pieces
            // are its own wherever it starts, so it need not be unchanged to stay).
            Block::Large(e) => {
                let Some(&(len, executable)) = large_now.get(&e.path) else {
                    continue;
                };
                let start = offset.next_multiple_of(pl);
                pad_to(&mut entries, &mut offset, start);
                entries.push(Entry {
                    path: e.path.clone(),
                    offset,
                    length: len,
                    kind: EntryKind::File { executable },
                    sha1: None,
                });
                offset += len;
                placed.insert(e.path.clone());
            }
            Block::Run(run) => {
                // A run of a foreign layout may not start on a boundary: its pieces were
                // shared with the file before it, and cannot be kept.
                let Some(first) = run.first() else { continue };
                if first.offset % pl != 0 || !run.iter().any(|e| kept.contains(&e.path)) {
                    continue;
                }
                let start = offset.next_multiple_of(pl);
                pad_to(&mut entries, &mut offset, start);
                let first_offset = first.offset;
                for e in run {
                    if !kept.contains(&e.path) {
                        continue;
                    }
                    let at = start + (e.offset - first_offset);
                    holes += at - offset;
                    pad_to(&mut entries, &mut offset, at);
                    entries.push(Entry {
                        path: e.path.clone(),
                        offset,
                        length: e.length,
                        kind: EntryKind::File {
                            executable: by_path[&e.path],
                        },
                        sha1: None,
                    });
                    offset += e.length;
                    kept_bytes += e.length;
                    placed.insert(e.path.clone());
                }
            }
        }
    }
    let repack = holes as f64 > kept_bytes as f64 * REPACK_HOLE_FRACTION;
    if repack {
        entries.clear();
        offset = 0;
        placed.clear();
    }
    let rest: Vec<_> = found
        .into_iter()
        .filter(|(p, _)| !placed.contains(p))
        .collect();
    let start = offset.next_multiple_of(pl);
    if rest
        .iter()
        .any(|(_, f)| matches!(f, Found::File { len, .. } if *len > 0))
    {
        pad_to(&mut entries, &mut offset, start);
    }
    for mut e in layout(rest, pl) {
        e.offset += offset;
        entries.push(e);
    }
    // A pad after the last file too, when it is a piece or more: its tail piece then
    // holds nothing but its own bytes, as it does when another file follows it.
    if let Some(last) = entries.iter().rev().find(|e| e.length > 0) {
        let end = last.offset + last.length;
        if !last.is_padding() && last.length >= pl && end % pl != 0 {
            let mut end_offset = end;
            pad_to(&mut entries, &mut end_offset, end.next_multiple_of(pl));
        }
    }
    Ok((entries, (if repack { 0 } else { holes }, repack)))
}

/// Appends padding from `offset` up to `to` (nothing when already there).
fn pad_to(entries: &mut Vec<Entry>, offset: &mut u64, to: u64) {
    if to > *offset {
        let pad = to - *offset;
        entries.push(Entry {
            path: vec![".pad".to_string(), pad.to_string()],
            offset: *offset,
            length: pad,
            kind: EntryKind::Padding,
            sha1: None,
        });
        *offset = to;
    }
}

/// What the new release holds that `base` does not.
#[allow(clippy::too_many_arguments)]
fn delta(
    base: &Release,
    entries: &[Entry],
    pieces: &[[u8; 20]],
    file_sha1s: &[Option<[u8; 20]>],
    pl: u64,
    total: u64,
    hole_bytes: u64,
    repacked: bool,
) -> Delta {
    use std::collections::{HashMap, HashSet};
    let known: HashSet<&[u8; 20]> = base.piece_hashes.iter().collect();
    let mut d = Delta {
        base: base.info_hash.to_string(),
        pieces: pieces.len() as u64,
        pieces_new: 0,
        bytes_new: 0,
        files_unchanged: 0,
        files_changed: 0,
        files_added: 0,
        files_removed: 0,
        bytes_changed: 0,
        hole_bytes,
        repacked,
    };
    for (i, h) in pieces.iter().enumerate() {
        if !known.contains(h) {
            d.pieces_new += 1;
            d.bytes_new += pl.min(total - i as u64 * pl);
        }
    }
    let base_files: HashMap<&[String], &Entry> = base
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| (e.path.as_slice(), e))
        .collect();
    let mut seen = 0;
    for (e, sha1) in entries.iter().zip(file_sha1s) {
        if !matches!(e.kind, EntryKind::File { .. }) {
            continue;
        }
        match base_files.get(e.path.as_slice()) {
            Some(b) => {
                seen += 1;
                if b.length == e.length && b.sha1.is_some() && b.sha1 == *sha1 {
                    d.files_unchanged += 1;
                } else {
                    d.files_changed += 1;
                    d.bytes_changed += e.length;
                }
            }
            None => {
                d.files_added += 1;
                d.bytes_changed += e.length;
            }
        }
    }
    d.files_removed = base_files.len() as u64 - seen;
    d
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
    #[test]
    fn a_pad_directory_at_the_top_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join(".pad")).unwrap();
        std::fs::write(dir.path().join(".pad/3341"), vec![0u8; 3341]).unwrap();
        let e = publish(dir.path(), &PublishOptions::default(), &|_| {})
            .err()
            .expect("refused");
        let msg = e.to_string();
        assert!(msg.contains(".pad") && msg.contains("remove it"), "{msg}");
        // Deeper down, `.pad` is an ordinary name.
        std::fs::remove_dir_all(dir.path().join(".pad")).unwrap();
        std::fs::create_dir_all(dir.path().join("sub/.pad")).unwrap();
        std::fs::write(dir.path().join("sub/.pad/x"), b"x").unwrap();
        assert!(publish(dir.path(), &PublishOptions::default(), &|_| {}).is_ok());
    }

    /// Writes `files` (path, length, seed) under `dir` with pseudo-random content.
    fn write_tree(dir: &Path, files: &[(&str, usize, u64)]) {
        for (name, len, seed) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let bytes: Vec<u8> = (0..*len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(p, bytes).unwrap();
        }
    }

    fn opts(piece: u64, base: Option<Release>) -> PublishOptions {
        PublishOptions {
            piece_length: piece,
            base,
            ..Default::default()
        }
    }

    const PL: u64 = 16 * 1024;

    /// Release N: a large file and twenty small ones of 1-9 KiB in one packed run.
    fn release_n(dir: &Path) -> Vec<(String, usize, u64)> {
        let mut files = vec![("bin/app".to_string(), 3 * PL as usize + 100, 1)];
        for i in 0..20u64 {
            files.push((
                format!("conf/f{i:02}"),
                1024 * (1 + (i as usize * 7) % 9),
                100 + i,
            ));
        }
        let as_ref: Vec<(&str, usize, u64)> =
            files.iter().map(|(p, l, s)| (p.as_str(), *l, *s)).collect();
        write_tree(dir, &as_ref);
        files
    }

    #[test]
    fn a_delta_publish_keeps_the_pieces_of_unchanged_files_and_names_its_base() {
        let n_dir = tempfile::tempdir().unwrap();
        release_n(n_dir.path());
        let n = publish(n_dir.path(), &opts(PL, None), &|_| {})
            .unwrap()
            .release;

        // N+1: f09 changed in place, f02 removed, f07a added between f07 and f08.
        let m_dir = tempfile::tempdir().unwrap();
        release_n(m_dir.path());
        write_tree(
            m_dir.path(),
            &[("conf/f09", 1024, 999), ("conf/f07a", 3000, 7)],
        );
        std::fs::remove_file(m_dir.path().join("conf/f02")).unwrap();

        let with = publish(m_dir.path(), &opts(0, Some(n.clone())), &|_| {}).unwrap();
        let d = with.delta.clone().unwrap();
        assert_eq!(with.release.piece_length, PL, "the base's piece length");
        assert_eq!(with.release.similar, vec![n.info_hash]);
        assert_eq!(
            (
                d.files_unchanged,
                d.files_changed,
                d.files_added,
                d.files_removed
            ),
            (19, 1, 1, 1)
        );
        assert_eq!(d.bytes_changed, 1024 + 3000);
        assert!(!d.repacked && d.hole_bytes == 1024 + 6144, "{d:?}");
        // Unchanged small files sit where they were in N.
        let off = |r: &Release, p: &str| {
            r.entries
                .iter()
                .find(|e| e.display_path() == p)
                .unwrap()
                .offset
        };
        for f in ["conf/f00", "conf/f08", "conf/f19"] {
            assert_eq!(off(&with.release, f) % PL, off(&n, f) % PL, "{f}");
        }
        // What is new: the changed and added files' pieces and the pieces of the holes,
        // at most two pieces each; every other piece is one N has.
        assert!(d.pieces_new <= 2 * 3 + 1, "{d:?}");
        assert!(d.bytes_new <= 7 * PL, "{d:?}");

        // The same change laid out without a base shifts every small file after f05.
        let without = publish(m_dir.path(), &opts(PL, None), &|_| {})
            .unwrap()
            .release;
        let known: std::collections::HashSet<_> = n.piece_hashes.iter().collect();
        let new_without = without
            .piece_hashes
            .iter()
            .filter(|h| !known.contains(h))
            .count();
        assert!(
            (d.pieces_new as usize) < new_without,
            "with a base {} new pieces, without {new_without}",
            d.pieces_new
        );

        // Deterministic: the same tree and base give the same torrent.
        let again = publish(m_dir.path(), &opts(0, Some(n.clone())), &|_| {}).unwrap();
        assert_eq!(again.release.torrent_bytes, with.release.torrent_bytes);
        // An unchanged tree against its own base: nothing new.
        let same = publish(n_dir.path(), &opts(0, Some(n.clone())), &|_| {}).unwrap();
        assert_eq!(same.delta.unwrap().pieces_new, 0);
    }

    #[test]
    fn a_delta_refuses_another_piece_size_and_repacks_when_most_small_files_go() {
        let n_dir = tempfile::tempdir().unwrap();
        release_n(n_dir.path());
        let n = publish(n_dir.path(), &opts(PL, None), &|_| {})
            .unwrap()
            .release;
        let err = publish(n_dir.path(), &opts(2 * PL, Some(n.clone())), &|_| {}).unwrap_err();
        assert!(
            err.to_string().contains("differs from the base's 16384"),
            "{err}"
        );
        // Keep one small file in three: the holes pass a tenth of what is kept.
        for i in (0..20).filter(|i| i % 3 != 0) {
            std::fs::remove_file(n_dir.path().join(format!("conf/f{i:02}"))).unwrap();
        }
        let d = publish(n_dir.path(), &opts(0, Some(n)), &|_| {})
            .unwrap()
            .delta
            .unwrap();
        assert!(d.repacked, "{d:?}");
        assert_eq!(d.hole_bytes, 0);
    }
}
