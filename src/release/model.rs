//! A validated release: what a torrent describes, in the terms the rest of swarmfs uses.
//!
//! [`Release::from_torrent`] is the only way to get one from bytes, and it refuses
//! anything a filesystem could be hurt by (see [`TorrentError`]). Once built, a `Release`
//! upholds: every path is a list of safe components, no path repeats, no file sits where
//! a directory is, every symlink target stays inside the release, and the piece hashes
//! cover exactly the total length.

use std::collections::HashSet;
use std::fmt;

use sha1::{Digest, Sha1};

use super::bencode::{self, ScanError};
use super::metainfo::{FileEntry, MetaInfo};

/// Smallest accepted piece length: the BitTorrent block size.
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;
/// Longest boot profile a torrent may carry (text): about 8,000 lines, a small part of
/// the metadata a magnet mount fetches; a longer one is ignored at mount and refused at
/// publish.
pub const MAX_BOOT_PROFILE: usize = 256 * 1024;
/// Largest accepted piece length; larger pieces make every read wait for 64 MiB or more.
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;
/// Most file entries (padding included) a torrent may list.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest accepted file name component, as on Linux filesystems.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Largest accepted release.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;

/// The SHA-1 of a torrent's bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// Parses 40 hex digits.
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(InfoHash(out))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

/// What an entry of the torrent's file list is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with data.
    File { executable: bool },
    /// A symbolic link; `target` is relative to the release root (BEP 47).
    Symlink { target: Vec<String> },
    /// BEP 47 padding: zeros that align the next file to a piece boundary. Never shown.
    Padding,
}

/// One entry of the file list, in torrent order (the order of the byte stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path below the release root, each component validated.
    pub path: Vec<String>,
    /// Offset of the first byte in the torrent's byte stream.
    pub offset: u64,
    pub length: u64,
    pub kind: EntryKind,
    /// BEP 47 whole-file SHA-1, when the torrent carries one.
    pub sha1: Option<[u8; 20]>,
}

impl Entry {
    /// The path joined with `/`, for messages.
    pub fn display_path(&self) -> String {
        self.path.join("/")
    }

    pub fn is_padding(&self) -> bool {
        self.kind == EntryKind::Padding
    }
}

/// A release's signature as the torrent carries it (not yet checked: `sign.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSignature {
    pub key: Vec<u8>,
    pub seq: i64,
    pub sig: Vec<u8>,
}

/// A parsed and validated release (a v1 torrent's metadata).
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub info_hash: InfoHash,
    pub piece_length: u64,
    pub total_length: u64,
    /// Every entry in torrent order, padding included (its index is the torrent's file index).
    pub entries: Vec<Entry>,
    pub piece_hashes: Vec<[u8; 20]>,
    /// Announce URLs: `announce` first, then `announce-list`, without repeats.
    pub trackers: Vec<String>,
    pub private: bool,
    /// BEP 38 `similar`: releases that share data with this one (the base it was
    /// published against first), from inside the info dict and then outside it.
    pub similar: Vec<InfoHash>,
    /// A boot profile's text carried in the info dict (`publish --boot-profile`); text
    /// that is not UTF-8 or longer than [`MAX_BOOT_PROFILE`] is ignored (a hint only).
    pub boot_profile: Option<String>,
    /// `x-swarmfs-signature`, as carried (checked by [`Release::check_signature`]).
    pub signature: Option<ReleaseSignature>,
    /// The torrent file as read; what is handed to peers and to the swarm engine.
    pub torrent_bytes: Vec<u8>,
}

/// Fills `buf` with a release's byte stream (its `entries`, in torrent order) from
/// `start`: padding as zeros, each file's part through `file(index, entry, offset in the
/// file, destination)`. The caller keeps `start + buf.len()` within the stream.
pub(crate) fn fill_from_stream<E>(
    entries: &[Entry],
    start: u64,
    buf: &mut [u8],
    mut file: impl FnMut(usize, &Entry, u64, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    // The first entry that ends after `start`.
    let mut i = entries.partition_point(|e| e.offset + e.length <= start);
    let mut pos = start;
    let mut filled = 0;
    while filled < buf.len() {
        let e = &entries[i];
        let in_entry = pos - e.offset;
        let n = ((e.length - in_entry) as usize).min(buf.len() - filled);
        let dst = &mut buf[filled..filled + n];
        match e.kind {
            EntryKind::File { .. } if n > 0 => file(i, e, in_entry, dst)?,
            _ => dst.fill(0),
        }
        filled += n;
        pos += n as u64;
        i += 1;
    }
    Ok(())
}

/// Why a torrent was refused.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("not a torrent: {0}")]
    Scan(#[from] ScanError),
    #[error("not a valid torrent: {0}")]
    Decode(String),
    #[error("the torrent's name {0:?} is not a safe directory name")]
    BadName(String),
    #[error("piece length {0} is outside {MIN_PIECE_LENGTH}..={MAX_PIECE_LENGTH} or not a multiple of 16 KiB")]
    BadPieceLength(i64),
    #[error("the torrent lists {0} files, more than the {MAX_ENTRIES} accepted")]
    TooManyEntries(usize),
    #[error("the torrent has both `files` and `length`, or neither")]
    BadLayout,
    #[error("file {path:?} has a negative or too large length {length}")]
    BadLength { path: String, length: i64 },
    #[error("file path {path:?} is unsafe: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("file path {0:?} appears twice")]
    DuplicatePath(String),
    #[error("{0:?} is both a file and a directory")]
    FileDirConflict(String),
    #[error("symlink {path:?} is invalid: {why}")]
    BadSymlink { path: String, why: &'static str },
    #[error("file {0:?} has a `sha1` that is not 20 bytes")]
    BadFileSha1(String),
    #[error("the torrent holds no data")]
    Empty,
    #[error("the torrent has {got} piece hashes but its {total} bytes need {expected}")]
    PieceCount { total: u64, expected: u64, got: u64 },
}

impl Release {
    /// Parses and validates a .torrent file's bytes.
    pub fn from_torrent(bytes: &[u8]) -> Result<Release, TorrentError> {
        let span = bencode::info_span(bytes)?;
        let info_hash = InfoHash(Sha1::digest(&bytes[span]).into());
        let meta: MetaInfo =
            serde_bencode::from_bytes(bytes).map_err(|e| TorrentError::Decode(e.to_string()))?;
        let info = meta.info;
        let signature = meta.signature.map(|s| ReleaseSignature {
            key: s.key.into_vec(),
            seq: s.seq,
            sig: s.sig.into_vec(),
        });
        // A hint only: entries that are not 20 bytes are ignored, not refused.
        let mut similar: Vec<InfoHash> = Vec::new();
        for h in info.similar.iter().chain(meta.similar.iter()).flatten() {
            if let Ok(h) = <[u8; 20]>::try_from(h.as_slice()) {
                if !similar.contains(&InfoHash(h)) && InfoHash(h) != info_hash {
                    similar.push(InfoHash(h));
                }
            }
        }

        check_component(&info.name).map_err(|_| TorrentError::BadName(info.name.clone()))?;
        let pl = info.piece_length;
        if !(MIN_PIECE_LENGTH as i64..=MAX_PIECE_LENGTH as i64).contains(&pl)
            || pl % MIN_PIECE_LENGTH as i64 != 0
        {
            return Err(TorrentError::BadPieceLength(pl));
        }
        let piece_length = pl as u64;

        let raw_files = match (info.files, info.length) {
            (Some(files), None) => files,
            (None, Some(length)) => vec![FileEntry {
                attr: None,
                length,
                path: vec![info.name.clone()],
                sha1: None,
                symlink_path: None,
            }],
            _ => return Err(TorrentError::BadLayout),
        };
        if raw_files.len() > MAX_ENTRIES {
            return Err(TorrentError::TooManyEntries(raw_files.len()));
        }

        let mut entries = Vec::with_capacity(raw_files.len());
        let mut offset: u64 = 0;
        for f in raw_files {
            let entry = build_entry(f, offset)?;
            offset = offset
                .checked_add(entry.length)
                .filter(|&t| t <= MAX_TOTAL_LENGTH)
                .ok_or_else(|| TorrentError::BadLength {
                    path: entry.display_path(),
                    length: entry.length as i64,
                })?;
            entries.push(entry);
        }
        check_tree(&entries)?;

        let total_length = offset;
        if total_length == 0 {
            return Err(TorrentError::Empty);
        }
        let expected = total_length.div_ceil(piece_length);
        let got = info.pieces.len() as u64;
        if got % 20 != 0 || got / 20 != expected {
            return Err(TorrentError::PieceCount {
                total: total_length,
                expected,
                got: got / 20,
            });
        }
        let piece_hashes = info
            .pieces
            .chunks_exact(20)
            .map(|c| c.try_into().expect("chunks of 20"))
            .collect();

        let mut trackers: Vec<String> = Vec::new();
        let tiers = meta.announce_list.unwrap_or_default();
        for url in meta.announce.into_iter().chain(tiers.into_iter().flatten()) {
            if !url.is_empty() && !trackers.contains(&url) {
                trackers.push(url);
            }
        }

        Ok(Release {
            name: info.name,
            info_hash,
            piece_length,
            total_length,
            entries,
            piece_hashes,
            trackers,
            private: info.private.unwrap_or(0) == 1,
            similar,
            boot_profile: info
                .boot_profile
                .filter(|b| b.len() <= MAX_BOOT_PROFILE)
                .and_then(|b| String::from_utf8(b.into_vec()).ok()),
            signature,
            torrent_bytes: bytes.to_vec(),
        })
    }

    pub fn piece_count(&self) -> u64 {
        self.piece_hashes.len() as u64
    }

    /// Regular files and symlinks, in torrent order (no padding).
    pub fn visible_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.is_padding())
    }

    /// The magnet link for this release: infohash, name and trackers.
    pub fn magnet(&self) -> String {
        let mut m = url::form_urlencoded::Serializer::new(String::new());
        m.append_pair("dn", &self.name);
        for t in &self.trackers {
            m.append_pair("tr", t);
        }
        format!("magnet:?xt=urn:btih:{}&{}", self.info_hash, m.finish())
    }
}

fn build_entry(f: FileEntry, offset: u64) -> Result<Entry, TorrentError> {
    let display = f.path.join("/");
    for c in &f.path {
        check_component(c).map_err(|why| TorrentError::BadPath {
            path: display.clone(),
            why,
        })?;
    }
    if f.path.is_empty() {
        return Err(TorrentError::BadPath {
            path: display,
            why: "it has no components",
        });
    }
    if f.length < 0 {
        return Err(TorrentError::BadLength {
            path: display,
            length: f.length,
        });
    }
    let attr = f.attr.as_deref().unwrap_or("");
    let kind = if attr.contains('p') {
        EntryKind::Padding
    } else if attr.contains('l') {
        let target = f.symlink_path.ok_or(TorrentError::BadSymlink {
            path: display.clone(),
            why: "it has no `symlink path`",
        })?;
        if f.length != 0 {
            return Err(TorrentError::BadSymlink {
                path: display,
                why: "a symlink must have length 0",
            });
        }
        check_symlink_target(&target).map_err(|why| TorrentError::BadSymlink {
            path: display.clone(),
            why,
        })?;
        EntryKind::Symlink { target }
    } else {
        EntryKind::File {
            executable: attr.contains('x'),
        }
    };
    let sha1 = match f.sha1 {
        None => None,
        Some(b) => Some(
            <[u8; 20]>::try_from(b.as_slice())
                .map_err(|_| TorrentError::BadFileSha1(display.clone()))?,
        ),
    };
    Ok(Entry {
        path: f.path,
        offset,
        length: f.length as u64,
        kind,
        sha1,
    })
}

/// A path component is safe when it names exactly one entry inside its directory.
pub(crate) fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("it has an empty component");
    }
    if c == "." || c == ".." {
        return Err("it has a `.` or `..` component");
    }
    if c.contains('/') {
        return Err("a component contains `/`");
    }
    if c.contains('\0') {
        return Err("a component contains a NUL byte");
    }
    if c.len() > MAX_COMPONENT_BYTES {
        return Err("a component is longer than 255 bytes");
    }
    Ok(())
}

fn check_symlink_target(target: &[String]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("its target is empty");
    }
    for c in target {
        check_component(c).map_err(|_| "its target leaves the release or has unsafe components")?;
    }
    Ok(())
}

/// No path twice; no path that is also a directory of another path. Padding is exempt:
/// it is never materialised and by convention several pads share a name.
fn check_tree(entries: &[Entry]) -> Result<(), TorrentError> {
    let mut files: HashSet<&[String]> = HashSet::new();
    let mut dirs: HashSet<&[String]> = HashSet::new();
    for e in entries.iter().filter(|e| !e.is_padding()) {
        if !files.insert(&e.path) {
            return Err(TorrentError::DuplicatePath(e.display_path()));
        }
        for i in 1..e.path.len() {
            dirs.insert(&e.path[..i]);
        }
    }
    for f in &files {
        if dirs.contains(f) {
            return Err(TorrentError::FileDirConflict(f.join("/")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::metainfo::Info;
    use serde_bytes::ByteBuf;

    fn torrent(files: Vec<FileEntry>, pl: i64, pieces: usize) -> Vec<u8> {
        serde_bencode::to_bytes(&MetaInfo {
            announce: None,
            announce_list: None,
            comment: None,
            created_by: None,
            creation_date: None,
            info: Info {
                files: Some(files),
                length: None,
                name: "rel".into(),
                piece_length: pl,
                pieces: ByteBuf::from(vec![0u8; 20 * pieces]),
                private: None,
                similar: None,
                boot_profile: None,
            },
            similar: None,
            signature: None,
        })
        .unwrap()
    }

    fn file(path: &[&str], length: i64) -> FileEntry {
        FileEntry {
            attr: None,
            length,
            path: path.iter().map(|s| s.to_string()).collect(),
            sha1: None,
            symlink_path: None,
        }
    }

    fn refused(files: Vec<FileEntry>) -> String {
        Release::from_torrent(&torrent(files, 16384, 1))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn accepts_a_plain_torrent() {
        let r = Release::from_torrent(&torrent(vec![file(&["a", "b"], 10)], 16384, 1)).unwrap();
        assert_eq!(r.total_length, 10);
        assert_eq!(r.entries[0].display_path(), "a/b");
    }

    #[test]
    fn refuses_unsafe_paths() {
        assert!(refused(vec![file(&["..", "etc"], 1)]).contains("`.` or `..`"));
        assert!(refused(vec![file(&[".", "x"], 1)]).contains("`.` or `..`"));
        assert!(refused(vec![file(&["a", ""], 1)]).contains("empty component"));
        assert!(refused(vec![file(&["/etc/passwd"], 1)]).contains("contains `/`"));
        assert!(refused(vec![file(&["a\0b"], 1)]).contains("NUL"));
        assert!(refused(vec![file(&[], 1)]).contains("no components"));
        assert!(refused(vec![file(&["a"], 1), file(&["a"], 1)]).contains("appears twice"));
        assert!(refused(vec![file(&["a"], 1), file(&["a", "b"], 1)])
            .contains("both a file and a directory"));
        assert!(refused(vec![file(&["a"], -1)]).contains("negative"));
    }

    #[test]
    fn refuses_symlinks_that_leave_or_lack_a_target() {
        let mut l = file(&["l"], 0);
        l.attr = Some("l".into());
        assert!(refused(
            vec![file(&["a"], 1)]
                .into_iter()
                .chain([FileEntry {
                    symlink_path: None,
                    ..l
                }])
                .collect()
        )
        .contains("no `symlink path`"));
        let mut l = file(&["l"], 0);
        l.attr = Some("l".into());
        l.symlink_path = Some(vec!["..".into(), "x".into()]);
        assert!(refused(vec![file(&["a"], 1), l]).contains("leaves the release"));
    }

    #[test]
    fn refuses_bad_piece_geometry() {
        let err = Release::from_torrent(&torrent(vec![file(&["a"], 1)], 1000, 1)).unwrap_err();
        assert!(err.to_string().contains("piece length 1000"));
        let err = Release::from_torrent(&torrent(vec![file(&["a"], 20000)], 16384, 1)).unwrap_err();
        assert!(err.to_string().contains("need 2"), "{err}");
        let err = Release::from_torrent(&torrent(vec![file(&["a"], 0)], 16384, 0)).unwrap_err();
        assert!(err.to_string().contains("no data"));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests of the parser and validator: whatever the bytes, `from_torrent`
    //! returns (never panics, never loops), and what it accepts upholds the invariants.
    use super::*;
    use proptest::prelude::*;

    fn valid_torrent() -> Vec<u8> {
        let files = [("a", 40_000i64), ("b/c", 3), ("b/d", 70_000)];
        let mut out = b"d4:infod5:filesl".to_vec();
        for (p, len) in files {
            out.extend_from_slice(format!("d6:lengthi{len}e4:pathl").as_bytes());
            for c in p.split('/') {
                out.extend_from_slice(format!("{}:{}", c.len(), c).as_bytes());
            }
            out.extend_from_slice(b"ee");
        }
        let pieces = 110_003u64.div_ceil(16384) as usize;
        out.extend_from_slice(b"e4:name3:rel12:piece lengthi16384e6:pieces");
        out.extend_from_slice(format!("{}:", pieces * 20).as_bytes());
        out.extend(std::iter::repeat_n(7u8, pieces * 20));
        out.extend_from_slice(b"ee");
        out
    }

    fn check_invariants(r: &Release) {
        let mut seen = std::collections::HashSet::new();
        for e in r.visible_entries() {
            assert!(!e.path.is_empty());
            for c in &e.path {
                assert!(check_component(c).is_ok());
            }
            assert!(seen.insert(e.path.clone()));
        }
        assert_eq!(r.piece_count(), r.total_length.div_ceil(r.piece_length));
    }

    #[test]
    fn the_base_torrent_is_valid() {
        check_invariants(&Release::from_torrent(&valid_torrent()).unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = Release::from_torrent(&bytes) {
                check_invariants(&r);
            }
        }

        #[test]
        fn mutated_torrents_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut t = valid_torrent();
            for (i, b) in edits {
                let i = i.index(t.len());
                t[i] = b;
            }
            if truncate {
                t.truncate(cut.index(t.len()));
            }
            if let Ok(r) = Release::from_torrent(&t) {
                check_invariants(&r);
            }
        }
    }
}
