//! Signed releases: an Ed25519 signature over a release's infohash, name and sequence
//! number, carried in the torrent file outside the info dict (`x-swarmfs-signature`), so
//! that signing never changes the infohash and other clients ignore it.
//!
//! The signed message is `swarmfs release v1\0`, the 20 bytes of the infohash, the
//! sequence number (8 bytes, big-endian) and the name's bytes. The infohash covers every
//! byte of the info dict (names, sizes, piece hashes), so a valid signature vouches for
//! every byte a mount will serve. Which keys a host trusts, and which sequence numbers it
//! has accepted, is the mount layer's (`mount::trust`).

use ed25519_dalek::Signer;
use serde_bytes::ByteBuf;

use super::metainfo::{MetaInfo, SignatureDict};
use super::model::{InfoHash, Release, ReleaseSignature};

const CONTEXT: &[u8] = b"swarmfs release v1\0";
const SECRET_TAG: &str = "swarmfs-ed25519-secret";
const PUBLIC_TAG: &str = "swarmfs-ed25519";

/// An Ed25519 public key: who signed a release, or a key a host trusts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PublicKey {
    /// A public key in the text `keygen` writes (`swarmfs-ed25519 <64 hex>`), or the 64
    /// hex digits alone.
    pub fn parse(text: &str) -> Option<PublicKey> {
        let t = text.trim();
        let hex_part = t.strip_prefix(PUBLIC_TAG).map_or(t, str::trim);
        let bytes = hex::decode(hex_part).ok()?;
        let key = PublicKey(bytes.try_into().ok()?);
        ed25519_dalek::VerifyingKey::from_bytes(&key.0).ok()?;
        Some(key)
    }

    /// The text of a public key file.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {self}\n")
    }
}

/// A secret signing key (`swarmfs keygen`).
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// A key from 32 random bytes (the caller's: the OS's random source).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A secret key in the text `keygen` writes (`swarmfs-ed25519-secret <64 hex>`).
    pub fn parse(text: &str) -> Option<SecretKey> {
        let hex_part = text.trim().strip_prefix(SECRET_TAG)?.trim();
        let seed: [u8; 32] = hex::decode(hex_part).ok()?.try_into().ok()?;
        Some(SecretKey::from_seed(seed))
    }

    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", hex::encode(self.0.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }
}

/// Why a release's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the release is not signed (the torrent has no x-swarmfs-signature)")]
    Unsigned,
    #[error("the release's signature is malformed: {0}")]
    Malformed(&'static str),
    #[error("the release is signed by {0}, which is not a trusted key")]
    Untrusted(PublicKey),
    #[error(
        "the signature by {0} does not match the release (its infohash, name or sequence \
         number was changed after signing)"
    )]
    Invalid(PublicKey),
}

/// A release whose signature checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub key: PublicKey,
    pub seq: u64,
}

fn message(info_hash: &InfoHash, name: &str, seq: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 28 + name.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&info_hash.0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m
}

impl ReleaseSignature {
    /// The signer and sequence number, as claimed (not checked): for `info`.
    pub fn claimed(&self) -> Option<(PublicKey, u64)> {
        let key = PublicKey(self.key.as_slice().try_into().ok()?);
        Some((key, u64::try_from(self.seq).ok()?))
    }
}

impl Release {
    /// Checks the release's signature against the trusted keys.
    pub fn check_signature(&self, trusted: &[PublicKey]) -> Result<Signed, SignatureError> {
        let s = self.signature.as_ref().ok_or(SignatureError::Unsigned)?;
        let key = PublicKey(
            s.key
                .as_slice()
                .try_into()
                .map_err(|_| SignatureError::Malformed("the key is not 32 bytes"))?,
        );
        let seq = u64::try_from(s.seq)
            .map_err(|_| SignatureError::Malformed("the sequence number is negative"))?;
        let sig: [u8; 64] = s
            .sig
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::Malformed("the signature is not 64 bytes"))?;
        if !trusted.contains(&key) {
            return Err(SignatureError::Untrusted(key));
        }
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.0)
            .map_err(|_| SignatureError::Malformed("the key is not an Ed25519 point"))?;
        vk.verify_strict(
            &message(&self.info_hash, &self.name, seq),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .map_err(|_| SignatureError::Invalid(key))?;
        Ok(Signed { key, seq })
    }

    /// The torrent file with this release signed by `key` at sequence number `seq` (a
    /// signature already there is replaced). The info dict's bytes, and so the
    /// infohash, are unchanged.
    pub fn signed_torrent(&self, key: &SecretKey, seq: u64) -> Result<Vec<u8>, String> {
        let seq_i =
            i64::try_from(seq).map_err(|_| format!("sequence number {seq} is too large"))?;
        let mut meta: MetaInfo =
            serde_bencode::from_bytes(&self.torrent_bytes).map_err(|e| e.to_string())?;
        let sig = key.0.sign(&message(&self.info_hash, &self.name, seq));
        meta.signature = Some(SignatureDict {
            key: ByteBuf::from(key.public().0.to_vec()),
            seq: seq_i,
            sig: ByteBuf::from(sig.to_bytes().to_vec()),
        });
        let bytes = serde_bencode::to_bytes(&meta).map_err(|e| e.to_string())?;
        let again = Release::from_torrent(&bytes).map_err(|e| e.to_string())?;
        if again.info_hash != self.info_hash {
            return Err(
                "the torrent is not in canonical form: signing it would change its infohash".into(),
            );
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_seed([b; 32])
    }

    #[test]
    fn a_signed_release_checks_against_its_key_only() {
        let r = crate::release::test_release(&[("a", 100_000), ("b/c", 10)], 32 * 1024);
        assert_eq!(
            r.check_signature(&[key(1).public()]),
            Err(SignatureError::Unsigned)
        );
        let bytes = r.signed_torrent(&key(1), 7).unwrap();
        let s = Release::from_torrent(&bytes).unwrap();
        assert_eq!(s.info_hash, r.info_hash, "signing keeps the infohash");
        assert_eq!(
            s.check_signature(&[key(2).public(), key(1).public()]),
            Ok(Signed {
                key: key(1).public(),
                seq: 7
            })
        );
        assert_eq!(
            s.check_signature(&[key(2).public()]),
            Err(SignatureError::Untrusted(key(1).public()))
        );
        // Re-signing replaces the signature.
        let again = Release::from_torrent(&s.signed_torrent(&key(2), 8).unwrap()).unwrap();
        assert_eq!(again.check_signature(&[key(2).public()]).unwrap().seq, 8);
        assert!(again.check_signature(&[key(1).public()]).is_err());
    }

    #[test]
    fn a_changed_sequence_name_or_infohash_breaks_the_signature() {
        let r = crate::release::test_release(&[("a", 100_000)], 32 * 1024);
        let bytes = r.signed_torrent(&key(1), 7).unwrap();
        let trusted = [key(1).public()];
        // The sequence number: "3:seqi7e" -> "3:seqi9e".
        let pos = bytes.windows(8).position(|w| w == b"3:seqi7e").unwrap();
        let mut t = bytes.clone();
        t[pos + 6] = b'9';
        let tampered = Release::from_torrent(&t).unwrap();
        assert_eq!(
            tampered.check_signature(&trusted),
            Err(SignatureError::Invalid(key(1).public()))
        );
        // A byte of the info dict (a piece hash): another infohash.
        let pos = bytes.windows(6).position(|w| w == b"pieces").unwrap();
        let mut t = bytes.clone();
        let at = pos + 6 + 4; // past "pieces20:" and into the hash
        t[at] ^= 1;
        let tampered = Release::from_torrent(&t).unwrap();
        assert_ne!(tampered.info_hash, r.info_hash);
        assert_eq!(
            tampered.check_signature(&trusted),
            Err(SignatureError::Invalid(key(1).public()))
        );
    }

    #[test]
    fn key_texts_round_trip() {
        let k = key(9);
        let again = SecretKey::parse(&k.to_text()).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(PublicKey::parse(&k.public().to_text()), Some(k.public()));
        assert_eq!(PublicKey::parse(&k.public().to_string()), Some(k.public()));
        assert_eq!(PublicKey::parse("swarmfs-ed25519 abcd"), None);
        assert!(SecretKey::parse(&k.public().to_text()).is_none());
    }
}
