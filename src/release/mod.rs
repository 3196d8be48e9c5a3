//! Releases: making a torrent from a directory, parsing and validating one, checking a
//! directory against one. No network and no swarm engine here: only `std`, the bencode
//! crate and SHA-1.

mod bencode;
mod create;
mod hash;
mod metainfo;
mod model;
mod verify;

pub use create::{publish, PublishError, PublishOptions, Published, DEFAULT_PIECE_LENGTH};
pub(crate) use hash::open_nofollow;
pub use hash::{HashError, Progress};
pub use model::{Entry, EntryKind, InfoHash, Release, TorrentError};
pub use verify::{present_pieces, verify_dir, VerifyError};
