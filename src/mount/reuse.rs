//! Rebuilding a mounted release's pieces from the other releases in the same cache
//! directory (a delta deploy): the host that holds release N fetches only what N+1
//! changed.
//!
//! At mount, before and while the mount joins the swarm, every missing piece that
//! [`Plan`] finds local candidates for is put in the deferred set (the picker asks no
//! peer for it), then built on every core, checked against the mounted release's own
//! piece SHA-1, written into its cache, marked in the `PieceMap` (reads are served from
//! it at once) and handed to the swarm engine (peers are told: the host is a partial seed
//! from its first second). A piece that no candidate builds leaves the deferred set and
//! is fetched from the swarm like any other; if it holds files found by content (a
//! changed or new file packed beside unchanged ones), those bytes are written first and
//! only the rest is fetched (`Fetcher::add_partial_piece`, once the engine is live).
//! Pieces reads wait on are built first, then a boot profile's (given at start, or
//! received from a peer since); a read never waits for the swarm on a piece being
//! rebuilt.
//!
//! It owns the worker threads and the reuse counters; it writes only through
//! [`Store::write_piece`] and [`Store::write_ranges`], and it imports the swarm only to
//! hand pieces over.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use sha1::{Digest, Sha1};
use tracing::{info, warn};

use super::store::Store;
use crate::fs::PieceSet;
use crate::release::reuse::{Plan, Reader};
use crate::swarm::Fetcher;

/// A rebuild running (or done) for one mount.
pub struct Reuse {
    deferred: Arc<PieceSet>,
    fetcher: OnceLock<Arc<Fetcher>>,
    pieces_reused: AtomicU64,
    bytes_reused: AtomicU64,
    pieces_failed: AtomicU64,
    /// Of those, pieces whose unchanged files' bytes were written here (only the rest is
    /// asked of peers), and those waiting for the swarm engine to go live to be handed
    /// over (they stay deferred until then).
    pieces_partial: AtomicU64,
    pending_partial: Mutex<Vec<(u64, Vec<Range<u32>>)>>,
    planned: u64,
    running: AtomicBool,
    started: Instant,
    /// Milliseconds from start to the end of the rebuild (0 while it runs).
    took_ms: AtomicU64,
    /// Next place in a boot profile received from a peer (rebuilt before the rest).
    boot_cursor: AtomicUsize,
}

/// What a rebuild has done, for `status` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReuseStats {
    /// Pieces with local candidates (or some bytes known, see `Plan::read_known`) when
    /// the mount started.
    pub planned: u64,
    pub pieces_reused: u64,
    pub bytes_reused: u64,
    /// Planned pieces no candidate built (left to the swarm).
    pub pieces_failed: u64,
    /// Of those, pieces whose unchanged files' bytes (counted in `bytes_reused`) were
    /// written here: only their changed bytes came from the swarm.
    pub pieces_partial: u64,
    pub running: bool,
    /// How long the rebuild took, once done.
    pub seconds: Option<f64>,
}

impl Reuse {
    /// Starts rebuilding the pieces of `store`'s release that `plan` has candidates for
    /// and the cache lacks, `first` first (a boot profile's pieces). Returns at once; the
    /// caller hands the deferred set to the swarm's picker and then [`Reuse::attach`]es
    /// the fetcher. `None` when there is nothing to rebuild.
    pub fn start(plan: Plan, store: Arc<Store>, first: &[u32]) -> Option<Arc<Reuse>> {
        let pieces = store.pieces().clone();
        let n = pieces.total();
        let deferred = Arc::new(PieceSet::new(n));
        let mut order: Vec<u64> = Vec::new();
        for p in first.iter().map(|&p| p as u64).chain(0..n) {
            if !pieces.has(p)
                && !deferred.has(p)
                && (!plan.candidates(p).is_empty() || plan.has_known(p))
            {
                deferred.insert(p);
                order.push(p);
            }
        }
        if order.is_empty() {
            return None;
        }
        let reuse = Arc::new(Reuse {
            deferred,
            fetcher: OnceLock::new(),
            pieces_reused: AtomicU64::new(0),
            bytes_reused: AtomicU64::new(0),
            pieces_failed: AtomicU64::new(0),
            pieces_partial: AtomicU64::new(0),
            pending_partial: Mutex::new(Vec::new()),
            planned: order.len() as u64,
            running: AtomicBool::new(true),
            started: Instant::now(),
            took_ms: AtomicU64::new(0),
            boot_cursor: AtomicUsize::new(0),
        });
        let s = plan.stats();
        info!(
            pieces = order.len(),
            files_by_sha1 = s.files_by_sha1,
            files_by_path = s.files_by_path,
            "rebuilding pieces from releases already in the cache"
        );
        let r = reuse.clone();
        std::thread::Builder::new()
            .name("swarmfs-reuse".into())
            .spawn(move || r.run(plan, store, order))
            .expect("cannot start a thread");
        Some(reuse)
    }

    /// The pieces being rebuilt: no peer is asked for them meanwhile.
    pub fn deferred(&self) -> Arc<PieceSet> {
        self.deferred.clone()
    }

    /// Hands rebuilt pieces to `fetcher` from now on (those before are handed over when
    /// its engine has checked the cache), and takes the pieces its reads wait on first.
    pub fn attach(&self, fetcher: Arc<Fetcher>) {
        let _ = self.fetcher.set(fetcher);
    }

    pub fn stats(&self) -> ReuseStats {
        let ms = self.took_ms.load(Ordering::Acquire);
        ReuseStats {
            planned: self.planned,
            pieces_reused: self.pieces_reused.load(Ordering::Relaxed),
            bytes_reused: self.bytes_reused.load(Ordering::Relaxed),
            pieces_failed: self.pieces_failed.load(Ordering::Relaxed),
            pieces_partial: self.pieces_partial.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Acquire),
            seconds: (ms > 0).then(|| ms as f64 / 1000.0),
        }
    }

    fn run(self: Arc<Self>, plan: Plan, store: Arc<Store>, order: Vec<u64>) {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cursor = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let claimed = PieceSet::new(store.pieces().total());
        let write_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    self.work(
                        &plan,
                        &store,
                        &order,
                        &cursor,
                        &claimed,
                        &stop,
                        &write_error,
                    )
                });
            }
        });
        self.hand_over_partial();
        // Whatever was not tried (a write failed) goes back to the swarm.
        for &p in &order {
            self.deferred.remove(p);
        }
        if let Some(f) = self.fetcher.get() {
            f.wake_requesters();
        }
        let took = self.started.elapsed();
        self.took_ms
            .store(took.as_millis().max(1) as u64, Ordering::Release);
        self.running.store(false, Ordering::Release);
        let st = self.stats();
        if let Some(e) = write_error.into_inner().expect("not poisoned") {
            warn!("rebuilding from local releases stopped: cannot write the cache: {e}; the rest comes from the swarm");
        }
        info!(
            pieces = st.pieces_reused,
            bytes = st.bytes_reused,
            from_swarm = st.pieces_failed,
            partial = st.pieces_partial,
            seconds = format!("{:.2}", took.as_secs_f64()),
            mb_per_s = format!(
                "{:.0}",
                st.bytes_reused as f64 / 1e6 / took.as_secs_f64().max(1e-6)
            ),
            "rebuilt pieces from releases already in the cache"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn work(
        &self,
        plan: &Plan,
        store: &Store,
        order: &[u64],
        cursor: &AtomicUsize,
        claimed: &PieceSet,
        stop: &AtomicBool,
        write_error: &Mutex<Option<std::io::Error>>,
    ) {
        lower_priority();
        let release = plan.target();
        let pieces = store.pieces();
        let mut reader = Reader::default();
        let mut buf = vec![0u8; release.piece_length as usize];
        let mut waited = Vec::new();
        while !stop.load(Ordering::Acquire) {
            // Pieces reads wait on first, then the order.
            waited.clear();
            if let Some(f) = self.fetcher.get() {
                f.waited_deferred(&mut waited);
            }
            // Then a boot profile received from a peer after the rebuild began.
            let received = self.fetcher.get().and_then(|f| f.received_profile());
            let from_profile = || {
                let (_, boot) = received?;
                loop {
                    let &p = boot.get(self.boot_cursor.fetch_add(1, Ordering::AcqRel))?;
                    if self.deferred.has(p as u64) {
                        return Some(p as u64);
                    }
                }
            };
            // Partly rebuilt pieces kept for the engine go to it once it is live.
            self.give_pending_partial();
            // (A piece claimed already is being built, or waits for that hand-over.)
            let p = match waited
                .iter()
                .find(|&&p| self.deferred.has(p) && !claimed.has(p))
            {
                Some(&p) => p,
                None => match from_profile() {
                    Some(p) => p,
                    None => match order.get(cursor.fetch_add(1, Ordering::AcqRel)) {
                        Some(&p) => p,
                        None => return,
                    },
                },
            };
            // Taken by one worker alone.
            if !claimed.insert(p) {
                continue;
            }
            if !self.deferred.has(p) || pieces.has(p) {
                self.deferred.remove(p);
                continue;
            }
            let len = release
                .piece_length
                .min(release.total_length - p * release.piece_length)
                as usize;
            let buf = &mut buf[..len];
            let want = &release.piece_hashes[p as usize];
            let built = plan.candidates(p).into_iter().any(|c| {
                plan.read(p, c, buf, &mut reader).is_ok()
                    && <[u8; 20]>::from(Sha1::digest(&*buf)) == *want
            });
            let mut done = false;
            let mut partial = None;
            if built {
                match store.write_piece(p, buf) {
                    Ok(()) => {
                        pieces.set(p);
                        done = true;
                        self.pieces_reused.fetch_add(1, Ordering::Relaxed);
                        self.bytes_reused.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Release);
                        write_error.lock().expect("not poisoned").get_or_insert(e);
                    }
                }
            } else {
                self.pieces_failed.fetch_add(1, Ordering::Relaxed);
                // Its unchanged files need not cross the network.
                match plan.read_known(p, buf, &mut reader) {
                    Ok(known) if known_len(&known) > 0 && known_len(&known) < len as u64 => {
                        match store.write_ranges(p, buf, &known) {
                            Ok(()) => partial = Some(known),
                            Err(e) => {
                                stop.store(true, Ordering::Release);
                                write_error.lock().expect("not poisoned").get_or_insert(e);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(known) = partial {
                match self.fetcher.get().filter(|f| f.is_live()) {
                    Some(f) => self.give_partial(f, p, &known),
                    // Handed over once the engine is live; deferred until then.
                    None => {
                        self.pending_partial
                            .lock()
                            .expect("not poisoned")
                            .push((p, known));
                        continue;
                    }
                }
            }
            let was_waited = self.deferred.remove(p) && waited.contains(&p);
            if let Some(f) = self.fetcher.get() {
                if done {
                    f.add_local_piece(p);
                } else if was_waited {
                    f.wake_requesters();
                }
            }
        }
    }
}

impl Reuse {
    /// Hands a partly written piece to the live swarm engine (only its unknown bytes are
    /// asked for).
    fn give_partial(&self, f: &Fetcher, p: u64, known: &[Range<u32>]) {
        if f.add_partial_piece(p, known) {
            self.pieces_partial.fetch_add(1, Ordering::Relaxed);
            self.bytes_reused
                .fetch_add(known_len(known), Ordering::Relaxed);
        }
    }

    /// Hands over the partly written pieces kept while the swarm engine was not live, if
    /// it is now.
    fn give_pending_partial(&self) {
        let Some(f) = self.fetcher.get().filter(|f| f.is_live()) else {
            return;
        };
        let pending = std::mem::take(&mut *self.pending_partial.lock().expect("not poisoned"));
        for (p, known) in &pending {
            self.give_partial(f, *p, known);
            self.deferred.remove(*p);
        }
        if !pending.is_empty() {
            f.wake_requesters();
        }
    }

    /// Once the rebuild is done, waits for the swarm engine to go live and hands over
    /// the partly written pieces still kept (they stay deferred until then: asked for
    /// whole, their unchanged bytes would cross the network). Gives up after
    /// `PARTIAL_WAIT`: the pieces are then fetched whole.
    fn hand_over_partial(&self) {
        let since = Instant::now();
        loop {
            let pending = self.pending_partial.lock().expect("not poisoned").len();
            if pending == 0 {
                return;
            }
            if self.fetcher.get().is_some_and(|f| f.is_live()) {
                self.give_pending_partial();
                return;
            }
            if since.elapsed() > PARTIAL_WAIT {
                warn!(
                    pieces = pending,
                    "the swarm engine did not start in time: pieces partly rebuilt are fetched whole"
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// How long partly rebuilt pieces wait for the swarm engine's check of the cache.
const PARTIAL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes in `ranges`.
fn known_len(ranges: &[Range<u32>]) -> u64 {
    ranges.iter().map(|r| (r.end - r.start) as u64).sum()
}

/// Lowers this thread's scheduling priority (nice 10): the rebuild uses every core, and
/// the swarm's runtime, the FUSE threads (and the host's own services) go first. Eight
/// hosts rebuilding at once on two cores held their swarm engines back: the last pieces
/// from peers arrived up to 1.2 s after the rebuild ended.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
