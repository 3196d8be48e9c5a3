//! The bencoded shape of a v1 torrent with the BEP 47 file fields, for `serde_bencode`.
//!
//! Field order in every struct is the byte order of the keys, as bencode requires for
//! dictionaries; optional fields are left out when absent, so that what we write is
//! canonical and the infohash depends only on the release.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MetaInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    #[serde(
        rename = "announce-list",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub announce_list: Option<Vec<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(
        rename = "created by",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub created_by: Option<String>,
    #[serde(
        rename = "creation date",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_date: Option<i64>,
    pub info: Info,
    /// BEP 38 outside the info dict (other tools may put it here; swarmfs writes it inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similar: Option<Vec<ByteBuf>>,
    /// swarmfs: the release's signature (`publish --sign`), outside the info dict so that
    /// signing keeps the infohash.
    #[serde(
        rename = "x-swarmfs-signature",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub signature: Option<SignatureDict>,
}

/// `x-swarmfs-signature`: who signed (an Ed25519 public key), the sequence number, and
/// the signature over the infohash, the sequence number and the name (`sign.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SignatureDict {
    pub key: ByteBuf,
    pub seq: i64,
    pub sig: ByteBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Info {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<i64>,
    pub name: String,
    #[serde(rename = "piece length")]
    pub piece_length: i64,
    pub pieces: ByteBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<i64>,
    /// BEP 38: infohashes of releases that share data with this one (the base of a
    /// delta publish). Inside the info dict, so magnet mounts see it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similar: Option<Vec<ByteBuf>>,
    /// swarmfs: a boot profile carried in the release (`publish --boot-profile`), as the
    /// profile's text. Inside the info dict, so magnet and infohash mounts have it too;
    /// other clients ignore the key.
    #[serde(
        rename = "x-swarmfs-boot",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_profile: Option<ByteBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<String>,
    pub length: i64,
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<ByteBuf>,
    #[serde(
        rename = "symlink path",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub symlink_path: Option<Vec<String>>,
}
