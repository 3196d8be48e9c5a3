//! The cache directory as a whole: which releases it holds, how much room each takes,
//! when each was last mounted, and eviction within a byte budget.
//!
//! A host that deploys every day would otherwise keep every release for ever. Releases
//! are evicted least recently mounted first, and never one that is mounted (its
//! [`Store`](super::store::Store) holds an exclusive lock on `<release>/lock`; eviction
//! takes the same lock, so a release cannot be mounted while it is removed) nor one the
//! caller protects (the release being mounted, and the release its pieces are rebuilt
//! from). A mount copies what it rebuilds into its own files, so evicting the release it
//! came from breaks nothing. Removal renames the folder out of the way first, so a crash
//! mid-removal leaves no half release behind (the next eviction clears the leftover).
//!
//! It owns nothing but the layout of the cache directory's top level, which the store
//! defines; it never touches a release folder's files but to remove the whole folder.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::release::{InfoHash, Release};

/// One release kept in the cache directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cached {
    pub infohash: String,
    /// The release's name, when its metadata parses.
    pub name: Option<String>,
    pub dir: PathBuf,
    /// Disk space its files take (allocated blocks: sparse holes do not count).
    pub bytes: u64,
    /// Its full size, once every piece is here.
    pub total_bytes: Option<u64>,
    /// When a mount last opened it (seconds since the epoch).
    pub last_used: u64,
    /// A mount holds it now.
    pub mounted: bool,
}

/// How much the cache directory may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most this many bytes in all (`--cache-size`).
    Bytes(u64),
    /// Keep this fraction of the cache's filesystem free (the default: the cache never
    /// fills its filesystem).
    KeepFree(f64),
}

/// The default: a tenth of the cache's filesystem stays free.
pub const DEFAULT_BUDGET: Budget = Budget::KeepFree(0.10);

/// Why the cache could not be listed or changed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read the cache directory {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0} is not in the cache")]
    NotCached(String),
    #[error("{infohash} ({name}) is mounted; unmount it first (swarmfs status lists the mounts)")]
    Mounted { infohash: String, name: String },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// Every release in `cache_dir`, least recently used first.
pub fn list(cache_dir: &Path) -> Result<Vec<Cached>, CacheError> {
    let rd = match fs::read_dir(cache_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Read {
                path: cache_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for d in rd.flatten() {
        let Some(ih) = d.file_name().to_str().and_then(InfoHash::from_hex) else {
            continue;
        };
        let dir = d.path();
        if !dir.is_dir() {
            continue;
        }
        let release = fs::read(dir.join("torrent"))
            .ok()
            .and_then(|b| Release::from_torrent(&b).ok());
        let last_used = fs::metadata(dir.join("lock"))
            .or_else(|_| fs::metadata(dir.join("torrent")))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(Cached {
            infohash: ih.to_string(),
            name: release.as_ref().map(|r| r.name.clone()),
            bytes: disk_bytes(&dir),
            total_bytes: release.as_ref().map(|r| r.total_length),
            last_used,
            mounted: is_locked(&dir),
            dir,
        });
    }
    out.sort_by(|a, b| (a.last_used, &a.infohash).cmp(&(b.last_used, &b.infohash)));
    Ok(out)
}

/// Removes the release `infohash` from the cache; refuses a mounted one.
pub fn remove(cache_dir: &Path, infohash: &str) -> Result<u64, CacheError> {
    let entry = list(cache_dir)?
        .into_iter()
        .find(|c| c.infohash.eq_ignore_ascii_case(infohash))
        .ok_or_else(|| CacheError::NotCached(infohash.to_string()))?;
    remove_entry(cache_dir, &entry)
}

/// Evicts releases, least recently used first, until the cache fits `budget` with
/// `incoming` more bytes to come (what a mount starting now will still download). Never
/// a mounted release, nor one in `protect`. Returns what it removed; what cannot be
/// removed is left, and the caller says so.
pub fn evict(
    cache_dir: &Path,
    budget: Budget,
    incoming: u64,
    protect: &[InfoHash],
) -> Result<Vec<Cached>, CacheError> {
    clear_leftovers(cache_dir);
    let entries = list(cache_dir)?;
    let mut used: u64 = entries.iter().map(|c| c.bytes).sum();
    let over = |used: u64| -> bool {
        match budget {
            Budget::Bytes(max) => used + incoming > max,
            Budget::KeepFree(frac) => {
                let Ok((free, size)) = crate::swarm::disk_space(cache_dir) else {
                    return false;
                };
                // What is removed becomes free; what comes in takes from it.
                let freed = entries.iter().map(|c| c.bytes).sum::<u64>() - used;
                ((free + freed) as f64) - (incoming as f64) < frac * size as f64
            }
        }
    };
    let mut removed = Vec::new();
    for c in &entries {
        if !over(used) {
            break;
        }
        let protected = protect.iter().any(|p| p.to_string() == c.infohash);
        if c.mounted || protected {
            continue;
        }
        match remove_entry(cache_dir, c) {
            Ok(freed) => {
                used -= freed.min(used);
                removed.push(c.clone());
            }
            // Mounted in the meantime: leave it.
            Err(CacheError::Mounted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn remove_entry(cache_dir: &Path, c: &Cached) -> Result<u64, CacheError> {
    let name = c.name.clone().unwrap_or_default();
    // Take the release's lock, as a mount does: none can start on it while it goes.
    let lock = match File::options()
        .write(true)
        .create(false)
        .open(c.dir.join("lock"))
    {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(CacheError::Remove {
                path: c.dir.clone(),
                source,
            })
        }
    };
    if let Some(f) = &lock {
        if !try_lock(f) {
            return Err(CacheError::Mounted {
                infohash: c.infohash.clone(),
                name,
            });
        }
    }
    let gone = cache_dir.join(format!(".evicting-{}-{}", c.infohash, std::process::id()));
    fs::rename(&c.dir, &gone).map_err(|source| CacheError::Remove {
        path: c.dir.clone(),
        source,
    })?;
    drop(lock);
    fs::remove_dir_all(&gone).map_err(|source| CacheError::Remove { path: gone, source })?;
    Ok(c.bytes)
}

/// Removes folders a crash left mid-removal.
fn clear_leftovers(cache_dir: &Path) {
    if let Ok(rd) = fs::read_dir(cache_dir) {
        for d in rd.flatten() {
            if d.file_name().to_string_lossy().starts_with(".evicting-") {
                let _ = fs::remove_dir_all(d.path());
            }
        }
    }
}

/// Allocated bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

/// Whether a mount holds the release folder's lock.
fn is_locked(dir: &Path) -> bool {
    match File::options().write(true).open(dir.join("lock")) {
        Ok(f) => !try_lock(&f),
        Err(_) => false,
    }
}

/// Takes an exclusive lock on `f` without waiting (released when `f` is closed).
pub(crate) fn try_lock(f: &File) -> bool {
    // SAFETY: flock on an fd we own.
    unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(f),
            libc::LOCK_EX | libc::LOCK_NB,
        ) == 0
    }
}
