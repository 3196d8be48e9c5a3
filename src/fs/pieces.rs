//! [`PieceMap`]: which pieces of a release are here and verified, and a way to wait for
//! them. It is the truth about what may be served.
//!
//! A bit is set only after a piece passed its SHA-1 check against the release: by the
//! swarm's storage once librqbit verified and wrote it (`on_piece_completed`), or by the
//! cache's own check at start-up. Nothing is served from a piece whose bit is clear, so a
//! half-written piece left by `kill -9` is never seen: it fails the start-up check and is
//! fetched again. In memory only; it owns no file and knows nothing of where pieces come
//! from.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Which pieces are present and verified; waitable.
pub struct PieceMap {
    set: PieceSet,
    changed: watch::Sender<u64>,
    hash_failures: AtomicU64,
}

impl PieceMap {
    pub fn new(total: u64) -> PieceMap {
        PieceMap {
            set: PieceSet::new(total),
            changed: watch::channel(0).0,
            hash_failures: AtomicU64::new(0),
        }
    }

    /// Counts a piece that was downloaded whole but failed its SHA-1 check.
    pub fn note_hash_failure(&self) {
        self.hash_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hash_failures(&self) -> u64 {
        self.hash_failures.load(Ordering::Relaxed)
    }

    pub fn has(&self, piece: u64) -> bool {
        self.set.has(piece)
    }

    /// The first piece of `range` that is missing.
    pub fn first_missing(&self, range: Range<u64>) -> Option<u64> {
        range.into_iter().find(|&p| !self.has(p))
    }

    /// Whether any piece of `range` is present.
    pub fn any_present(&self, range: Range<u64>) -> bool {
        range.into_iter().any(|p| self.has(p))
    }

    /// Marks a verified piece; wakes waiters. Returns whether it was new.
    pub fn set(&self, piece: u64) -> bool {
        let new = self.set.insert(piece);
        if new {
            self.changed.send_replace(self.set.len());
        }
        new
    }

    pub fn present(&self) -> u64 {
        self.set.len()
    }

    pub fn total(&self) -> u64 {
        self.set.total
    }

    pub fn complete(&self) -> bool {
        self.present() == self.set.total
    }

    /// Resolves once every piece of `range` is present.
    pub async fn wait_all(&self, range: Range<u64>) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.first_missing(range.clone()).is_none() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves when the count of present pieces changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A set of pieces that changes while others read it (lock-free): the pieces a mount is
/// rebuilding from local data, which no peer is asked for meanwhile.
pub struct PieceSet {
    bits: Vec<AtomicU64>,
    count: AtomicU64,
    total: u64,
}

impl PieceSet {
    pub fn new(total: u64) -> PieceSet {
        PieceSet {
            bits: (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            total,
        }
    }

    pub fn has(&self, piece: u64) -> bool {
        piece < self.total
            && self.bits[(piece / 64) as usize].load(Ordering::Acquire) & (1 << (piece % 64)) != 0
    }

    /// Adds `piece`; returns whether it was new.
    pub fn insert(&self, piece: u64) -> bool {
        if piece >= self.total {
            return false;
        }
        let bit = 1 << (piece % 64);
        let old = self.bits[(piece / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        let new = old & bit == 0;
        if new {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        new
    }

    /// Removes `piece`; returns whether it was there.
    pub fn remove(&self, piece: u64) -> bool {
        if piece >= self.total {
            return false;
        }
        let bit = 1 << (piece % 64);
        let old = self.bits[(piece / 64) as usize].fetch_and(!bit, Ordering::AcqRel);
        let was = old & bit != 0;
        if was {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        was
    }

    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
