// The main logic of rqbit is here - connecting to peers, reading and writing messages
// to them, tracking peer state etc.
//
// ## Architecture
// There are many tasks cooperating to download the torrent. Tasks communicate both with message passing
// and shared memory.
//
// ### Shared locked state
// Shared state is access by almost all actors through RwLocks.
//
// There's one source of truth (TorrentStateLocked) for which chunks we have, need, and what peers are we waiting them from.
//
// Peer states that are important to the outsiders (tasks other than manage_peer) are in a sharded hash-map (DashMap)
//
// ### Tasks (actors)
// Peer adder task:
// - spawns new peers as they become known. It pulls them from a queue. The queue is filled in by DHT and torrent trackers.
//   Also gets updated when peers are reconnecting after errors.
//
// Each peer has one main task "manage_peer". It's composed of 2 futures running as one task through tokio::select:
// - "manage_peer" - this talks to the peer over network and calls callbacks on PeerHandler. The callbacks are not async,
//   and are supposed to finish quickly (apart from writing to disk, which is accounted for as "spawn_blocking").
// - "peer_chunk_requester" - this continuously sends requests for chunks to the peer.
//   it may steal chunks/pieces from other peers.
//
// ## Peer lifecycle
// State transitions:
// - queued (initial state) -> connected
// - connected -> live
// - ANY STATE -> dead (on error)
// - ANY STATE -> not_needed (when we don't need to talk to the peer anymore)
//
// When the peer dies, it's rescheduled with exponential backoff.
//
// > NOTE: deadlock notice:
// > peers and stateLocked are behind 2 different locks.
// > if you lock them in different order, this may deadlock.
// >
// > so don't lock them both at the same time at all, or at the worst lock them in the
// > same order (peers one first, then the global one).

pub mod peer;
pub mod peers;
pub mod stats;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use buffers::{ByteBuf, ByteBufOwned};
use clone_to_owned::CloneToOwned;
use librqbit_core::{
    constants::CHUNK_SIZE,
    hash_id::Id20,
    lengths::{ChunkInfo, Lengths, ValidPieceIndex},
    spawn_utils::spawn_with_cancel,
    speed_estimator::SpeedEstimator,
    torrent_metainfo::ValidatedTorrentMetaV1Info,
};
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use peer_binary_protocol::{
    Handshake, Message, Piece, Request,
    extended::{
        self, ExtendedMessage,
        handshake::ExtendedHandshake,
        ut_metadata::{UtMetadata, UtMetadataData},
        ut_pex::UtPex,
    },
};
use tokio::sync::{
    Notify, OwnedSemaphorePermit, Semaphore,
    mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, error, info, trace, warn};

use crate::{
    Error,
    chunk_tracker::{ChunkMarkingResult, ChunkTracker, HaveNeededSelected},
    file_ops::FileOps,
    limits::Limits,
    peer_connection::{
        PeerConnection, PeerConnectionHandler, PeerConnectionOptions, UploadSlot, WriterRequest,
    },
    piece_tracker::{AcquireRequest, AcquireResult, PieceTracker},
    session::CheckedIncomingConnection,
    session_stats::SessionStats,
    stream_connect::ConnectionKind,
    torrent_state::{peer::Peer, utils::atomic_inc},
    type_aliases::{BF, FilePriorities, FileStorage, PeerHandle},
};

use self::{
    peer::{
        PeerRx, PeerState, PeerTx, RemoveInflightRequestResult,
        stats::{
            atomic::PeerCountersAtomic as AtomicPeerCounters,
            snapshot::{PeerStatsFilter, PeerStatsSnapshot},
        },
    },
    peers::PeerStates,
    stats::{atomic::AtomicStats, snapshot::StatsSnapshot},
};

use super::{
    ManagedTorrentShared, TorrentMetadata,
    paused::TorrentStatePaused,
    streaming::TorrentStreams,
    utils::{TimedExistence, timeit},
};

fn make_piece_bitfield(lengths: &Lengths) -> BF {
    BF::from_boxed_slice(vec![0; lengths.piece_bitfield_bytes()].into_boxed_slice())
}

pub(crate) struct TorrentStateLocked {
    // Coordinates piece state: what chunks we have, need, and what pieces are in-flight.
    // If this is None, the torrent was paused, and this live state is useless, and needs to be dropped.
    pub(crate) pieces: Option<PieceTracker>,

    // The sorted file list in which order to download them.
    file_priorities: FilePriorities,

    // If this is None, then it was already used
    fatal_errors_tx: Option<tokio::sync::oneshot::Sender<anyhow::Error>>,

    unflushed_bitv_bytes: u64,
}

impl TorrentStateLocked {
    pub(crate) fn get_chunks(&self) -> crate::Result<&ChunkTracker> {
        self.pieces
            .as_ref()
            .map(|p| p.chunks())
            .ok_or(Error::ChunkTrackerEmpty)
    }

    pub(crate) fn get_pieces(&self) -> crate::Result<&PieceTracker> {
        self.pieces.as_ref().ok_or(Error::ChunkTrackerEmpty)
    }

    pub(crate) fn get_pieces_mut(&mut self) -> crate::Result<&mut PieceTracker> {
        self.pieces.as_mut().ok_or(Error::ChunkTrackerEmpty)
    }

    fn try_flush_bitv(&mut self, shared: &ManagedTorrentShared, flush_async: bool) {
        if self.unflushed_bitv_bytes == 0 {
            return;
        }
        trace!("trying to flush bitfield");
        if let Some(Err(e)) = self
            .pieces
            .as_mut()
            .map(|pt| pt.flush_have_pieces(flush_async))
        {
            warn!(id=?shared.id, info_hash = ?shared.info_hash, "error flushing bitfield: {e:#}");
        } else {
            trace!("flushed bitfield");
            self.unflushed_bitv_bytes = 0;
        }
    }
}

const FLUSH_BITV_EVERY_BYTES: u64 = 16 * 1024 * 1024;

pub enum AddIncomingPeerResult {
    Added,
    AlreadyActive,
    ConcurrencyLimitReached,
}

pub struct TorrentStateLive {
    peers: PeerStates,
    pub(crate) shared: Arc<ManagedTorrentShared>,
    metadata: Arc<TorrentMetadata>,
    _locked: RwLock<TorrentStateLocked>,

    pub(crate) files: FileStorage,

    per_piece_locks: Vec<RwLock<()>>,

    stats: AtomicStats,
    lengths: Lengths,

    // Limits how many active (occupying network resources) peers there are at a moment in time.
    peer_semaphore: Arc<Semaphore>,

    // The queue for peer manager to connect to them.
    peer_queue_tx: UnboundedSender<SocketAddr>,

    finished_notify: Notify,
    new_pieces_notify: Notify,

    down_speed_estimator: SpeedEstimator,
    up_speed_estimator: SpeedEstimator,
    cancellation_token: CancellationToken,

    session_stats: Arc<SessionStats>,

    pub(crate) streams: Arc<TorrentStreams>,
    have_broadcast_tx: tokio::sync::broadcast::Sender<ValidPieceIndex>,

    ratelimit_upload_tx: tokio::sync::mpsc::UnboundedSender<UploadItem>,
    ratelimits: Limits,
    /// swarmfs patch: the picker's view of the peers, taken at most every
    /// `PEER_SETS_MAX_AGE` or when the number of live peers or seeders changes.
    peer_sets: parking_lot::Mutex<Option<Arc<PeerSets>>>,
}

/// swarmfs patch: who the peers are, for the picker's seeder decisions. Collected from
/// the peer table (a walk of every shard of it) on each piece request, it was the
/// largest part of picking a piece in a 32-host fleet (a tenth of a mount's CPU).
struct PeerSets {
    taken: Instant,
    live: u32,
    live_seeders: u32,
    /// the live peers that have every piece
    seeders: Vec<PeerHandle>,
    /// the addresses of the live peers that are not seeders
    others: Vec<std::net::IpAddr>,
    /// the addresses of every known peer but the live seeders
    known: Vec<std::net::IpAddr>,
    /// the addresses of the live peers that are neighbours (`PiecePicker::is_neighbour`),
    /// each once
    near: Vec<std::net::IpAddr>,
    /// how many live seeders are counted as neighbours (`LivePeerState::near_counted`)
    near_seeders: u32,
}

/// swarmfs patch: a neighbour whose window stays full this long without a chunk back is
/// counted as one no more (a neighbour that announces everything and sends nothing would
/// keep far peers from every piece; a busy one answers a chunk well within it).
const NEAR_STALL: Duration = Duration::from_secs(5);

/// swarmfs patch: how stale `PeerSets` may be (a peer that connects or leaves changes the
/// counts, which renew it at once).
const PEER_SETS_MAX_AGE: Duration = Duration::from_millis(250);

impl TorrentStateLive {
    /// swarmfs patch: the peer sets, renewed when stale. Must not be called while a
    /// peer table entry is locked.
    fn peer_sets(&self) -> Arc<PeerSets> {
        let stats = self.peers.stats();
        let mut g = self.peer_sets.lock();
        if let Some(sets) = g.as_ref()
            && sets.live == stats.live
            && sets.live_seeders == stats.live_seeders
            && sets.taken.elapsed() < PEER_SETS_MAX_AGE
        {
            return sets.clone();
        }
        let mut sets = PeerSets {
            taken: Instant::now(),
            live: stats.live,
            live_seeders: stats.live_seeders,
            seeders: Vec::new(),
            others: Vec::new(),
            known: Vec::new(),
            near: Vec::new(),
            near_seeders: 0,
        };
        let picker = self.shared.options.piece_picker.as_ref();
        for e in self.peers.states.iter() {
            let live = e.value().get_live();
            if live.is_some() && picker.is_some_and(|p| p.is_neighbour(e.key().ip())) {
                sets.near.push(e.key().ip());
            }
            if live.is_some_and(|l| l.seeder && l.near_counted) {
                sets.near_seeders += 1;
            }
            match live {
                Some(l) if l.seeder => sets.seeders.push(*e.key()),
                Some(_) => {
                    sets.others.push(e.key().ip());
                    sets.known.push(e.key().ip());
                }
                None => sets.known.push(e.key().ip()),
            }
        }
        sets.near.sort_unstable();
        sets.near.dedup();
        let sets = Arc::new(sets);
        *g = Some(sets.clone());
        sets
    }

    fn max_request_window(&self) -> usize {
        self.shared
            .options
            .peer_max_request_window
            .unwrap_or(DEFAULT_PEER_REQUEST_WINDOW)
            .max(1)
    }

    pub(crate) fn new(
        paused: TorrentStatePaused,
        fatal_errors_tx: tokio::sync::oneshot::Sender<anyhow::Error>,
        cancellation_token: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let (peer_queue_tx, peer_queue_rx) = unbounded_channel();
        let session = paused
            .shared
            .session
            .upgrade()
            .context("session is dead, cannot start torrent")?;
        let session_stats = session.stats.clone();
        let down_speed_estimator = SpeedEstimator::default();
        let up_speed_estimator = SpeedEstimator::default();

        let have_bytes = paused.chunk_tracker.get_hns().have_bytes;
        let lengths = *paused.chunk_tracker.get_lengths();

        // TODO: make it configurable
        let file_priorities = {
            let mut pri = (0..paused.metadata.file_infos.len()).collect::<Vec<usize>>();
            // sort by filename, cause many torrents have random sort order.
            pri.sort_unstable_by_key(|id| {
                paused
                    .metadata
                    .file_infos
                    .get(*id)
                    .map(|fi| fi.relative_filename.as_path())
            });
            pri
        };

        let (have_broadcast_tx, _) = tokio::sync::broadcast::channel(128);

        let (ratelimit_upload_tx, ratelimit_upload_rx) =
            tokio::sync::mpsc::unbounded_channel::<UploadItem>();
        let ratelimits = Limits::new(paused.shared.options.ratelimits);

        let state = Arc::new(TorrentStateLive {
            shared: paused.shared.clone(),
            metadata: paused.metadata.clone(),
            peers: PeerStates {
                session_stats: session_stats.peers.clone(),
                stats: Default::default(),
                states: Default::default(),
                live_outgoing_peers: Default::default(),
                availability: Default::default(),
            },
            _locked: RwLock::new(TorrentStateLocked {
                pieces: Some(PieceTracker::new(paused.chunk_tracker)),
                file_priorities,
                fatal_errors_tx: Some(fatal_errors_tx),
                unflushed_bitv_bytes: 0,
            }),
            files: paused.files,
            stats: AtomicStats {
                have_bytes: AtomicU64::new(have_bytes),
                ..Default::default()
            },
            lengths,
            peer_semaphore: Arc::new(Semaphore::new(
                paused.shared.options.peer_limit.unwrap_or(128),
            )),
            new_pieces_notify: Notify::new(),
            peer_queue_tx,
            finished_notify: Notify::new(),
            down_speed_estimator,
            up_speed_estimator,
            cancellation_token,
            have_broadcast_tx,
            session_stats,
            streams: paused.streams,
            per_piece_locks: (0..lengths.total_pieces())
                .map(|_| RwLock::new(()))
                .collect(),
            ratelimit_upload_tx,
            peer_sets: Default::default(),
            ratelimits,
        });

        state.spawn(
            debug_span!(parent: state.shared.span.clone(), "speed_estimator_updater"),
            format!("[{}]speed_estimator_updater", state.shared.id),
            {
                let state = Arc::downgrade(&state);
                async move {
                    loop {
                        let state = match state.upgrade() {
                            Some(state) => state,
                            None => return Ok(()),
                        };
                        let now = Instant::now();
                        let stats = state.stats_snapshot();
                        let fetched = stats.fetched_bytes;
                        let remaining = state
                            .lock_read("get_remaining_bytes")
                            .get_chunks()?
                            .get_remaining_bytes();
                        state
                            .down_speed_estimator
                            .add_snapshot(fetched, Some(remaining), now);
                        state
                            .up_speed_estimator
                            .add_snapshot(stats.uploaded_bytes, None, now);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
        );

        state.spawn(
            debug_span!(parent: state.shared.span.clone(), "peer_adder"),
            format!("[{}]peer_adder", state.shared.id),
            state.clone().task_peer_adder(peer_queue_rx),
        );

        state.spawn(
            debug_span!(parent: state.shared.span.clone(), "upload_scheduler"),
            format!("[{}]upload_scheduler", state.shared.id),
            state.clone().task_upload_scheduler(ratelimit_upload_rx),
        );
        Ok(state)
    }

    #[track_caller]
    pub(crate) fn spawn(
        &self,
        span: tracing::Span,
        name: impl Into<Cow<'static, str>>,
        fut: impl std::future::Future<Output = crate::Result<()>> + Send + 'static,
    ) {
        spawn_with_cancel(span, name, self.cancellation_token.clone(), fut);
    }

    pub fn down_speed_estimator(&self) -> &SpeedEstimator {
        &self.down_speed_estimator
    }

    pub fn up_speed_estimator(&self) -> &SpeedEstimator {
        &self.up_speed_estimator
    }

    pub(crate) fn add_incoming_peer(
        self: &Arc<Self>,
        checked_peer: CheckedIncomingConnection,
    ) -> anyhow::Result<AddIncomingPeerResult> {
        use dashmap::mapref::entry::Entry;
        let (tx, rx) = unbounded_channel();
        let permit = match self.peer_semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                debug!("limit of live peers reached, dropping incoming peer");
                // swarmfs patch: counted, for the application's status.
                self.session_stats
                    .counters
                    .refused_over_peer_limit
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.peers.with_peer(checked_peer.addr, |p| {
                    atomic_inc(&p.stats.counters.incoming_connections);
                });
                return Ok(AddIncomingPeerResult::ConcurrencyLimitReached);
            }
        };

        let counters = match self.peers.states.entry(checked_peer.addr) {
            Entry::Occupied(mut occ) => {
                let peer = occ.get_mut();
                if let Err(e) = peer.incoming_connection(
                    checked_peer.handshake.peer_id,
                    tx.clone(),
                    &self.peers,
                    checked_peer.kind,
                ) {
                    match e {
                        peer::IncomingConnectionResult::AlreadyActive => {
                            debug!(
                                addr = %checked_peer.addr,
                                kind = %checked_peer.kind,
                                "peer already active, ignoring incoming connection"
                            );
                            return Ok(AddIncomingPeerResult::AlreadyActive);
                        }
                    }
                }
                peer.stats.counters.clone()
            }
            Entry::Vacant(vac) => {
                atomic_inc(&self.peers.stats.seen);
                let peer = Peer::new_live_for_incoming_connection(
                    *vac.key(),
                    checked_peer.handshake.peer_id,
                    tx.clone(),
                    &self.peers,
                    checked_peer.kind,
                );
                let counters = peer.stats.counters.clone();
                vac.insert(peer);
                counters
            }
        };
        atomic_inc(&counters.incoming_connections);

        self.spawn(
            debug_span!(
                parent: self.shared.span.clone(),
                "manage_incoming_peer",
                addr = %checked_peer.addr
            ),
            format!(
                "[{}][addr={}]manage_incoming_peer",
                self.shared.id, checked_peer.addr
            ),
            aframe!(
                self.clone()
                    .task_manage_incoming_peer(checked_peer, counters, tx, rx, permit)
            ),
        );
        Ok(AddIncomingPeerResult::Added)
    }

    async fn task_upload_scheduler(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<UploadItem>,
    ) -> crate::Result<()> {
        // swarmfs patch: chunks wait here, not in the writers, and go out by class, at
        // most `UPLOAD_SLOTS` per peer in its writer (`UploadQueue`).
        let released = Arc::new(Notify::new());
        let mut queue = UploadQueue::new(
            self.shared.options.repeat_hold,
            self.shared.options.read_repeat_hold,
        );
        let mut open = true;
        loop {
            while open {
                match rx.try_recv() {
                    Ok(item) => queue.push(item),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let Some((tx, ci, uploads)) = queue.pop_ready(UPLOAD_SLOTS) else {
                if queue.is_empty() && !open {
                    return Ok(());
                }
                // Wait for a chunk asked for, or a writer's slot back. `notify_one` keeps
                // a release that came before this wait.
                // Or for a repeat held back to become ready.
                let wake = queue.wake;
                tokio::select! {
                    item = rx.recv(), if open => match item {
                        Some(item) => queue.push(item),
                        None => open = false,
                    },
                    _ = released.notified() => {}
                    _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
                }
                continue;
            };
            // swarmfs patch: a request the peer cancelled while it queued here is not sent.
            if uploads.take_cancel(ci.piece_index.get(), ci.offset) {
                continue;
            }
            queue.sent(&ci, &tx, &uploads, self.lengths.piece_length(ci.piece_index));
            uploads.in_writer.fetch_add(1, Ordering::Relaxed);
            let slot = {
                let (uploads, released) = (uploads.clone(), released.clone());
                UploadSlot::new(move || {
                    uploads.in_writer.fetch_sub(1, Ordering::Relaxed);
                    released.notify_one();
                })
            };
            tokio::select! {
                _ = tx.closed() => {
                    continue;
                }
                res = self.ratelimits.prepare_for_upload(NonZeroU32::new(ci.size).unwrap()) => {
                    res?;
                }
            };
            if let Some(session) = self.shared.session.upgrade() {
                tokio::select! {
                    _ = tx.closed() => {
                        continue;
                    }
                    res = session.ratelimits.prepare_for_upload(NonZeroU32::new(ci.size).unwrap()) => {
                        res?;
                    }
                }
            }
            let _ = tx.send(WriterRequest::ReadChunkRequest(ci, Some(slot)));
        }
    }

    async fn task_manage_incoming_peer(
        self: Arc<Self>,
        checked_peer: CheckedIncomingConnection,
        counters: Arc<AtomicPeerCounters>,
        tx: PeerTx,
        rx: PeerRx,
        permit: OwnedSemaphorePermit,
    ) -> crate::Result<()> {
        let handler = PeerHandler {
            addr: checked_peer.addr,
            incoming: true,
            on_bitfield_notify: Default::default(),
            flow_control: Mutex::new(PeerFlowControl::new(self.max_request_window())),
            state: self.clone(),
            tx,
            counters,
            first_message_received: AtomicBool::new(false),
            cancel_token: self.cancellation_token.child_token(),
            client_name_and_version: self.shared.client_name_and_version().to_owned(),
            profile_rx: Mutex::new(None),
            uploads: Default::default(),
        };
        let _token_guard = handler.cancel_token.clone().drop_guard();
        let options = PeerConnectionOptions {
            connect_timeout: self.shared.options.peer_connect_timeout,
            read_write_timeout: self.shared.options.peer_read_write_timeout,
            // swarmfs patch: stock 9.1.0 dropped the torrent's keep-alive interval here
            // (120 s against a 10 s read timeout: idle connections died).
            keep_alive_interval: self.shared.options.peer_keep_alive_interval,
            ..Default::default()
        };
        let peer_connection = PeerConnection::new(
            checked_peer.addr,
            self.shared.info_hash,
            self.shared.peer_id,
            &handler,
            Some(options),
            self.shared.spawner.clone(),
            self.shared.connector.clone(),
        );
        let requester = handler.task_peer_chunk_requester();

        let res = tokio::select! {
            r = requester => {r}
            r = peer_connection.manage_peer_incoming(
                rx,
                checked_peer,
                self.have_broadcast_tx.subscribe()
            ) => {r}
        };

        match res {
            // We disconnected the peer ourselves as we don't need it
            Ok(()) => {
                handler.on_peer_died(None)?;
            }
            Err(e) => {
                debug!("error managing peer: {:#}", e);
                handler.on_peer_died(Some(e))?;
            }
        };
        drop(permit);
        Ok(())
    }

    async fn task_manage_outgoing_peer(
        self: Arc<Self>,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> crate::Result<()> {
        let state = self;
        let (rx, tx) = state.peers.mark_peer_connecting(addr)?;
        let counters = state
            .peers
            .with_peer(addr, |p| p.stats.counters.clone())
            .ok_or(Error::BugPeerNotFound)?;

        let handler = PeerHandler {
            addr,
            incoming: false,
            on_bitfield_notify: Default::default(),
            flow_control: Mutex::new(PeerFlowControl::new(state.max_request_window())),
            state: state.clone(),
            tx,
            counters,
            first_message_received: AtomicBool::new(false),
            cancel_token: state.cancellation_token.child_token(),
            client_name_and_version: state.shared.client_name_and_version().to_owned(),
            profile_rx: Mutex::new(None),
            uploads: Default::default(),
        };
        let _token_guard = handler.cancel_token.clone().drop_guard();

        let options = PeerConnectionOptions {
            connect_timeout: state.shared.options.peer_connect_timeout,
            read_write_timeout: state.shared.options.peer_read_write_timeout,
            // swarmfs patch: stock 9.1.0 dropped the torrent's keep-alive interval here
            // (120 s against a 10 s read timeout: idle connections died).
            keep_alive_interval: state.shared.options.peer_keep_alive_interval,
            ..Default::default()
        };
        let peer_connection = PeerConnection::new(
            addr,
            state.shared.info_hash,
            state.shared.peer_id,
            &handler,
            Some(options),
            state.shared.spawner.clone(),
            state.shared.connector.clone(),
        );
        let requester = aframe!(
            handler
                .task_peer_chunk_requester()
                .instrument(debug_span!("chunk_requester"))
        );
        let conn_manager = aframe!(
            peer_connection
                .manage_peer_outgoing(rx, state.have_broadcast_tx.subscribe())
                .instrument(debug_span!("peer_connection"))
        );

        handler
            .counters
            .outgoing_connection_attempts
            .fetch_add(1, Ordering::Relaxed);
        let res = tokio::select! {
            r = requester => {r}
            r = conn_manager => {r}
        };

        match res {
            // We disconnected the peer ourselves as we don't need it
            Ok(()) => {
                handler.on_peer_died(None)?;
            }
            Err(e) => {
                debug!("error managing peer: {:#}", e);
                handler.on_peer_died(Some(e))?;
            }
        }
        drop(permit);
        Ok(())
    }

    async fn task_peer_adder(
        self: Arc<Self>,
        mut peer_queue_rx: UnboundedReceiver<SocketAddr>,
    ) -> crate::Result<()> {
        let state = self;
        // swarmfs patch: addresses wait here for a connection slot, a neighbour's
        // (`PiecePicker::is_neighbour`) ahead of the rest: a tracker's answer is a random
        // sample of the fleet, and a host's slots fill in the order addresses came.
        let mut waiting = NearFirst::default();
        loop {
            let addr = match waiting.pop() {
                Some(a) => a,
                None => {
                    let a = peer_queue_rx.recv().await.ok_or(Error::TorrentIsNotLive)?;
                    waiting.push(a, state.is_neighbour(a));
                    while let Ok(a) = peer_queue_rx.try_recv() {
                        waiting.push(a, state.is_neighbour(a));
                    }
                    continue;
                }
            };
            if state.shared.options.disable_upload() && state.is_finished_and_no_active_streams() {
                debug!(?addr, "ignoring peer as we are finished");
                state.peers.mark_peer_not_needed(addr);
                continue;
            }

            let session = state
                .shared
                .session
                .upgrade()
                .ok_or(Error::SessionDestroyed)?;

            if session.ipv4_only && addr.is_ipv6() {
                debug!(?addr, "skipping ipv6 peer (ipv4_only=true)");
                continue;
            }

            if addr.port() == 0 {
                debug!(?addr, "skipping peer with port 0");
                continue;
            }

            if session.blocklist.has(addr.ip()) {
                session
                    .stats
                    .counters
                    .blocked_outgoing
                    .fetch_add(1, Ordering::Relaxed);
                debug!(?addr, "blocked outgoing connection (by the blacklist)");
                continue;
            }

            if session
                .allowlist
                .as_ref()
                .is_some_and(|l| !l.has(addr.ip()))
            {
                session
                    .stats
                    .counters
                    .blocked_outgoing
                    .fetch_add(1, Ordering::Relaxed);
                debug!(?addr, "blocked outgoing connection (by the allowlist)");
                continue;
            }

            // swarmfs patch: the application's filter, before dialling.
            if session
                .peer_filter
                .as_ref()
                .is_some_and(|f| !f.allow(addr, false))
            {
                session
                    .stats
                    .counters
                    .blocked_outgoing
                    .fetch_add(1, Ordering::Relaxed);
                state.peers.mark_peer_not_needed(addr);
                continue;
            }

            let permit = state.peer_semaphore.clone().acquire_owned().await?;
            // swarmfs patch: a neighbour that came while this address waited for its slot
            // takes the slot; this one waits at the head of the rest (a neighbour is
            // checked as above when its turn comes, so it goes round once more).
            while let Ok(a) = peer_queue_rx.try_recv() {
                waiting.push(a, state.is_neighbour(a));
            }
            if waiting.has_near() && !state.is_neighbour(addr) {
                waiting.push_front_far(addr);
                drop(permit);
                continue;
            }
            state.spawn(
                debug_span!(parent: state.shared.span.clone(), "manage_peer", peer = ?addr),
                format!("[{}][addr={addr}]manage_peer", state.shared.id),
                aframe!(state.clone().task_manage_outgoing_peer(addr, permit)),
            );
        }
    }

    /// swarmfs patch: whether the application counts `addr` as a neighbour.
    fn is_neighbour(&self, addr: SocketAddr) -> bool {
        self.shared
            .options
            .piece_picker
            .as_ref()
            .is_some_and(|p| p.is_neighbour(addr.ip()))
    }

    pub fn torrent(&self) -> &ManagedTorrentShared {
        &self.shared
    }

    /// swarmfs patch: one line on where `piece` stands, for diagnosing a download that
    /// does not end: how many live peers have it (and neighbours counted), whether it is
    /// queued or in flight (with whom, since when), and each live peer that has it.
    pub fn describe_piece(&self, piece: u32) -> String {
        use std::fmt::Write;
        let Some(p) = self.lengths.validate_piece_index(piece) else {
            return format!("piece {piece}: out of range");
        };
        let (all, near) = self.peers.availability.with(|a, n| {
            (
                a.get(piece as usize).copied().unwrap_or(0),
                n.get(piece as usize).copied().unwrap_or(0),
            )
        });
        let mut out = format!("piece {piece}: {all} peers have it ({near} near)");
        {
            let g = self.lock_read("describe_piece");
            if let Ok(t) = g.get_pieces() {
                let _ = write!(out, ", queued {}", t.chunks().is_piece_queued(p));
                if let Some(i) = t.get_inflight(p) {
                    let _ = write!(
                        out,
                        ", in flight with {} for {:?} (helpers {:?})",
                        i.peer,
                        i.started.elapsed(),
                        i.helpers
                    );
                }
            }
        }
        for e in self.peers.states.iter() {
            if let Some(l) = e.value().get_live()
                && l.bitfield.get(piece as usize).is_some_and(|b| *b)
            {
                let _ = write!(
                    out,
                    "; {} (seeder {}, near {}{}, {} requests out)",
                    e.key(),
                    l.seeder,
                    l.near_counted,
                    if l.near_demoted { ", demoted" } else { "" },
                    l.requested_inflight_count()
                );
            }
        }
        out
    }

    /// swarmfs patch: wakes peers that found nothing to request, to ask the picker again.
    pub fn wake_piece_requesters(&self) {
        self.new_pieces_notify.notify_waiters();
    }

    /// swarmfs patch: a piece the application has written to the storage and verified
    /// itself (rebuilt from local data of another torrent): it becomes a piece we have,
    /// as a downloaded one would, and every peer is told (`have`). Requests in flight for
    /// it are cancelled. Returns whether it was new. Not counted as downloaded.
    pub fn add_local_piece(&self, piece: u32) -> crate::Result<bool> {
        let Some(index) = self.lengths.validate_piece_index(piece) else {
            return Ok(false);
        };
        let senders = {
            let mut g = self.lock_write("add_local_piece");
            let pieces = g.get_pieces_mut()?;
            if pieces.chunks().is_piece_have(index) {
                return Ok(false);
            }
            let inflight = pieces.take_inflight_piece(index);
            pieces.mark_piece_hash_ok(index);
            inflight
                .map(|f| std::iter::once(f.peer).chain(f.helpers).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        for peer in senders {
            self.peers.with_live_mut(peer, "cancel_local_piece", |live| {
                live.cancel_inflight_requests_for_piece(index);
            });
        }
        let piece_len = self.lengths.piece_length(index) as u64;
        self.stats.have_bytes.fetch_add(piece_len, Ordering::Relaxed);
        self.on_piece_completed(index).map_err(Error::Anyhow)?;
        self.transmit_haves(index);
        Ok(true)
    }

    /// swarmfs patch: the application has written the bytes `known` (ranges within the
    /// piece) of a piece it kept from the peers meanwhile (the picker's deferred set), from
    /// local data it trusts but has not verified as a piece: the unchanged files of a
    /// piece whose other bytes changed. Peers are asked only for the rest (a span of a
    /// chunk, of peers that take such requests); the piece's hash decides as always, and
    /// if it fails, the whole piece is fetched. Returns whether it was taken (not for a
    /// piece we have, one in flight, or one with nothing left to ask).
    pub fn add_partial_piece(
        &self,
        piece: u32,
        known: &[std::ops::Range<u32>],
    ) -> crate::Result<bool> {
        let Some(index) = self.lengths.validate_piece_index(piece) else {
            return Ok(false);
        };
        let mut g = self.lock_write("add_partial_piece");
        Ok(g.get_pieces_mut()?.set_local_parts(index, known))
    }

    /// swarmfs patch: the chunks of `piece` to ask a peer for: those not received, and of
    /// a chunk partly written from local data only its unknown span, when the peer takes
    /// requests for part of a chunk (`spans_ok`).
    fn chunks_to_ask(&self, piece: ValidPieceIndex, spans_ok: bool) -> crate::Result<Vec<ChunkInfo>> {
        let g = self.lock_read("chunks_to_ask");
        let chunks = g.get_pieces()?.chunks();
        Ok(self
            .lengths
            .iter_chunk_infos(piece)
            .filter(|c| !chunks.is_chunk_received(c))
            .map(|c| match chunks.local_ask_span(&c) {
                Some((offset, size)) if spans_ok => ChunkInfo { offset, size, ..c },
                _ => c,
            })
            .collect())
    }

    pub fn info(&self) -> &ValidatedTorrentMetaV1Info<ByteBufOwned> {
        &self.metadata.info
    }
    pub fn info_hash(&self) -> Id20 {
        self.shared.info_hash
    }
    pub fn peer_id(&self) -> Id20 {
        self.shared.peer_id
    }
    pub(crate) fn file_ops(&self) -> FileOps<'_> {
        FileOps::new(&self.metadata.info, &*self.files, &self.metadata.file_infos)
    }

    pub(crate) fn lock_read(
        &self,
        reason: &'static str,
    ) -> TimedExistence<RwLockReadGuard<'_, TorrentStateLocked>> {
        TimedExistence::new(timeit(reason, || self._locked.read()), reason)
    }
    pub(crate) fn lock_write(
        &self,
        reason: &'static str,
    ) -> TimedExistence<RwLockWriteGuard<'_, TorrentStateLocked>> {
        TimedExistence::new(timeit(reason, || self._locked.write()), reason)
    }

    fn set_peer_live(
        &self,
        handle: PeerHandle,
        h: Handshake,
        connection_kind: ConnectionKind,
        incoming: bool,
    ) {
        self.peers.with_peer_mut(handle, "set_peer_live", |p| {
            // swarmfs patch: the direction is set under the same lock (another
            // connection's `on_handshake` reads it).
            if let Some(live) = p.connecting_to_live(h.peer_id, &self.peers, connection_kind) {
                live.incoming = incoming;
            }
        });
    }

    pub fn get_uploaded_bytes(&self) -> u64 {
        self.stats.uploaded_bytes.load(Ordering::Relaxed)
    }
    pub fn get_downloaded_bytes(&self) -> u64 {
        self.stats
            .downloaded_and_checked_bytes
            .load(Ordering::Acquire)
    }

    pub fn get_approx_have_bytes(&self) -> u64 {
        self.stats.have_bytes.load(Ordering::Relaxed)
    }

    pub fn get_hns(&self) -> Option<HaveNeededSelected> {
        self.lock_read("get_hns")
            .get_chunks()
            .ok()
            .map(|c| *c.get_hns())
    }

    fn transmit_haves(&self, index: ValidPieceIndex) {
        let _ = self.have_broadcast_tx.send(index);
    }

    pub(crate) fn add_peer_if_not_seen(&self, addr: SocketAddr) -> crate::Result<bool> {
        match self.peers.add_if_not_seen(addr) {
            Some(handle) => handle,
            None => return Ok(false),
        };

        self.peer_queue_tx
            .send(addr)
            .ok()
            .ok_or(Error::TorrentIsNotLive)?;
        Ok(true)
    }

    pub fn stats_snapshot(&self) -> StatsSnapshot {
        use Ordering::*;
        let downloaded_bytes = self.stats.downloaded_and_checked_bytes.load(Relaxed);
        StatsSnapshot {
            downloaded_and_checked_bytes: downloaded_bytes,
            downloaded_and_checked_pieces: self.stats.downloaded_and_checked_pieces.load(Relaxed),
            fetched_bytes: self.stats.fetched_bytes.load(Relaxed),
            uploaded_bytes: self.stats.uploaded_bytes.load(Relaxed),
            total_piece_download_ms: self.stats.total_piece_download_ms.load(Relaxed),
            peer_stats: self.peers.stats(),
        }
    }

    pub fn per_peer_stats_snapshot(&self, filter: PeerStatsFilter) -> PeerStatsSnapshot {
        PeerStatsSnapshot {
            peers: self
                .peers
                .states
                .iter()
                .filter(|e| filter.state.matches(e.value().get_state()))
                .map(|e| (e.key().to_string(), e.value().into()))
                .collect(),
        }
    }

    pub async fn wait_until_completed(&self) {
        if self.is_finished() {
            return;
        }
        self.finished_notify.notified().await;
    }

    pub fn pause(&self) -> anyhow::Result<TorrentStatePaused> {
        self.cancellation_token.cancel();

        let mut g = self.lock_write("pause");

        // It should be impossible to make a fatal error after pausing.
        g.fatal_errors_tx.take();

        let piece_tracker = g
            .pieces
            .take()
            .context("bug: pausing already paused torrent")?;
        // into_chunks() will requeue any in-flight pieces
        let chunk_tracker = piece_tracker.into_chunks();

        Ok(TorrentStatePaused {
            shared: self.shared.clone(),
            metadata: self.metadata.clone(),
            files: self.files.take()?,
            chunk_tracker,
            streams: self.streams.clone(),
        })
    }

    fn on_fatal_error(&self, e: anyhow::Error) -> anyhow::Result<()> {
        let mut g = self.lock_write("fatal_error");
        let tx = g
            .fatal_errors_tx
            .take()
            .context("fatal_errors_tx already taken")?;
        let res = anyhow::anyhow!("fatal error: {:?}", e);
        if tx.send(e).is_err() {
            warn!(id=self.shared.id, info_hash=?self.shared.info_hash, "there's nowhere to send fatal error, receiver is dead");
        }
        Err(res)
    }

    pub(crate) fn update_only_files(&self, only_files: &HashSet<usize>) -> anyhow::Result<()> {
        let hns = self
            .lock_write("update_only_files")
            .get_pieces_mut()?
            .update_only_files(&self.metadata.file_infos, only_files)?;
        // With the state lock released. A dying peer holds its shard of the peer table
        // while it asks whether the torrent is finished (on_peer_died), so touching the
        // table under the state lock is the reverse order, and the two deadlock.
        if !hns.finished() {
            self.reconnect_all_not_needed_peers();
        }
        Ok(())
    }

    // If we have all selected pieces but not necessarily all pieces.
    pub(crate) fn is_finished(&self) -> bool {
        self.get_hns().map(|h| h.finished()).unwrap_or_default()
    }

    fn has_active_streams_unfinished_files(&self, state: &TorrentStateLocked) -> bool {
        let chunks = match state.get_chunks() {
            Ok(c) => c,
            Err(_) => return false,
        };
        // swarmfs patch: with a picker, any piece may be asked for at any time (a read of
        // a lazily fetched file): keep peers until every piece is here.
        if self.shared.options.piece_picker.is_some() && !chunks.has_all_pieces() {
            return true;
        }
        self.streams
            .streamed_file_ids()
            .any(|file_id| !chunks.is_file_finished(&self.metadata.file_infos[file_id]))
    }

    // We might have the torrent "finished" i.e. no selected files. But if someone is streaming files despite
    // them being selected, we aren't fully "finished".
    fn is_finished_and_no_active_streams(&self) -> bool {
        self.is_finished()
            && !self.has_active_streams_unfinished_files(
                &self.lock_read("is_finished_and_dont_need_peers"),
            )
    }

    fn on_piece_completed(&self, id: ValidPieceIndex) -> anyhow::Result<()> {
        if let Err(e) = self.files.on_piece_completed(id) {
            debug!(?id, "file storage errored in on_piece_completed(): {e:#}");
        }
        let mut g = self.lock_write("on_piece_completed");
        let locked = &mut **g;
        let pieces = locked.get_pieces_mut()?;

        // if we have all the pieces of the file, reopen it read only
        for (idx, file_info) in self
            .metadata
            .file_infos
            .iter()
            .enumerate()
            .skip_while(|(_, fi)| !fi.piece_range.contains(&id.get()))
            .take_while(|(_, fi)| fi.piece_range.contains(&id.get()))
        {
            let _remaining = pieces.update_file_have_on_piece_completed(id, idx, file_info);
        }

        self.streams
            .wake_streams_on_piece_completed(id, self.metadata.lengths());

        locked.unflushed_bitv_bytes += self.metadata.lengths().piece_length(id) as u64;
        if locked.unflushed_bitv_bytes >= FLUSH_BITV_EVERY_BYTES {
            locked.try_flush_bitv(&self.shared, true)
        }

        let chunks = locked.get_chunks()?;
        if chunks.is_finished() {
            if chunks.get_selected_pieces()[id.get_usize()] {
                locked.try_flush_bitv(&self.shared, false);
                info!(id=self.shared.id, info_hash=?self.shared.info_hash, "torrent finished downloading");
            }
            self.finished_notify.notify_waiters();

            if !self.has_active_streams_unfinished_files(locked) {
                // prevent deadlocks.
                drop(g);
                // There is not point being connected to peers that have all the torrent, when
                // we don't need anything from them, and they don't need anything from us.
                self.disconnect_all_peers_that_have_full_torrent();
            }
        }
        Ok(())
    }

    fn disconnect_all_peers_that_have_full_torrent(&self) {
        for mut pe in self.peers.states.iter_mut() {
            if let PeerState::Live(l) = pe.value().get_state()
                && l.has_full_torrent(self.lengths.total_pieces() as usize)
            {
                let prev = pe.value_mut().set_not_needed(&self.peers);
                let _ = prev
                    .take_live_no_counters()
                    .unwrap()
                    .tx
                    .send(WriterRequest::Disconnect(Ok(())));
            }
        }
    }

    pub(crate) fn reconnect_all_not_needed_peers(&self) {
        self.peers
            .states
            .iter_mut()
            .filter_map(|mut p| p.value_mut().reconnect_not_needed_peer(&self.peers))
            .map(|socket_addr| self.peer_queue_tx.send(socket_addr))
            .take_while(|r| r.is_ok())
            .last();
    }

    async fn task_send_pex_to_peer(
        self: Arc<Self>,
        this_peer_addr: SocketAddr,
        tx: PeerTx,
    ) -> anyhow::Result<()> {
        // As per BEP 11 we should not send more than 50 peers at once
        // (here it also applies to fist message, should be OK as we anyhow really have more)
        const MAX_SENT_PEERS: usize = 50;
        // As per BEP 11 recommended interval is min 60 seconds
        const PEX_MESSAGE_INTERVAL: Duration = Duration::from_secs(60);

        let mut connected = Vec::with_capacity(MAX_SENT_PEERS);
        let mut dropped = Vec::with_capacity(MAX_SENT_PEERS);
        let mut peer_view_of_live_peers = HashSet::new();

        // Wait 10 seconds before sending the first message to assure that peer will stay with us
        tokio::time::sleep(Duration::from_secs(10)).await;

        let mut interval = tokio::time::interval(PEX_MESSAGE_INTERVAL);

        loop {
            interval.tick().await;

            // This task should die with the cancellation token, but check defensively just in case.
            if tx.is_closed() {
                return Ok(());
            }

            {
                let live_peers = self.peers.live_outgoing_peers.read();
                connected.clear();
                dropped.clear();

                connected.extend(
                    live_peers
                        .difference(&peer_view_of_live_peers)
                        .take(MAX_SENT_PEERS)
                        .copied(),
                );
                dropped.extend(
                    peer_view_of_live_peers
                        .difference(&live_peers)
                        .take(MAX_SENT_PEERS)
                        .copied(),
                );
            }

            trace!(connected_len = connected.len(), dropped_len = dropped.len());

            let peer_ip_non_local = match this_peer_addr.ip() {
                IpAddr::V4(a) => !a.is_loopback() && !a.is_private(),
                IpAddr::V6(a) => !a.is_loopback() && !a.is_unique_local(),
            };

            let other_ip_is_local = |addr: &IpAddr| match addr {
                IpAddr::V4(a) => a.is_loopback() || a.is_private(),
                IpAddr::V6(a) => {
                    a.is_loopback() || a.is_unicast_link_local() || a.is_unique_local()
                }
            };

            let filter = |addr: &SocketAddr| !(peer_ip_non_local && other_ip_is_local(&addr.ip()));

            // BEP 11 - Dont send closed if they are now in live
            // it's assured by mutual exclusion of two  above sets  if in sent_peers_live, it cannot be in addrs_live_to_sent,
            // and addrs_closed_to_sent are only filtered addresses from sent_peers_live

            if !connected.is_empty() || !dropped.is_empty() {
                let pex_msg = extended::ut_pex::UtPex::from_addrs(
                    connected.iter().copied(),
                    dropped.iter().copied(),
                );
                if tx.send(WriterRequest::UtPex(pex_msg)).is_err() {
                    return Ok(()); // Peer disconnected
                }

                for addr in &dropped {
                    peer_view_of_live_peers.remove(addr);
                }
                peer_view_of_live_peers.extend(connected.iter().filter(|a| filter(a)).copied());
            }
        }
    }
}

const DEFAULT_PEER_REQUEST_WINDOW: usize = 128;

/// swarmfs patch: how a requester asks a peer for a piece.
#[derive(Clone, Copy, Debug)]
enum Ask {
    /// A background or read-ahead piece: a window slot per chunk.
    Whole,
    /// A piece a reader waits on: every chunk at once.
    Urgent,
    /// A piece a reader waits on that another peer is sending: the chunks still missing.
    Help,
    /// A piece a reader waits on, taken over from another peer: the chunks still missing.
    TakeOver,
    /// A piece wanted soon (a sequential reader's read-ahead): asked for before the rest
    /// of a background piece, up to `SOON_EXTRA_WINDOW` beyond the window.
    Soon,
}

/// swarmfs patch: the chunks of pieces readers wait on may be requested this far beyond a
/// peer's request window (two 256 KiB pieces), so that they need not wait for the
/// background pieces in flight to drain.
const URGENT_EXTRA_WINDOW: usize = 32;

/// swarmfs patch: the chunks of pieces wanted soon (read-ahead) may be requested as far
/// beyond a peer's request window as a read's: a requester in the middle of a
/// background piece asks for them first. A background piece asked of the origin with the
/// small window it gets while reads wait took 140-600 ms to request; a fleet reading a
/// binary's head waited for it piece after piece.
const SOON_EXTRA_WINDOW: usize = URGENT_EXTRA_WINDOW;

struct PeerFlowControl {
    i_am_choked: bool,
    request_window: usize,
}

impl PeerFlowControl {
    fn new(max_request_window: usize) -> Self {
        Self {
            i_am_choked: true,
            request_window: max_request_window,
        }
    }
}

// All peer state that would never be used by other actors should pe put here.
// This state tracks a live peer.
struct PeerHandler {
    state: Arc<TorrentStateLive>,
    counters: Arc<AtomicPeerCounters>,
    // Semantically, we don't need a lock here, as this is only requested from
    // one future (requester + manage_peer).
    //
    // However as PeerConnectionHandler takes &self everywhere, we need shared mutability.
    // RefCell would do, but tokio is unhappy when we use it.
    flow_control: Mutex<PeerFlowControl>,

    // This is used to unpause chunk requester once the bitfield
    // is received.
    on_bitfield_notify: Notify,

    addr: SocketAddr,
    incoming: bool,
    tx: PeerTx,

    first_message_received: AtomicBool,

    cancel_token: CancellationToken,

    client_name_and_version: String,

    /// swarmfs patch: a boot profile being received from this peer (`swarmfs_profile`).
    profile_rx: Mutex<Option<ProfileRx>>,
    /// swarmfs patch: the requests the peer cancelled that may still be queued for upload,
    /// and the pieces it said a reader waits on.
    uploads: Arc<PeerUploads>,
}

/// swarmfs patch: a boot profile arriving from one peer, piece by piece. Dropped (the
/// connection closed, or the transfer failed or ended), it gives the picker's ask back.
struct ProfileRx {
    picker: Arc<dyn crate::piece_picker::PiecePicker>,
    buf: Vec<u8>,
    total: usize,
}

impl Drop for ProfileRx {
    fn drop(&mut self) {
        self.picker.profile_ask_end();
    }
}

impl PeerConnectionHandler for &'_ PeerHandler {
    fn on_connected(&self, connection_time: Duration) {
        self.counters
            .outgoing_connections
            .fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation)]
        self.counters
            .total_time_connecting_ms
            .fetch_add(connection_time.as_millis() as u64, Ordering::Relaxed);
    }

    async fn on_received_message(&self, message: Message<'_>) -> anyhow::Result<()> {
        // The first message must be "bitfield", but if it's not sent,
        // assume the bitfield is all zeroes and was sent.
        if !matches!(&message, Message::Bitfield(..))
            && !self.first_message_received.swap(true, Ordering::Relaxed)
        {
            self.on_bitfield_notify.notify_waiters();
        }

        match message {
            Message::Request(request) => {
                self.on_download_request(request)
                    .context("on_download_request")?;
            }
            Message::Bitfield(b) => self
                .on_bitfield(b.clone_to_owned(None))
                .context("on_bitfield")?,
            Message::Choke => self.on_i_am_choked(),
            Message::Unchoke => self.on_i_am_unchoked(),
            Message::Interested => self.on_peer_interested(),
            Message::Piece(piece) => self
                .on_received_piece(piece)
                .await
                .context("on_received_piece")?,
            Message::KeepAlive => {
                trace!("keepalive received");
            }
            Message::Have(h) => self.on_have(h),
            Message::NotInterested => {
                trace!("received \"not interested\", but we don't process it yet")
            }
            Message::Cancel(r) => {
                // swarmfs patch: stock librqbit ignored cancels and sent every chunk asked
                // for. A host that got a piece elsewhere cancels its request, and the
                // origin, which a whole fleet queues on, sent it anyway.
                self.uploads.cancel(r.index, r.begin);
            }
            Message::Extended(ExtendedMessage::UtMetadata(UtMetadata::Request(
                metadata_piece_id,
            ))) => {
                if self.state.metadata.info.info().private {
                    warn!(
                        id = self.state.shared.id,
                        info_hash = ?self.state.shared.info_hash,
                        "received noncompliant ut_metadata message from {}, ignoring",
                        self.addr
                    );
                } else {
                    self.send_metadata_piece(metadata_piece_id)
                        .with_context(|| {
                            format!("error sending metadata piece {metadata_piece_id}")
                        })?;
                }
            }
            Message::Extended(ExtendedMessage::Dyn(
                peer_binary_protocol::MY_EXTENDED_SWARMFS_FETCHING,
                bencode::BencodeValue::Integer(piece),
            )) => {
                // swarmfs patch: the peer has just asked a seeder for this piece.
                // A negative value: -(piece + 1), a reader waits on it there.
                let (piece, for_read) = if piece < 0 {
                    (-(piece + 1), true)
                } else {
                    (piece, false)
                };
                if let (Some(picker), Ok(piece)) = (
                    self.state.shared.options.piece_picker.as_ref(),
                    u32::try_from(piece),
                ) && self.state.lengths.validate_piece_index(piece).is_some()
                {
                    picker.on_peer_fetching(piece, self.addr.ip(), for_read);
                }
            }
            Message::Extended(ExtendedMessage::Dyn(
                peer_binary_protocol::MY_EXTENDED_SWARMFS_FETCHING,
                bencode::BencodeValue::Dict(d),
            )) => {
                // swarmfs patch: the peer is asking us for a piece a reader waits on
                // (`wait`) or will soon (`soon`): its chunks go out first.
                // swarmfs patch: a neighbour has just asked a peer farther away for this
                // piece (-(piece + 1): a reader waits on it there).
                if let Some(bencode::BencodeValue::Integer(v)) = d.get(&ByteBuf(&b"near"[..]))
                    && let (p, for_read) = if *v < 0 { (-(*v + 1), true) } else { (*v, false) }
                    && let Ok(p) = u32::try_from(p)
                    && self.state.lengths.validate_piece_index(p).is_some()
                    && let Some(picker) = self.state.shared.options.piece_picker.as_ref()
                {
                    picker.on_neighbour_fetching(p, self.addr.ip(), for_read);
                }
                for (key, class) in [(&b"wait"[..], UploadClass::Wait), (b"soon", UploadClass::Soon)] {
                    if let Some(bencode::BencodeValue::Integer(p)) = d.get(&ByteBuf(key))
                        && let Ok(p) = u32::try_from(*p)
                        && self.state.lengths.validate_piece_index(p).is_some()
                    {
                        self.uploads.asked(p, class);
                    }
                }
            }
            Message::Extended(ExtendedMessage::Dyn(
                peer_binary_protocol::MY_EXTENDED_SWARMFS_PROFILE,
                bencode::BencodeValue::Dict(d),
            )) => {
                // swarmfs patch: a boot profile asked of us, or coming to us.
                self.on_swarmfs_profile(&d);
            }
            Message::Extended(ExtendedMessage::UtPex(pex)) => {
                if self.state.metadata.info.info().private {
                    warn!(
                        id = self.state.shared.id,
                        info_hash = ?self.state.shared.info_hash,
                        "received noncompliant PEX message from {}, ignoring",
                        self.addr
                    );
                } else {
                    self.on_pex_message(pex);
                }
            }
            message => {
                warn!(
                    id = self.state.shared.id,
                    info_hash = ?self.state.shared.info_hash,
                    "received unsupported message {:?}, ignoring", message
                );
            }
        };
        Ok(())
    }

    fn serialize_bitfield_message_to_buf(&self, buf: &mut [u8]) -> anyhow::Result<usize> {
        let g = self.state.lock_read("serialize_bitfield_message_to_buf");
        let msg = Message::Bitfield(ByteBuf(g.get_chunks()?.get_have_pieces().as_bytes()));
        let len = msg.serialize(buf, &Default::default)?;
        trace!("sending: {:?}, length={}", &msg, len);
        Ok(len)
    }

    fn on_handshake(&self, handshake: Handshake, ckind: ConnectionKind) -> anyhow::Result<()> {
        let remote = handshake.peer_id;
        self.state
            .set_peer_live(self.addr, handshake, ckind, self.incoming);
        // swarmfs patch: one connection per peer. Two peers that learn of each other at
        // once (a fleet announcing together) dial each other, and the peer table, keyed
        // by address, saw two peers: every pair of hosts had two connections, each sent
        // every `have` and request traffic was split over both (32 hosts: 63
        // connections a host). Of two connections to one peer id made from either side,
        // the one dialled by the lower peer id stays, on both sides. Two made from the
        // same side (two addresses of one peer) both stay: the sides could see them
        // arrive in different orders, and keep different ones.
        let ours = self.state.shared.peer_id;
        let dialled_by_lower = |incoming: bool| if incoming { remote < ours } else { ours < remote };
        let other = self.state.peers.states.iter().find_map(|e| {
            let live = e.value().get_live()?;
            (*e.key() != self.addr && live.peer_id == remote)
                .then(|| (*e.key(), live.incoming, live.tx.clone()))
        });
        if let Some((addr, other_incoming, tx)) = other {
            if other_incoming == self.incoming {
                // made from the same side: both stay
            } else if dialled_by_lower(self.incoming) {
                debug!(other = %addr, "a second connection to this peer, kept: closing the first");
                let _ = tx.send(WriterRequest::Disconnect(Ok(())));
            } else {
                anyhow::bail!("already connected to this peer (at {addr})");
            }
        }
        Ok(())
    }

    fn on_uploaded_bytes(&self, bytes: u32) {
        self.counters
            .uploaded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.state
            .stats
            .uploaded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.state
            .session_stats
            .counters
            .uploaded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn read_chunk(&self, chunk: &ChunkInfo, buf: &mut [u8]) -> anyhow::Result<()> {
        self.state.file_ops().read_chunk(self.addr, chunk, buf)
    }

    fn upload_cancelled(&self, chunk: &ChunkInfo) -> bool {
        self.uploads.take_cancel(chunk.piece_index.get(), chunk.offset)
    }

    fn on_extended_handshake(&self, hs: &ExtendedHandshake<ByteBuf>) -> anyhow::Result<()> {
        if let Some(client_name) = hs.v.as_ref().and_then(format_peer_client_name) {
            self.state
                .peers
                .with_live_mut(self.addr, "update peer client name", |live| {
                    live.client_name = Some(client_name);
                });
        }
        if hs.m.swarmfs_fetching.is_some() {
            self.state
                .peers
                .with_live_mut(self.addr, "swarmfs_fetching", |live| {
                    live.swarmfs_fetching = true;
                });
        }
        if hs.m.swarmfs_spans.is_some() {
            self.state
                .peers
                .with_live_mut(self.addr, "swarmfs_spans", |live| {
                    live.swarmfs_spans = true;
                });
        }
        // swarmfs patch: ask a host that speaks `swarmfs_profile` for its boot profile,
        // while the picker wants one.
        if hs.m.swarmfs_profile.is_some()
            && let Some(picker) = self.state.shared.options.piece_picker.as_ref()
            && picker.profile_ask_begin()
        {
            *self.profile_rx.lock() = Some(ProfileRx {
                picker: picker.clone(),
                buf: Vec::new(),
                total: 0,
            });
            self.send_swarmfs_profile(0, 0, 0, Default::default());
        }

        if let Some(reqq) = hs.reqq.and_then(|reqq| usize::try_from(reqq).ok())
            && reqq > 0
        {
            let request_window = reqq.min(self.state.max_request_window());
            let mut flow = self.lock_flow_control("update request window");
            if flow.request_window != request_window {
                debug!(
                    reqq,
                    request_window, "updated peer request window from extended handshake"
                );
                flow.request_window = request_window;
                self.notify_request_slots_changed();
            }
        }

        if !self.state.metadata.info.info().private && hs.m.ut_pex.is_some() {
            spawn_with_cancel(
                debug_span!(
                    parent: self.state.shared.span.clone(),
                    "sending_pex_to_peer",
                    peer = ?self.addr,
                ),
                format!(
                    "[{}][addr={}]sending_pex_to_peer",
                    self.state.shared.id, self.addr
                ),
                self.cancel_token.clone(),
                self.state
                    .clone()
                    .task_send_pex_to_peer(self.addr, self.tx.clone()),
            );
        }
        // Lets update outgoing Socket address for incoming connection
        if self.incoming
            && let Some(port) = hs.port()
        {
            let peer_ip = hs.ip_addr().unwrap_or(self.addr.ip());
            let outgoing_addr = SocketAddr::new(peer_ip, port);
            self.state
                .peers
                .with_peer_mut(self.addr, "update outgoing addr", |peer| {
                    peer.outgoing_address = Some(outgoing_addr)
                });
        }

        Ok(())
    }

    fn should_send_bitfield(&self) -> bool {
        if self.state.torrent().options.disable_upload() {
            return false;
        }

        self.state.get_approx_have_bytes() > 0
    }

    fn have_may_wait(&self, piece: u32) -> bool {
        self.state
            .shared
            .options
            .piece_picker
            .as_ref()
            .is_some_and(|p| p.have_may_wait(piece))
    }

    fn should_transmit_have(&self, id: ValidPieceIndex) -> bool {
        if self.state.shared.options.disable_upload() {
            return false;
        }
        let have = self
            .state
            .peers
            .with_live(self.addr, |l| {
                // swarmfs patch: a peer that has sent no bitfield yet has nothing (it
                // started empty, as every host of a fleet does): it needs our haves.
                // Stock librqbit took "no bitfield" for "has everything", so two fresh
                // peers never told each other anything and dropped the silent connection
                // after the 10 s read timeout.
                if l.bitfield.is_empty() {
                    return false;
                }
                l.bitfield.get(id.get_usize()).map(|p| *p).unwrap_or(true)
            })
            .unwrap_or(true);
        !have
    }

    fn update_my_extended_handshake(
        &self,
        handshake: &mut ExtendedHandshake<ByteBuf>,
    ) -> anyhow::Result<()> {
        let info_bytes = &self.state.metadata.info_bytes;
        if !info_bytes.is_empty()
            && let Ok(len) = info_bytes.len().try_into()
        {
            handshake.metadata_size = Some(len);
        }

        Ok(())
    }

    fn client_name_and_version(&self) -> &str {
        &self.client_name_and_version
    }
}

impl PeerHandler {
    fn on_peer_died(self, error: Option<crate::Error>) -> crate::Result<()> {
        let peers = &self.state.peers;
        let handle = self.addr;
        let mut pe = match peers.states.get_mut(&handle) {
            Some(peer) => TimedExistence::new(peer, "on_peer_died"),
            None => {
                warn!(
                    id = self.state.shared.id,
                    info_hash = ?self.state.shared.info_hash,
                    addr=?handle,
                    "bug: peer not found in table. Forgetting it forever"
                );
                return Ok(());
            }
        };
        let prev = pe.value_mut().take_state(peers);

        match prev {
            PeerState::Connecting(_) => {}
            PeerState::Live(live) => {
                let mut g = self.state.lock_write("mark_chunk_requests_canceled");

                // Release all pieces owned by this peer (fixes the bug where pieces
                // could be in both queue_pieces AND inflight_pieces after peer death)
                let released = g.get_pieces_mut()?.release_pieces_owned_by(self.addr);
                if released > 0 {
                    trace!(
                        "peer dead, released {} in-flight pieces back to queue",
                        released
                    );
                }

                // Also handle any active chunk-level inflight requests.
                let mut had_inflight = false;
                for req in live.inflight_requests() {
                    had_inflight = true;
                    trace!(
                        "peer dead, marking chunk request cancelled, index={}, chunk={}",
                        req.piece_index.get(),
                        req.chunk_index
                    );
                }

                if released > 0 || had_inflight {
                    self.state.new_pieces_notify.notify_waiters();
                }
            }
            PeerState::NotNeeded => {
                // Restore it as std::mem::take() replaced it above.
                pe.value_mut().set_state(PeerState::NotNeeded, peers);
                return Ok(());
            }
            s @ PeerState::Queued | s @ PeerState::Dead => {
                warn!(
                    id = self.state.shared.id,
                    info_hash = ?self.state.shared.info_hash,
                    addr = ?handle,
                    "bug: peer was in a wrong state {s:?}, ignoring it forever"
                );
                // Prevent deadlocks.
                drop(pe);
                self.state.peers.drop_peer(handle);
                return Ok(());
            }
        };

        let _error = match error {
            Some(e) => e,
            None => {
                trace!("peer died without errors, not re-queueing");
                pe.value_mut().set_state(PeerState::NotNeeded, peers);
                return Ok(());
            }
        };

        self.counters.errors.fetch_add(1, Ordering::Relaxed);

        if self.state.is_finished_and_no_active_streams() {
            debug!("torrent finished, not re-queueing");
            pe.value_mut().set_state(PeerState::NotNeeded, peers);
            return Ok(());
        }

        pe.value_mut().set_state(PeerState::Dead, peers);

        if self.incoming {
            // do not retry incoming peers
            debug!(
                peer = handle.to_string(),
                "incoming peer died, not re-queueing"
            );
            return Ok(());
        }

        let backoff = pe.value_mut().stats.backoff.next();

        // Prevent deadlocks.
        drop(pe);

        if let Some(dur) = backoff {
            if cfg!(feature = "_disable_reconnect_test") {
                return Ok(());
            }
            self.state.clone().spawn(
                debug_span!(
                    parent: self.state.shared.span.clone(),
                    "wait_for_peer",
                    peer = ?handle,
                    duration = format!("{dur:?}")
                ),
                format!("[{}][addr={}]wait_for_peer", self.state.shared.id, handle),
                async move {
                    trace!("waiting to reconnect again");
                    tokio::time::sleep(dur).await;
                    trace!("finished waiting");
                    let should_requeue = self
                        .state
                        .peers
                        .with_peer_mut(handle, "dead_to_queued", |peer| {
                            match peer.get_state() {
                                PeerState::Dead => {
                                    peer.set_state(PeerState::Queued, &self.state.peers);
                                    true
                                }
                                // Peer reconnected (e.g. via incoming connection) while we were
                                // waiting. No need to queue - it's already connected or queued.
                                PeerState::Live(_)
                                | PeerState::Connecting(_)
                                | PeerState::Queued => {
                                    trace!(
                                        state = peer.get_state().name(),
                                        "peer is no longer dead, skipping requeue"
                                    );
                                    false
                                }
                                // Don't need this peer anymore.
                                PeerState::NotNeeded => false,
                            }
                        })
                        .unwrap_or(false);
                    if should_requeue {
                        self.state
                            .peer_queue_tx
                            .send(handle)
                            .ok()
                            .ok_or(Error::TorrentIsNotLive)?;
                    }
                    Ok::<_, Error>(())
                },
            );
        } else {
            debug!("dropping peer, backoff exhausted");
            self.state.peers.drop_peer(handle);
        };
        Ok(())
    }

    /// Acquire a piece for this peer: try steal (10x) → reserve → steal (3x).
    ///
    /// Returns the piece index to download, or None if no pieces are available.
    /// swarmfs patch: with `only_priority`, only a piece a reader waits on or one wanted
    /// soon.
    /// swarmfs patch: the piece comes with how to ask for it (`Ask::Help`: only its
    /// missing chunks, beside the peer it was first asked of).
    fn acquire_next_piece(
        &self,
        only_priority: bool,
    ) -> crate::Result<Option<(ValidPieceIndex, Ask)>> {
        if self.is_choked() {
            debug!("we are choked, can't acquire piece");
            return Ok(None);
        }

        // Steal info to process after releasing the peer lock
        let mut steal_info: Option<(SocketAddr, ValidPieceIndex)> = None;

        // swarmfs patch: the addresses of the non-seeder peers, for the picker's
        // `may_ask_seeder` (from the peer sets, taken before the peer lock below).
        let picker = self.state.shared.options.piece_picker.as_ref();
        let sets = picker.map(|_| self.state.peer_sets());
        let others: &[std::net::IpAddr] = match &sets {
            Some(sets) if self.is_seeder() => &sets.others,
            _ => &[],
        };
        let may_ask_seeder =
            |p: ValidPieceIndex| picker.is_none_or(|pk| pk.may_ask_seeder(p.get(), others));
        // swarmfs patch: in the background a seeder is not asked for a piece another peer
        // is fetching from it, nor before the picker's turn for this host comes. The turn
        // is taken among every peer known, connected or not: at the start of a fleet's
        // run few connections are up yet, and each host would think itself first.
        let known: &[std::net::IpAddr] = match &sets {
            Some(sets) if self.is_seeder() => &sets.known,
            _ => &[],
        };
        let fetching_elsewhere = |p: ValidPieceIndex| {
            picker.is_some_and(|pk| {
                pk.fetching_elsewhere(p.get())
                    || !pk.may_ask_seeder_in_background(p.get(), known)
            })
        };
        // swarmfs patch: a peer that is not a neighbour is asked for a piece no neighbour
        // has only at this host's turn among its neighbours (`PiecePicker::may_ask_far`).
        let near: &[std::net::IpAddr] = sets.as_ref().map_or(&[], |s| &s.near);
        let may_ask_far = |p: ValidPieceIndex, ask: crate::piece_picker::FarAsk| {
            picker.is_none_or(|pk| pk.may_ask_far(p.get(), near, ask))
        };
        // swarmfs patch: a piece asked of a seeder is announced to the peers that take
        // `swarmfs_fetching` (after the locks below are released).
        let mut fetching: Option<(ValidPieceIndex, bool)> = None;
        // swarmfs patch: a piece asked of a peer farther away is announced to the
        // neighbours (`PiecePicker::on_neighbour_fetching`).
        let mut near_fetching: Option<(ValidPieceIndex, bool)> = None;
        // swarmfs patch: the seeders, whose urgent pieces in flight other peers take over
        // (only urgent pieces are taken over: only while readers wait).
        let seeders: &[PeerHandle] = match &sets {
            Some(sets) if self.readers_wait() => &sets.seeders,
            _ => &[],
        };
        let all_seeders: &[PeerHandle] = match &sets {
            Some(sets) => &sets.seeders,
            None => &[],
        };

        let result = self
            .state
            .peers
            .with_live_mut(self.addr, "acquire_next_piece", |live| {
                let mut g = self.state.lock_write("acquire_next_piece");

                let bf = &live.bitfield;
                // Extract references to disjoint fields
                let TorrentStateLocked {
                    pieces,
                    file_priorities,
                    ..
                } = &mut **g;
                let pieces = pieces.as_mut().ok_or(Error::ChunkTrackerEmpty)?;
                // swarmfs patch: the application's urgent pieces come first.
                let mut urgent = Vec::new();
                let mut soon = Vec::new();
                let (background_order, background_allowed, tiers_while_held_back) = match picker {
                    Some(p) => {
                        p.urgent(&mut urgent);
                        p.soon(&mut soon);
                        (
                            p.background_order(),
                            p.background_allowed(),
                            p.tiers_while_held_back(),
                        )
                    }
                    None => (None, true, 0),
                };
                let lengths = &self.state.lengths;
                let defers = picker.filter(|pk| pk.defers());
                // Availability is the innermost lock; acquire_piece takes no other.
                // swarmfs patch: a peer that is not a neighbour is not asked for what a
                // neighbour can send (`PiecePicker::is_neighbour`).
                let peer_is_far = picker.is_some_and(|p| !p.is_neighbour(self.addr.ip()));
                let result = self.state.peers.availability.with(|availability, near_availability| {
                    pieces.acquire_piece(AcquireRequest {
                    availability,
                    near_availability,
                    peer_is_far,
                    near_seeders: sets.as_ref().map_or(0, |s| s.near_seeders),
                    may_ask_far: &may_ask_far,
                    soon: &soon,
                    peer_is_seeder: live.seeder,
                    live_seeders: self.state.peers.stats().live_seeders,
                    priority_steal_after: picker.and_then(|p| p.urgent_steal_after()),
                    priority_help_after: picker.and_then(|p| p.urgent_help_after()),
                    peer: self.addr,
                    peer_avg_time: self.counters.average_piece_download_time(),
                    background_order: background_order.as_deref(),
                    background_allowed,
                    tiers_while_held_back,
                    may_ask_seeder: &may_ask_seeder,
                    fetching_elsewhere: &fetching_elsewhere,
                    only_priority,
                    seeders,
                    all_seeders,
                    peer_bitfield: Some(bf),
                    priority_pieces: urgent
                        .iter()
                        .filter_map(|&i| lengths.validate_piece_index(i))
                        .chain(self.state.streams.iter_next_pieces(&self.state.lengths)),
                    file_priorities,
                    file_infos: &self.state.metadata.file_infos,
                    // swarmfs patch: a piece the application is getting elsewhere
                    // (`PiecePicker::deferred`) is asked of no peer meanwhile.
                    peer_has_piece: |p| {
                        bf.get(p.get() as usize).map(|v| *v) == Some(true)
                            && !defers.is_some_and(|pk| pk.deferred(p.get()))
                    },
                    can_steal: |p| {
                        self.state.per_piece_locks[p.get_usize()]
                            .try_write()
                            .is_some()
                    },
                    })
                });

                if live.seeder
                    && let AcquireResult::Reserved(piece) | AcquireResult::Stolen { piece, .. } =
                        &result
                {
                    fetching = Some((*piece, urgent.contains(&piece.get())));
                }
                if peer_is_far
                    && !near.is_empty()
                    && let AcquireResult::Reserved(piece) | AcquireResult::Stolen { piece, .. } =
                        &result
                {
                    near_fetching = Some((*piece, urgent.contains(&piece.get())));
                }
                match result {
                    AcquireResult::Reserved(piece) => {
                        trace!("reserved piece {}", piece);
                        if urgent.contains(&piece.get()) {
                            debug!(target: "swarmfs::piece", piece = piece.get(), peer = %self.addr, preempting = only_priority, "urgent piece requested");
                            return Ok(Some((piece, Ask::Urgent)));
                        }
                        if soon.contains(&piece.get()) {
                            debug!(target: "swarmfs::piece", piece = piece.get(), peer = %self.addr, "ahead piece requested");
                            return Ok(Some((piece, Ask::Soon)));
                        }
                        if live.seeder {
                            debug!(target: "swarmfs::piece", piece = piece.get(), peer = %self.addr, "background piece requested");
                        }
                        Ok(Some((piece, Ask::Whole)))
                    }
                    AcquireResult::Help(piece) => {
                        debug!(target: "swarmfs::piece", piece = piece.get(), peer = %self.addr, "urgent piece helped");
                        Ok(Some((piece, Ask::Help)))
                    }
                    AcquireResult::Stolen { piece, from_peer } => {
                        debug!("stole piece {} from {}", piece, from_peer);
                        if all_seeders.contains(&from_peer) {
                            debug!(target: "swarmfs::piece", piece = piece.get(), peer = %self.addr, seeder = %from_peer, "piece taken from seeder");
                        }
                        // Store steal info to process after releasing peer lock to avoid deadlock
                        steal_info = Some((from_peer, piece));
                        let ask = if urgent.contains(&piece.get()) {
                            Ask::TakeOver
                        } else if soon.contains(&piece.get()) {
                            Ask::Soon
                        } else {
                            Ask::Whole
                        };
                        Ok(Some((piece, ask)))
                    }
                    AcquireResult::NoneAvailable => Ok(None),
                }
            })
            .transpose()
            .map(|r| r.flatten());

        // Process steal notification outside the peer lock to avoid deadlock
        if let Some((from_peer, piece)) = steal_info {
            self.state.peers.on_steal(from_peer, self.addr, piece);
            if picker.is_some_and(|p| p.is_neighbour(from_peer.ip()) && !p.is_neighbour(self.addr.ip())) {
                self.state.peers.demote_near(from_peer);
                self.state.wake_piece_requesters();
            }
        }
        if let Some((piece, for_read)) = near_fetching {
            for e in self.state.peers.states.iter() {
                if let Some(live) = e.value().get_live()
                    && live.swarmfs_fetching
                    && picker.is_some_and(|p| p.is_neighbour(e.key().ip()))
                {
                    let _ = live
                        .tx
                        .send(WriterRequest::SwarmfsNearFetching(piece.get(), for_read));
                }
            }
        }
        if let Some((piece, for_read)) = fetching {
            for e in self.state.peers.states.iter() {
                if let Some(live) = e.value().get_live()
                    && live.swarmfs_fetching
                    && !live.seeder
                {
                    let _ = live
                        .tx
                        .send(WriterRequest::SwarmfsFetching(piece.get(), for_read));
                }
            }
        }

        result
    }

    fn on_download_request(&self, request: Request) -> anyhow::Result<()> {
        if self.state.torrent().options.disable_upload() {
            anyhow::bail!("upload disabled, but peer requested a piece")
        }

        let piece_index = match self.state.lengths.validate_piece_index(request.index) {
            Some(p) => p,
            None => {
                anyhow::bail!(
                    "received {:?}, but it is not a valid chunk request (piece index is invalid). Ignoring.",
                    request
                );
            }
        };

        let chunk_info = match chunk_or_span(
            &self.state.lengths,
            piece_index,
            request.begin,
            request.length,
        ) {
            Some(d) => d,
            None => {
                anyhow::bail!(
                    "received {:?}, but it is not a valid chunk request (chunk data is invalid). Ignoring.",
                    request
                );
            }
        };

        if !self
            .state
            .lock_read("is_chunk_ready_to_upload")
            .get_chunks()?
            .is_chunk_ready_to_upload(&chunk_info)
        {
            anyhow::bail!(
                "got request for a chunk that is not ready to upload. chunk {:?}",
                chunk_info
            );
        }

        // Asked for again after a cancel: sent after all.
        self.uploads.take_cancel(request.index, request.begin);
        self.state
            .ratelimit_upload_tx
            .send((self.tx.clone(), chunk_info, self.uploads.clone()))?;
        Ok(())
    }

    fn on_have(&self, have: u32) {
        // swarmfs patch: when a piece a reader waits on is announced, for tracing a boot.
        if tracing::enabled!(target: "swarmfs::piece", tracing::Level::DEBUG)
            && let Some(picker) = self.state.shared.options.piece_picker.as_ref()
        {
            let mut urgent = Vec::new();
            picker.urgent(&mut urgent);
            if urgent.contains(&have) {
                debug!(target: "swarmfs::piece", piece = have, peer = %self.addr, "urgent piece announced");
            }
        }
        let mut allocated = false;
        self.state
            .peers
            .with_live_mut(self.addr, "on_have", |live| {
                // If bitfield wasn't allocated yet, let's do it. Some clients start empty so they never
                // send bitfields.
                if live.bitfield.is_empty() {
                    live.bitfield = make_piece_bitfield(&self.state.lengths);
                    allocated = true; // wakes `wait_for_bitfield`
                }
                let total = self.state.lengths.total_pieces() as usize;
                if have as usize >= live.bitfield.len() {
                    warn!(
                        id = self.state.shared.id,
                        info_hash = ?self.state.shared.info_hash,
                        addr = ?self.addr,
                        "received have {} out of range",
                        have
                    );
                    return;
                }
                if live.set_have(have as usize, total) {
                    self.state
                        .peers
                        .availability
                        .inc(have as usize, live.near_counted);
                }
                trace!("updated bitfield with have={}", have);
                self.state.peers.update_seeder_flag(live, total);
                if live.seeder {
                    debug!("peer has full torrent");
                }
            });
        // swarmfs patch: only this peer's requester can ask for what it announced, and
        // only if we lack the piece: wake it alone (it sleeps up to 5 s when it found
        // nothing to ask for). Waking every requester of the torrent on every `have`
        // (16 hosts, 32 KiB pieces: ~60000 a host, each waking ~16 requesters that
        // scanned the picker's order again) cost more CPU than hashing the data.
        let needed = self
            .state
            .lengths
            .validate_piece_index(have)
            .is_some_and(|p| {
                self.state
                    .lock_read("on_have")
                    .get_pieces()
                    .is_ok_and(|t| !t.chunks().is_piece_have(p))
            });
        if needed || allocated {
            self.on_bitfield_notify.notify_waiters();
        }
    }

    fn on_bitfield(&self, bitfield: ByteBufOwned) -> anyhow::Result<()> {
        if bitfield.as_ref().len() != self.state.lengths.piece_bitfield_bytes() {
            anyhow::bail!(
                "dropping peer as its bitfield has unexpected size. Got {}, expected {}",
                bitfield.as_ref().len(),
                self.state.lengths.piece_bitfield_bytes(),
            );
        }
        let bf = BF::from_boxed_slice(bitfield.0.to_vec().into_boxed_slice());
        if let Some(true) = bf
            .get(..self.state.lengths.total_pieces() as usize)
            .map(|s| s.all())
        {
            debug!("peer has full torrent");
        }
        self.state
            .peers
            .update_bitfield(self.addr, bf, self.state.lengths.total_pieces() as usize);
        self.on_bitfield_notify.notify_waiters();
        Ok(())
    }

    async fn wait_for_any_notify(&self, notify: &Notify, check: impl Fn() -> bool) {
        loop {
            // To remove possibility of races, we first grab a token, then check
            // if we need it, and only if so, await.
            let notified = notify.notified();
            if check() {
                return;
            }
            notified.await;
        }
    }

    async fn wait_for_bitfield(&self) {
        self.wait_for_any_notify(&self.on_bitfield_notify, || {
            self.state
                .peers
                .with_live(self.addr, |live| !live.bitfield.is_empty())
                .unwrap_or_default()
        })
        .await;
    }

    /// Waits until fewer than the window plus `extra` requests are in flight.
    async fn wait_for_request_slot_beyond(&self, extra: usize) {
        loop {
            let Some(notify) = self.request_slots_changed() else {
                return;
            };
            let notified = notify.notified();
            if self.can_send_request_beyond(extra) {
                return;
            }
            notified.await;
        }
    }

    // The job of this is to request chunks and also to keep peer alive.
    // The moment this ends, the peer is disconnected.
    async fn task_peer_chunk_requester(&self) -> crate::Result<()> {
        self.wait_for_bitfield().await;

        let mut update_interest = {
            let mut current = false;
            move |h: &PeerHandler, new_value: bool| -> crate::Result<()> {
                if new_value != current {
                    h.tx.send(if new_value {
                        WriterRequest::Message(Message::Interested)
                    } else {
                        WriterRequest::Message(Message::NotInterested)
                    })
                    .ok()
                    .ok_or(Error::PeerTaskDead)?;
                    current = new_value;
                }
                Ok(())
            }
        };

        loop {
            // If we have full torrent, we don't need to request more pieces.
            // However we might still need to seed them to the peer.
            if self.state.is_finished_and_no_active_streams() {
                update_interest(self, false)?;
                if self
                    .state
                    .peers
                    .is_peer_not_interested_and_has_full_torrent(
                        self.addr,
                        self.state.lengths.total_pieces() as usize,
                    )
                {
                    debug!("nothing left to do, neither of us is interested, disconnecting peer");
                    self.tx
                        .send(WriterRequest::Disconnect(Ok(())))
                        .ok()
                        .ok_or(Error::PeerTaskDead)?;
                    // wait until the receiver gets the message so that it doesn't finish with an error.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Ok(());
                } else {
                    // TODO: wait for a notification of interest, e.g. update of selected files or new streams or change
                    // in peer interest.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }

            update_interest(self, true)?;
            // swarmfs patch: while the window is full, pieces readers wait on are still
            // requested at once (see `wait_for_slot_serving_urgent`).
            if !aframe!(self.wait_for_slot_serving_urgent()).await? {
                return Ok(());
            }

            // Acquire a piece using the strategy: try steal (10x) → reserve → steal (3x).
            let new_piece_notify = self.state.new_pieces_notify.notified();
            // swarmfs patch: a piece this peer announces wakes this requester alone.
            let announced = self.on_bitfield_notify.notified();
            let next = match self.acquire_next_piece(false)? {
                Some(next) => next,
                None => {
                    debug!("no pieces to request");
                    // swarmfs patch: while readers wait, look again soon: the picker may
                    // allow a piece it held back a moment ago (`may_ask_seeder`).
                    let mut urgent = Vec::new();
                    if let Some(p) = self.state.shared.options.piece_picker.as_ref() {
                        p.urgent(&mut urgent);
                    }
                    // Otherwise 500 ms (was 5 s): besides the wake-ups below, work can
                    // appear with time (an endgame steal, a hold on the origin expiring).
                    let wait = if urgent.is_empty() || !self.is_seeder() {
                        Duration::from_millis(500)
                    } else {
                        Duration::from_millis(10)
                    };
                    tokio::select! {
                        _ = new_piece_notify => debug!("woken up, new pieces might be available"),
                        _ = announced => debug!("woken up, the peer announced a piece"),
                        _ = tokio::time::sleep(wait) => debug!("woken up by sleep timer"),
                    }
                    continue;
                }
            };

            // swarmfs patch: a piece a reader waits on is requested whole at once (beyond
            // the window, see URGENT_EXTRA_WINDOW); a background piece waits for window
            // slots, and while it waits, urgent pieces go first.
            let sent = aframe!(self.request(next)).await?;
            if !sent {
                return Ok(());
            }
        }
    }

    /// swarmfs patch: asks the peer for a piece as `acquire_next_piece` said. Returns
    /// false if the peer is gone.
    async fn request(&self, (piece, ask): (ValidPieceIndex, Ask)) -> crate::Result<bool> {
        // swarmfs patch: a peer that takes `swarmfs_fetching` hears first that a reader
        // waits on this piece (or will soon), and serves it before its other uploads.
        let wait = match ask {
            Ask::Whole => None,
            Ask::Soon => Some(false),
            Ask::Urgent | Ask::Help | Ask::TakeOver => Some(true),
        };
        if let Some(wait) = wait
            && self
                .state
                .peers
                .with_live(self.addr, |l| l.swarmfs_fetching)
                .unwrap_or(false)
        {
            let _ = self.tx.send(WriterRequest::SwarmfsAsking(piece.get(), wait));
        }
        match ask {
            Ask::Whole => aframe!(self.request_piece(piece)).await,
            _ => aframe!(self.request_now(piece, ask)).await,
        }
    }

    /// swarmfs patch: asks at once, beyond the window, for a piece a reader waits on (a
    /// `Whole` piece here is an endgame steal, asked for at once as well).
    async fn request_now(&self, piece: ValidPieceIndex, ask: Ask) -> crate::Result<bool> {
        match ask {
            Ask::Help => aframe!(self.request_missing_chunks(piece, true)).await,
            Ask::TakeOver => aframe!(self.request_missing_chunks(piece, false)).await,
            Ask::Urgent | Ask::Whole => {
                trace!(piece = piece.get(), "requesting urgent piece");
                aframe!(self.request_all_chunks(piece, URGENT_EXTRA_WINDOW)).await
            }
            Ask::Soon => aframe!(self.request_all_chunks(piece, SOON_EXTRA_WINDOW)).await,
        }
    }

    /// swarmfs patch: asks for the chunks of `piece` that have not arrived; helping
    /// (`last_first`), last first: the peer it was first asked of sends them first to
    /// last, so the two meet in the middle (and the chunks the first peer still owes are
    /// cancelled at completion).
    async fn request_missing_chunks(
        &self,
        piece: ValidPieceIndex,
        last_first: bool,
    ) -> crate::Result<bool> {
        let mut missing = self.state.chunks_to_ask(piece, self.takes_spans())?;
        if last_first {
            missing.reverse();
        }
        for chunk in missing {
            if !aframe!(self.send_chunk_request(chunk, URGENT_EXTRA_WINDOW)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// swarmfs patch: whether this peer takes a request for part of a chunk. BEP 3 sets
    /// no lower bound, but librqbit (and swarmfs before `swarmfs_spans`) drops a peer that
    /// sends one: only peers that declared `swarmfs_spans` are sent them (a fleet
    /// upgrading swarmfs host by host keeps its connections).
    fn takes_spans(&self) -> bool {
        self.state
            .peers
            .with_live(self.addr, |live| live.swarmfs_spans)
            .unwrap_or(false)
    }

    /// swarmfs patch: whether any reader waits.
    fn readers_wait(&self) -> bool {
        let Some(picker) = self.state.shared.options.piece_picker.as_ref() else {
            return false;
        };
        let mut urgent = Vec::new();
        picker.urgent(&mut urgent);
        !urgent.is_empty()
    }

    /// swarmfs patch: whether pieces are wanted soon (read-ahead).
    fn soon_wanted(&self) -> bool {
        let Some(picker) = self.state.shared.options.piece_picker.as_ref() else {
            return false;
        };
        let mut soon = Vec::new();
        picker.soon(&mut soon);
        !soon.is_empty()
    }

    /// swarmfs patch: waits for a free request slot. Meanwhile any piece a reader waits
    /// on that this peer can send is requested at once, beyond the window: a requester
    /// in the middle of a background piece waited for the window to drain chunk by
    /// chunk first (8-host fleet: 216 ms median from a read to its piece being asked
    /// for; 16 hosts: 520 ms). Returns false if the peer is gone.
    async fn wait_for_slot_serving_urgent(&self) -> crate::Result<bool> {
        // swarmfs patch: since when the window has been full with no slot freed.
        let mut full_since = Instant::now();
        loop {
            let Some(slots) = self.request_slots_changed() else {
                return Ok(false);
            };
            let slot_freed = slots.notified();
            let new_pieces = self.state.new_pieces_notify.notified();
            let announced = self.on_bitfield_notify.notified();
            if self.can_send_request_beyond(0) {
                return Ok(true);
            }
            // Pieces wanted soon (read-ahead) go before the rest of a background piece too.
            let waiting = self.readers_wait() || self.soon_wanted();
            if waiting && let Some((piece, ask)) = self.acquire_next_piece(true)? {
                if !aframe!(self.request_now(piece, ask)).await? {
                    return Ok(false);
                }
                continue;
            }
            // A seeder may be asked for an urgent piece once the picker's stagger is
            // over: look again soon while readers wait. Another peer's piece is taken
            // over once it is overdue (`urgent_steal_after`): looked at every 50 ms (at
            // every 10 ms, a fleet booting without a profile spent a tenth of its CPU
            // here; everything else this waits for wakes it).
            let recheck = match (waiting, self.is_seeder()) {
                (true, true) => Duration::from_millis(10),
                (true, false) => Duration::from_millis(50),
                (false, _) => Duration::from_secs(1),
            };
            // A piece this peer announces matters here only while readers wait.
            tokio::select! {
                _ = slot_freed => full_since = Instant::now(),
                _ = new_pieces => {}
                _ = announced, if waiting => {}
                _ = tokio::time::sleep(recheck) => {}
            }
            // swarmfs patch: a neighbour that has sent nothing back for this long with
            // the window full keeps far peers from its pieces no more
            // (`PeerStates::demote_near`).
            if full_since.elapsed() >= NEAR_STALL
                && self
                    .state
                    .peers
                    .with_live(self.addr, |l| l.near_counted)
                    .unwrap_or(false)
            {
                debug!(peer = %self.addr, "a neighbour sent nothing for {NEAR_STALL:?}: far peers may take its pieces");
                self.state.peers.demote_near(self.addr);
                self.state.wake_piece_requesters();
            }
        }
    }

    /// Requests every chunk of a background piece, a window slot each. Returns false if
    /// the peer is gone.
    async fn request_piece(&self, piece: ValidPieceIndex) -> crate::Result<bool> {
        for chunk in self.state.chunks_to_ask(piece, self.takes_spans())? {
            if !aframe!(self.wait_for_slot_serving_urgent()).await? {
                return Ok(false);
            }
            if !aframe!(self.send_chunk_request(chunk, 0)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// swarmfs patch: requests every chunk of a piece a reader waits on or wants soon, up
    /// to `extra` beyond the window. Returns false if the peer is gone.
    async fn request_all_chunks(&self, piece: ValidPieceIndex, extra: usize) -> crate::Result<bool> {
        for chunk in self.state.chunks_to_ask(piece, self.takes_spans())? {
            if !aframe!(self.send_chunk_request(chunk, extra)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends one chunk request once the window (plus `extra`) has room. Returns false if
    /// the peer is gone.
    async fn send_chunk_request(&self, chunk: ChunkInfo, extra: usize) -> crate::Result<bool> {
        let handle = self.addr;
        let request = Request {
            index: chunk.piece_index.get(),
            begin: chunk.offset,
            length: chunk.size,
        };

        aframe!(self.wait_for_request_slot_beyond(extra)).await;

        self.state
            .ratelimits
            .prepare_for_download(NonZeroU32::new(request.length).unwrap())
            .await?;

        if let Some(session) = self.state.torrent().session.upgrade() {
            session
                .ratelimits
                .prepare_for_download(NonZeroU32::new(request.length).unwrap())
                .await?;
        }

        aframe!(self.wait_for_request_slot_beyond(extra)).await;

        match self
            .state
            .peers
            .with_live_mut(handle, "add chunk request", |live| {
                live.add_inflight_request(chunk)
            }) {
            Some(true) => {}
            Some(false) => {
                // This request was already in-flight for this peer for this chunk.
                // This might happen in theory, but not very likely.
                //
                // Example:
                // someone stole a piece from us, and then died, the piece became "needed" again, and we reserved it
                // all before the piece request was processed by us.
                warn!(
                    id = self.state.shared.id,
                    info_hash = ?self.state.shared.info_hash,
                    addr = ?self.addr,
                    "we already requested {:?} previously",
                    chunk
                );
                return Ok(true);
            }
            // peer died
            None => return Ok(false),
        };

        if self
            .tx
            .send(WriterRequest::Message(Message::Request(request)))
            .is_err()
        {
            return Ok(false);
        }
        Ok(true)
    }

    fn on_i_am_choked(&self) {
        self.lock_flow_control("i_am_choked = true").i_am_choked = true;
        self.notify_request_slots_changed();
        self.set_near_counted(false);
    }

    /// swarmfs patch: a neighbour's pieces (`PiecePicker::is_neighbour`) are not asked of
    /// peers farther away, but only while it unchokes us: a neighbour that chokes us
    /// sends nothing, and what only it has nearby must then come from farther away.
    fn set_near_counted(&self, unchoked: bool) {
        let near = unchoked
            && self
                .state
                .shared
                .options
                .piece_picker
                .as_ref()
                .is_some_and(|p| p.is_neighbour(self.addr.ip()));
        let changed = self
            .state
            .peers
            .with_live_mut(self.addr, "near_counted", |live| {
                let near = near && !live.near_demoted;
                let changed = live.near_counted != near;
                if changed {
                    live.near_counted = near;
                    self.state.peers.availability.apply_near(&live.bitfield, near);
                }
                changed
            })
            .unwrap_or(false);
        if changed && !near {
            // Far peers' requesters that skipped this neighbour's pieces look again.
            self.state.wake_piece_requesters();
        }
    }

    fn on_peer_interested(&self) {
        trace!("peer is interested");
        self.state.peers.mark_peer_interested(self.addr, true);
    }

    fn on_i_am_unchoked(&self) {
        trace!("we are unchoked");
        self.lock_flow_control("i_am_choked = false").i_am_choked = false;
        self.notify_request_slots_changed();
        self.set_near_counted(true);
    }

    async fn on_received_piece(&self, piece: Piece<ByteBuf<'_>>) -> anyhow::Result<()> {
        let piece_index = self
            .state
            .lengths
            .validate_piece_index(piece.index)
            .with_context(|| format!("peer sent an invalid piece {}", piece.index))?;
        let chunk_info = match chunk_or_span(
            &self.state.lengths,
            piece_index,
            piece.begin,
            piece.len().try_into().context("bug")?,
        ) {
            Some(i) => i,
            None => {
                anyhow::bail!("peer sent us an invalid piece {:?}", piece,);
            }
        };

        // Peer chunk/byte counters.
        self.counters
            .fetched_bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        self.counters.fetched_chunks.fetch_add(1, Ordering::Relaxed);

        let should_process = self
            .state
            .peers
            .with_live_mut(self.addr, "inflight_requests.remove", |h| {
                match h.remove_inflight_request(&chunk_info) {
                    RemoveInflightRequestResult::Expected => Ok(true),
                    RemoveInflightRequestResult::LateCanceled => {
                        trace!(?piece, "peer sent us a chunk we did not ask for");
                        Ok(false)
                    }
                    RemoveInflightRequestResult::Unexpected => anyhow::bail!(
                        "peer sent us a piece we did not ask. Inflight requests: {:?}. Got: {:?}",
                        h.inflight_requests_debug(),
                        piece,
                    ),
                }
            })
            .context("peer not found")??;

        if !should_process {
            discarded(&self.counters, &piece);
            return Ok(());
        }

        // This one is used to calculate download speed.
        self.state
            .stats
            .fetched_bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        self.state
            .session_stats
            .counters
            .fetched_bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);

        // swarmfs patch: counts a chunk that arrived but is not used.
        fn discarded(counters: &AtomicPeerCounters, piece: &Piece<ByteBuf<'_>>) {
            counters
                .discarded_bytes
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
        }

        fn write_to_disk(
            state: &TorrentStateLive,
            addr: PeerHandle,
            counters: &AtomicPeerCounters,
            piece: &Piece<ByteBuf<'_>>,
            chunk_info: &ChunkInfo,
        ) -> anyhow::Result<()> {
            let index = piece.index;

            // If someone stole the piece by now, ignore it.
            // However if they didn't, don't let them steal it while we are writing.
            // So that by the time we are done writing AND if it was the last piece,
            // we can actually checksum etc.
            // Otherwise it might get into some weird state.
            let ppl_guard = {
                let g = state.lock_read("check_steal");

                let ppl = state
                    .per_piece_locks
                    .get(piece.index as usize)
                    .map(|l| l.read());

                match g.get_pieces()?.get_inflight(chunk_info.piece_index) {
                    Some(inflight) if inflight.peer == addr || inflight.helpers.contains(&addr) => {
                        // swarmfs patch: a chunk that came already from another peer
                        // sending this piece is not written again.
                        if g.get_pieces()?.chunks().is_chunk_received(chunk_info) {
                            discarded(counters, piece);
                            return Ok(());
                        }
                    }
                    Some(inflight) => {
                        debug!(
                            "in-flight piece {} was stolen by {}, ignoring",
                            chunk_info.piece_index, inflight.peer
                        );
                        discarded(counters, piece);
                        return Ok(());
                    }
                    None => {
                        debug!(
                            "in-flight piece {} not found. it was probably completed by someone else",
                            chunk_info.piece_index
                        );
                        discarded(counters, piece);
                        return Ok(());
                    }
                };

                ppl
            };

            // While we hold per piece lock, noone can steal it.
            // So we can proceed writing knowing that the piece is ours now and will still be by the time
            // the write is finished.
            //

            if !cfg!(feature = "_disable_disk_write_net_benchmark") {
                match state.file_ops().write_chunk(addr, piece, chunk_info) {
                    Ok(()) => {}
                    Err(e) => {
                        error!(
                            id = state.shared.id,
                            info_hash = ?state.shared.info_hash,
                            "FATAL: error writing chunk to disk: {e:#}"
                        );
                        return state.on_fatal_error(e);
                    }
                };
            }

            let full_piece_download_time = {
                let mut g = state.lock_write("mark_chunk_downloaded");
                let chunk_marking_result = g.get_pieces_mut()?.mark_chunk_downloaded(piece, chunk_info);
                trace!(?piece, chunk_marking_result=?chunk_marking_result);

                match chunk_marking_result {
                    Some(ChunkMarkingResult::Completed) => {
                        trace!("piece={} done, will write and checksum", piece.index);
                        // Remove from inflight to prevent others from stealing it during hash check.
                        // swarmfs patch: the other peers that were sending it are told to stop.
                        g.get_pieces_mut()?
                            .take_inflight_piece(chunk_info.piece_index)
                            .map(|inflight| {
                                let others: Vec<PeerHandle> = std::iter::once(inflight.peer)
                                    .chain(inflight.helpers.iter().copied())
                                    .filter(|p| *p != addr)
                                    .collect();
                                (inflight.started.elapsed(), others)
                            })
                    }
                    Some(ChunkMarkingResult::PreviouslyCompleted) => {
                        // TODO: we might need to send cancellations here.
                        debug!("piece={} was done by someone else, ignoring", piece.index);
                        discarded(counters, piece);
                        return Ok(());
                    }
                    Some(ChunkMarkingResult::NotCompleted) => None,
                    None => {
                        anyhow::bail!(
                            "bogus data received: {:?}, cannot map this to a chunk, dropping peer",
                            piece
                        );
                    }
                }
            };

            // We don't care about per piece lock anymore, as it's removed from inflight pieces.
            // It shouldn't impact perf anyway, but dropping just in case.
            drop(ppl_guard);

            let (full_piece_download_time, other_senders) = match full_piece_download_time {
                Some(t) => t,
                None => return Ok(()),
            };
            for other in &other_senders {
                state.peers.with_live_mut(*other, "cancel_helped_piece", |live| {
                    live.cancel_inflight_requests_for_piece(chunk_info.piece_index);
                });
            }

            // swarmfs patch: a piece whose check could not run (a read error) goes back
            // to the queue. Stock librqbit left it out of flight with every chunk marked
            // done: no peer could ever complete it again ("done by someone else").
            let checked = match state.file_ops().check_piece(chunk_info.piece_index) {
                Ok(ok) => ok,
                Err(e) => {
                    state
                        .lock_write("mark_piece_broken")
                        .get_pieces_mut()?
                        .mark_piece_hash_failed(chunk_info.piece_index);
                    state.new_pieces_notify.notify_waiters();
                    return Err(e.context(format!("error checking piece={index}")));
                }
            };
            match checked
            {
                true => {
                    {
                        let mut g = state.lock_write("mark_piece_downloaded");
                        g.get_pieces_mut()?
                            .mark_piece_hash_ok(chunk_info.piece_index);
                    }

                    // Global piece counters.
                    let piece_len = state.lengths.piece_length(chunk_info.piece_index) as u64;
                    state
                        .stats
                        .downloaded_and_checked_bytes
                        // This counter is used to compute "is_finished", so using
                        // stronger ordering.
                        .fetch_add(piece_len, Ordering::Release);
                    state
                        .stats
                        .downloaded_and_checked_pieces
                        // This counter is used to compute "is_finished", so using
                        // stronger ordering.
                        .fetch_add(1, Ordering::Release);
                    state
                        .stats
                        .have_bytes
                        .fetch_add(piece_len, Ordering::Relaxed);
                    #[allow(clippy::cast_possible_truncation)]
                    state.stats.total_piece_download_ms.fetch_add(
                        full_piece_download_time.as_millis() as u64,
                        Ordering::Relaxed,
                    );

                    // Per-peer piece counters.
                    counters.on_piece_completed(piece_len, full_piece_download_time);
                    state.peers.reset_peer_backoff(addr);

                    trace!(piece = index, "successfully downloaded and verified");
                    // swarmfs patch: which peer each piece came from, and how long it took.
                    debug!(target: "swarmfs::piece", piece = index, peer = %addr, ms = full_piece_download_time.as_millis() as u64, "piece verified");

                    state.on_piece_completed(chunk_info.piece_index)?;

                    state.transmit_haves(chunk_info.piece_index);
                }
                false if !other_senders.is_empty() => {
                    // swarmfs patch: chunks came from several peers; which one lied is
                    // found when the piece is fetched again from one peer only.
                    warn!(
                        id = state.shared.id,
                        info_hash = ?state.shared.info_hash,
                        ?addr,
                        "checksum for piece={} fetched from several peers did not validate; fetching it from one peer", index
                    );
                    state
                        .lock_write("mark_piece_broken")
                        .get_pieces_mut()?
                        .mark_piece_hash_failed_multi_source(chunk_info.piece_index);
                    state.new_pieces_notify.notify_waiters();
                }
                false if state
                    .lock_read("has_local_parts")
                    .get_pieces()?
                    .chunks()
                    .has_local_parts(chunk_info.piece_index) =>
                {
                    // swarmfs patch: part of the piece was written from local data; the
                    // fault may be ours (a rotten local copy), not the peer's. The piece is
                    // fetched whole.
                    warn!(
                        piece = index,
                        "a piece written partly from local data failed its check: fetched whole"
                    );
                    state
                        .lock_write("mark_piece_broken")
                        .get_pieces_mut()?
                        .mark_piece_hash_failed(chunk_info.piece_index);
                    state.new_pieces_notify.notify_waiters();
                    if let Some(picker) = state.shared.options.piece_picker.as_ref() {
                        picker.on_partial_piece_refused(index);
                    }
                }
                false => {
                    warn!(
                        id = state.shared.id,
                        info_hash = ?state.shared.info_hash,
                        ?addr,
                        "checksum for piece={} did not validate. disconnecting peer.", index
                    );
                    state
                        .lock_write("mark_piece_broken")
                        .get_pieces_mut()?
                        .mark_piece_hash_failed(chunk_info.piece_index);
                    state.new_pieces_notify.notify_waiters();
                    anyhow::bail!("i am probably a bogus peer. dying.")
                }
            };
            Ok(())
        }

        self.state
            .shared
            .spawner
            .block_in_place_with_semaphore(|| {
                write_to_disk(&self.state, self.addr, &self.counters, &piece, &chunk_info)
            })
            .await
            .with_context(|| format!("error processing received chunk {chunk_info:?}"))?;

        Ok(())
    }

    /// swarmfs patch: sends a `swarmfs_profile` message (see `MY_EXTENDED_SWARMFS_PROFILE`).
    fn send_swarmfs_profile(&self, msg_type: u8, piece: u32, total_size: u32, data: bytes::Bytes) {
        let _ = self.tx.send(WriterRequest::SwarmfsProfile {
            msg_type,
            piece,
            total_size,
            data,
        });
    }

    /// swarmfs patch: a `swarmfs_profile` message from this peer. A request is answered
    /// with the piece of our profile, or a reject; data is taken only in order, within
    /// the size the picker allows, and a whole profile goes to the picker. Anything else
    /// ends the transfer (the picker may then ask another peer).
    fn on_swarmfs_profile(&self, d: &std::collections::HashMap<ByteBuf<'_>, bencode::BencodeValue<ByteBuf<'_>>>) {
        use bencode::BencodeValue as V;
        let int = |k: &[u8]| match d.get(&ByteBuf(k)) {
            Some(V::Integer(i)) => Some(*i),
            _ => None,
        };
        let piece_len = peer_binary_protocol::SWARMFS_PROFILE_PIECE;
        let (Some(msg_type), Some(piece)) = (int(b"msg_type"), int(b"piece")) else {
            self.profile_rx.lock().take();
            return;
        };
        let Ok(piece) = u32::try_from(piece) else {
            self.profile_rx.lock().take();
            return;
        };
        let Some(picker) = self.state.shared.options.piece_picker.as_ref() else {
            // No picker (a plain seeder): nothing to offer, nothing asked.
            if msg_type == 0 {
                self.send_swarmfs_profile(2, piece, 0, Default::default());
            }
            return;
        };
        match msg_type {
            0 => {
                let offer = picker.profile_offer();
                let start = piece as usize * piece_len;
                match offer {
                    Some(p) if start < p.len() && u32::try_from(p.len()).is_ok() => {
                        let end = (start + piece_len).min(p.len());
                        let data = bytes::Bytes::copy_from_slice(&p[start..end]);
                        self.send_swarmfs_profile(1, piece, p.len() as u32, data);
                    }
                    _ => self.send_swarmfs_profile(2, piece, 0, Default::default()),
                }
            }
            1 => {
                let mut rx = self.profile_rx.lock();
                let Some(r) = rx.as_mut() else {
                    return; // not asked for
                };
                let total = int(b"total_size").and_then(|t| usize::try_from(t).ok());
                let data = match d.get(&ByteBuf(b"data")) {
                    Some(V::Bytes(b)) => Some(b.0),
                    _ => None,
                };
                let expected = r.buf.len() / piece_len;
                let ok = match (total, data) {
                    (Some(total), Some(data)) => {
                        (r.total == 0 || r.total == total)
                            && total > 0
                            && total <= picker.profile_max_len()
                            && piece as usize == expected
                            && r.buf.len() % piece_len == 0
                            && data.len() == piece_len.min(total - r.buf.len())
                    }
                    _ => false,
                };
                if !ok {
                    debug!(peer = %self.addr, "swarmfs_profile: a malformed piece; transfer dropped");
                    rx.take();
                    return;
                }
                r.total = total.unwrap_or(0);
                r.buf.extend_from_slice(data.unwrap_or_default());
                if r.buf.len() == r.total {
                    let done = rx.take().expect("checked");
                    drop(rx);
                    picker.on_profile(&done.buf, self.addr.ip());
                } else {
                    let next = piece + 1;
                    drop(rx);
                    self.send_swarmfs_profile(0, next, 0, Default::default());
                }
            }
            _ => {
                self.profile_rx.lock().take();
            }
        }
    }

    fn send_metadata_piece(&self, piece_id: u32) -> anyhow::Result<()> {
        let data = &self.state.metadata.info_bytes;
        let metadata_size = data.len();
        if metadata_size == 0 {
            anyhow::bail!("peer requested for info metadata but we don't have it")
        }
        let total_pieces: usize = (metadata_size as u64)
            .div_ceil(CHUNK_SIZE as u64)
            .try_into()?;

        if piece_id as usize >= total_pieces {
            bail!("piece out of bounds")
        }

        let offset = piece_id * CHUNK_SIZE;
        let end = (offset + CHUNK_SIZE).min(data.len().try_into()?);
        let total_size: u32 = data
            .len()
            .try_into()
            .context("can't send metadata: len doesn't fit into u32")?;
        let data = data.slice(offset as usize..end as usize);

        self.tx
            .send(WriterRequest::UtMetadata(UtMetadata::Data(
                UtMetadataData::from_bytes(piece_id, total_size, data.into()),
            )))
            .context("error sending UtMetadata: channel closed")?;
        Ok(())
    }

    fn on_pex_message(&self, msg: UtPex<ByteBuf<'_>>) {
        msg.dropped_peers()
            .chain(msg.added_peers())
            .for_each(|peer| {
                self.state
                    .add_peer_if_not_seen(peer.addr)
                    .map_err(|error| {
                        warn!(
                            id = self.state.shared.id,
                            info_hash = ?self.state.shared.info_hash,
                            ?peer,
                            "failed to add peer: {error:#}"
                        );
                        error
                    })
                    .ok();
            });
    }

    fn is_choked(&self) -> bool {
        self.lock_flow_control("is_choked").i_am_choked
    }

    /// swarmfs patch: whether this peer has every piece (the origin, or a host done).
    fn is_seeder(&self) -> bool {
        self.state
            .peers
            .with_live(self.addr, |l| l.seeder)
            .unwrap_or(false)
    }

    /// Whether fewer than the request window plus `extra` (swarmfs patch: room for the
    /// chunks of pieces readers wait on) requests are in flight.
    fn can_send_request_beyond(&self, extra: usize) -> bool {
        let (i_am_choked, request_window) = {
            let flow = self.lock_flow_control("can_send_request");
            (flow.i_am_choked, flow.request_window)
        };

        if i_am_choked {
            return false;
        }

        // swarmfs patch: the picker may allow a seeder (the origin) a larger window
        // (asked only for seeders whose window the peer's reqq did not lower).
        let picker = self.state.shared.options.piece_picker.as_ref();
        let full_window = request_window == self.state.max_request_window();
        self.state
            .peers
            .with_live(self.addr, |live| {
                let window = picker
                    .filter(|_| full_window)
                    .and_then(|p| {
                        if live.seeder {
                            p.seeder_request_window()
                        } else {
                            let s = self.state.peers.stats();
                            p.peer_request_window(s.live.saturating_sub(s.live_seeders) as usize)
                        }
                    })
                    .unwrap_or(request_window);
                live.requested_inflight_count() < window + extra
            })
            .unwrap_or(false)
    }

    fn lock_flow_control(
        &self,
        reason: &'static str,
    ) -> TimedExistence<MutexGuard<'_, PeerFlowControl>> {
        TimedExistence::new(timeit(reason, || self.flow_control.lock()), reason)
    }

    fn request_slots_changed(&self) -> Option<Arc<Notify>> {
        self.state
            .peers
            .with_live(self.addr, |live| live.request_slots_changed())
    }

    fn notify_request_slots_changed(&self) {
        if let Some(notify) = self.request_slots_changed() {
            notify.notify_waiters();
        }
    }
}

fn format_peer_client_name(value: &ByteBuf<'_>) -> Option<String> {
    let client_name = String::from_utf8_lossy(value.as_ref()).trim().to_string();
    if client_name.is_empty() {
        return None;
    }

    Some(client_name)
}

/// swarmfs patch: a chunk queued for upload: the peer's writer, the chunk, and what the
/// peer said of its requests.
type UploadItem = (
    tokio::sync::mpsc::UnboundedSender<WriterRequest>,
    ChunkInfo,
    Arc<PeerUploads>,
);

/// swarmfs patch: what a peer said of the chunks it asked us for: the requests (piece,
/// begin) it cancelled, and the pieces a reader of its waits on or will soon
/// (`swarmfs_fetching` `wait` / `soon`), which go out first.
#[derive(Default)]
struct PeerUploads {
    cancelled: Mutex<HashSet<(u32, u32)>>,
    asked: Mutex<HashMap<u32, (UploadClass, Instant)>>,
    /// Chunks handed to this peer's writer and not yet written.
    in_writer: AtomicUsize,
    /// Pieces whose chunks are going out to this peer, the last not yet (the upload
    /// scheduler's task only).
    begun: Mutex<HashSet<u32>>,
}

/// swarmfs patch: the order in which queued chunks go out: pieces readers wait on, then
/// read-ahead, then the rest; each class in the order asked.
#[derive(Clone, Copy)]
enum UploadClass {
    Wait,
    Soon,
    Rest,
}

impl PeerUploads {
    /// At most this many cancels (and asks) are kept per peer (a peer keeps far fewer
    /// requests in flight). A cancel that came after its chunk went out stays until the
    /// set is full, and the set is then emptied: a cancel lost that way costs one chunk
    /// sent, as every cancel did before.
    const MAX: usize = 1024;
    /// A piece said to be waited on is served first for this long (its chunks are asked
    /// for right after the notice).
    const ASKED_FOR: Duration = Duration::from_secs(5);

    fn cancel(&self, piece: u32, begin: u32) {
        let mut g = self.cancelled.lock();
        if g.len() >= Self::MAX {
            g.clear();
        }
        g.insert((piece, begin));
    }

    /// Whether (piece, begin) was cancelled; forgets the cancel.
    fn take_cancel(&self, piece: u32, begin: u32) -> bool {
        let mut g = self.cancelled.lock();
        !g.is_empty() && g.remove(&(piece, begin))
    }

    fn asked(&self, piece: u32, class: UploadClass) {
        let mut g = self.asked.lock();
        if g.len() >= Self::MAX {
            g.retain(|_, (_, t)| t.elapsed() < Self::ASKED_FOR);
            if g.len() >= Self::MAX {
                g.clear();
            }
        }
        g.insert(piece, (class, Instant::now()));
    }

    fn class(&self, piece: u32) -> UploadClass {
        let g = self.asked.lock();
        if g.is_empty() {
            return UploadClass::Rest;
        }
        match g.get(&piece) {
            Some(&(c, t)) if t.elapsed() < Self::ASKED_FOR => c,
            _ => UploadClass::Rest,
        }
    }
}

/// swarmfs patch: chunks handed to a peer's writer and not yet written, at most. The rest
/// wait in the upload scheduler's queue, where a chunk a reader waits on goes first
/// (`UploadQueue`); a writer's queue and a socket's buffer are first come, first
/// served, and a read's piece waited there behind the background chunks its host had
/// asked for before. With `TCP_NOTSENT_LOWAT` (`vectored_traits::NOTSENT_LOWAT`) a write
/// ends once its bytes are nearly on the wire. 2, 4 and 8 measured alike (8 hosts, 128 MB,
/// 100 Mbit/s; docs/experiments.md); a slot per writer would leave it idle between
/// writes.
const UPLOAD_SLOTS: usize = 2;

/// swarmfs patch: the upload scheduler's queue, by class (`UploadClass`); pieces readers
/// wait on in the order asked, the others first copies before repeats. A chunk goes to
/// its peer's writer only while that writer holds fewer than `UPLOAD_SLOTS`: a peer that
/// takes its chunks slowly holds back only its own.
#[derive(Default)]
struct UploadQueue {
    wait: VecDeque<UploadItem>,
    soon: VecDeque<UploadItem>,
    rest: VecDeque<UploadItem>,
    /// Per piece, how many copies began (a peer's first chunk of it went out), when the
    /// last did, and to whom.
    copies: Vec<PieceCopies>,
    /// An origin's hold on repeats (`AddTorrentOptions::repeat_hold`).
    hold: Option<Duration>,
    /// Its hold on repeats of pieces readers wait on (`AddTorrentOptions::read_repeat_hold`).
    read_hold: Option<Duration>,
    /// When the first repeat held back becomes ready (set by `pop_ready` when it finds
    /// none ready).
    wake: Option<Instant>,
}

/// swarmfs patch: whether a copy begun at `at` still holds a repeat back for `hold` at
/// `now`; if so, `wake` comes forward to when the hold ends.
fn held(at: Instant, hold: Duration, now: Instant, wake: &mut Option<Instant>) -> bool {
    let until = at + hold;
    if until > now {
        *wake = Some(wake.map_or(until, |w| w.min(until)));
    }
    until > now
}

/// swarmfs patch: how often a piece went out from here (`UploadQueue`).
#[derive(Default, Clone)]
struct PieceCopies {
    begun: u16,
    last: Option<(Instant, tokio::sync::mpsc::UnboundedSender<WriterRequest>)>,
}

impl UploadQueue {
    fn new(hold: Option<Duration>, read_hold: Option<Duration>) -> Self {
        Self {
            hold,
            read_hold,
            ..Default::default()
        }
    }

    /// When the piece's last copy began and how many did, if it went to a peer still
    /// connected other than `item`'s, which could pass it on; and whether `item` is
    /// the rest of a copy under way to its peer (not a repeat of its own). None: a first
    /// copy, or a repeat nobody connected could pass on (the requester's own order
    /// stands).
    fn last_copy(copies: &[PieceCopies], item: &UploadItem) -> Option<(Instant, u16, bool)> {
        let piece = item.1.piece_index.get();
        let c = copies.get(piece as usize)?;
        let (at, _) = c
            .last
            .as_ref()
            .filter(|(_, to)| !to.is_closed() && !to.same_channel(&item.0))?;
        let under_way = item.1.offset > 0 && item.2.begun.lock().contains(&piece);
        Some((*at, c.begun, under_way))
    }

    fn push(&mut self, item: UploadItem) {
        match item.2.class(item.1.piece_index.get()) {
            UploadClass::Wait => self.wait.push_back(item),
            UploadClass::Soon => self.soon.push_back(item),
            UploadClass::Rest => self.rest.push_back(item),
        }
    }

    /// The next chunk to send: of those whose peer has fewer than `per_peer` chunks in
    /// its writer, the first a reader waits on; else, read-ahead before the rest, the
    /// chunk of the piece with the fewest copies begun (the rest of a piece under way
    /// counts one copy fewer), the first asked among equals. Chunks of peers gone are
    /// dropped on the way.
    ///
    /// First copies before repeats: a seeder's uplink (the origin's) is the fleet's
    /// scarcest link, and a piece it sends twice is a piece it does not send once. A
    /// repeat waits while pieces nobody got from here are asked for, and with a `hold`
    /// (an origin) until the last copy began that long ago: meanwhile its requester gets
    /// the piece from the peer the copy went to (or one it passed it to) and cancels
    /// (`take_from_seeder`). Once that peer is gone a repeat ranks as a first copy (a
    /// host mounting after another left keeps its own order: its boot profile first).
    fn pop_ready(&mut self, per_peer: usize) -> Option<UploadItem> {
        let ready = |item: &UploadItem| {
            item.0.is_closed() || item.2.in_writer.load(Ordering::Relaxed) < per_peer
        };
        self.wake = None;
        loop {
            let now = Instant::now();
            // A repeat of a waited-on piece waits `read_hold` after the last copy began:
            // the peer it went to announces it within a piece's time, and the reader
            // takes it from there. Without the hold, every host of a fleet reading the
            // same start-up piece at once had a copy from the origin
            // (`picker::READ_REPEAT_HOLD`).
            let (copies, read_hold, wake) = (&self.copies, self.read_hold, &mut self.wake);
            let mut read_held = |item: &UploadItem| {
                let Some(hold) = read_hold.filter(|_| !item.0.is_closed()) else {
                    return false;
                };
                matches!(Self::last_copy(copies, item), Some((at, _, false)) if held(at, hold, now, wake))
            };
            if let Some(i) = self.wait.iter().position(|item| ready(item) && !read_held(item)) {
                let item = self.wait.remove(i)?;
                if item.0.is_closed() {
                    continue;
                }
                self.wake = None;
                return Some(item);
            }
            let (copies, hold, wake) = (&self.copies, self.hold, &mut self.wake);
            // The rank of a chunk, or None while it is held (then `wake` says until when).
            let mut rank = |item: &UploadItem| -> Option<u16> {
                // A repeat nobody connected could pass on (the last copy's peer is gone)
                // ranks as a first copy: the requester's own order stands.
                let Some((at, begun, under_way)) = Self::last_copy(copies, item) else {
                    return Some(0);
                };
                // The rest of a copy under way ranks one copy fewer.
                if under_way {
                    return Some(begun.saturating_sub(1));
                }
                if let Some(hold) = hold
                    && !item.0.is_closed()
                    && held(at, hold, now, wake)
                {
                    return None;
                }
                Some(begun)
            };
            let mut found = None;
            for q in [&mut self.soon, &mut self.rest] {
                let mut best: Option<(u16, usize)> = None;
                for (i, item) in q.iter().enumerate() {
                    if !ready(item) {
                        continue;
                    }
                    let Some(r) = rank(item) else {
                        continue;
                    };
                    if best.is_none_or(|(b, _)| r < b) {
                        best = Some((r, i));
                        if r == 0 {
                            break;
                        }
                    }
                }
                if let Some((_, i)) = best {
                    found = q.remove(i);
                    break;
                }
            }
            let item = found?;
            if !item.0.is_closed() {
                self.wake = None;
                return Some(item);
            }
        }
    }

    /// Counts a chunk sent to a peer (its writer `to`): the first of a piece to a peer
    /// begins a copy, the piece's last ends it.
    fn sent(
        &mut self,
        chunk: &ChunkInfo,
        to: &tokio::sync::mpsc::UnboundedSender<WriterRequest>,
        peer: &PeerUploads,
        piece_length: u32,
    ) {
        let piece = chunk.piece_index.get();
        let last_chunk = chunk.offset + chunk.size >= piece_length;
        let mut begun = peer.begun.lock();
        let new_copy = if last_chunk {
            !begun.remove(&piece)
        } else {
            if begun.len() >= PeerUploads::MAX {
                begun.clear();
            }
            begun.insert(piece)
        };
        if !new_copy {
            return;
        }
        let i = piece as usize;
        if self.copies.len() <= i {
            self.copies.resize(i + 1, PieceCopies::default());
        }
        let c = &mut self.copies[i];
        c.begun = c.begun.saturating_add(1);
        c.last = Some((Instant::now(), to.clone()));
    }

    fn is_empty(&self) -> bool {
        self.wait.is_empty() && self.soon.is_empty() && self.rest.is_empty()
    }
}

/// swarmfs patch: the chunk `begin`/`length` names in a piece, or a span inside one chunk
/// (asked for when the rest of the chunk was written from local data): the chunk's index
/// with the span's offset and size.
fn chunk_or_span(
    lengths: &Lengths,
    piece: ValidPieceIndex,
    begin: u32,
    length: u32,
) -> Option<ChunkInfo> {
    if let Some(c) = lengths.chunk_info_from_received_data(piece, begin, length) {
        return Some(c);
    }
    let chunk = lengths.iter_chunk_infos(piece).nth((begin / CHUNK_SIZE) as usize)?;
    let end = begin.checked_add(length)?;
    (length > 0 && begin >= chunk.offset && end <= chunk.offset + chunk.size).then_some(ChunkInfo {
        offset: begin,
        size: length,
        ..chunk
    })
}

/// swarmfs patch: addresses waiting to be dialled, neighbours first, each group in the
/// order it came.
#[derive(Default)]
struct NearFirst {
    near: std::collections::VecDeque<SocketAddr>,
    far: std::collections::VecDeque<SocketAddr>,
}

impl NearFirst {
    fn push(&mut self, addr: SocketAddr, near: bool) {
        if near {
            self.near.push_back(addr)
        } else {
            self.far.push_back(addr)
        }
    }

    fn push_front_far(&mut self, addr: SocketAddr) {
        self.far.push_front(addr)
    }

    fn has_near(&self) -> bool {
        !self.near.is_empty()
    }

    fn pop(&mut self) -> Option<SocketAddr> {
        self.near.pop_front().or_else(|| self.far.pop_front())
    }
}
