//! Which piece to ask peers for next: swarmfs's answer to librqbit's `PiecePicker` hook
//! (the hook we added to vendor/librqbit; see its SWARMFS-PATCH.md).
//!
//! 1. Urgent: the pieces readers wait on, oldest read first.
//! 2. Background, in an order of this host's own: first the pieces a starting server is
//!    likely to read (the head of every larger file, then small files whole), then the
//!    files it reads in pages (a mapped binary or library: a read jumped in it, or a file
//!    up to [`PAGED_OPENED`] was opened), smallest first, then the rest, each class in a
//!    random order that differs on every host. Every server of a fleet reads
//!    the same start-up pieces at about the same moment; when each has fetched different
//!    ones in the background, they take them from each other instead of all from the
//!    origin.
//!    With a boot profile ([`crate::mount::profile`]) its pieces are a first tier before these
//!    classes: 8 hosts, 256 MB, boot median 27.6 s without, 14.0-14.6 s with (16 x 128 MB:
//!    27.3 s, 11.2 s). The profile's 18.7 MB of start-up reads touch 303 pieces (79 MB)
//!    that only the origin has at first: its uplink, not the reads, sets that time.
//! 3. Read-ahead of sequential readers sits between the two, rarest first, in a per-host
//!    order too (a fleet reading one binary front to back fetches different parts of it),
//!    asked for before the rest of a background piece in flight (librqbit patch), of the
//!    origin in the hosts' turns as a read's piece is, and at most 2 MiB ahead
//!    (`fs::readahead::MAX_WINDOW`). Without a boot profile, the origin's larger window
//!    waits until no read has waited for the swarm, here or on a host that told us, for
//!    [`SEEDER_WINDOW_QUIET`]; the turns go to the hosts the origin serves
//!    ([`ORIGIN_SERVED_RECENTLY`]). 8 x 128 MB, 100 Mbit/s, no profile, 2026-12-06: boot
//!    11.6-12.9 s before, 10.8-11.3 s after (256 KiB pieces); 12.3 s, 9.0 s (32 KiB).
//!    While a boot profile is not all here, read-ahead waits: the profile knows what
//!    start-up reads next (8 x 256 MB: the origin sent 56 read-ahead pieces during boot
//!    before, none after).
//! 4. While a read waits, the background goes on (librqbit's hold-back hook is left
//!    open, `tiers_while_held_back`). It used to stop all but the start-up tier
//!    so a read's piece would not queue behind background pieces; since the peers'
//!    windows are cut to what the links queue ([`PEER_WINDOW_BUDGET`]) that queue is
//!    ~30 ms, while a read without a boot profile mostly waits on the origin's uplink,
//!    which was never held back. Holding back only idled the links for as long as the
//!    start-up reads went on. 2026-12-06, c205b93 against 67c14ee, no profile,
//!    `scripts/bench-fleet.sh --scenario swarmfs-lazy --piece-kb 32`: 8 x 256 MB at
//!    100 Mbit, boot 25.6 / 23.9 s, last host 39.5 / 27.4 s (another pair: 23.4 / 24.5,
//!    39.4 / 33.0); 32 x 64 MB at 50 Mbit, boot 16.3 / 15.1 s, last host 26.9 / 23.1 s;
//!    with a boot profile (8 hosts) boot 4.3 / 3.9 s, last host 31.3 / 31.2 s.
//!    The origin's request window still shrinks while a read waits (see 5).
//! 5. The origin (a peer with every piece) carries every unique byte once; it is the
//!    fleet's bottleneck, so it is kept busy and spared copies: it is asked in the
//!    background only for pieces no other peer has (librqbit patch), never held back,
//!    given a larger request window while no read waits ([`SEEDER_WINDOW`]), and asked
//!    for a piece the whole fleet reads at once by one host first ([`SEEDER_STAGGER`]).
//!    8 hosts, 256 MB: the origin sent 1.51 copies (0.48 of them start-up and read-ahead
//!    pieces several hosts fetched at the same moment) and the slowest host completed
//!    at 42.7 s; with all four, 1.15-1.19 copies and 34.3-38.3 s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::fs::{PieceMap, PieceSet};
use crate::release::{EntryKind, Release, MAX_BOOT_PROFILE};

/// Files this small are fetched whole in the first background class.
pub const SMALL_FILE: u64 = 1 << 20;

/// A piece a reader waits on that one peer has not delivered in this long is asked of
/// another (a piece takes ~20 ms at 100 Mbit/s; a peer serving a whole fleet, or one that
/// took it as a background piece, can hold it for seconds).
pub const URGENT_STEAL_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// A piece a reader waits on that a peer is sending is helped by others (up to two more
/// peers asked for the chunks still missing) only once it has been in flight this long:
/// a piece on time completes from its first peer, and every helper's chunks that come
/// after are thrown away. Helped at once, a fleet of 256 hosts (examples/fleet_local,
/// 1 Mbit/s) asked for 19,453 helps against 10,918 read requests and dropped 14% of all
/// it received. 2026-12-07, 64 hosts at 1 Mbit/s (5 s here), two runs each, alternating:
/// dropped 11.5-11.9% against 15.5-16.6%, origin 1.42-1.47 copies against 1.58-1.70,
/// last host 59.8-61.2 s against 62.0-63.3 s; the namespace bench (8 x 128 MB, 32 x
/// 64 MB) no different beyond its noise (docs/experiments.md).
pub const URGENT_HELP_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// A piece readers wait on that only the origin has is asked of it by one host of the
/// fleet first, by the next host this much later, and so on (an order per piece that
/// every host computes alike, [`seeder_rank`]); in between, the hosts that have it
/// announce it and the others take it from them. A read-ahead piece takes the same turns,
/// counted from when it was asked for ahead. 8 hosts, 256 MB, 100 Mbit/s: with
/// every host asking at once the origin sent 1.51 copies of the release (0.27 of them
/// start-up pieces, 0.21 read-ahead and background pieces several hosts fetched at the
/// same moment); with this, 1.2. 60 ms gave the same copies and a boot ~2 s slower.
/// A host reading alone waits at most `STAGGER_RANKS` turns, and only for pieces no
/// other peer has yet.
pub const SEEDER_STAGGER: Duration = Duration::from_millis(30);

/// Chunks in flight to the origin while no read waits (other peers: [`PEER_WINDOW`]).
/// A request to the origin queues behind the chunks its host uploads, and the chunks
/// it sends back queue behind the origin's other hosts', so a window must cover a
/// round trip of ~100-150 ms at a quarter of the origin's rate (aria2 serves about
/// four hosts at a time). At 63745a0, 8 hosts, 256 MB: full 34.3-35.8 s with 32,
/// 36.7-38.3 s with 16. At 542a973, once the peers' windows were cut to the queue the
/// links hold ([`PEER_WINDOW_BUDGET`]), 16 hosts, 128 MB: full 20.5-20.6 s with 64,
/// 23.7-24.1 s with 32 or 16, 21.2 s with 128 (origin 1.41 copies); 8 hosts: the
/// same within the noise. 64 also while reads wait: boot 1-2 s slower at both sizes.
pub const SEEDER_WINDOW: usize = 64;

/// The origin's larger window waits this long after a read last waited for the swarm. A
/// booting server's reads come one after another with a few milliseconds between them;
/// the window refilled in each gap, and the next read's piece queued at the origin
/// behind 64 background chunks of its host (a piece from the origin took 290 ms median
/// while hosts booted, 8 x 128 MB, 256 KiB pieces, no profile).
pub const SEEDER_WINDOW_QUIET: Duration = Duration::from_millis(500);

/// Chunks in flight per peer, at most (the session's window, `swarm::Fetcher::start`).
pub const PEER_WINDOW: usize = 16;

/// Chunks in flight to all peers but the origin together (each peer: this over the live
/// peer connections, [`PEER_WINDOW_FLOOR`] to [`PEER_WINDOW`]): 384 KiB, what keeps a
/// host's downlink busy while its queue stays short. What a host has in flight beyond
/// the link's round trip waits in its downlink's FIFO, and so does the origin's flow,
/// whose sender (BBR) sizes its window from the empty round trip: with the queues full
/// the origin sent at half its rate. 16 hosts, 128 MB, with a boot profile (boot /
/// full): 48 and a floor of 4, 11.1-12.3 / 24.2-35.3 s; 24 and 1, 8.8-9.7 / 23.2-24.3 s.
/// The measurements, the history and the limit on paths with latency of their own:
/// ARCHITECTURE.md ("Request windows sized to the links' queues", "Known limits").
const PEER_WINDOW_BUDGET: usize = 24;

/// Chunks in flight per peer connection, at least.
const PEER_WINDOW_FLOOR: usize = 1;

/// A piece another host told us it asked the origin for (BEP 10 `swarmfs_fetching`) is
/// not asked of the origin by this host for this long: in the background at all, for a
/// waiting read after [`FETCHING_HOLDS_READS`]. It is taken from that host once it
/// announces it (a piece from the origin takes 110 ms median, 250 ms p90 in the boot).
/// Longer at a limited link ([`slowdown`]), up to ten times: at 1 Mbit/s a hold of 100 s
/// left a piece whose fetch was lost, or that only seeders had, asked of no peer for
/// that long (examples/fleet_local, 256 hosts in racks: the last host at 221 s against
/// a median of 57 s).
pub const FETCHING_HOLDS: Duration = Duration::from_millis(1000);

/// How long a read waits for a piece another host is fetching from the origin before
/// this host asks the origin too.
pub const FETCHING_HOLDS_READS: Duration = Duration::from_millis(400);

/// A host that told of a piece it asked the origin for in this long is one the origin
/// serves (unchokes), and takes turns for the origin's pieces ([`seeder_rank`] among
/// those).
pub const ORIGIN_SERVED_RECENTLY: Duration = Duration::from_secs(2);

/// A host fetches a piece no neighbour has from farther away ([`super::near`]) at its
/// turn among its neighbours ([`near_rank`]; this long each, longer in proportion at a
/// limited link, [`slowdown`], up to ten times), unless a neighbour has it by then: the first host in a
/// piece's order fetches it into the rack and the others take it from that one. Every
/// host is first for its share of the pieces, so none waits while it has those to fetch.
pub const NEAR_TURN: Duration = Duration::from_millis(250);

/// A reader's piece no neighbour has or fetches is asked of a farther peer at once,
/// unless a neighbour said it fetched something from afar within this long (longer in
/// proportion at a limited link, up to ten times): then the rack is starting together,
/// and a reader waits its turn ([`SEEDER_STAGGER`] per place in the piece's order among
/// the neighbours) for the first neighbour's notice, and then for the piece from it.
pub const NEAR_ACTIVE: Duration = Duration::from_secs(1);

/// Hosts past this place in a piece's order all take their turn together.
pub const STAGGER_RANKS: usize = 4;

/// At most this many files are fetched ahead of the background as read in pages.
pub const MAX_PAGED: usize = 64;

/// A larger file is fetched whole soon from its first read (a library's header) only up
/// to this size; beyond it, once a read jumps in it.
pub const PAGED_OPENED: u64 = 16 << 20;

/// At most this many read-ahead pieces are kept (32 MiB of 256 KiB pieces).
const MAX_AHEAD: usize = 128;

/// The link rate the timings and windows above were measured at (100 Mbit/s, bytes/s).
pub const REFERENCE_RATE: u64 = 12_500_000;

/// On a host whose download is limited below [`REFERENCE_RATE`], a chunk takes longer in
/// proportion: the waits above stretch and the request windows shrink by this factor
/// (1: not limited, or limited above it). 8 hosts, 4 MB, 1 Mbit/s, 32 KiB pieces, at
/// 1 Mbit/s a queue of 24 chunks is 3 s: unscaled, reads waited behind it, the origin's
/// pieces were asked of a second host after 300 ms each time, and the origin sent 5.6
/// copies (docs/benchmarks.md, "A fleet of hundreds on one machine").
fn slowdown(download_limit: Option<std::num::NonZeroU32>) -> u32 {
    download_limit.map_or(1, |r| {
        (REFERENCE_RATE / u64::from(r.get())).clamp(1, 1000) as u32
    })
}

/// An origin (`swarmfs seed`) sends a piece's first chunk to a second host only this long
/// after it last did, unless a reader there waits on the piece: the hosts that got a copy
/// pass it on meanwhile, and a host that asked the origin too takes the piece from them
/// and cancels. Without it, hosts that asked the origin for the same piece before any of
/// them had it were each sent a copy (a first release, 32 hosts, 64 MB, 50 Mbit/s: the
/// origin sent 3.7 copies; docs/experiments.md). Longer at a limited uplink, in
/// proportion ([`slowdown`]) up to ten times: a host none of whose peers got the piece
/// waits that long for it.
pub const REPEAT_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// [`REPEAT_HOLD`] at an uplink limited to `upload_limit` bytes/s.
pub fn repeat_hold(upload_limit: Option<std::num::NonZeroU32>) -> std::time::Duration {
    REPEAT_HOLD * hold_stretch(upload_limit)
}

/// An origin (`swarmfs seed`) begins a second copy of a piece a reader waits on only this
/// long after the last copy began to a host still connected (longer at a limited uplink
/// as [`REPEAT_HOLD`] is): the host it went to announces it within a piece's time, and
/// the other readers take it from there and cancel. A fleet starts up together and every
/// host reads the same start-up pieces at once: with reads served at once, the origin
/// sent each start-up piece to every host it served that asked before a peer had it.
/// A first release from a swarmfs seed, 32 hosts, 64 MB, 50 Mbit/s, 32 KiB pieces, three
/// alternating runs each (2026-12-08): boot median 14.1-15.7 s against 15.1-17.9 s,
/// complete median 23.4-24.3 s against 23.2-26.5 s, origin 1.55-1.57 copies against
/// 1.59-1.65; 8 hosts x 128 MB unchanged. `examples/fleet_model --hosts 1000 [--read-hold 0]`: origin
/// 1.12 copies against 1.19, complete median 1.23 F/r against 1.28, boot 2.5 s against 3.6.
/// (docs/experiments.md)
pub const READ_REPEAT_HOLD: std::time::Duration = std::time::Duration::from_millis(100);

/// [`READ_REPEAT_HOLD`] at an uplink limited to `upload_limit` bytes/s.
pub fn read_repeat_hold(upload_limit: Option<std::num::NonZeroU32>) -> std::time::Duration {
    READ_REPEAT_HOLD * hold_stretch(upload_limit)
}

/// Holds on another host's copy (the origin's [`REPEAT_HOLD`], [`FETCHING_HOLDS`],
/// [`FETCHING_HOLDS_READS`]) stretch with a limited link as the waits do, but at most this
/// much: a piece held for a copy that was lost waits the whole hold (at 1 Mbit/s a hold
/// stretched 100x left a piece unasked for 100 s).
pub const MAX_HOLD_STRETCH: u32 = 10;

/// How much the holds stretch at a link limited to `limit` bytes/s.
pub fn hold_stretch(limit: Option<std::num::NonZeroU32>) -> u32 {
    slowdown(limit).min(MAX_HOLD_STRETCH)
}

pub struct Picker {
    /// Pieces readers wait on, in the order the reads came, with how many wait on each
    /// and since when.
    urgent: Mutex<Vec<(u32, u32, Instant)>>,
    /// Pieces sequential readers will want next (after the urgent ones), oldest first,
    /// with when each was first asked for ahead.
    ahead: Mutex<std::collections::VecDeque<(u32, Instant)>>,
    order: RwLock<Arc<[Vec<u32>]>>,
    /// Files found read in pages (entries, in the order found), fetched ahead of the
    /// rest of the background.
    paged: Mutex<Vec<usize>>,
    pieces: Arc<PieceMap>,
    seed: u64,
    /// This host's address as its peers see it, if known (see `may_ask_seeder`).
    me: Option<IpAddr>,
    /// Which peers are neighbours (`mount --local-net`; `is_neighbour`).
    neighbours: super::near::Neighbours,
    /// When each piece was first a candidate to fetch from farther away (as
    /// `first_candidate`), with neighbours only.
    far_candidate: Vec<std::sync::atomic::AtomicU32>,
    /// Pieces neighbours said they asked a peer farther away (or the origin) for, and
    /// when; and when a neighbour last said so (milliseconds since `started`, plus one).
    near_fetching: Mutex<HashMap<u32, Instant>>,
    near_active: std::sync::atomic::AtomicU64,
    /// The pieces of the boot profile, if any (sorted, to look one up), and whether they
    /// are all here yet.
    boot: RwLock<Arc<Vec<u32>>>,
    boot_done: std::sync::atomic::AtomicBool,
    /// Boot profiles shared with peers (BEP 10 `swarmfs_profile`), when enabled.
    exchange: OnceLock<Exchange>,
    /// Pieces other hosts said they asked the origin for, and when.
    fetching: Mutex<HashMap<u32, Instant>>,
    /// The hosts that said so, and when they last did: the ones the origin serves.
    origin_served: Mutex<HashMap<IpAddr, Instant>>,
    /// Pieces being rebuilt from local data (a delta deploy): asked of no peer meanwhile.
    deferred: Option<Arc<PieceSet>>,
    /// When each piece was first a candidate to ask the origin for in the background
    /// (milliseconds since `started`, plus one; 0: not yet), for the background stagger.
    first_candidate: Vec<std::sync::atomic::AtomicU32>,
    started: Instant,
    /// When a read last waited for the swarm, here or on a host that told us it asked
    /// the origin for the piece (milliseconds since `started`, plus one; 0: never), for
    /// [`SEEDER_WINDOW_QUIET`].
    read_waited: std::sync::atomic::AtomicU64,
    /// [`slowdown`] of this host's download limit.
    slowdown: u32,
}

impl Picker {
    /// `boot`: the pieces of a boot profile ([`crate::mount::profile`]), fetched before the rest
    /// of the background; empty without one.
    pub fn new(
        release: &Release,
        pieces: Arc<PieceMap>,
        me: Option<IpAddr>,
        boot: &[u32],
        deferred: Option<Arc<PieceSet>>,
    ) -> Picker {
        let seed = random_seed();
        Picker {
            seed,
            me: me.filter(|ip| !ip.is_unspecified()),
            neighbours: Default::default(),
            far_candidate: Vec::new(),
            near_fetching: Mutex::new(HashMap::new()),
            near_active: Default::default(),
            urgent: Mutex::new(Vec::new()),
            ahead: Mutex::new(Default::default()),
            order: RwLock::new(background_order(release, seed, boot, &[]).into()),
            paged: Mutex::new(Vec::new()),
            boot: RwLock::new(Arc::new(sorted(boot))),
            exchange: OnceLock::new(),
            boot_done: std::sync::atomic::AtomicBool::new(boot.is_empty()),
            fetching: Mutex::new(HashMap::new()),
            origin_served: Mutex::new(HashMap::new()),
            first_candidate: match deferred {
                Some(_) => (0..release.piece_count())
                    .map(|_| std::sync::atomic::AtomicU32::new(0))
                    .collect(),
                None => Vec::new(),
            },
            started: Instant::now(),
            read_waited: Default::default(),
            pieces,
            deferred,
            slowdown: 1,
        }
    }

    /// The host's download is limited to `limit` bytes/s: waits stretch and windows
    /// shrink in proportion below 100 Mbit/s ([`slowdown`]).
    pub fn with_download_limit(mut self, limit: Option<std::num::NonZeroU32>) -> Picker {
        self.slowdown = slowdown(limit);
        self
    }

    /// Peers in `neighbours` are asked first for what they have ([`super::near`]).
    pub fn with_neighbours(mut self, neighbours: super::near::Neighbours) -> Picker {
        self.far_candidate = match neighbours.is_empty() {
            true => Vec::new(),
            false => (0..self.pieces.total())
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        };
        self.neighbours = neighbours;
        self
    }

    pub fn neighbours(&self) -> &super::near::Neighbours {
        &self.neighbours
    }

    /// How long since `slot` (a piece's stamp in `first_candidate` or `far_candidate`,
    /// milliseconds since `started` plus one; 0: none yet) was first stamped; stamps it now
    /// if it was not.
    fn waited_since_first(&self, slot: &std::sync::atomic::AtomicU32) -> Duration {
        use std::sync::atomic::Ordering;
        let now = self.started.elapsed().as_millis() as u32 + 1;
        let first = match slot.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => now,
            Err(t) => t,
        };
        Duration::from_millis((now - first) as u64)
    }

    fn note_read_wait(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.read_waited.store(now, AtomicOrdering::Relaxed);
    }

    /// Whether a read waited for the swarm within `quiet`.
    fn read_waited_within(&self, quiet: Duration) -> bool {
        let at = self.read_waited.load(AtomicOrdering::Relaxed);
        at != 0 && self.started.elapsed().as_millis() as u64 + 1 - at < quiet.as_millis() as u64
    }

    /// Whether `piece` is being rebuilt from local data now.
    fn is_deferred(&self, piece: u32) -> bool {
        self.deferred.as_ref().is_some_and(|d| d.has(piece as u64))
    }

    /// Appends the pieces reads wait on that are being rebuilt from local data: the
    /// rebuild takes them first.
    pub fn waited_deferred(&self, out: &mut Vec<u64>) {
        let u = self.urgent.lock().expect("not poisoned");
        out.extend(
            u.iter()
                .map(|(p, _, _)| *p)
                .filter(|&p| self.is_deferred(p))
                .map(u64::from),
        );
    }

    /// How much the holds on another host's fetch stretch here ([`hold_stretch`]).
    fn hold_stretch(&self) -> u32 {
        self.slowdown.min(MAX_HOLD_STRETCH)
    }

    /// Records that another host said it fetches `piece` (in `fetches`: from the origin,
    /// or a neighbour from afar); entries older than the longest hold go once it is large.
    fn note_fetch(&self, fetches: &Mutex<HashMap<u32, Instant>>, piece: u32) {
        let mut f = fetches.lock().expect("not poisoned");
        if f.len() >= 4096 {
            let hold = FETCHING_HOLDS * self.hold_stretch();
            f.retain(|_, t| t.elapsed() < hold);
        }
        f.insert(piece, Instant::now());
    }

    /// Whether another host said, less than `within` ago, that it asked the origin for
    /// `piece`.
    fn fetched_elsewhere_within(&self, piece: u32, within: Duration) -> bool {
        let f = self.fetching.lock().expect("not poisoned");
        f.get(&piece).is_some_and(|t| t.elapsed() < within)
    }

    /// Marks `pieces` as wanted by a read until the returned guard is dropped.
    pub fn want(self: &Arc<Self>, pieces: std::ops::Range<u64>) -> Wanted {
        let mut u = self.urgent.lock().expect("not poisoned");
        let mut mine = Vec::new();
        for p in pieces {
            if self.pieces.has(p) {
                continue;
            }
            let p = p as u32;
            match u.iter_mut().find(|(q, _, _)| *q == p) {
                Some((_, n, _)) => *n += 1,
                None => u.push((p, 1, Instant::now())),
            }
            mine.push(p);
        }
        if !mine.is_empty() {
            self.note_read_wait();
        }
        Wanted {
            picker: self.clone(),
            pieces: mine,
        }
    }

    /// Adds the missing ones of `pieces` to the read-ahead list; true if any was new.
    pub fn ahead(&self, pieces: std::ops::Range<u64>) -> bool {
        let mut a = self.ahead.lock().expect("not poisoned");
        let now = Instant::now();
        let mut new: Vec<u32> = pieces
            .filter(|&p| !self.pieces.has(p) && !a.iter().any(|&(q, _)| q == p as u32))
            .map(|p| p as u32)
            .collect();
        // In an order of this host's own: a fleet reading the same file at once then
        // fetches different pieces of it and trades them (librqbit takes the rarest first,
        // ties in this order).
        let salt = new.first().copied().unwrap_or(0) as u64;
        shuffle(&mut new, self.seed ^ salt);
        let added = !new.is_empty();
        a.extend(new.into_iter().map(|p| (p, now)));
        a.retain(|&(p, _)| !self.pieces.has(p as u64));
        while a.len() > MAX_AHEAD {
            a.pop_front();
        }
        added
    }

    /// Entry `entry` of `release` is read in pages (`jumped`: a read jumped in it), or was
    /// just opened: its pieces become a background tier after the start-up class, ahead of
    /// the rest (see [`background_order`]). An opened file is taken only up to
    /// [`PAGED_OPENED`]. False if that changes nothing (a small file, one all here or
    /// already taken, [`MAX_PAGED`] files already).
    pub fn paged(&self, release: &Release, entry: usize, jumped: bool) -> bool {
        let Some(e) = release.entries.get(entry) else {
            return false;
        };
        if !matches!(e.kind, EntryKind::File { .. }) || e.length <= SMALL_FILE {
            return false;
        }
        if !jumped && e.length > PAGED_OPENED {
            return false;
        }
        // All here already (a warm cache): nothing to reorder.
        if self
            .pieces
            .first_missing(entry_pieces(e, release.piece_length))
            .is_none()
        {
            return false;
        }
        let mut paged = self.paged.lock().expect("not poisoned");
        if paged.contains(&entry) || paged.len() >= MAX_PAGED {
            return false;
        }
        paged.push(entry);
        let boot = self.boot.read().expect("not poisoned").clone();
        // The profile's tier keeps its order (the boot list is sorted; the tier is
        // shuffled in `background_order` either way).
        *self.order.write().expect("not poisoned") =
            background_order(release, self.seed, &boot, &paged).into();
        tracing::debug!(target: "swarmfs::piece", entry, bytes = e.length, "file read in pages");
        true
    }

    /// The boot profile's pieces that are here, and how many it has; `None` without one.
    pub fn boot_progress(&self) -> Option<(u64, u64)> {
        let boot = self.boot.read().expect("not poisoned").clone();
        if boot.is_empty() {
            return None;
        }
        let here = boot.iter().filter(|&&p| self.pieces.has(p as u64)).count();
        Some((here as u64, boot.len() as u64))
    }

    fn in_boot(&self, piece: u32) -> bool {
        let boot = self.boot.read().expect("not poisoned");
        boot.binary_search(&piece).is_ok()
    }

    /// Whether every piece of the boot profile is here (true without a profile).
    fn boot_complete(&self) -> bool {
        if self.boot_done.load(AtomicOrdering::Relaxed) {
            return true;
        }
        let boot = self.boot.read().expect("not poisoned").clone();
        let done = boot.iter().all(|&p| self.pieces.has(p as u64));
        if done {
            self.boot_done.store(true, AtomicOrdering::Relaxed);
        }
        done
    }

    /// Shares boot profiles with peers that speak `swarmfs_profile`: `offer` is sent to
    /// those that ask; with `accept` (a mount that has no profile), peers are asked and
    /// the first profile `accept` maps to pieces becomes the boot tier.
    pub fn exchange_profiles(&self, release: Arc<Release>, exchange: ProfileExchange) {
        let wanted = exchange.accept.is_some();
        let _ = self.exchange.set(Exchange {
            release,
            offer: RwLock::new(exchange.offer),
            accept: exchange.accept,
            wanted: AtomicBool::new(wanted),
            asks: AtomicUsize::new(0),
            received: OnceLock::new(),
        });
    }

    /// The peer a boot profile came from and its pieces in profile order, once one came.
    pub fn received_profile(&self) -> Option<&(IpAddr, Vec<u32>)> {
        self.exchange.get()?.received.get()
    }

    /// Makes `boot` (a profile's pieces, in its order) the first tier from now on.
    fn set_boot(&self, release: &Release, boot: &[u32]) {
        let paged = self.paged.lock().expect("not poisoned");
        *self.order.write().expect("not poisoned") =
            background_order(release, self.seed, boot, &paged).into();
        *self.boot.write().expect("not poisoned") = Arc::new(sorted(boot));
        self.boot_done
            .store(boot.is_empty(), AtomicOrdering::Relaxed);
    }
}

/// A read's claim on urgent pieces; released on drop.
pub struct Wanted {
    picker: Arc<Picker>,
    pieces: Vec<u32>,
}

impl Drop for Wanted {
    fn drop(&mut self) {
        if !self.pieces.is_empty() {
            self.picker.note_read_wait();
        }
        let mut u = self.picker.urgent.lock().expect("not poisoned");
        for p in &self.pieces {
            if let Some(i) = u.iter().position(|(q, _, _)| q == p) {
                u[i].1 -= 1;
                if u[i].1 == 0 {
                    u.remove(i);
                }
            }
        }
    }
}

use librqbit::piece_picker::FarAsk;

impl librqbit::piece_picker::PiecePicker for Picker {
    fn is_neighbour(&self, peer: IpAddr) -> bool {
        self.neighbours.contains(peer)
    }

    fn may_ask_far(&self, piece: u32, near: &[IpAddr], ask: FarAsk) -> bool {
        use std::sync::atomic::Ordering;
        let (Some(me), Some(slot)) = (self.me, self.far_candidate.get(piece as usize)) else {
            return true;
        };
        let slow = self.hold_stretch();
        // A neighbour is fetching it: it comes from that neighbour once announced.
        let fetching_near = {
            let f = self.near_fetching.lock().expect("not poisoned");
            let hold = if ask == FarAsk::Read {
                FETCHING_HOLDS_READS
            } else {
                FETCHING_HOLDS
            };
            f.get(&piece).is_some_and(|t| t.elapsed() < hold * slow)
        };
        if fetching_near && !self.pieces.has(piece as u64) {
            return false;
        }
        let rank = near_rank(piece, me, near, STAGGER_RANKS);
        if rank == 0 {
            return true;
        }
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let turn = match ask {
            FarAsk::Queued => return false,
            FarAsk::Idle => NEAR_TURN,
            // A reader whose neighbours fetch nothing from afar now (a host booting
            // alone) goes at once; in a rack booting together, the neighbours take turns.
            FarAsk::Read => {
                let active = self.near_active.load(Ordering::Relaxed);
                if active == 0
                    || now.saturating_sub(active) > (NEAR_ACTIVE * slow).as_millis() as u64
                {
                    return true;
                }
                SEEDER_STAGGER
            }
        };
        // The turns count from when this host first came to the piece that way.
        self.waited_since_first(slot) >= turn * slow * rank as u32
    }

    fn on_neighbour_fetching(&self, piece: u32, peer: IpAddr, _for_read: bool) {
        if !self.neighbours.contains(peer) || self.pieces.has(piece as u64) {
            return;
        }
        self.near_active.store(
            self.started.elapsed().as_millis() as u64 + 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.note_fetch(&self.near_fetching, piece);
    }

    fn urgent(&self, out: &mut Vec<u32>) {
        let u = self.urgent.lock().expect("not poisoned");
        out.extend(
            u.iter()
                .map(|(p, _, _)| *p)
                .filter(|&p| !self.pieces.has(p as u64) && !self.is_deferred(p)),
        );
    }

    fn soon(&self, out: &mut Vec<u32>) {
        // Until the boot profile is here, read-ahead waits: the profile says what the
        // start-up reads next, read-ahead only guesses (and a fleet reading the binary's
        // head front to back would spend the origin on what start-up does not read).
        if !self.boot_complete() {
            return;
        }
        let a = self.ahead.lock().expect("not poisoned");
        out.extend(
            a.iter()
                .map(|&(p, _)| p)
                .filter(|&p| !self.pieces.has(p as u64) && !self.is_deferred(p)),
        );
    }

    fn background_order(&self) -> Option<Arc<[Vec<u32>]>> {
        Some(self.order.read().expect("not poisoned").clone())
    }

    fn profile_offer(&self) -> Option<Arc<[u8]>> {
        self.exchange
            .get()?
            .offer
            .read()
            .expect("not poisoned")
            .clone()
    }

    fn profile_ask_begin(&self) -> bool {
        let Some(x) = self.exchange.get() else {
            return false;
        };
        x.wanted.load(AtomicOrdering::Relaxed)
            && x.asks
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                    (n < PROFILE_ASKS).then_some(n + 1)
                })
                .is_ok()
    }

    fn profile_ask_end(&self) {
        if let Some(x) = self.exchange.get() {
            let _ = x
                .asks
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                    n.checked_sub(1)
                });
        }
    }

    fn profile_max_len(&self) -> usize {
        match self.exchange.get() {
            Some(x) if x.accept.is_some() => MAX_BOOT_PROFILE,
            _ => 0,
        }
    }

    fn on_profile(&self, profile: &[u8], peer: IpAddr) {
        let Some(x) = self.exchange.get() else {
            return;
        };
        let Some(accept) = &x.accept else {
            return;
        };
        if !x.wanted.swap(false, AtomicOrdering::AcqRel) {
            return; // another peer's came first
        }
        match accept(profile) {
            Some(pieces) if !pieces.is_empty() => {
                tracing::info!(
                    %peer,
                    pieces = pieces.len(),
                    bytes = profile.len(),
                    "boot profile received from a peer: its pieces come first"
                );
                self.set_boot(&x.release, &pieces);
                let _ = x.received.set((peer, pieces));
                // Passed on: hosts that join later may ask this one.
                *x.offer.write().expect("not poisoned") = Some(profile.into());
            }
            _ => {
                tracing::debug!(%peer, "a boot profile from a peer names nothing here; asking another");
                x.wanted.store(true, AtomicOrdering::Release);
            }
        }
    }

    fn background_allowed(&self) -> bool {
        // A read waiting on a piece rebuilt locally holds no peer's work back.
        let u = self.urgent.lock().expect("not poisoned");
        u.iter().all(|&(p, _, _)| self.is_deferred(p))
    }

    fn defers(&self) -> bool {
        self.deferred.is_some()
    }

    fn on_partial_piece_refused(&self, _piece: u32) {
        // Counted as a hash failure: the storage's count sees only pieces written whole.
        self.pieces.note_hash_failure();
    }

    fn deferred(&self, piece: u32) -> bool {
        // Also a piece already here that the engine does not know of yet (rebuilt locally
        // while it checked the cache, handed over just after): never fetched twice.
        self.is_deferred(piece) || self.pieces.has(piece as u64)
    }

    /// Every tier: a waiting read holds no background work back (item 4 above).
    fn tiers_while_held_back(&self) -> usize {
        usize::MAX
    }

    fn urgent_steal_after(&self) -> Option<std::time::Duration> {
        Some(URGENT_STEAL_AFTER * self.slowdown)
    }

    fn urgent_help_after(&self) -> Option<std::time::Duration> {
        Some(URGENT_HELP_AFTER * self.slowdown)
    }

    fn seeder_request_window(&self) -> Option<usize> {
        // Only while no read waits: a read's piece queues behind the whole window. Without
        // a boot profile, nor for SEEDER_WINDOW_QUIET after a read waited here or on a
        // host that told us: then every read of the start-up waits on the swarm. (With
        // one, the window carries the profile's pieces: boot 5.7-6.1 s without the quiet
        // time, 6.5-6.7 s with it, 8 x 128 MB, 256 KiB pieces.)
        let quiet = self.boot.read().expect("not poisoned").is_empty()
            && self.read_waited_within(SEEDER_WINDOW_QUIET * self.slowdown);
        (self.background_allowed() && !quiet)
            .then_some((SEEDER_WINDOW / self.slowdown as usize).max(2))
    }

    fn peer_request_window(&self, live_peers: usize) -> Option<usize> {
        let budget = (PEER_WINDOW_BUDGET / self.slowdown as usize).max(1);
        Some((budget / live_peers.max(1)).clamp(PEER_WINDOW_FLOOR, PEER_WINDOW.min(budget.max(2))))
    }

    fn may_ask_seeder(&self, piece: u32, peers: &[IpAddr]) -> bool {
        let Some(me) = self.me else { return true };
        let since = {
            let u = self.urgent.lock().expect("not poisoned");
            u.iter()
                .find(|(p, _, _)| *p == piece)
                .map(|&(_, _, since)| since)
        };
        // A sequential reader's next pieces: from when they were asked for ahead.
        let since = since.or_else(|| {
            let a = self.ahead.lock().expect("not poisoned");
            a.iter().find(|(p, _)| *p == piece).map(|&(_, since)| since)
        });
        if self.fetched_elsewhere_within(piece, FETCHING_HOLDS_READS * self.hold_stretch()) {
            return false;
        }
        // The turns go to the hosts the origin serves: one that chokes a host (aria2
        // unchokes four at a time) made every piece whose first turn was that host's wait
        // a turn or more.
        let served: Vec<IpAddr> = {
            let s = self.origin_served.lock().expect("not poisoned");
            let recent = ORIGIN_SERVED_RECENTLY * self.slowdown;
            peers
                .iter()
                .copied()
                .filter(|ip| s.get(ip).is_some_and(|t| t.elapsed() < recent))
                .collect()
        };
        let rank = seeder_rank(piece, me, if served.is_empty() { peers } else { &served });
        match since {
            // A read waits, or a sequential reader will soon: this host's turn comes
            // after `rank` others had theirs (at most STAGGER_RANKS: a host reading alone
            // in a large fleet waits no longer). Read-ahead used to be asked of the
            // origin by the first host in the order only: when that host was busy with
            // a background piece, every host's reads of a binary's head waited for it,
            // one piece after another (8 x 128 MB, 256 KiB pieces, no profile: 4.2 s of
            // an 11.6 s boot on a 4.4 MB prefix).
            Some(since) => {
                since.elapsed() >= SEEDER_STAGGER * self.slowdown * rank.min(STAGGER_RANKS) as u32
            }
            None => rank == 0,
        }
    }

    fn on_peer_fetching(&self, piece: u32, peer: IpAddr, for_read: bool) {
        // A neighbour fetching from the origin brings the piece into the rack too.
        self.on_neighbour_fetching(piece, peer, for_read);
        // A fleet boots at once: while another host's read waits on the origin, this
        // host's background keeps out of the origin's queue too (SEEDER_WINDOW_QUIET).
        if for_read {
            self.note_read_wait();
        }
        {
            let mut s = self.origin_served.lock().expect("not poisoned");
            if s.len() >= 4096 {
                s.retain(|_, t| t.elapsed() < ORIGIN_SERVED_RECENTLY * self.slowdown);
            }
            s.insert(peer, Instant::now());
        }
        if self.pieces.has(piece as u64) {
            return;
        }
        self.note_fetch(&self.fetching, piece);
    }

    fn fetching_elsewhere(&self, piece: u32) -> bool {
        self.fetched_elsewhere_within(piece, FETCHING_HOLDS * self.hold_stretch())
    }

    fn may_ask_seeder_in_background(&self, piece: u32, peers: &[IpAddr]) -> bool {
        // Hosts that rebuild the rest from a release they hold (a delta deploy) all lack
        // the same few pieces and would ask the origin for them in the same moment. In
        // each piece's host order, rank r waits r turns from when the piece first came
        // up here; by then the first host's `swarmfs_fetching` has told it, and it takes
        // the piece from that host. Past the turns this is one atomic load. A fleet
        // fetching a release whole is left as it was: there the hosts take different
        // pieces anyway, and a wait in the boot costs more (ARCHITECTURE, "experiments").
        let Some(slot) = self.first_candidate.get(piece as usize) else {
            return true; // not rebuilding: no stamps kept
        };
        let waited = self.waited_since_first(slot);
        let turn = SEEDER_STAGGER * self.slowdown;
        if waited >= turn * STAGGER_RANKS as u32 {
            return true;
        }
        let Some(me) = self.me else { return true };
        let rank = seeder_rank(piece, me, peers).min(STAGGER_RANKS);
        waited >= turn * rank as u32
    }

    /// Once this host has booted, the `have`s of pieces outside the boot profile may
    /// wait a moment to go out together: the fleet's hosts boot at about the same time,
    /// and nobody waits on the rest at once. Without a profile nothing waits (hosts then
    /// boot on reads that each wait for the swarm).
    fn have_may_wait(&self, piece: u32) -> bool {
        !self.boot.read().expect("not poisoned").is_empty()
            && !self.in_boot(piece)
            && self.boot_complete()
    }
}

/// At most this many peers are asked for their boot profile at once.
const PROFILE_ASKS: usize = 3;

/// How a mount shares boot profiles with its peers (nothing, by default).
#[derive(Default)]
pub struct ProfileExchange {
    /// The profile (text) sent to peers that ask; none: their asks are rejected.
    pub offer: Option<Arc<[u8]>>,
    /// For a mount without a profile: maps a profile received from a peer to this
    /// release's pieces (in profile order), `None` if it is not a usable profile. Peers
    /// are asked only when this is set.
    #[allow(clippy::type_complexity)]
    pub accept: Option<Box<dyn Fn(&[u8]) -> Option<Vec<u32>> + Send + Sync>>,
}

struct Exchange {
    release: Arc<Release>,
    offer: RwLock<Option<Arc<[u8]>>>,
    #[allow(clippy::type_complexity)]
    accept: Option<Box<dyn Fn(&[u8]) -> Option<Vec<u32>> + Send + Sync>>,
    /// No profile yet: peers are asked.
    wanted: AtomicBool,
    /// Asks in flight.
    asks: AtomicUsize,
    /// The peer the profile came from, and its pieces in profile order.
    received: OnceLock<(IpAddr, Vec<u32>)>,
}

/// The pieces that hold bytes of `e`.
fn entry_pieces(e: &crate::release::Entry, piece_length: u64) -> std::ops::Range<u64> {
    e.offset / piece_length..(e.offset + e.length).div_ceil(piece_length)
}

fn sorted(pieces: &[u32]) -> Vec<u32> {
    let mut b = pieces.to_vec();
    b.sort_unstable();
    b.dedup();
    b
}

/// Every piece once, in tiers: a boot profile's pieces if there is one, then the start-up
/// class (the heads of larger files, then small files), then the files in `paged`
/// (entries, smallest first, a tier each), then the rest, each shuffled with `seed` (librqbit
/// takes the rarest of a tier, ties by order). The profile's tier is shuffled too: every
/// host wants all of it at once, and hosts that each took different pieces from the
/// origin trade them, where hosts taking them in one order would all fetch the same
/// piece from it at the same moment.
pub fn background_order(
    release: &Release,
    seed: u64,
    boot: &[u32],
    paged: &[usize],
) -> Vec<Vec<u32>> {
    let n = release.piece_count();
    let pl = release.piece_length;
    let mut in_boot = vec![false; n as usize];
    let mut first: Vec<u32> = boot
        .iter()
        .copied()
        .filter(|&p| p < n as u32 && !std::mem::replace(&mut in_boot[p as usize], true))
        .collect();
    shuffle(&mut first, seed ^ 0xB007);
    // The start-up class: the head of every larger file (a program's binary and
    // libraries are opened at their headers first), then small files whole.
    let mut head = vec![false; n as usize];
    let mut small = vec![false; n as usize];
    for e in &release.entries {
        if !matches!(e.kind, EntryKind::File { .. }) || e.length == 0 {
            continue;
        }
        let first = e.offset / pl;
        if e.length <= SMALL_FILE {
            for p in first..=(e.offset + e.length - 1) / pl {
                small[p as usize] = true;
            }
        } else {
            head[first as usize] = true;
        }
    }
    // Files read in pages (mapped binaries and libraries), smallest first, a tier each.
    let mut files: Vec<&crate::release::Entry> = paged
        .iter()
        .filter_map(|&i| release.entries.get(i))
        .collect();
    files.sort_by_key(|e| e.length);
    let mut paged_tiers: Vec<Vec<u32>> = Vec::new();
    for e in files.into_iter().filter(|e| e.length > 0) {
        let mut tier: Vec<u32> = entry_pieces(e, pl)
            .map(|p| p as u32)
            // (its head, and a piece it shares with a small file, stay in the start-up
            // class)
            .filter(|&p| !head[p as usize] && !small[p as usize])
            .filter(|&p| !std::mem::replace(&mut in_boot[p as usize], true))
            .collect();
        shuffle(&mut tier, seed ^ 0x9A6E);
        paged_tiers.push(tier);
    }
    let (mut heads, mut smalls, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for p in (0..n as u32).filter(|&p| !in_boot[p as usize]) {
        if head[p as usize] {
            heads.push(p)
        } else if small[p as usize] {
            smalls.push(p)
        } else {
            rest.push(p)
        }
    }
    shuffle(&mut heads, seed ^ 0x4EAD);
    shuffle(&mut smalls, seed);
    shuffle(&mut rest, seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut tiers = Vec::new();
    if !first.is_empty() {
        tiers.push(first);
    }
    tiers.push(heads);
    tiers.push(smalls);
    tiers.extend(paged_tiers);
    tiers.push(rest);
    tiers.retain(|t| !t.is_empty());
    tiers
}

/// Where this host stands, for `piece`, in an order every host of the fleet computes
/// alike from the addresses alone: how many of the other hosts (distinct addresses) come
/// before it. Peers sharing this host's address (one machine) do not count.
pub fn seeder_rank(piece: u32, me: IpAddr, peers: &[IpAddr]) -> usize {
    let key = |ip: &IpAddr| rank_key(piece, ip);
    let mine = key(&me);
    let mut seen: Vec<&IpAddr> = Vec::new();
    peers
        .iter()
        .filter(|ip| **ip != me)
        .filter(|ip| {
            let new = !seen.contains(ip);
            seen.push(ip);
            new
        })
        .filter(|ip| key(ip) < mine)
        .count()
}

/// A host's place for `piece` in the order of [`seeder_rank`] and [`near_rank`].
fn rank_key(piece: u32, ip: &IpAddr) -> u64 {
    let mut x = u64::from(piece).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match ip {
        IpAddr::V4(v4) => x ^= u64::from(u32::from(*v4)),
        IpAddr::V6(v6) => x ^= (u128::from(*v6) as u64) ^ ((u128::from(*v6) >> 64) as u64),
    }
    // splitmix64 finaliser: a fresh order per piece
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// As [`seeder_rank`] among `near`, addresses given once each, counted up to `cap`.
pub fn near_rank(piece: u32, me: IpAddr, near: &[IpAddr], cap: usize) -> usize {
    let mine = rank_key(piece, &me);
    let mut rank = 0;
    for ip in near {
        if *ip != me && rank_key(piece, ip) < mine {
            rank += 1;
            if rank >= cap {
                break;
            }
        }
    }
    rank
}

/// A fresh random number (each call differs, in one process too).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Fisher-Yates with xorshift64: enough to make hosts differ.
fn shuffle(v: &mut [u32], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::release::test_release as release;

    #[test]
    fn start_up_pieces_come_first_every_piece_once_and_hosts_differ() {
        let piece = 16 << 10;
        // A big binary (one head piece, then the rest) and small files.
        let r = release(
            &[
                ("bin/app", 128 * piece),
                ("etc/a.conf", 100),
                ("etc/b.conf", 3 * piece),
                ("lib/x.so", 2 * piece + 5),
            ],
            piece,
        );
        let o1 = background_order(&r, 1, &[], &[]).concat();
        let o2 = background_order(&r, 2, &[], &[]).concat();
        let mut sorted = o1.clone();
        sorted.sort();
        assert_eq!(sorted, (0..r.piece_count() as u32).collect::<Vec<_>>());
        assert_ne!(o1, o2, "two hosts take different orders");
        // Everything of the small files and the binary's first piece precede the rest.
        let bin = r
            .entries
            .iter()
            .find(|e| e.path.last().map(String::as_str) == Some("app"))
            .unwrap();
        let head = (bin.offset / piece) as u32;
        let early = o1.iter().position(|&p| p == head).unwrap();
        let bin_rest: Vec<u32> =
            ((bin.offset / piece + 1) as u32..((bin.offset + bin.length) / piece) as u32).collect();
        for e in r
            .entries
            .iter()
            .filter(|e| e.length > 0 && e.length <= SMALL_FILE)
        {
            if !matches!(e.kind, EntryKind::File { .. }) {
                continue;
            }
            for p in e.offset / piece..(e.offset + e.length).div_ceil(piece) {
                let at = o1.iter().position(|&q| q == p as u32).unwrap();
                for &late in &bin_rest {
                    assert!(at < o1.iter().position(|&q| q == late).unwrap());
                }
            }
        }
        for &late in &bin_rest {
            assert!(early < o1.iter().position(|&q| q == late).unwrap());
        }
    }

    #[test]
    fn files_read_in_pages_follow_the_start_up_class_smallest_first() {
        use librqbit::piece_picker::PiecePicker;
        let piece: u64 = 16 << 10;
        let r = release(
            &[
                ("bin/app", 4 << 20),
                ("data/huge.db", 20 << 20),
                ("etc/a.conf", 100),
                ("lib/x.so", (2 << 20) + 5),
                ("lib/y.so", 2 << 20),
            ],
            piece,
        );
        let entry = |name: &str| {
            r.entries
                .iter()
                .position(|e| e.path.last().map(String::as_str) == Some(name))
                .unwrap()
        };
        let pieces_of = |i: usize| {
            let e = &r.entries[i];
            let mut v: Vec<u32> =
                ((e.offset / piece) as u32..(e.offset + e.length).div_ceil(piece) as u32).collect();
            v.sort();
            v
        };
        let map = Arc::new(PieceMap::new(r.piece_count()));
        let picker = Picker::new(&r, map.clone(), None, &[], None);
        let tiers = |p: &Picker| p.background_order().unwrap().to_vec();
        // Heads of the larger files, then small files, then the rest.
        assert_eq!(tiers(&picker).len(), 3);
        let heads: Vec<u32> = ["app", "huge.db", "x.so", "y.so"]
            .iter()
            .map(|n| (r.entries[entry(n)].offset / piece) as u32)
            .collect();
        let mut first = tiers(&picker)[0].clone();
        first.sort();
        assert_eq!(first, heads, "the heads of the larger files first");

        // A small file is never taken, nor one all here; a library opened is, once.
        assert!(!picker.paged(&r, entry("a.conf"), true));
        for p in pieces_of(entry("y.so")) {
            map.set(u64::from(p));
        }
        assert!(!picker.paged(&r, entry("y.so"), true));
        assert!(picker.paged(&r, entry("x.so"), false));
        assert!(!picker.paged(&r, entry("x.so"), true), "once");
        // A file past PAGED_OPENED only once a read jumps in it.
        assert!(!picker.paged(&r, entry("huge.db"), false));
        // The binary, once a read jumped in it: after the library (smaller first).
        assert!(picker.paged(&r, entry("app"), true));
        let t = tiers(&picker);
        assert_eq!(t.len(), 5, "heads, small files, x.so, app, the rest");
        let sorted_tier = |i: usize| {
            let mut v = t[i].clone();
            v.sort();
            v
        };
        // (its head is in the first tier)
        let without_head = |i: usize| pieces_of(i).into_iter().skip(1).collect::<Vec<_>>();
        assert_eq!(sorted_tier(2), without_head(entry("x.so")));
        assert_eq!(sorted_tier(3), without_head(entry("app")));
        assert!(picker.paged(&r, entry("huge.db"), true));
        let t = tiers(&picker);
        assert_eq!(
            t.len(),
            6,
            "heads, small files, x.so, app, huge.db, the rest"
        );
        let mut last = t[4].clone();
        last.sort();
        assert_eq!(last, without_head(entry("huge.db")));
        // Every piece still once.
        let mut all = tiers(&picker).concat();
        all.sort();
        assert_eq!(all, (0..r.piece_count() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_boot_profile_is_the_first_tier_in_an_order_of_each_host() {
        let piece = 16 << 10;
        let r = release(&[("bin/app", 65 * piece), ("etc/a.conf", 100)], piece);
        let boot: Vec<u32> = vec![40, 3, 41, 3, 17, 9, 60, 2, 33, 50];
        let o1 = background_order(&r, 1, &boot, &[]);
        let o2 = background_order(&r, 2, &boot, &[]);
        assert_eq!(o1.len(), 4, "profile, heads, small files, rest");
        let mut t0 = o1[0].clone();
        t0.sort();
        assert_eq!(
            t0,
            vec![2, 3, 9, 17, 33, 40, 41, 50, 60],
            "each profile piece once"
        );
        assert_ne!(o1[0], o2[0], "hosts take the profile in different orders");
        let mut all = o1.concat();
        all.sort();
        assert_eq!(all, (0..r.piece_count() as u32).collect::<Vec<_>>());
        // Without a profile: the start-up class's two tiers and the rest.
        assert_eq!(background_order(&r, 1, &[], &[]).len(), 3);
    }

    #[test]
    fn peers_share_one_request_budget_but_small_swarms_keep_full_windows() {
        use librqbit::piece_picker::PiecePicker;
        let r = release(&[("a", 1 << 16)], 16 << 10);
        let picker = Picker::new(
            &r,
            Arc::new(PieceMap::new(r.piece_count())),
            None,
            &[],
            None,
        );
        let window = |n| picker.peer_request_window(n).unwrap();
        // One peer connection: 16 chunks, as before the budget.
        for n in 0..=1 {
            assert_eq!(window(n), 16, "{n} connections");
        }
        // Then the budget, split.
        assert_eq!(window(6), PEER_WINDOW_BUDGET / 6);
        assert!(window(6) * 6 <= PEER_WINDOW_BUDGET);
        assert_eq!(window(7), 3, "an 8-host fleet");
        // Never below one chunk, however many peers (a 16-host fleet has ~15-30).
        assert_eq!(window(15), 1);
        assert_eq!(window(30), 1);
        assert_eq!(window(1000), 1);
    }

    #[test]
    fn a_piece_another_host_fetches_from_the_origin_is_not_asked_of_it() {
        use librqbit::piece_picker::PiecePicker;
        let ip = |i: u8| IpAddr::from([10, 77, 0, i]);
        let r = release(&[("bin/app", 64 << 14)], 16 << 10);
        let pieces = Arc::new(PieceMap::new(r.piece_count()));
        let picker = Arc::new(Picker::new(&r, pieces.clone(), Some(ip(11)), &[], None));
        // A piece a read waits on, whose turn at the origin has come (rank 0, alone).
        let _read = picker.want(5..6);
        assert!(picker.may_ask_seeder(5, &[]));
        assert!(!picker.fetching_elsewhere(5));
        picker.on_peer_fetching(5, ip(12), false);
        assert!(picker.fetching_elsewhere(5), "background: held");
        assert!(!picker.may_ask_seeder(5, &[]), "a read waits a moment too");
        assert!(!picker.fetching_elsewhere(6));
        // The read's hold ends first, the background's later.
        std::thread::sleep(FETCHING_HOLDS_READS);
        assert!(picker.may_ask_seeder(5, &[]));
        assert!(picker.fetching_elsewhere(5));
        // A piece already here is not recorded.
        pieces.set(7);
        picker.on_peer_fetching(7, ip(12), false);
        assert!(!picker.fetching_elsewhere(7));
    }

    #[test]
    fn hosts_agree_on_who_asks_the_origin_first_and_one_address_never_waits() {
        use librqbit::piece_picker::PiecePicker;
        let ip = |i: u8| IpAddr::from([10, 77, 0, i]);
        let fleet: Vec<IpAddr> = (11..19).map(ip).collect();
        for piece in 0..200 {
            // Each host ranks itself among the others: the ranks are 0..n, once each.
            let mut ranks: Vec<usize> = fleet
                .iter()
                .map(|me| {
                    // its peer table may list a peer twice (a connection each way)
                    let mut others: Vec<IpAddr> = fleet.clone();
                    others.extend(fleet.iter().take(3));
                    seeder_rank(piece, *me, &others)
                })
                .collect();
            ranks.sort();
            assert_eq!(ranks, (0..fleet.len()).collect::<Vec<_>>(), "piece {piece}");
        }
        let firsts: std::collections::HashSet<usize> = (0..200)
            .map(|piece| {
                (0..fleet.len())
                    .find(|&h| seeder_rank(piece, fleet[h], &fleet) == 0)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            firsts.len(),
            fleet.len(),
            "every host goes first for some pieces"
        );
        // Peers on this host's own address (one machine, as in tests) do not count.
        assert_eq!(seeder_rank(7, ip(1), &[ip(1), ip(1)]), 0);

        let r = release(&[("bin/app", 64 << 14)], 16 << 10);
        let pieces = Arc::new(PieceMap::new(r.piece_count()));
        let me = fleet[0];
        let picker = Arc::new(Picker::new(&r, pieces.clone(), Some(me), &[], None));
        let late = (0..64u32)
            .find(|&p| seeder_rank(p, me, &fleet) >= 2)
            .unwrap();
        let first = (0..64u32)
            .find(|&p| seeder_rank(p, me, &fleet) == 0)
            .unwrap();
        // Read-ahead: the first host in the order asks at once, the others in turn.
        picker.ahead(u64::from(late)..u64::from(late) + 1);
        picker.ahead(u64::from(first)..u64::from(first) + 1);
        assert!(!picker.may_ask_seeder(late, &fleet));
        assert!(picker.may_ask_seeder(first, &fleet));
        std::thread::sleep(SEEDER_STAGGER * STAGGER_RANKS as u32);
        assert!(picker.may_ask_seeder(late, &fleet));
        let late = (0..64u32)
            .find(|&p| seeder_rank(p, me, &fleet) >= 2 && p != late)
            .unwrap();
        // A read waits: its turn comes after rank x SEEDER_STAGGER.
        let _wanted = picker.want(u64::from(late)..u64::from(late) + 1);
        assert!(!picker.may_ask_seeder(late, &fleet));
        std::thread::sleep(SEEDER_STAGGER * STAGGER_RANKS as u32);
        assert!(picker.may_ask_seeder(late, &fleet));
        // Without an address of its own (listening on 0.0.0.0) a host never waits.
        let anywhere = Picker::new(&r, pieces, Some(IpAddr::from([0, 0, 0, 0])), &[], None);
        assert!(anywhere.may_ask_seeder(late, &fleet));
        // Another host said it is fetching a read-ahead piece from the origin: held.
        let held = (0..64u32)
            .find(|&p| seeder_rank(p, me, &fleet) == 0 && p != first)
            .unwrap();
        picker.ahead(u64::from(held)..u64::from(held) + 1);
        picker.on_peer_fetching(held, fleet[1], false);
        assert!(!picker.may_ask_seeder(held, &fleet));
    }

    #[test]
    fn haves_wait_only_after_the_boot_and_outside_the_profile() {
        use librqbit::piece_picker::PiecePicker;
        let r = release(&[("bin/app", 8 << 14)], 16 << 10);
        let pieces = Arc::new(PieceMap::new(r.piece_count()));
        // Without a profile every `have` goes at once.
        let plain = Picker::new(&r, pieces.clone(), None, &[], None);
        assert!(!plain.have_may_wait(5));
        let picker = Picker::new(&r, pieces.clone(), None, &[2, 1], None);
        assert!(!picker.have_may_wait(5), "the boot is not done yet");
        pieces.set(1);
        pieces.set(2);
        assert!(picker.have_may_wait(5));
        assert!(!picker.have_may_wait(2), "a profile piece goes at once");
    }

    #[test]
    fn a_profile_from_a_peer_becomes_the_boot_tier_once_and_garbage_is_ignored() {
        use librqbit::piece_picker::PiecePicker;
        let r = Arc::new(release(&[("a", 8 << 14)], 16 << 10));
        let pieces = Arc::new(PieceMap::new(r.piece_count()));
        let picker = Picker::new(&r, pieces, None, &[], None);
        // Without the exchange: no ask, no offer, nothing accepted.
        assert!(!picker.profile_ask_begin());
        assert_eq!(picker.profile_max_len(), 0);
        // The test's own profile format: piece numbers, comma-separated.
        let accept = |b: &[u8]| -> Option<Vec<u32>> {
            std::str::from_utf8(b)
                .ok()?
                .split(',')
                .map(|x| x.parse().ok())
                .collect()
        };
        picker.exchange_profiles(
            r.clone(),
            ProfileExchange {
                offer: None,
                accept: Some(Box::new(accept)),
            },
        );
        assert_eq!(picker.profile_offer(), None);
        // At most PROFILE_ASKS asks at once; an ended one gives its place back.
        assert!((0..PROFILE_ASKS).all(|_| picker.profile_ask_begin()));
        assert!(!picker.profile_ask_begin());
        picker.profile_ask_end();
        assert!(picker.profile_ask_begin());
        let peer = IpAddr::from([10, 0, 0, 1]);
        picker.on_profile(b"\xff\xfe not a profile", peer);
        assert!(picker.received_profile().is_none() && picker.boot_progress().is_none());
        // Still wanted: the next is taken, in its order, as the first tier.
        picker.on_profile(b"5,2", peer);
        assert_eq!(picker.received_profile(), Some(&(peer, vec![5, 2])));
        assert_eq!(picker.boot_progress(), Some((0, 2)));
        let first = picker.background_order().unwrap()[0].clone();
        let mut sorted_first = first.clone();
        sorted_first.sort();
        assert_eq!(sorted_first, vec![2, 5]);
        // Passed on to peers that ask; no more asks, a later profile is ignored.
        assert_eq!(picker.profile_offer().as_deref(), Some(&b"5,2"[..]));
        assert!(!picker.profile_ask_begin());
        picker.on_profile(b"1", IpAddr::from([10, 0, 0, 2]));
        assert_eq!(picker.received_profile().unwrap().0, peer);
    }
}
