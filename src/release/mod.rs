//! Releases, the bottom layer: making a torrent from a directory, parsing and validating
//! one, checking a directory against one.
//!
//! It owns the torrent format (bencode, the BEP 47 fields, our deterministic layout) and
//! [`Release`], the validated form everything above takes. It imports no other module of
//! the crate, does no network I/O, and reads release directories without ever writing
//! to them: only `std`, the bencode crate, SHA-1 and rayon.

mod bencode;
mod create;
mod hash;
mod metainfo;
mod model;
pub mod reuse;
mod sign;
mod verify;

pub use create::{publish, Delta, PublishError, PublishOptions, Published, REPACK_HOLE_FRACTION};
pub(crate) use hash::open_nofollow;
pub use hash::{HashError, Progress};
pub use model::{
    Entry, EntryKind, InfoHash, Release, ReleaseSignature, TorrentError, MAX_BOOT_PROFILE,
    MIN_PIECE_LENGTH,
};
pub use sign::{PublicKey, SecretKey, SignatureError, Signed};
pub use verify::{present_pieces, verify_dir, VerifyError};

/// A release published from files of the given sizes (each byte 7), for unit tests.
#[cfg(test)]
pub(crate) fn test_release(files: &[(&str, u64)], piece: u64) -> Release {
    test_release_named(files, piece, None)
}

/// As [`test_release`], named `name` (default: the temporary directory's name).
#[cfg(test)]
pub(crate) fn test_release_named(files: &[(&str, u64)], piece: u64, name: Option<&str>) -> Release {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![7u8; *len as usize]).unwrap();
    }
    let opts = PublishOptions {
        name: name.map(str::to_string),
        piece_length: piece,
        trackers: vec![],
        comment: None,
        creation_date: None,
        private: false,
        base: None,
        boot_profile: None,
    };
    publish(dir.path(), &opts, &|_| {}).unwrap().release
}
