//! Coordinates piece download state by wrapping ChunkTracker with inflight piece tracking.
//!
//! This module provides the [`PieceTracker`] type which encapsulates the relationship between
//! queued pieces (in ChunkTracker) and in-flight pieces (being downloaded by a peer).
//!
//! The key invariant maintained is: a piece is in exactly one state at any time:
//! - HAVE (completed)
//! - QUEUED (available to download)
//! - IN_FLIGHT (currently being downloaded)
//! - NOT_NEEDED (not selected for download)

use crate::piece_picker::FarAsk;
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use buffers::ByteBuf;
use librqbit_core::lengths::{ChunkInfo, ValidPieceIndex};
use peer_binary_protocol::Piece;

use crate::{
    chunk_tracker::{ChunkMarkingResult, ChunkTracker},
    file_info::FileInfo,
    type_aliases::{FileInfos, FilePriorities, PeerHandle},
};

/// Tracks a piece currently being downloaded.
#[derive(Debug, Clone)]
pub struct InflightPiece {
    pub peer: PeerHandle,
    pub started: Instant,
    /// swarmfs patch: other peers asked for the chunks still missing of a piece a reader
    /// waits on (it completes from whichever chunks come first).
    pub helpers: Vec<PeerHandle>,
}

/// swarmfs patch: at most this many peers help the one a piece a reader waits on was
/// asked of.
const MAX_HELPERS: usize = 2;

/// Result of attempting to acquire a piece.
#[derive(Debug)]
pub enum AcquireResult {
    /// A new piece was reserved from the queue.
    Reserved(ValidPieceIndex),
    /// A piece was stolen from a slower peer.
    Stolen {
        piece: ValidPieceIndex,
        from_peer: PeerHandle,
    },
    /// swarmfs patch: a piece a reader waits on, in flight with another peer: this peer
    /// is asked for its missing chunks too.
    Help(ValidPieceIndex),
    /// No pieces are available for this peer.
    NoneAvailable,
}

/// Parameters for acquiring a piece.
pub struct AcquireRequest<'a, I, P, S>
where
    I: Iterator<Item = ValidPieceIndex>,
    P: Fn(ValidPieceIndex) -> bool,
    S: Fn(ValidPieceIndex) -> bool,
{
    /// The peer requesting a piece.
    pub peer: PeerHandle,
    /// The peer's average piece download time (for steal calculations).
    pub peer_avg_time: Option<Duration>,
    /// Priority pieces to check first (e.g., for streaming).
    pub priority_pieces: I,
    /// File download priority ordering.
    pub file_priorities: &'a FilePriorities,
    /// File metadata for iterating pieces.
    pub file_infos: &'a FileInfos,
    /// Returns true if the peer has the given piece.
    pub peer_has_piece: P,
    /// Returns true if the piece can be stolen (e.g., not locked for writing).
    pub can_steal: S,
    /// swarmfs patch: the application's order for background pieces (None: file order):
    /// tiers, and within a tier rarest first by `availability`.
    pub background_order: Option<&'a [Vec<u32>]>,
    /// swarmfs patch: how many connected peers have each piece.
    pub availability: &'a [u32],
    /// swarmfs patch: how many connected neighbours (`PiecePicker::is_neighbour`) that
    /// unchoked us have each piece, and whether the peer asked is not a neighbour: it is
    /// then not asked for a piece wanted soon or in the background that a neighbour has
    /// (pieces readers wait on go to whoever has them). A rack's uplink is a quarter of
    /// its hosts' links or less; a piece in the rack crosses it no more.
    pub near_availability: &'a [u32],
    pub peer_is_far: bool,
    /// swarmfs patch: how many live seeders are counted in `near_availability`.
    pub near_seeders: u32,
    /// swarmfs patch: whether a peer that is not a neighbour may be asked now for this
    /// piece, which no neighbour has (see `PiecePicker::may_ask_far`).
    pub may_ask_far: &'a dyn Fn(ValidPieceIndex, FarAsk) -> bool,
    /// swarmfs patch: pieces wanted soon, taken rarest first after the priority pieces.
    pub soon: &'a [u32],
    /// swarmfs patch: the peer has every piece, and how many live peers do. A seeder (the
    /// origin) is asked in the background only for pieces no other peer has: the rest
    /// can come from those peers, and the origin's uplink is the fleet's scarcest link.
    pub peer_is_seeder: bool,
    pub live_seeders: u32,
    /// swarmfs patch: a priority piece in flight with another peer this long is taken over.
    pub priority_steal_after: Option<Duration>,
    /// swarmfs patch: a priority piece in flight with another peer is helped only once it
    /// has been in flight this long (`None`: at once).
    pub priority_help_after: Option<Duration>,
    /// swarmfs patch: whether background (non-priority) pieces may be started now, and
    /// if not, how many of the first tiers still may.
    pub background_allowed: bool,
    pub tiers_while_held_back: usize,
    /// swarmfs patch: for a seeder peer, whether it may be asked for this urgent or soon
    /// piece now (see `PiecePicker::may_ask_seeder`).
    pub may_ask_seeder: &'a dyn Fn(ValidPieceIndex) -> bool,
    /// swarmfs patch: whether another peer is fetching this piece from a seeder now
    /// (see `PiecePicker::fetching_elsewhere`): a seeder is not asked for it in the
    /// background.
    pub fetching_elsewhere: &'a dyn Fn(ValidPieceIndex) -> bool,
    /// swarmfs patch: only a priority piece (or a take-over of one) or one wanted soon,
    /// nothing else: a requester busy with a background piece looks for one a reader
    /// waits on or will read next.
    pub only_priority: bool,
    /// swarmfs patch: the live peers that have every piece (the origin), while readers
    /// wait (for the take-over of their pieces); empty otherwise.
    pub seeders: &'a [PeerHandle],
    /// swarmfs patch: the live peers that have every piece, always: a piece in flight
    /// from one of them is taken over by a peer that has it (`take_from_seeder`).
    pub all_seeders: &'a [PeerHandle],
    /// swarmfs patch: the peer's bitfield, when known: a peer with none of the queued
    /// pieces is told so without a scan of the order.
    pub peer_bitfield: Option<&'a crate::type_aliases::BF>,
}

impl<'a, I, P, S> AcquireRequest<'a, I, P, S>
where
    I: Iterator<Item = ValidPieceIndex>,
    P: Fn(ValidPieceIndex) -> bool,
    S: Fn(ValidPieceIndex) -> bool,
{
    /// swarmfs patch: the request's view of neighbours, apart from the request (its
    /// priority pieces are iterated while it is asked).
    fn near(&self) -> Near<'a> {
        Near {
            near_availability: self.near_availability,
            near_seeders: self.near_seeders,
            availability: self.availability,
            live_seeders: self.live_seeders,
            peer_is_far: self.peer_is_far,
            fetching_elsewhere: self.fetching_elsewhere,
            may_ask_far: self.may_ask_far,
        }
    }
}

/// swarmfs patch: what an acquisition knows of neighbours (`AcquireRequest::near`).
#[derive(Clone, Copy)]
struct Near<'a> {
    near_availability: &'a [u32],
    near_seeders: u32,
    availability: &'a [u32],
    live_seeders: u32,
    peer_is_far: bool,
    fetching_elsewhere: &'a dyn Fn(ValidPieceIndex) -> bool,
    may_ask_far: &'a dyn Fn(ValidPieceIndex, FarAsk) -> bool,
}

impl Near<'_> {
    /// How many neighbours that unchoked us and are not seeders have `piece`.
    /// Neighbours that have every piece are seeders to librqbit, which asks a seeder
    /// only for what no other peer has and no other peer fetches from one (to spare the
    /// origin); counted like the others, they kept far peers off a piece that only they
    /// and far peers had, and it was asked of nobody for as long as such a fetch held it
    /// (a 256-host fleet's last host: 155 s against 73 s).
    fn near_non_seeders(&self, piece: ValidPieceIndex) -> u32 {
        self.near_availability
            .get(piece.get_usize())
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.near_seeders)
    }

    /// For a seeder asked for `piece` (which `have` live peers have): whether a peer
    /// that is not a seeder has it (for a seeder that is a neighbour, a neighbour that is
    /// not one counts first).
    fn others_have(&self, piece: ValidPieceIndex, have: u32) -> bool {
        (!self.peer_is_far && self.near_non_seeders(piece) > 0)
            || have > self.live_seeders.max(1)
    }

    /// The peer asked is far and a neighbour can send `piece`: one that is not a seeder
    /// has it, or only seeders have it and librqbit would ask a seeder for it (a
    /// neighbour that has every piece is asked only then).
    fn near_has(&self, piece: ValidPieceIndex) -> bool {
        self.peer_is_far
            && (self.near_non_seeders(piece) > 0
                || (self.near_seeders > 0
                    && self
                        .availability
                        .get(piece.get_usize())
                        .is_none_or(|&have| have <= self.live_seeders.max(1))
                    && !(self.fetching_elsewhere)(piece)))
    }

    /// The peer asked is far and the picker does not let it be asked for `piece` this
    /// way now (another neighbour is to fetch it into the rack first).
    fn not_my_turn(&self, piece: ValidPieceIndex, ask: FarAsk) -> bool {
        self.peer_is_far && !(self.may_ask_far)(piece, ask)
    }
}

/// swarmfs patch: a background scan takes the rarest of the first this many pieces it
/// could ask the peer for (the order is shuffled per host, so they are a sample of the
/// queue). A scan of the whole order per reservation grew with the square of the piece
/// count (8 hosts, 8192 pieces of 32 KiB: a sixth of a mount's CPU).
const RAREST_OF: usize = 64;

/// swarmfs patch: a background scan for a far peer gives up after skipping this many
/// pieces that are other neighbours' to fetch first.
const FAR_TURN_SCAN: usize = 4 * RAREST_OF;

/// Coordinates piece download state.
///
/// Wraps a [`ChunkTracker`] with tracking of which pieces are currently being downloaded
/// (in-flight) and by which peer. This ensures that:
///
/// - A piece is only assigned to one peer at a time (unless stolen)
/// - Pieces are properly requeued when a peer dies
/// - State transitions maintain invariants
pub struct PieceTracker {
    chunks: ChunkTracker,
    /// (swarmfs patch: hashed with FxHash, not SipHash: the picker looks up every urgent
    /// piece here before each chunk request while readers wait.)
    inflight: HashMap<ValidPieceIndex, InflightPiece, rustc_hash::FxBuildHasher>,
    /// swarmfs patch: pieces that failed their hash check with chunks from several peers:
    /// fetched from one peer only next time, so that a liar is found.
    single_source: std::collections::HashSet<ValidPieceIndex>,
    /// swarmfs patch: per tier of the background order (identified by its address), how
    /// many of its first pieces are here; pieces never stop being here, so the scan for
    /// the rarest piece starts after them (each reservation scanned every tier from its
    /// start: 16 hosts, 32 KiB pieces, ~5% of the CPU).
    tier_cursors: (usize, Vec<usize>),
}

impl PieceTracker {
    // === CONSTRUCTION ===

    /// Create a new PieceTracker wrapping the given ChunkTracker.
    pub fn new(chunks: ChunkTracker) -> Self {
        Self {
            chunks,
            inflight: HashMap::default(),
            single_source: Default::default(),
            tier_cursors: (0, Vec::new()),
        }
    }

    /// Read-only access to the underlying ChunkTracker.
    pub fn chunks(&self) -> &ChunkTracker {
        &self.chunks
    }

    /// Consume the PieceTracker, requeuing any in-flight pieces.
    ///
    /// This is used when pausing a torrent - any pieces that were being downloaded
    /// need to be put back in the queue so they can be re-downloaded on resume.
    pub fn into_chunks(mut self) -> ChunkTracker {
        // Requeue all in-flight pieces so they'll be re-downloaded on resume
        for piece in self.inflight.into_keys() {
            self.chunks.mark_piece_broken_if_not_have(piece);
        }
        self.chunks
    }

    // === PIECE ACQUISITION ===

    /// Attempt to acquire a piece for the requesting peer.
    ///
    /// The acquisition strategy is:
    /// 1. Try to steal a piece from a peer that's 10x slower
    /// 2. Try to reserve a piece from the queue (priority pieces first)
    /// 3. Try to steal a piece from a peer that's 3x slower
    ///
    /// If `Stolen` is returned, the caller MUST call `peers.on_steal()` to notify
    /// the old peer and update counters.
    pub fn acquire_piece<I, P, S>(&mut self, mut req: AcquireRequest<I, P, S>) -> AcquireResult
    where
        I: Iterator<Item = ValidPieceIndex>,
        P: Fn(ValidPieceIndex) -> bool,
        S: Fn(ValidPieceIndex) -> bool,
    {
        // 1. Try steal with 10x threshold (very slow peer)
        // swarmfs patch: with a background order, steals wait for the endgame (below);
        // a request for priority pieces only never steals a background one (it is made
        // while readers wait, before every chunk request: the check alone was 4% of a
        // mount's CPU).
        let mut has_queued = None;
        if !req.only_priority
            && (req.background_order.is_none()
                || !*has_queued.get_or_insert_with(|| self.chunks.has_queued_pieces()))
            && let Some(result) = self.try_steal(&req, 10.0)
        {
            return result;
        }

        // 2. Try reserve from priority_pieces then queued pieces
        // First check priority pieces that aren't already downloaded or in-flight
        // swarmfs patch: ...or take over one that another peer has held for too long (a
        // reader waits on it; the other peer may be busy serving the whole fleet).
        let mut overdue = None;
        let mut help = None;
        let mut takeover = None;
        // Whether some peer has (or is sending) a priority piece: if none does, holding the
        // background back for it would only idle the links.
        let mut obtainable = false;
        // A reader's piece is asked of a far peer neither when a neighbour has it nor
        // before the picker lets it (a neighbour is fetching it into the rack).
        let near = req.near();
        for piece in &mut req.priority_pieces {
            if self.chunks.is_piece_have(piece) {
                continue;
            }
            obtainable |= self.inflight.contains_key(&piece)
                || req.availability.get(piece.get_usize()).is_some_and(|&n| n > 0);
            if !(req.peer_has_piece)(piece) {
                continue;
            }
            if req.peer_is_seeder
                && !self.inflight.contains_key(&piece)
                && !(req.may_ask_seeder)(piece)
            {
                continue;
            }
            match self.inflight.get(&piece) {
                // swarmfs patch: a neighbour that has it sends it (if it is slow, the
                // piece is taken from it after `priority_steal_after`).
                None if near.near_has(piece) || near.not_my_turn(piece, FarAsk::Read) => {}
                None => return self.reserve_piece(piece, req.peer),
                Some(info) if info.peer != req.peer => {
                    // swarmfs patch: a piece readers wait on that the origin is sending
                    // is taken over at once by a peer that has it (the origin's uplink,
                    // shared by the whole fleet, is the slowest way to get it, and every
                    // byte it need not send is one more for pieces nobody else has).
                    if takeover.is_none()
                        && !req.peer_is_seeder
                        && req.seeders.contains(&info.peer)
                    {
                        takeover = Some(piece);
                    }
                    // swarmfs patch: another peer that has it sends the missing chunks
                    // too (not the origin: its uplink carries every unique byte).
                    if help.is_none()
                        && !req.seeders.contains(&info.peer)
                        && !req.peer_is_seeder
                        && info.helpers.len() < MAX_HELPERS
                        && !self.single_source.contains(&piece)
                        && !info.helpers.contains(&req.peer)
                        && !same_host(info.peer, req.peer)
                        && !info.helpers.iter().any(|h| same_host(*h, req.peer))
                        && req
                            .priority_help_after
                            .is_none_or(|after| info.started.elapsed() >= after)
                    {
                        help = Some(piece);
                    }
                    if overdue.is_none()
                        && req
                            .priority_steal_after
                            .is_some_and(|after| info.started.elapsed() >= after)
                    {
                        overdue = Some(piece);
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(piece) = takeover
            && (req.can_steal)(piece)
            && let Some(info) = self.inflight.get_mut(&piece)
        {
            let from_peer = std::mem::replace(&mut info.peer, req.peer);
            info.helpers.retain(|h| *h != req.peer);
            return AcquireResult::Stolen { piece, from_peer };
        }
        if let Some(piece) = help
            && let Some(info) = self.inflight.get_mut(&piece)
        {
            info.helpers.push(req.peer);
            return AcquireResult::Help(piece);
        }
        if let Some(piece) = overdue
            && (req.can_steal)(piece)
            && let Some(info) = self.inflight.get_mut(&piece)
        {
            let from_peer = std::mem::replace(&mut info.peer, req.peer);
            info.started = Instant::now();
            info.helpers.retain(|h| *h != req.peer);
            return AcquireResult::Stolen { piece, from_peer };
        }
        if let Some(result) = self.take_from_seeder(&req) {
            return result;
        }
        // swarmfs patch: the fewest peers that can have a piece this peer has: itself and
        // every seeder. A piece that rare ends a scan for the rarest: none can be rarer
        // (the scans used to run to the end of the order, almost always: a fleet's hosts
        // all hold the origin's pieces, so "this peer only" never came up; 8 hosts, 32 KiB
        // pieces: a fifth of a mount's CPU went to these scans).
        let rarest_possible = req.live_seeders + u32::from(!req.peer_is_seeder);
        // swarmfs patch: pieces wanted soon, rarest first (ties: the given order).
        let lengths = *self.chunks.get_lengths();
        let mut best: Option<(u32, ValidPieceIndex)> = None;
        // swarmfs patch: the first piece a far peer was not asked for only because it is
        // another neighbour's turn: asked for if nothing else is (`PiecePicker::may_ask_far`).
        let mut late: Option<ValidPieceIndex> = None;
        for &i in req.soon {
            let Some(piece) = lengths.validate_piece_index(i) else {
                continue;
            };
            let have = req.availability.get(i as usize).copied().unwrap_or(0);
            // A seeder is asked for a piece wanted soon only if no other peer has it (as
            // in the background): at 32 hosts, 3.7 hosts asked the origin for each
            // read-ahead piece, most after another host already had it.
            if self.chunks.is_piece_have(piece)
                || self.inflight.contains_key(&piece)
                || !(req.peer_has_piece)(piece)
                || near.near_has(piece)
                || (req.peer_is_seeder
                    && (near.others_have(piece, have) || !(req.may_ask_seeder)(piece)))
            {
                continue;
            }
            if near.not_my_turn(piece, FarAsk::Queued) {
                late.get_or_insert(piece);
                continue;
            }
            if best.is_none_or(|(b, _)| have < b) {
                best = Some((have, piece));
                if have <= rarest_possible {
                    break;
                }
            }
        }
        if let Some((_, piece)) = best {
            return self.reserve_piece(piece, req.peer);
        }
        // swarmfs patch: a request for priority pieces only takes pieces wanted soon too.
        if req.only_priority {
            return AcquireResult::NoneAvailable;
        }

        // Held back: only the first `tiers_while_held_back` tiers of the order go on.
        // Never from a seeder: it is asked only for pieces no other peer has, and the
        // origin's uplink idling while reads wait slows the whole fleet (8 hosts, 256 MB:
        // the origin sent 22 pieces a second instead of 42 while hosts booted).
        let held_back = !req.background_allowed && obtainable && !req.peer_is_seeder;
        if held_back && (req.tiers_while_held_back == 0 || req.background_order.is_none()) {
            return AcquireResult::NoneAvailable;
        }

        // swarmfs patch: the application's background order, when it gives one (not
        // scanned when the peer has none of the queued pieces).
        let peer_has_queued = req
            .peer_bitfield
            .is_none_or(|bf| self.chunks.has_queued_pieces_in(bf));
        if !peer_has_queued {
            // nothing in the queue to ask this peer for
        } else if let Some(tiers) = req.background_order {
            let lengths = *self.chunks.get_lengths();
            let key = tiers.as_ptr() as usize;
            if self.tier_cursors.0 != key || self.tier_cursors.1.len() != tiers.len() {
                self.tier_cursors = (key, vec![0; tiers.len()]);
            }
            for (t, tier) in tiers.iter().enumerate() {
                if held_back && t >= req.tiers_while_held_back {
                    break;
                }
                let cursor = &mut self.tier_cursors.1[t];
                while let Some(&i) = tier.get(*cursor) {
                    match lengths.validate_piece_index(i) {
                        Some(p) if !self.chunks.is_piece_have(p) => break,
                        _ => *cursor += 1,
                    }
                }
                let mut best: Option<(u32, ValidPieceIndex)> = None;
                let mut candidates = 0;
                let mut turns_skipped = 0;
                for &i in &tier[*cursor..] {
                    let Some(piece) = lengths.validate_piece_index(i) else {
                        continue;
                    };
                    if !self.chunks.is_piece_queued(piece)
                        || !(req.peer_has_piece)(piece)
                        || near.near_has(piece)
                    {
                        continue;
                    }
                    let have = req.availability.get(i as usize).copied().unwrap_or(0);
                    if req.peer_is_seeder
                        && (near.others_have(piece, have) || (req.fetching_elsewhere)(piece))
                    {
                        continue;
                    }
                    if near.not_my_turn(piece, FarAsk::Queued) {
                        late.get_or_insert(piece);
                        // In a rack of 40 a far peer is asked for one piece in 40: a
                        // bounded look for one.
                        turns_skipped += 1;
                        if turns_skipped > FAR_TURN_SCAN {
                            break;
                        }
                        continue;
                    }
                    candidates += 1;
                    if candidates > RAREST_OF && best.is_some() {
                        break;
                    }
                    if best.is_none_or(|(b, _)| have < b) {
                        best = Some((have, piece));
                        if have <= rarest_possible.max(1) {
                            break; // none can be rarer
                        }
                    }
                }
                if let Some((_, piece)) = best {
                    return self.reserve_piece(piece, req.peer);
                }
            }
        } else {
            // Then check naturally ordered queued pieces
            // Note: iter_queued_pieces only returns pieces in queue_pieces (not in-flight)
            let queued: Vec<_> = self
                .chunks
                .iter_queued_pieces(req.file_priorities, req.file_infos)
                .collect();

            for piece in queued {
                if (req.peer_has_piece)(piece) {
                    return self.reserve_piece(piece, req.peer);
                }
            }
        }

        // swarmfs patch: nothing else to ask this far peer for: another neighbour's piece,
        // once its turns have passed.
        if let Some(piece) = late
            && !held_back
            && !self.chunks.is_piece_have(piece)
            && !self.inflight.contains_key(&piece)
            && (req.may_ask_far)(piece, FarAsk::Idle)
        {
            return self.reserve_piece(piece, req.peer);
        }

        // 3. Try steal with 3x threshold (moderately slow peer)
        // swarmfs patch: with a background order, only in the endgame (nothing left in
        // the queue). Mid-download a peer with nothing new to offer stole pieces in
        // flight elsewhere at 3x its own piece time, and the first peer's bytes, already
        // on their way, were thrown away: hosts of an 8-host fleet received 1.1-1.7x
        // the release. Without this steal: 1.01x.
        if (req.background_order.is_none()
            || !*has_queued.get_or_insert_with(|| self.chunks.has_queued_pieces()))
            && let Some(result) = self.try_steal(&req, 3.0)
        {
            return result;
        }

        AcquireResult::NoneAvailable
    }

    /// Reserve a piece: remove from queue, add to inflight.
    fn reserve_piece(&mut self, piece: ValidPieceIndex, peer: PeerHandle) -> AcquireResult {
        self.chunks.reserve_needed_piece(piece);
        self.inflight.insert(
            piece,
            InflightPiece {
                peer,
                started: Instant::now(),
                helpers: Vec::new(),
            },
        );
        AcquireResult::Reserved(piece)
    }

    /// swarmfs patch: a piece in flight from a seeder (the origin) that this peer, not a
    /// seeder, has is taken over, the oldest first; the seeder's requests for it are then
    /// cancelled (`on_steal`), chunks already received or not (taking over only pieces
    /// with none received measured worse: the repeats then completed, docs/experiments.md).
    /// A host asks the origin for a piece only when none of its peers has it; when one gets it meanwhile (from the origin, asked by a host
    /// that did not hear of this one's fetch), the origin need not send it again: its
    /// uplink carries every first copy of the fleet. A piece fetched from one peer only
    /// (after a failed hash check) stays where it is.
    fn take_from_seeder<I, P, S>(&mut self, req: &AcquireRequest<I, P, S>) -> Option<AcquireResult>
    where
        I: Iterator<Item = ValidPieceIndex>,
        P: Fn(ValidPieceIndex) -> bool,
        S: Fn(ValidPieceIndex) -> bool,
    {
        if req.only_priority || req.peer_is_seeder || req.all_seeders.is_empty() {
            return None;
        }
        let (piece, _) = self
            .inflight
            .iter()
            .filter(|(p, info)| {
                req.all_seeders.contains(&info.peer)
                    && (req.peer_has_piece)(**p)
                    && !self.single_source.contains(*p)
            })
            .map(|(p, info)| (*p, info.started))
            .min_by_key(|(_, started)| *started)?;
        if !(req.can_steal)(piece) {
            return None;
        }
        let info = self.inflight.get_mut(&piece)?;
        let from_peer = std::mem::replace(&mut info.peer, req.peer);
        info.started = Instant::now();
        info.helpers.retain(|h| *h != req.peer);
        Some(AcquireResult::Stolen { piece, from_peer })
    }

    /// Try to steal a piece from a slower peer.
    fn try_steal<I, P, S>(
        &mut self,
        req: &AcquireRequest<I, P, S>,
        threshold: f64,
    ) -> Option<AcquireResult>
    where
        I: Iterator<Item = ValidPieceIndex>,
        P: Fn(ValidPieceIndex) -> bool,
        S: Fn(ValidPieceIndex) -> bool,
    {
        let my_avg = req.peer_avg_time?;
        let min_elapsed = Duration::from_secs_f64(my_avg.as_secs_f64() * threshold);

        // Find the slowest piece from another peer that exceeds threshold
        // and that the stealing peer actually has (can download)
        let (piece, old_peer, _) = self
            .inflight
            .iter()
            .filter(|(_, info)| info.peer != req.peer)
            .filter(|(p, _)| (req.peer_has_piece)(**p))
            .map(|(p, info)| (*p, info.peer, info.started.elapsed()))
            .filter(|(_, _, elapsed)| *elapsed >= min_elapsed)
            .max_by_key(|(_, _, elapsed)| *elapsed)?;

        // Check can_steal (e.g., per_piece_lock)
        if !(req.can_steal)(piece) {
            return None;
        }

        // Update ownership (piece stays in inflight, just changes owner)
        let info = self.inflight.get_mut(&piece)?;
        info.peer = req.peer;
        info.started = Instant::now();

        Some(AcquireResult::Stolen {
            piece,
            from_peer: old_peer,
        })
    }

    // === PIECE COMPLETION ===

    /// Remove piece from inflight tracking (e.g., after all chunks received).
    ///
    /// Returns download duration if piece was in-flight.
    /// Note: Does NOT mark the piece as downloaded - caller should do hash check
    /// and then call `mark_piece_hash_ok` or `mark_piece_hash_failed`.
    #[allow(dead_code)] // swarmfs patch: the live state uses `take_inflight_piece`
    pub fn take_inflight(&mut self, piece: ValidPieceIndex) -> Option<Duration> {
        let inflight = self.inflight.remove(&piece)?;
        Some(inflight.started.elapsed())
    }

    /// swarmfs patch: like `take_inflight`, with the peers that were sending it.
    pub fn take_inflight_piece(&mut self, piece: ValidPieceIndex) -> Option<InflightPiece> {
        self.inflight.remove(&piece)
    }

    /// swarmfs patch: a piece whose chunks came from several peers failed its hash check:
    /// requeue it, to be fetched from one peer only (the liar is then found).
    pub fn mark_piece_hash_failed_multi_source(&mut self, piece: ValidPieceIndex) {
        self.single_source.insert(piece);
        self.chunks.forget_local_parts(piece);
        self.chunks.mark_piece_broken_if_not_have(piece);
    }

    /// swarmfs patch: the application wrote the bytes `known` of a piece nobody is
    /// fetching (see `ChunkTracker::set_local_parts`). False if the piece is in flight.
    pub fn set_local_parts(
        &mut self,
        piece: ValidPieceIndex,
        known: &[std::ops::Range<u32>],
    ) -> bool {
        if self.inflight.contains_key(&piece) {
            return false;
        }
        self.chunks.set_local_parts(piece, known)
    }

    /// Mark piece as downloaded after successful hash verification.
    pub fn mark_piece_hash_ok(&mut self, piece: ValidPieceIndex) {
        self.single_source.remove(&piece);
        self.chunks.mark_piece_downloaded(piece);
    }

    /// Mark piece as failed after hash verification failure - requeues the piece.
    pub fn mark_piece_hash_failed(&mut self, piece: ValidPieceIndex) {
        self.chunks.forget_local_parts(piece);
        self.chunks.mark_piece_broken_if_not_have(piece);
    }

    /// Release all pieces owned by a peer (on peer death).
    ///
    /// Moves all pieces owned by the peer from IN_FLIGHT back to QUEUED.
    /// Returns the number of pieces released.
    pub fn release_pieces_owned_by(&mut self, peer: PeerHandle) -> usize {
        // Collect pieces to release (can't modify while iterating)
        let pieces_to_release: Vec<_> = self
            .inflight
            .iter()
            .filter(|(_, info)| info.peer == peer)
            .map(|(p, _)| *p)
            .collect();

        let count = pieces_to_release.len();
        for piece in pieces_to_release {
            // swarmfs patch: a helper asked for every chunk still missing when it joined,
            // so it takes the piece over.
            if let Some(info) = self.inflight.get_mut(&piece)
                && !info.helpers.is_empty()
            {
                info.peer = info.helpers.remove(0);
                continue;
            }
            self.inflight.remove(&piece);
            self.chunks.mark_piece_broken_if_not_have(piece);
        }
        for info in self.inflight.values_mut() {
            info.helpers.retain(|h| *h != peer);
        }
        count
    }

    // === QUERIES ===

    /// Get the inflight info for a piece, if it's currently being downloaded.
    pub fn get_inflight(&self, piece: ValidPieceIndex) -> Option<&InflightPiece> {
        self.inflight.get(&piece)
    }

    /// Check if a piece is currently in-flight.
    #[allow(dead_code)]
    pub fn is_inflight(&self, piece: ValidPieceIndex) -> bool {
        self.inflight.contains_key(&piece)
    }

    /// Get the number of pieces currently in-flight.
    #[allow(dead_code)]
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    // === PASS-THROUGH METHODS ===

    /// Mark a chunk as downloaded. Returns the result indicating if the piece is complete.
    pub fn mark_chunk_downloaded(
        &mut self,
        piece: &Piece<ByteBuf<'_>>,
        chunk_info: &ChunkInfo,
    ) -> Option<ChunkMarkingResult> {
        self.chunks.mark_chunk_downloaded(piece, chunk_info)
    }

    /// Update which files are selected for download.
    pub fn update_only_files(
        &mut self,
        file_infos: &FileInfos,
        new_only_files: &HashSet<usize>,
    ) -> anyhow::Result<crate::chunk_tracker::HaveNeededSelected> {
        self.chunks.update_only_files(file_infos, new_only_files)
    }

    /// Update per-file have bytes when a piece completes. Returns remaining bytes for the file.
    pub fn update_file_have_on_piece_completed(
        &mut self,
        piece_id: ValidPieceIndex,
        file_id: usize,
        file_info: &FileInfo,
    ) -> u64 {
        self.chunks
            .update_file_have_on_piece_completed(piece_id, file_id, file_info)
    }

    /// Flush the have pieces bitfield to disk.
    pub fn flush_have_pieces(&mut self, flush_async: bool) -> anyhow::Result<()> {
        self.chunks.get_have_pieces_mut().flush(flush_async)
    }
}

/// swarmfs patch: two connections to one host share its uplink; on one machine
/// (loopback) addresses say nothing about uplinks.
fn same_host(a: PeerHandle, b: PeerHandle) -> bool {
    a.ip() == b.ip() && !a.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bitv::BitV as BitVTrait, type_aliases::BF};
    use librqbit_core::lengths::Lengths;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn peer(id: u8) -> PeerHandle {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, id)), 6881)
    }

    /// Create a simple ChunkTracker for testing.
    /// Creates a torrent with the specified number of pieces, all selected.
    fn make_test_chunk_tracker(num_pieces: u32) -> ChunkTracker {
        // Create a simple single-file torrent
        let piece_length = 16384u32; // 16KB pieces
        let total_length = piece_length as u64 * num_pieces as u64;

        let lengths = Lengths::new(total_length, piece_length).unwrap();

        let bf_len = lengths.piece_bitfield_bytes();

        // No pieces downloaded yet (empty have)
        let have = BF::from_boxed_slice(vec![0u8; bf_len].into_boxed_slice());

        // All pieces selected
        let mut selected = BF::from_boxed_slice(vec![0u8; bf_len].into_boxed_slice());
        for i in 0..num_pieces as usize {
            selected.set(i, true);
        }

        // Single file spanning all pieces
        let file_infos = vec![crate::file_info::FileInfo {
            relative_filename: "test.dat".into(),
            offset_in_torrent: 0,
            len: total_length,
            piece_range: 0..num_pieces,
            attrs: Default::default(),
        }];

        ChunkTracker::new(have.into_dyn(), selected, lengths, &file_infos).unwrap()
    }

    fn make_test_file_infos(num_pieces: u32) -> FileInfos {
        let piece_length = 16384u64;
        vec![crate::file_info::FileInfo {
            relative_filename: "test.dat".into(),
            offset_in_torrent: 0,
            len: piece_length * num_pieces as u64,
            piece_range: 0..num_pieces,
            attrs: Default::default(),
        }]
    }

    fn make_default_file_priorities(file_infos: &FileInfos) -> FilePriorities {
        (0..file_infos.len()).collect()
    }

    #[test]
    fn test_new_piece_tracker() {
        let chunks = make_test_chunk_tracker(10);
        let tracker = PieceTracker::new(chunks);
        assert_eq!(tracker.inflight_count(), 0);
    }

    #[test]
    fn test_reserve_piece_from_queue() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true, // Peer has all pieces
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        // Should reserve piece 0 (first in queue)
        match result {
            AcquireResult::Reserved(piece) => {
                assert_eq!(piece.get(), 0);
                assert!(tracker.is_inflight(piece));
                assert_eq!(tracker.inflight_count(), 1);
            }
            _ => panic!("Expected Reserved, got {:?}", result),
        }
    }

    #[test]
    fn a_piece_in_flight_from_the_seeder_is_taken_over_by_a_peer_that_has_it() {
        // swarmfs patch: piece 2 is in flight from the seeder (peer 9); a peer with piece
        // 2 takes it over, a peer without it reserves another piece, and a seeder does
        // not take it.
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);
        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);
        let seeders = [peer(9)];
        let piece2 = tracker.chunks.get_lengths().validate_piece_index(2).unwrap();
        assert!(matches!(
            tracker.reserve_piece(piece2, peer(9)),
            AcquireResult::Reserved(p) if p == piece2
        ));
        let mut ask = |who: PeerHandle, has: u32, is_seeder: bool| {
            tracker.acquire_piece(AcquireRequest {
                peer: who,
                peer_avg_time: None,
                priority_pieces: std::iter::empty(),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |p| p.get() == has,
                can_steal: |_| true,
                background_order: None,
                availability: &[],
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder: is_seeder,
                live_seeders: 1,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
                fetching_elsewhere: &|_| false,
                only_priority: false,
                peer_bitfield: None,
                seeders: &[],
                all_seeders: &seeders,
            })
        };
        assert!(matches!(ask(peer(2), 3, false), AcquireResult::Reserved(p) if p.get() == 3));
        assert!(matches!(ask(peer(8), 2, true), AcquireResult::NoneAvailable));
        match ask(peer(1), 2, false) {
            AcquireResult::Stolen { piece, from_peer } => {
                assert_eq!(piece.get(), 2);
                assert_eq!(from_peer, peer(9));
            }
            r => panic!("expected the take-over of piece 2, got {r:?}"),
        }
        // Taken over once: another peer that has it finds nothing more to take.
        assert!(matches!(ask(peer(3), 2, false), AcquireResult::NoneAvailable));
    }

    #[test]
    fn a_seeder_is_not_asked_for_a_piece_another_peer_fetches_from_it() {
        // swarmfs patch: background order [3, 1, 4], only the seeder has any of them;
        // another peer said it is fetching 3 from the seeder.
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);
        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);
        let order = [vec![3u32, 1, 4]];
        let availability = [1u32; 5];
        let mut ask = |peer_is_seeder: bool| {
            tracker.acquire_piece(AcquireRequest {
                peer: peer(1),
                peer_avg_time: None,
                priority_pieces: std::iter::empty(),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| true,
                background_order: Some(&order),
                availability: &availability,
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder,
                live_seeders: 1,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
                fetching_elsewhere: &|p| p.get() == 3,
                only_priority: false,
                peer_bitfield: None,
                seeders: &[],
                all_seeders: &[],
            })
        };
        match ask(true) {
            AcquireResult::Reserved(piece) => assert_eq!(piece.get(), 1),
            r => panic!("expected piece 1 from the seeder, got {r:?}"),
        }
        // A peer that is not a seeder is asked for it as usual.
        match ask(false) {
            AcquireResult::Reserved(piece) => assert_eq!(piece.get(), 3),
            r => panic!("expected piece 3 from a peer, got {r:?}"),
        }
    }

    #[test]
    fn a_far_peer_is_not_asked_for_what_a_neighbour_has_nor_out_of_turn() {
        // swarmfs patch: pieces 0 and 1 are with a neighbour, and 3 is another
        // neighbour's to fetch first (`may_ask_far`): a far peer gets 2, 3 only as a piece
        // a reader waits on, and neither 0 nor 1 even then; a neighbour gets 0 and 1.
        let chunks = make_test_chunk_tracker(4);
        let mut tracker = PieceTracker::new(chunks);
        let file_infos = make_test_file_infos(4);
        let file_priorities = make_default_file_priorities(&file_infos);
        let order = [vec![0u32, 1, 2, 3]];
        let availability = [2u32; 4];
        let near = [1u32, 1, 0, 0];
        let ask = |tracker: &mut PieceTracker, who: u8, far: bool, urgent: &[u32], soon: &[u32]| {
            let lengths = *tracker.chunks().get_lengths();
            tracker.acquire_piece(AcquireRequest {
                peer: peer(who),
                peer_avg_time: None,
                priority_pieces: urgent.iter().filter_map(|&i| lengths.validate_piece_index(i)),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| false,
                background_order: Some(&order),
                availability: &availability,
                near_availability: &near,
                peer_is_far: far,
                near_seeders: 0,
                may_ask_far: &|p, ask| p.get() != 3 || ask == FarAsk::Read,
                soon,
                peer_is_seeder: false,
                live_seeders: 0,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
                fetching_elsewhere: &|_| false,
                only_priority: false,
                peer_bitfield: None,
                seeders: &[],
                all_seeders: &[],
            })
        };
        let reserved = |r: AcquireResult| match r {
            AcquireResult::Reserved(p) => p.get(),
            r => panic!("expected a reserved piece, got {r:?}"),
        };
        assert_eq!(reserved(ask(&mut tracker, 1, true, &[], &[0, 1])), 2, "soon: not 0 or 1");
        assert!(matches!(
            ask(&mut tracker, 1, true, &[], &[3]),
            AcquireResult::NoneAvailable
        ));
        assert!(
            matches!(ask(&mut tracker, 1, true, &[1], &[]), AcquireResult::NoneAvailable),
            "a reader waits, and a neighbour has it"
        );
        assert_eq!(reserved(ask(&mut tracker, 1, true, &[3], &[])), 3, "a reader waits");
        assert_eq!(reserved(ask(&mut tracker, 2, false, &[], &[])), 0, "a neighbour");
        assert_eq!(reserved(ask(&mut tracker, 2, false, &[], &[])), 1, "a neighbour");
    }

    #[test]
    fn the_background_scan_skips_only_pieces_that_are_here() {
        // swarmfs patch: each tier's scan starts after its first pieces that are here;
        // a piece that failed its check is taken again, and another order starts afresh.
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);
        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);
        let order = [vec![0u32, 1, 2, 3, 4]];
        let reversed = [vec![4u32, 3, 2, 1, 0]];
        let availability = [2u32; 5];
        let ask = |tracker: &mut PieceTracker, order: &[Vec<u32>]| {
            match tracker.acquire_piece(AcquireRequest {
                peer: peer(1),
                peer_avg_time: None,
                priority_pieces: std::iter::empty(),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| false,
                background_order: Some(order),
                availability: &availability,
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder: false,
                live_seeders: 1,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
                fetching_elsewhere: &|_| false,
                only_priority: false,
                peer_bitfield: None,
                seeders: &[],
                all_seeders: &[],
            }) {
                AcquireResult::Reserved(piece) => {
                    tracker.take_inflight(piece);
                    piece
                }
                r => panic!("expected a reserved piece, got {r:?}"),
            }
        };
        let p0 = ask(&mut tracker, &order);
        assert_eq!(p0.get(), 0);
        tracker.mark_piece_hash_ok(p0);
        let p1 = ask(&mut tracker, &order);
        assert_eq!(p1.get(), 1);
        tracker.mark_piece_hash_failed(p1);
        assert_eq!(ask(&mut tracker, &order).get(), 1, "a failed piece is taken again");
        tracker.mark_piece_hash_ok(p1);
        let p4 = ask(&mut tracker, &reversed);
        assert_eq!(p4.get(), 4);
        tracker.mark_piece_hash_ok(p4);
        assert_eq!(ask(&mut tracker, &order).get(), 2);
        let p3 = ask(&mut tracker, &reversed);
        assert_eq!(p3.get(), 3);
    }

    #[test]
    fn a_scan_for_the_rarest_stops_at_the_rarest_possible() {
        // swarmfs patch: the scan stops at a piece only this peer and the seeders have,
        // takes the rarest of the first RAREST_OF candidates, and is not made at all for
        // a peer whose bitfield has none of the queued pieces.
        let n = 200u32;
        let chunks = make_test_chunk_tracker(n);
        let mut tracker = PieceTracker::new(chunks);
        let file_infos = make_test_file_infos(n);
        let file_priorities = make_default_file_priorities(&file_infos);
        let order = [(0..n).collect::<Vec<u32>>()];
        let ask = |tracker: &mut PieceTracker,
                   availability: &[u32],
                   bitfield: Option<&BF>|
         -> AcquireResult {
            tracker.acquire_piece(AcquireRequest {
                peer: peer(1),
                peer_avg_time: None,
                priority_pieces: std::iter::empty(),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| false,
                background_order: Some(&order),
                availability,
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder: false,
                live_seeders: 1,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
                fetching_elsewhere: &|_| false,
                only_priority: false,
                peer_bitfield: bitfield,
                seeders: &[],
                all_seeders: &[],
            })
        };
        let reserved = |r: AcquireResult| match r {
            AcquireResult::Reserved(p) => p.get(),
            r => panic!("expected a reserved piece, got {r:?}"),
        };
        // Piece 20 is as rare as a piece this peer has can be (it and the one seeder):
        // taken, though the (impossible) count of piece 30 is lower.
        let mut availability = vec![5u32; n as usize];
        availability[20] = 2;
        availability[30] = 1;
        let p = reserved(ask(&mut tracker, &availability, None));
        assert_eq!(p, 20);
        tracker.take_inflight(lengths_piece(&tracker, p));
        // The rarest of the first RAREST_OF candidates (0..=64 but 20, in flight):
        // piece 50, not piece 150, rarer but past them.
        let mut availability = vec![5u32; n as usize];
        availability[50] = 4;
        availability[150] = 3;
        assert_eq!(reserved(ask(&mut tracker, &availability, None)), 50);
        // A peer with none of the queued pieces: nothing, without a scan.
        let none = BF::from_boxed_slice(vec![0u8; (n as usize).div_ceil(8)].into_boxed_slice());
        assert!(matches!(
            ask(&mut tracker, &availability, Some(&none)),
            AcquireResult::NoneAvailable
        ));
        // One queued piece in the bitfield is enough to scan (peer_has_piece decides).
        let mut only_199 = none.clone();
        only_199.set(199, true);
        assert_eq!(reserved(ask(&mut tracker, &availability, Some(&only_199))), 0);
    }

    fn lengths_piece(tracker: &PieceTracker, i: u32) -> ValidPieceIndex {
        tracker.chunks().get_lengths().validate_piece_index(i).unwrap()
    }

    #[test]
    fn test_reserve_filters_by_peer_has_piece() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Peer only has piece 2 and later
        // Note: iter_queued_pieces iterates in order: first, last, middle
        // So for 0..5: 0, 4, 1, 2, 3
        // With filter >= 2, we get 4 first (skips 0, takes 4)
        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |p| p.get() >= 2,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        match result {
            AcquireResult::Reserved(piece) => {
                // Got piece 4 (first one peer has in iteration order)
                assert!(piece.get() >= 2, "Should have gotten a piece >= 2");
            }
            _ => panic!("Expected Reserved, got {:?}", result),
        }
    }

    #[test]
    fn test_complete_piece() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Reserve a piece first
        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        let piece = match result {
            AcquireResult::Reserved(p) => p,
            _ => panic!("Expected Reserved"),
        };

        // Complete the piece (take_inflight + hash check + mark_piece_hash_ok)
        let duration = tracker.take_inflight(piece);
        assert!(duration.is_some());
        assert!(!tracker.is_inflight(piece));
        // Simulate successful hash check
        tracker.mark_piece_hash_ok(piece);
        assert!(tracker.chunks().is_piece_have(piece));
    }

    #[test]
    fn test_fail_piece_requeues() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Reserve piece 0
        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        let piece = match result {
            AcquireResult::Reserved(p) => p,
            _ => panic!("Expected Reserved"),
        };

        assert!(tracker.is_inflight(piece));

        // Fail the piece (take_inflight + hash check fails + mark_piece_hash_failed)
        let duration = tracker.take_inflight(piece);
        assert!(duration.is_some());
        // Simulate failed hash check
        tracker.mark_piece_hash_failed(piece);

        // Should no longer be in-flight
        assert!(!tracker.is_inflight(piece));
        // Should not be in have
        assert!(!tracker.chunks().is_piece_have(piece));
        // Should be back in queue - verify by trying to reserve it again
        let result2 = tracker.acquire_piece(AcquireRequest {
            peer: peer(2),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |p| p == piece, // Only has the failed piece
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        match result2 {
            AcquireResult::Reserved(p) => assert_eq!(p, piece),
            _ => panic!("Expected piece to be re-reservable after fail"),
        }
    }

    #[test]
    fn test_release_pieces_owned_by_peer() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        let peer_a = peer(1);
        let peer_b = peer(2);

        // Peer A reserves first two pieces (order: 0, 4, 1, 2, 3)
        // So peer A gets pieces 0 and 4
        let piece_a1 = match tracker.acquire_piece(AcquireRequest {
            peer: peer_a,
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        }) {
            AcquireResult::Reserved(p) => p,
            _ => panic!("Expected Reserved"),
        };
        let piece_a2 = match tracker.acquire_piece(AcquireRequest {
            peer: peer_a,
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        }) {
            AcquireResult::Reserved(p) => p,
            _ => panic!("Expected Reserved"),
        };

        // Peer B reserves next piece
        let piece_b = match tracker.acquire_piece(AcquireRequest {
            peer: peer_b,
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        }) {
            AcquireResult::Reserved(p) => p,
            _ => panic!("Expected Reserved"),
        };

        assert_eq!(tracker.inflight_count(), 3);
        assert!(tracker.is_inflight(piece_a1));
        assert!(tracker.is_inflight(piece_a2));
        assert!(tracker.is_inflight(piece_b));

        // Peer A dies
        let released = tracker.release_pieces_owned_by(peer_a);
        assert_eq!(released, 2);
        assert_eq!(tracker.inflight_count(), 1); // Only peer B's piece remains

        // Verify peer B's piece is still in-flight
        assert!(tracker.is_inflight(piece_b));
        // Verify peer A's pieces are no longer in-flight
        assert!(!tracker.is_inflight(piece_a1));
        assert!(!tracker.is_inflight(piece_a2));
    }

    #[test]
    fn test_into_chunks_requeues_inflight() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Reserve pieces 0 and 1
        tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });
        tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        assert_eq!(tracker.inflight_count(), 2);

        // Convert back to chunks (simulates pause)
        let chunks = tracker.into_chunks();

        // Create a new tracker and verify pieces are back in queue
        let mut new_tracker = PieceTracker::new(chunks);
        let result = new_tracker.acquire_piece(AcquireRequest {
            peer: peer(2),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        // Should get piece 0 again (was requeued)
        match result {
            AcquireResult::Reserved(p) => assert_eq!(p.get(), 0),
            _ => panic!("Expected to reserve piece 0 after into_chunks"),
        }
    }

    #[test]
    fn test_priority_pieces_checked_first() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Priority pieces: piece 3, then piece 2
        let piece3 = tracker
            .chunks()
            .get_lengths()
            .validate_piece_index(3)
            .unwrap();
        let piece2 = tracker
            .chunks()
            .get_lengths()
            .validate_piece_index(2)
            .unwrap();
        let priority = vec![piece3, piece2];

        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: priority.into_iter(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        // Should get piece 3 (first priority piece)
        match result {
            AcquireResult::Reserved(p) => assert_eq!(p.get(), 3),
            _ => panic!("Expected Reserved(3), got {:?}", result),
        }
    }

    #[test]
    fn test_none_available_when_no_pieces() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        // Peer has no pieces
        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer(1),
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| false, // Peer has nothing
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        match result {
            AcquireResult::NoneAvailable => {}
            _ => panic!("Expected NoneAvailable, got {:?}", result),
        }
    }

    #[test]
    fn test_take_inflight_nonexistent_piece_returns_none() {
        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);
        let piece = tracker
            .chunks()
            .get_lengths()
            .validate_piece_index(0)
            .unwrap();

        // Try to take a piece that's not in-flight
        let result = tracker.take_inflight(piece);
        assert!(result.is_none());
    }

    #[test]
    fn test_steal_only_pieces_peer_has() {
        // This test verifies the fix for a bug where try_steal didn't check
        // if the stealing peer actually has the piece in their bitfield.
        // Without this check, a peer could "steal" a piece they can't download,
        // leaving it stuck in inflight forever.

        let chunks = make_test_chunk_tracker(5);
        let mut tracker = PieceTracker::new(chunks);

        let file_infos = make_test_file_infos(5);
        let file_priorities = make_default_file_priorities(&file_infos);

        let peer_a = peer(1);
        let peer_b = peer(2);

        // Peer A reserves pieces 0 and 4 (first two in iteration order)
        let piece_0 = match tracker.acquire_piece(AcquireRequest {
            peer: peer_a,
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        }) {
            AcquireResult::Reserved(p) => {
                assert_eq!(p.get(), 0);
                p
            }
            _ => panic!("Expected Reserved"),
        };

        let piece_4 = match tracker.acquire_piece(AcquireRequest {
            peer: peer_a,
            peer_avg_time: None,
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |_| true,
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        }) {
            AcquireResult::Reserved(p) => {
                assert_eq!(p.get(), 4);
                p
            }
            _ => panic!("Expected Reserved"),
        };

        // Sleep briefly so pieces become stealable
        std::thread::sleep(Duration::from_millis(5));

        // Peer B tries to acquire with:
        // - Very short avg_time (1ms) so 3x threshold = 3ms < 5ms elapsed
        // - peer_has_piece returns true ONLY for piece 4, NOT piece 0
        let result = tracker.acquire_piece(AcquireRequest {
            peer: peer_b,
            peer_avg_time: Some(Duration::from_millis(1)),
            priority_pieces: std::iter::empty(),
            file_priorities: &file_priorities,
            file_infos: &file_infos,
            peer_has_piece: |p| p.get() == 4, // Peer B only has piece 4
            can_steal: |_| true,
            background_order: None,
            availability: &[],
            near_availability: &[],
            peer_is_far: false,
            near_seeders: 0,
            may_ask_far: &|_, _| true,
            soon: &[],
            peer_is_seeder: false,
            live_seeders: 0,
            priority_steal_after: None,
            priority_help_after: None,
            background_allowed: true,
            tiers_while_held_back: 0,
            may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
            only_priority: false,
            peer_bitfield: None,
            seeders: &[],
            all_seeders: &[],
        });

        // Should steal piece 4 (which peer B has), NOT piece 0 (which peer B doesn't have)
        match result {
            AcquireResult::Stolen { piece, from_peer } => {
                assert_eq!(piece, piece_4, "Should steal piece 4 (the one peer B has)");
                assert_eq!(from_peer, peer_a);
                // Verify piece 0 is still owned by peer A (wasn't stolen)
                assert_eq!(tracker.get_inflight(piece_0).unwrap().peer, peer_a);
            }
            _ => panic!("Expected Stolen, got {:?}", result),
        }
    }

    /// swarmfs patch: a piece a reader waits on is helped by other peers (once it has been
    /// in flight `priority_help_after`), taken over from a seeder at once, and fetched from
    /// one peer only after a multi-source hash failure.
    #[test]
    fn test_urgent_piece_helped_taken_over_and_single_source_after_failure() {
        let file_infos = make_test_file_infos(4);
        let file_priorities = make_default_file_priorities(&file_infos);
        let mut tracker = PieceTracker::new(make_test_chunk_tracker(4));
        let piece = tracker.chunks().get_lengths().validate_piece_index(2).unwrap();
        let host = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 6881);
        let other_port = |i: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 40000);
        let ask_after = |tracker: &mut PieceTracker,
                         who: PeerHandle,
                         seeders: &[PeerHandle],
                         help_after: Option<Duration>| {
            tracker.acquire_piece(AcquireRequest {
                peer: who,
                peer_avg_time: None,
                priority_pieces: std::iter::once(piece),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| true,
                background_order: Some(&[]),
                availability: &[],
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder: seeders.contains(&who),
                live_seeders: seeders.len() as u32,
                priority_steal_after: None,
                priority_help_after: help_after,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
                only_priority: true,
                peer_bitfield: None,
                seeders,
                all_seeders: seeders,
            })
        };
        let ask = |tracker: &mut PieceTracker, who: PeerHandle, seeders: &[PeerHandle]| {
            ask_after(tracker, who, seeders, None)
        };
        assert!(matches!(ask(&mut tracker, host(1), &[]), AcquireResult::Reserved(p) if p == piece));
        // Not before the piece has been in flight `priority_help_after`.
        let early = ask_after(&mut tracker, host(2), &[], Some(Duration::from_secs(3600)));
        assert!(matches!(early, AcquireResult::NoneAvailable), "{early:?}");
        // Another host helps; a second connection to that host does not; a seeder does not.
        assert!(matches!(ask(&mut tracker, host(2), &[host(9)]), AcquireResult::Help(p) if p == piece));
        assert!(matches!(ask(&mut tracker, other_port(2), &[host(9)]), AcquireResult::NoneAvailable));
        assert!(matches!(ask(&mut tracker, host(9), &[host(9)]), AcquireResult::NoneAvailable));
        assert!(matches!(ask(&mut tracker, host(3), &[]), AcquireResult::Help(_)));
        // At most MAX_HELPERS.
        assert!(matches!(ask(&mut tracker, host(4), &[]), AcquireResult::NoneAvailable));
        // The owner dies: its first helper takes the piece over.
        tracker.release_pieces_owned_by(host(1));
        assert_eq!(tracker.get_inflight(piece).unwrap().peer, host(2));
        assert_eq!(tracker.get_inflight(piece).unwrap().helpers, vec![host(3)]);
        // A multi-source hash failure: requeued, and then fetched from one peer only.
        let taken = tracker.take_inflight_piece(piece).unwrap();
        assert!(!taken.helpers.is_empty());
        tracker.mark_piece_hash_failed_multi_source(piece);
        assert!(matches!(ask(&mut tracker, host(5), &[]), AcquireResult::Reserved(_)));
        assert!(matches!(ask(&mut tracker, host(6), &[]), AcquireResult::NoneAvailable));
        tracker.take_inflight_piece(piece);
        tracker.mark_piece_hash_ok(piece);

        // A piece a reader waits on that a seeder is sending: the first other peer that has
        // it takes it over.
        let piece0 = tracker.chunks().get_lengths().validate_piece_index(0).unwrap();
        let seeders = [host(9)];
        let mut req = |who: PeerHandle| {
            tracker.acquire_piece(AcquireRequest {
                peer: who,
                peer_avg_time: None,
                priority_pieces: std::iter::once(piece0),
                file_priorities: &file_priorities,
                file_infos: &file_infos,
                peer_has_piece: |_| true,
                can_steal: |_| true,
                background_order: Some(&[]),
                availability: &[],
                near_availability: &[],
                peer_is_far: false,
                near_seeders: 0,
                may_ask_far: &|_, _| true,
                soon: &[],
                peer_is_seeder: who == host(9),
                live_seeders: 1,
                priority_steal_after: None,
                priority_help_after: None,
                background_allowed: true,
                tiers_while_held_back: 0,
                may_ask_seeder: &|_| true,
            fetching_elsewhere: &|_| false,
                only_priority: true,
                peer_bitfield: None,
                seeders: &seeders,
                all_seeders: &seeders,
            })
        };
        assert!(matches!(req(host(9)), AcquireResult::Reserved(p) if p == piece0));
        assert!(matches!(req(host(2)), AcquireResult::Stolen { piece: p, from_peer } if p == piece0 && from_peer == host(9)));
    }
}
