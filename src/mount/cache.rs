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

use std::sync::Arc;

use crate::release::reuse::Local;
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
    /// Its metadata, when it parses.
    #[serde(skip)]
    pub release: Option<Arc<Release>>,
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

/// Every release in `cache_dir`, least recently used first, with the room each takes.
pub fn list(cache_dir: &Path) -> Result<Vec<Cached>, CacheError> {
    let mut entries = scan(cache_dir)?;
    for c in &mut entries {
        c.bytes = disk_bytes(&c.dir);
    }
    Ok(entries)
}

/// The releases of `entries` that may give pieces to `target`, best first: those it
/// names as `similar` (its base), then the most recently mounted.
pub fn sources(entries: &[Cached], target: &Release) -> Vec<Local> {
    let mut found: Vec<(bool, u64, Local)> = entries
        .iter()
        .filter_map(|c| {
            let r = c.release.as_ref()?;
            (r.info_hash != target.info_hash).then(|| {
                (
                    target.similar.contains(&r.info_hash),
                    c.last_used,
                    Local {
                        release: r.clone(),
                        data_dir: c.dir.join("data"),
                    },
                )
            })
        })
        .collect();
    found.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    found.into_iter().map(|(_, _, l)| l).collect()
}

/// Every release in `cache_dir`, least recently used first, without the walk of its
/// files (`bytes` is 0).
pub fn scan(cache_dir: &Path) -> Result<Vec<Cached>, CacheError> {
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
            .and_then(|b| Release::from_torrent(&b).ok())
            .filter(|r| r.info_hash == ih)
            .map(Arc::new);
        let last_used = fs::metadata(dir.join("lock"))
            .or_else(|_| fs::metadata(dir.join("torrent")))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(Cached {
            infohash: ih.to_string(),
            name: release.as_ref().map(|r| r.name.clone()),
            bytes: 0,
            total_bytes: release.as_ref().map(|r| r.total_length),
            last_used,
            mounted: is_locked(&dir),
            release,
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
    remove_entry(cache_dir, &entry)?;
    Ok(entry.bytes)
}

/// Evicts releases of `entries` (from [`scan`] or [`list`] of `cache_dir`), least
/// recently used first, until the cache fits `budget` with `incoming` more bytes to come
/// (what a mount starting now will still download). Never a mounted release, nor one in
/// `protect`. Returns what it removed; what cannot be removed is left, and the caller
/// says so. Only a byte budget walks the releases' files to size them; the default
/// asks the filesystem, before and after each removal.
pub fn evict(
    cache_dir: &Path,
    entries: &[Cached],
    budget: Budget,
    incoming: u64,
    protect: &[InfoHash],
) -> Result<Vec<Cached>, CacheError> {
    clear_leftovers(cache_dir);
    let sizes: Vec<u64> = match budget {
        Budget::Bytes(_) => entries.iter().map(|c| disk_bytes(&c.dir)).collect(),
        Budget::KeepFree(_) => vec![0; entries.len()],
    };
    let mut used: u64 = sizes.iter().sum();
    let over = |used: u64| -> bool {
        match budget {
            Budget::Bytes(max) => used + incoming > max,
            Budget::KeepFree(frac) => match crate::swarm::disk_space(cache_dir) {
                Ok((free, size)) => (free as f64) - (incoming as f64) < frac * size as f64,
                Err(_) => false,
            },
        }
    };
    let mut removed = Vec::new();
    for (c, &size) in entries.iter().zip(&sizes) {
        if !over(used) {
            break;
        }
        let protected = protect.iter().any(|p| p.to_string() == c.infohash);
        if c.mounted || protected {
            continue;
        }
        match remove_entry(cache_dir, c) {
            Ok(()) => {
                used -= size.min(used);
                removed.push(Cached {
                    bytes: size,
                    ..c.clone()
                });
            }
            // Mounted in the meantime: leave it.
            Err(CacheError::Mounted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn remove_entry(cache_dir: &Path, c: &Cached) -> Result<(), CacheError> {
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
    fs::remove_dir_all(&gone).map_err(|source| CacheError::Remove { path: gone, source })
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
    flock(f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
}

/// Takes an exclusive lock on `f`, waiting for it (released when `f` is closed).
pub(crate) fn lock(f: &File) -> io::Result<()> {
    flock(f, libc::LOCK_EX)
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an fd we own.
    match unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), op) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
