//! The thin FUSE adapter: the only module that knows `fuser`.
//!
//! It owns the kernel's side of a mount: translating callbacks, the table of open files
//! and their passthrough backing ids. Answers come from `fs` (what a request means), the
//! [`Store`] (cached bytes) and the swarm's [`Fetcher`] (missing pieces); it keeps no
//! release logic of its own and imports neither the control socket nor the daemon.
//!
//! Each callback translates kernel types to [`FsTree`] calls and back, and every error
//! goes through [`FsError::errno`]. Reads are the one place where sync meets async: a read
//! whose pieces are all in the cache is answered on the FUSE thread with a `pread`; a read
//! that needs the swarm hands its `ReplyData` (which is `Send`) to a tokio task and
//! returns at once, so a FUSE thread never waits on the network. The task waits at most
//! `read_timeout`, then answers EIO and logs the file and piece.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use tracing::{debug, debug_span, error, warn, Instrument};

use super::metrics;
use super::profile::{Recorder, Window};
use super::status::ReadStats;
use super::store::Store;
use super::table::FSNAME_PREFIX;
use crate::fs::readahead::Readahead;
use crate::fs::{Attr, FsError, FsTree, Kind, ReadPlan};
use crate::swarm::Fetcher;

/// Content is immutable: let the kernel cache names and attributes for a day.
const TTL: Duration = Duration::from_secs(86_400);

/// File handle of files opened in passthrough mode (the kernel reads the cache file).
const FH_PASSTHROUGH: u64 = 1;
const FH_CACHED: u64 = 2;

/// How an inode's files are open, and how many.
pub enum Opens {
    /// Complete when first opened: the kernel reads the cache file itself.
    Passthrough(Arc<BackingId>, u64),
    /// Reads go through the daemon (and the page cache).
    Cached(u64),
}

impl Opens {
    /// One more open, served the same way.
    fn join(&mut self) -> Opened {
        match self {
            Opens::Passthrough(id, n) => {
                *n += 1;
                Opened::Passthrough(id.clone())
            }
            Opens::Cached(n) => {
                *n += 1;
                Opened::Cached
            }
        }
    }
}

/// Backing ids of complete files are kept after their last close, so that opening one
/// again makes no system call: up to this many files.
const IDLE_BACKINGS: usize = 4096;

/// The files open now, and the complete files open no more whose backing ids are kept.
pub struct OpenFiles {
    open: HashMap<u64, Opens>,
    /// Least recently closed first.
    idle: lru::LruCache<u64, Arc<BackingId>>,
}

impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles {
            open: HashMap::new(),
            idle: lru::LruCache::new(IDLE_BACKINGS.try_into().expect("not zero")),
        }
    }
}

/// How one open is served.
enum Opened {
    Passthrough(Arc<BackingId>),
    Cached,
}

/// The mounted filesystem.
pub struct SwarmFs {
    pub tree: Arc<FsTree>,
    pub store: Arc<Store>,
    pub fetcher: Arc<Fetcher>,
    pub rt: tokio::runtime::Handle,
    pub read_timeout: Duration,
    pub stats: Arc<ReadStats>,
    /// Display paths by entry index, for messages.
    pub paths: Arc<Vec<String>>,
    /// Open files by inode, and how they are open.
    pub opens: Mutex<OpenFiles>,
    pub readahead: Readahead,
    /// Whether the kernel accepted passthrough at init.
    pub passthrough_enabled: std::sync::atomic::AtomicBool,
    /// Records the reads (`mount --record-profile`, or a mount learning its start-up):
    /// they must reach the daemon, so passthrough stays off while it records.
    pub recorder: Option<Arc<Recorder>>,
}

/// A mounted `SwarmFs`: the FUSE session runs on its own threads until the filesystem
/// is unmounted (from outside, or by dropping this).
pub struct Mounted(fuser::BackgroundSession);

impl Mounted {
    /// Whether the kernel ended the session (an external unmount).
    pub fn is_finished(&self) -> bool {
        self.0.guard.is_finished()
    }
}

impl SwarmFs {
    /// Mounts the filesystem at `mnt`, read-only, named `swarmfs:<name>` in the mount
    /// table, served by four FUSE threads.
    pub fn mount(self, mnt: &Path, name: &str, allow_other: bool) -> anyhow::Result<Mounted> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::FSName(format!("{FSNAME_PREFIX}{name}")),
            fuser::MountOption::Subtype("swarmfs".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::DefaultPermissions,
        ];
        if allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(4);
        let session = fuser::Session::new(self, mnt, &config).with_context(|| {
            format!(
                "cannot mount on {} (is /dev/fuse there and are you root?)",
                mnt.display()
            )
        })?;
        Ok(Mounted(
            session.spawn().context("cannot start the FUSE session")?,
        ))
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

impl SwarmFs {
    /// Counts one more open of a file that is open already, or of a complete file whose
    /// backing id is kept, and says how it is served.
    fn join_open(&self, ino: u64) -> Option<Opened> {
        let mut files = self.opens.lock().expect("not poisoned");
        if let Some(o) = files.open.get_mut(&ino) {
            return Some(o.join());
        }
        let id = files.idle.pop(&ino)?;
        files.open.insert(ino, Opens::Passthrough(id.clone(), 1));
        Some(Opened::Passthrough(id))
    }

    /// Counts the first open of a file: through `backing` if given, else through the
    /// daemon. If another open got there first, joins it and hands `backing` back.
    fn first_open(&self, ino: u64, backing: Option<BackingId>) -> (Opened, Option<BackingId>) {
        let mut files = self.opens.lock().expect("not poisoned");
        if let Some(o) = files.open.get_mut(&ino) {
            return (o.join(), backing);
        }
        match backing {
            Some(id) => {
                let id = Arc::new(id);
                files.open.insert(ino, Opens::Passthrough(id.clone(), 1));
                (Opened::Passthrough(id), None)
            }
            None => {
                files.open.insert(ino, Opens::Cached(1));
                (Opened::Cached, None)
            }
        }
    }

    /// The entry of a file that passthrough can serve: passthrough is on and every
    /// piece of the file is here.
    fn complete_entry(&self, ino: u64) -> Option<usize> {
        if !self.passthrough_enabled.load(Ordering::Relaxed) {
            return None;
        }
        // While the start-up is recorded its reads must reach the daemon.
        if self.recorder.as_ref().is_some_and(|r| !r.closed()) {
            return None;
        }
        let (entry, pieces) = self.tree.file_pieces(ino).ok()?;
        (!pieces.is_empty() && self.fetcher.pieces().first_missing(pieces).is_none())
            .then_some(entry)
    }

    fn read_cached(&self, plan: &ReadPlan) -> Result<Vec<u8>, FsError> {
        self.store
            .read(plan.entry, plan.offset, plan.len)
            .map_err(|source| FsError::Cache {
                path: self.paths[plan.entry].clone(),
                source,
            })
    }
}

impl Filesystem for SwarmFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // At 16 (the default) blocked reads stalled unrelated reads (DESIGN.md, decision 7).
        let _ = config.set_max_background(256);
        let _ = config.set_max_readahead(1 << 20);
        // Complete files are read by the kernel from the cache file itself (passthrough,
        // Linux 6.9+): native speed. Backing files may sit on overlayfs (stack depth 2).
        if self
            .recorder
            .as_ref()
            .is_none_or(|r| r.window() != Window::Mount)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough_enabled.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = debug_span!("lookup", parent = parent.0, ?name).entered();
        let r = name
            .to_str()
            .ok_or(FsError::NotFound)
            .and_then(|n| self.tree.lookup(parent.0, n));
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = debug_span!("getattr", ino = ino.0).entered();
        match self.tree.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = debug_span!("readlink", ino = ino.0).entered();
        match self.tree.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _s = debug_span!("open", ino = ino.0).entered();
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY
            || flags.0 & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0;
        if let Err(e) = self.tree.open(ino.0, write) {
            return reply.error(errno(&e));
        }
        // The kernel keeps an inode in one I/O mode at a time: an open in the other mode
        // fails with EIO. A file that completes while it is open through the daemon stays
        // so until its last such open is released.
        // No system call runs under the `opens` lock (opening the cache file, registering
        // or closing a backing id, replying): four FUSE threads open and release files at
        // once, and a lock held across a system call put them to sleep on each other.
        let opened = match self.join_open(ino.0) {
            Some(opened) => opened,
            None => {
                let backing = self.complete_entry(ino.0).and_then(|entry| {
                    std::fs::File::open(self.store.data_path(entry))
                        .and_then(|f| reply.open_backing(&f))
                        .inspect(|_| {
                            self.stats.backing_files.fetch_add(1, Ordering::Relaxed);
                        })
                        .map_err(|e| {
                            debug!(
                                "passthrough unavailable ({e}); serving reads through the daemon"
                            );
                            self.passthrough_enabled.store(false, Ordering::Relaxed);
                        })
                        .ok()
                });
                let (opened, unused) = self.first_open(ino.0, backing);
                drop(unused); // another open of the file came first
                opened
            }
        };
        match opened {
            Opened::Passthrough(id) => {
                self.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                reply.opened_passthrough(FileHandle(FH_PASSTHROUGH), FopenFlags::empty(), &id)
            }
            Opened::Cached => reply.opened(FileHandle(FH_CACHED), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = {
            let mut files = self.opens.lock().expect("not poisoned");
            let last = match files.open.get_mut(&ino.0) {
                Some(Opens::Passthrough(_, n)) if fh.0 == FH_PASSTHROUGH => {
                    *n -= 1;
                    *n == 0
                }
                Some(Opens::Cached(n)) if fh.0 == FH_CACHED => {
                    *n -= 1;
                    *n == 0
                }
                _ => false,
            };
            // A complete file's backing id is kept for its next open (the least recently
            // closed one beyond IDLE_BACKINGS is closed); a file read through the daemon
            // is forgotten, so that its next open can be a passthrough one.
            match last.then(|| files.open.remove(&ino.0)).flatten() {
                Some(Opens::Passthrough(id, _)) => files.idle.push(ino.0, id).map(|(_, id)| id),
                _ => None,
            }
        };
        reply.ok();
        drop(closed); // closes a backing id, if one goes, outside the lock
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let span = debug_span!("read", ino = ino.0, offset, size);
        let plan = match span.in_scope(|| self.tree.read_plan(ino.0, offset, size)) {
            Ok(p) => p,
            Err(e) => return reply.error(errno(&e)),
        };
        let pieces = self.fetcher.pieces();
        if plan.len == 0 {
            return reply.data(&[]);
        }
        // Held until the read is answered: a learning recording ends only when no read
        // is in flight.
        let recording = self
            .recorder
            .as_ref()
            .map(|r| r.record(plan.entry, plan.offset, plan.len));
        // A read that needs the swarm claims its pieces before read-ahead claims the next
        // ones: woken requesters then ask for the read's pieces first (claimed only in
        // the task below, they were asked for behind a whole read-ahead window).
        let claim = pieces
            .first_missing(plan.pieces.clone())
            .map(|_| self.fetcher.claim(plan.pieces.clone()));
        // A sequential reader's next pieces are asked for now, hit or miss; a file read
        // in pages is fetched whole soon.
        let access = self.readahead.on_read(ino.0, plan.offset, plan.len);
        self.fetcher.fetch_paged(plan.entry, access);
        let window = access.window;
        if window > 0 {
            let ahead = self
                .tree
                .ahead_pieces(ino.0, plan.offset + plan.len, window, &plan.pieces);
            if pieces.first_missing(ahead.clone()).is_some() {
                self.fetcher.fetch_ahead(ahead);
            }
        }
        let Some(claim) = claim else {
            self.stats.cached_reads.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            return match span.in_scope(|| self.read_cached(&plan)) {
                Ok(b) => {
                    metrics::read_latency("cache", started.elapsed());
                    reply.data(&b)
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    error!("{e}");
                    reply.error(errno(&e))
                }
            };
        };
        // Needs the swarm: answer from a task, never block this thread.
        let fetcher = self.fetcher.clone();
        let store = self.store.clone();
        let stats = self.stats.clone();
        let paths = self.paths.clone();
        let timeout = self.read_timeout;
        self.rt.spawn(
            async move {
                let _recording = recording;
                let started = Instant::now();
                let path = &paths[plan.entry];
                let r = tokio::time::timeout(
                    timeout,
                    fetcher.fetch(plan.entry, plan.offset, plan.pieces.clone(), claim),
                )
                .await;
                let r = match r {
                    Err(_) => Err(FsError::Timeout {
                        path: path.clone(),
                        piece: fetcher
                            .pieces()
                            .first_missing(plan.pieces.clone())
                            .unwrap_or(plan.pieces.start),
                        secs: timeout.as_secs(),
                    }),
                    Ok(Err(e)) => Err(FsError::Swarm {
                        path: path.clone(),
                        message: e.to_string(),
                    }),
                    Ok(Ok(())) => store
                        .read(plan.entry, plan.offset, plan.len)
                        .map_err(|source| FsError::Cache {
                            path: path.clone(),
                            source,
                        }),
                };
                match r {
                    Ok(b) => {
                        metrics::read_latency("swarm", started.elapsed());
                        stats.swarm_reads.fetch_add(1, Ordering::Relaxed);
                        stats
                            .swarm_read_bytes
                            .fetch_add(b.len() as u64, Ordering::Relaxed);
                        tracing::debug!(
                            ms = started.elapsed().as_millis() as u64,
                            "read from swarm"
                        );
                        reply.data(&b)
                    }
                    Err(e) => {
                        if matches!(e, FsError::Timeout { .. }) {
                            stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        warn!("read failed: {e}");
                        reply.error(errno(&e))
                    }
                }
            }
            .instrument(span),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.attr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok(_) => reply.error(Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _s = debug_span!("readdir", ino = ino.0, offset).entered();
        match self.tree.readdir(ino.0) {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = match kind {
                        Kind::Dir => FileType::Directory,
                        Kind::File => FileType::RegularFile,
                        Kind::Symlink => FileType::Symlink,
                    };
                    if reply.add(INodeNo(*child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, files) = self.tree.totals();
        reply.statfs(bytes.div_ceil(4096), 0, 0, files, 0, 4096, 255, 4096);
    }
}
