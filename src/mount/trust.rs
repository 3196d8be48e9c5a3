//! Which signed releases this host accepts: a release signed by a trusted key, whose
//! sequence number is not lower than the highest this host has accepted for that key and
//! release name (no rollback, unless asked for).
//!
//! The highest accepted numbers are kept in `<cache-dir>/trust.json`, read and written
//! under an exclusive lock on `<cache-dir>/trust.lock` (two mounts at once), written
//! through a synced temporary file and a rename, so a crash or kill -9 at any moment
//! leaves the old or the new record, never none.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::release::{PublicKey, Release, SignatureError, Signed};

const FILE: &str = "trust.json";
const LOCK: &str = "trust.lock";

/// Why a release was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(
        "{name} sequence {seq} (signed by {key}) is older than sequence {accepted} ({accepted_ih}), \
         which this host has already accepted: refusing a rollback; pass --allow-rollback to \
         mount an older release deliberately"
    )]
    Rollback {
        name: String,
        key: PublicKey,
        seq: u64,
        accepted: u64,
        accepted_ih: String,
    },
    #[error(
        "{name} sequence {seq} (signed by {key}) was accepted before for another release, \
         {accepted_ih}: two releases with one sequence number; pass --allow-rollback to mount \
         this one deliberately"
    )]
    Reused {
        name: String,
        key: PublicKey,
        seq: u64,
        accepted_ih: String,
    },
    #[error("the record of accepted releases {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the record of accepted releases {path} is damaged ({why}); move it aside to start a new one")]
    Damaged { path: PathBuf, why: String },
}

/// The highest sequence number accepted for one key and name, and the release it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub seq: u64,
    pub infohash: String,
}

/// `trust.json`: key (hex) -> release name -> the highest accepted.
type Record = BTreeMap<String, BTreeMap<String, Accepted>>;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub signed: Signed,
    /// What this host had accepted before for the key and name.
    pub previous: Option<Accepted>,
}

/// Checks `release` against the trusted keys and the sequence numbers this host has
/// accepted, without recording anything (the parent of a mount daemon).
pub fn check(
    cache_dir: &Path,
    release: &Release,
    trusted: &[PublicKey],
    allow_rollback: bool,
) -> Result<Verdict, TrustError> {
    let signed = release.check_signature(trusted)?;
    let record = read(&cache_dir.join(FILE))?;
    judge(&record, release, signed, allow_rollback)
}

/// Checks as [`check`] does and, if the release is accepted, records its sequence number
/// as the highest for its key and name (never lowering it), durably, before returning.
pub fn accept(
    cache_dir: &Path,
    release: &Release,
    trusted: &[PublicKey],
    allow_rollback: bool,
) -> Result<Verdict, TrustError> {
    let signed = release.check_signature(trusted)?;
    let store_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrustError::Store { path, source }
    };
    fs::create_dir_all(cache_dir).map_err(store_err(cache_dir))?;
    let lock_path = cache_dir.join(LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(store_err(&lock_path))?;
    super::cache::lock(&lock).map_err(store_err(&lock_path))?;
    let path = cache_dir.join(FILE);
    let mut record = read(&path)?;
    let verdict = judge(&record, release, signed, allow_rollback)?;
    if verdict
        .previous
        .as_ref()
        .is_some_and(|p| p.seq >= signed.seq)
    {
        return Ok(verdict); // the same release again, or a deliberate rollback
    }
    let accepted = Accepted {
        seq: signed.seq,
        infohash: release.info_hash.to_string(),
    };
    record
        .entry(signed.key.to_string())
        .or_default()
        .insert(release.name.clone(), accepted);
    write(&path, &record).map_err(store_err(&path))?;
    Ok(verdict)
}

fn judge(
    record: &Record,
    release: &Release,
    signed: Signed,
    allow_rollback: bool,
) -> Result<Verdict, TrustError> {
    let previous = record
        .get(&signed.key.to_string())
        .and_then(|m| m.get(&release.name))
        .cloned();
    if let Some(p) = &previous {
        let ih = release.info_hash.to_string();
        if !allow_rollback && p.seq > signed.seq {
            return Err(TrustError::Rollback {
                name: release.name.clone(),
                key: signed.key,
                seq: signed.seq,
                accepted: p.seq,
                accepted_ih: p.infohash.clone(),
            });
        }
        if !allow_rollback && p.seq == signed.seq && p.infohash != ih {
            return Err(TrustError::Reused {
                name: release.name.clone(),
                key: signed.key,
                seq: signed.seq,
                accepted_ih: p.infohash.clone(),
            });
        }
    }
    Ok(Verdict { signed, previous })
}

fn read(path: &Path) -> Result<Record, TrustError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TrustError::Damaged {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Record::new()),
        Err(source) => Err(TrustError::Store {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Temporary file, fsync, rename, fsync of the directory: the record survives a crash.
fn write(path: &Path, record: &Record) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(record).map_err(io::Error::other)?)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::SecretKey;

    /// Release "app" of one file of `size` bytes, signed by `key` at `seq`.
    fn signed(size: u64, key: &SecretKey, seq: u64) -> Release {
        let r = crate::release::test_release_named(&[("f", size)], 32 * 1024, Some("app"));
        Release::from_torrent(&r.signed_torrent(key, seq).unwrap()).unwrap()
    }

    #[test]
    fn sequence_numbers_only_go_up_unless_a_rollback_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::from_seed([3; 32]);
        let trusted = [k.public()];
        let (v5, v7, other7) = (
            signed(1000, &k, 5),
            signed(2000, &k, 7),
            signed(3000, &k, 7),
        );
        assert!(accept(dir.path(), &v5, &trusted, false)
            .unwrap()
            .previous
            .is_none());
        let v = accept(dir.path(), &v7, &trusted, false).unwrap();
        assert_eq!(v.previous.unwrap().seq, 5);
        // The same release again is fine; an older one or another with the same number is not.
        accept(dir.path(), &v7, &trusted, false).unwrap();
        let e = accept(dir.path(), &v5, &trusted, false).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Rollback {
                    seq: 5,
                    accepted: 7,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("--allow-rollback"));
        let e = check(dir.path(), &other7, &trusted, false).unwrap_err();
        assert!(matches!(e, TrustError::Reused { seq: 7, .. }), "{e}");
        // A deliberate rollback mounts, and does not lower the record.
        accept(dir.path(), &v5, &trusted, true).unwrap();
        assert!(check(dir.path(), &v5, &trusted, false).is_err());
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"seq\": 7"), "{text}");
    }

    #[test]
    fn a_damaged_record_is_named_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::from_seed([4; 32]);
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let r = signed(1000, &k, 1);
        let e = accept(dir.path(), &r, &[k.public()], false).unwrap_err();
        assert!(matches!(e, TrustError::Damaged { .. }), "{e}");
    }
}
