//! The swarm: the only module that knows librqbit (and the vendored patch in
//! vendor/librqbit; SWARMFS-PATCH.md).
//!
//! It owns the peer-to-peer side: sessions, listeners, trackers, seeding ([`Seeder`]), a
//! mount's fetching ([`Fetcher`]), the piece order ([`picker`]) and the two storages
//! librqbit writes to and reads from. It imports `release` and `fs` (the `PieceMap` it
//! sets bits of), never `mount` or `cmd`, and writes only into the cache folder it is
//! given.
//!
//! It runs a librqbit session with our choices made explicit: TCP and uTP listeners
//! (Transmission and libtorrent try uTP first), trackers from the torrent plus the
//! caller's, local service discovery, no DHT unless asked (a private fleet must not
//! announce its code), no session persistence (swarmfs keeps its own state). Torrents are
//! always added from their .torrent bytes (DESIGN.md, decision 11).

mod allow;
mod cache_storage;
pub mod near;
pub use allow::AllowPeers;
pub use cache_storage::{disk_space, open_sized as open_cache_file};
pub use near::{LocalNet, Neighbours};
pub use picker::ProfileExchange;
pub mod picker;
mod storage;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use librqbit::storage::StorageFactoryExt;
use librqbit::{
    AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, ManagedTorrent, Session,
    SessionOptions,
};
use tracing::{info, info_span, Instrument};

use crate::fs::{PieceMap, PieceSet};
use crate::release::Release;

/// How this peer joins swarms.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// Address for incoming TCP and uTP connections; `None` picks a free port on all addresses.
    pub listen: Option<SocketAddr>,
    /// Trackers to announce to, besides the torrent's own.
    pub trackers: Vec<String>,
    /// Peers to connect to at once.
    pub peers: Vec<SocketAddr>,
    /// Join the mainline DHT.
    pub dht: bool,
    /// Announce and listen on the LAN (BEP 14).
    pub lsd: bool,
    pub upload_limit_bps: Option<NonZeroU32>,
    pub download_limit_bps: Option<NonZeroU32>,
    /// How often to announce to trackers while mounted.
    pub announce_interval: Duration,
    /// Which addresses may be peers (`--allow-peers`); `None`: any.
    pub allow_peers: Option<Arc<AllowPeers>>,
    /// Peers connected at once per release (`--max-peers`).
    pub max_peers: usize,
    /// Which peers are neighbours, asked first for what they have (`mount --local-net`).
    pub local_net: LocalNet,
}

/// `--max-peers`'s default for `seed` and `publish`: librqbit's own 128 makes a 256-host
/// fleet on one machine a near-complete graph of 30,000 connections. A seed is the origin
/// (or a host done): the more hosts it serves at once, the fewer copies of each piece it
/// sends (128 hosts with the origin at 8 peers: 2.75 copies, at 50: 2.21).
pub const DEFAULT_MAX_PEERS: u16 = 50;

/// `--max-peers`'s default for a mount. A host tells every peer of every piece it gets (a
/// `have`, one packet each way), asks each for a chunk at a time and acks each chunk:
/// the cost grows with its peers, not its bytes. But a host asks the origin for what none
/// of its peers has, and the fewer it sees the more often the origin sends a piece
/// twice. 2026-12-07 (docs/experiments.md, "sixteen peers a mount"): 32 hosts x 64 MB at
/// 50 Mbit/s, 32 KiB pieces, no profile, at 50 peers (a full mesh) last host 40.0-40.2 s,
/// 28 CPU s per GB, 1.24 M packets; at 16: 29.2 s, 19.2 s/GB, 0.63 M; at 8: 24.8-27.7 s,
/// 15 s/GB, 0.40 M. 128 hosts on 127.1.x.y at 1 Mbit/s (`examples/fleet_local`, where
/// the origin's uplink decides): at 50 peers 122.0 s, 2.76 origin copies, 212 CPU s/GB;
/// at 16 121.4 s, 3.37, 113; at 12 154.4 s, 4.26; at 8 190.5 s, 5.25; 256 hosts at 32
/// peers (this machine's most) 140.1 s, 3.85, 165; at 16 202.9 s, 5.63, 134. Until a
/// host's narrow view stops costing origin copies, the default is the full mesh it was;
/// `--max-peers 8` is the measured choice for fleets of up to 32 hosts.
pub const MOUNT_MAX_PEERS: u16 = 50;

/// Why the swarm could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot start the BitTorrent session (is {listen} free?): {source:#}")]
    Session {
        listen: String,
        source: anyhow::Error,
    },
    #[error("tracker URL {0:?} is not a valid URL")]
    BadTracker(String),
    #[error("the swarm engine refused the torrent: {0:#}")]
    AddTorrent(anyhow::Error),
    #[error("cannot stream from the swarm: {0:#}")]
    Stream(anyhow::Error),
    #[error("the swarm has stopped")]
    Stopped,
    /// The engine stopped on a local fault (a full cache disk); it resumes by itself.
    #[error("{0}")]
    Halted(String),
}

/// What came from one peer ([`Fetcher::downloaded_by_peer`]).
#[derive(Debug, Clone, Copy)]
pub struct FromPeer {
    pub addr: SocketAddr,
    /// Chunk bytes received from it.
    pub bytes: u64,
    /// Of those, bytes not used: the piece was done or taken from another peer meanwhile,
    /// the chunk had come already, or its request had been cancelled.
    pub discarded: u64,
}

/// What a running torrent has done so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SwarmStats {
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    /// Of those, from neighbours (`mount --local-net`).
    pub downloaded_near_bytes: u64,
    pub download_bps: f64,
    pub have_bytes: u64,
    pub total_bytes: u64,
    pub live_peers: u32,
    /// Connections refused by `--allow-peers`: incoming, and addresses not dialled.
    pub peers_refused_incoming: u64,
    pub peers_refused_outgoing: u64,
    /// Incoming connections refused because `--max-peers` were connected.
    pub peers_over_limit: u64,
    pub upload_bps: f64,
    pub state: String,
    pub error: Option<String>,
}

/// A release being served from a published directory.
pub struct Seeder {
    session: Arc<Session>,
    torrent: Arc<ManagedTorrent>,
    allow_peers: Option<Arc<AllowPeers>>,
}

impl Seeder {
    /// Starts serving `release` from `dir`. The directory must already have been checked
    /// with [`crate::release::verify_dir`]; it is only ever read.
    pub async fn start(
        release: Arc<Release>,
        dir: PathBuf,
        opts: &SwarmOptions,
    ) -> Result<Seeder, SwarmError> {
        let span = info_span!("seed", infohash = %release.info_hash, name = %release.name);
        async move {
            let session = new_session(dir.clone(), opts).await?;
            let factory = storage::ReadOnlyDirFactory {
                release: release.clone(),
                dir: dir.clone(),
            };
            let add_opts = AddTorrentOptions {
                overwrite: true,
                output_folder: Some(dir.to_string_lossy().into_owned()),
                initial_peers: (!opts.peers.is_empty()).then(|| opts.peers.clone()),
                storage_factory: Some(factory.boxed()),
                // A seed learns of new peers from its announces and dials them: a peer
                // that cannot reach it first (Transmission's encrypted handshake, which
                // librqbit does not speak, then its back-off) is served within one.
                force_tracker_interval: Some(spread(opts.announce_interval, picker::random_seed())),
                peer_opts: Some(librqbit::PeerConnectionOptions {
                    keep_alive_interval: Some(KEEP_ALIVE),
                    ..Default::default()
                }),
                // The origin sends a piece's first copies before its repeats, and a
                // repeat only once the fleet had time to pass the last copy on.
                repeat_hold: Some(picker::repeat_hold(opts.upload_limit_bps)),
                // Repeats of a piece readers wait on too, for less long.
                read_repeat_hold: Some(picker::read_repeat_hold(opts.upload_limit_bps)),
                ..Default::default()
            };
            let torrent = add_release(&session, &release, add_opts).await?;
            torrent
                .wait_until_initialized()
                .await
                .map_err(SwarmError::AddTorrent)?;
            info!(listen = ?session.listen_addr(), "seeding");
            Ok(Seeder {
                session,
                torrent,
                allow_peers: opts.allow_peers.clone(),
            })
        }
        .instrument(span)
        .await
    }

    /// The address peers can connect to.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.session.listen_addr()
    }

    pub fn stats(&self) -> SwarmStats {
        stats_of(&self.session, &self.torrent, self.allow_peers.as_deref())
    }

    /// Stops serving: closes connections and listeners.
    pub async fn shutdown(self) {
        self.session.stop().await;
    }
}

/// Blocking permits of librqbit's runtime (its writes of downloaded chunks take them).
const WORKER_PERMITS: usize = 64;

/// A release being fetched into a cache and served to peers: the swarm side of a mount.
pub struct Fetcher {
    session: Arc<Session>,
    torrent: Arc<ManagedTorrent>,
    pieces: Arc<PieceMap>,
    picker: Arc<picker::Picker>,
    release: Arc<Release>,
    data_dir: PathBuf,
    /// Shared with the storage: true while librqbit checks the cache.
    checking: Arc<std::sync::atomic::AtomicBool>,
    write_errno: Arc<std::sync::atomic::AtomicI32>,
    /// Why the engine is stopped (a full cache disk), while it is; reads that need the
    /// swarm fail at once meanwhile instead of waiting out their timeout.
    halted: tokio::sync::watch::Sender<Option<String>>,
    allow_peers: Option<Arc<AllowPeers>>,
}

impl Fetcher {
    /// Joins the swarm of `release`, downloading into `data_dir`. With `prefetch`, every
    /// piece is fetched in the background, `boot` (a boot profile's pieces) first; reads
    /// always jump the queue. `profiles`: what boot profile is offered to peers, and
    /// whether one is asked of them.
    pub async fn start(
        release: Arc<Release>,
        data_dir: PathBuf,
        pieces: Arc<PieceMap>,
        opts: &SwarmOptions,
        prefetch: bool,
        boot: &[u32],
        deferred: Option<Arc<PieceSet>>,
        profiles: ProfileExchange,
    ) -> Result<Arc<Fetcher>, SwarmError> {
        let span = info_span!("swarm", infohash = %release.info_hash);
        async move {
            let session = new_session(data_dir.clone(), opts).await?;
            let checking = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let write_errno = Arc::new(std::sync::atomic::AtomicI32::new(0));
            let me = own_address(opts, &release);
            let neighbours = opts.local_net.resolve(me);
            info!(%neighbours, "peers asked first for what they have");
            let picker = Arc::new(
                picker::Picker::new(&release, pieces.clone(), me, boot, deferred.clone())
                    .with_download_limit(opts.download_limit_bps)
                    .with_neighbours(neighbours),
            );
            picker.exchange_profiles(release.clone(), profiles);
            let factory = cache_storage::CacheStorageFactory {
                release: release.clone(),
                data_dir: data_dir.clone(),
                pieces: pieces.clone(),
                checking: checking.clone(),
                write_errno: write_errno.clone(),
            };
            let add_opts = AddTorrentOptions {
                overwrite: true,
                output_folder: Some(data_dir.to_string_lossy().into_owned()),
                initial_peers: (!opts.peers.is_empty()).then(|| opts.peers.clone()),
                storage_factory: Some(factory.boxed()),
                // Without prefetch nothing is selected: only what reads (and prewarm) ask.
                only_files: (!prefetch).then(Vec::new),
                piece_picker: Some(picker.clone()),
                // A fleet starts together: the first announce finds few peers. Announce
                // often so hosts find each other while it matters (a tracker such as
                // opentracker serves 10^5 announces a second).
                force_tracker_interval: Some(spread(opts.announce_interval, picker::random_seed())),
                peer_opts: Some(librqbit::PeerConnectionOptions {
                    // With our piece picker (8-host fleet, 256 MB): 64 chunks boot 38.4 s,
                    // slowest 53.0 s; 16 chunks 27-31 s, 44-48 s.
                    // 128 chunks (2 MiB) in flight per peer made a read's piece wait behind
                    // 2 MiB of prefetch on a saturated link. Measured on a 4-host fleet
                    // (boot median / full max / origin ratio): 32 chunks 11.8 s / 19.7 s /
                    // 3.56, 16 chunks 9.2 s / 18.1 s / 3.02, 8 chunks 8.7 s / 23.0 s / 3.95.
                    max_request_window: Some(picker::PEER_WINDOW),
                    keep_alive_interval: Some(KEEP_ALIVE),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let torrent = add_release(&session, &release, add_opts).await?;
            // Reads of cached pieces do not wait for librqbit; it finishes its check aside.
            // Pieces rebuilt from local data while it checked are handed over after it.
            end_check_when_initialized(
                &torrent,
                &checking,
                deferred.is_some().then(|| pieces.clone()),
            );
            let fetcher = Arc::new(Fetcher {
                session,
                torrent,
                pieces,
                picker,
                release,
                data_dir,
                checking,
                write_errno,
                halted: tokio::sync::watch::Sender::new(None),
                allow_peers: opts.allow_peers.clone(),
            });
            tokio::spawn(supervise(Arc::downgrade(&fetcher)).in_current_span());
            Ok(fetcher)
        }
        .instrument(span)
        .await
    }

    /// Makes the missing ones of `pieces` urgent until the claim is dropped: a read about
    /// to wait for them claims them before it asks for its read-ahead.
    pub fn claim(&self, pieces: std::ops::Range<u64>) -> picker::Wanted {
        self.picker.want(pieces)
    }

    /// Resolves once `pieces` (which hold bytes of entry `entry` from `offset`) are
    /// verified in the cache: an on-demand read, holding `claim` (from [`Fetcher::claim`]
    /// of the same pieces) until then. They go to the head of the queue (see [`picker`]).
    pub async fn fetch(
        &self,
        entry: usize,
        offset: u64,
        pieces: std::ops::Range<u64>,
        claim: picker::Wanted,
    ) -> Result<(), SwarmError> {
        if self.pieces.first_missing(pieces.clone()).is_none() {
            return Ok(());
        }
        let mut halted = self.halted.subscribe();
        if let Some(why) = halted.borrow_and_update().clone() {
            return Err(SwarmError::Halted(why));
        }
        let span = tracing::debug_span!(
            "fetch",
            entry,
            offset,
            first_piece = pieces.start,
            pieces = pieces.end - pieces.start
        );
        let t0 = std::time::Instant::now();
        let (p0, p1) = (pieces.start, pieces.end);
        let r = async {
            let _claim = claim;
            self.wake_requesters();
            tokio::select! {
                _ = self.pieces.wait_all(pieces) => Ok(()),
                h = halted.wait_for(Option::is_some) => match h {
                    Ok(why) => Err(SwarmError::Halted(why.clone().unwrap_or_default())),
                    Err(_) => Err(SwarmError::Stopped),
                },
            }
        }
        .instrument(span)
        .await;
        // For tracing a boot: how long each read waited for the swarm.
        tracing::debug!(target: "swarmfs::piece", first_piece = p0, pieces = p1 - p0, entry, offset, ms = t0.elapsed().as_millis() as u64, "read waited");
        // The claim is dropped: the background may resume; peers that idle look again.
        self.wake_requesters();
        r
    }

    /// Asks for `pieces` ahead of the background, without waiting: the next pieces of a
    /// file being read front to back.
    pub fn fetch_ahead(&self, pieces: std::ops::Range<u64>) {
        if self.picker.ahead(pieces) {
            self.wake_requesters();
        }
    }

    /// What a read of entry `entry` said of its file ([`crate::fs::readahead::Access`]):
    /// a file read in pages (a read jumped in it), or just opened, goes ahead of the rest
    /// of the background ([`picker`], 2). Nothing for any other read.
    pub fn fetch_paged(&self, entry: usize, access: crate::fs::readahead::Access) {
        if (access.paged || access.first) && self.picker.paged(&self.release, entry, access.paged) {
            self.wake_requesters();
        }
    }

    /// A piece rebuilt from local data is here and verified (its `PieceMap` bit set):
    /// peers are told, and nobody is asked for it. Before the engine is live this waits
    /// for the hand-over that follows its check.
    pub fn add_local_piece(&self, piece: u64) {
        add_local(&self.torrent, piece);
    }

    /// Piece `piece`, kept from peers meanwhile (deferred), has the bytes `known` (ranges
    /// within it) written from local data: only the rest is asked of peers, and the
    /// piece's hash decides. False when the engine is not live yet (or it refused: the
    /// piece is then fetched whole).
    pub fn add_partial_piece(&self, piece: u64, known: &[std::ops::Range<u32>]) -> bool {
        let Some(live) = self.torrent.live() else {
            return false;
        };
        match live.add_partial_piece(piece as u32, known) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::debug!(
                    piece,
                    "cannot hand a partial piece to the swarm engine: {e:#}"
                );
                false
            }
        }
    }

    /// Whether the swarm engine is live (its check of the cache done).
    pub fn is_live(&self) -> bool {
        self.torrent.live().is_some()
    }

    /// Bytes received from neighbours ([`near`]), peers connected now or before.
    fn downloaded_near_bytes(&self) -> u64 {
        let near = self.picker.neighbours();
        if near.is_empty() {
            return 0;
        }
        self.downloaded_by_peer()
            .into_iter()
            .filter(|p| near.contains(p.addr.ip()))
            .map(|p| p.bytes - p.discarded)
            .sum()
    }

    /// Chunk bytes that arrived and were not used (the piece done or taken from another
    /// peer meanwhile, the chunk come already, its request cancelled), from every peer.
    pub fn discarded_bytes(&self) -> u64 {
        self.downloaded_by_peer().iter().map(|p| p.discarded).sum()
    }

    /// Where `piece` stands in the engine (who has it, whether it is in flight): one line,
    /// for diagnosing a download that does not end.
    pub fn describe_piece(&self, piece: u32) -> String {
        match self.torrent.live() {
            Some(live) => live.describe_piece(piece),
            None => format!("piece {piece}: the engine is not running"),
        }
    }

    /// Bytes received from each peer this mount has known (connected now or before).
    pub fn downloaded_by_peer(&self) -> Vec<FromPeer> {
        let Some(live) = self.torrent.live() else {
            return vec![];
        };
        let all = librqbit::PeerStatsFilter {
            state: librqbit::PeerStatsFilterState::All,
        };
        live.per_peer_stats_snapshot(all)
            .peers
            .iter()
            .filter_map(|(addr, p)| {
                Some(FromPeer {
                    addr: addr.parse().ok()?,
                    bytes: p.counters.fetched_bytes,
                    discarded: p.counters.discarded_bytes.min(p.counters.fetched_bytes),
                })
            })
            .collect()
    }

    /// Appends the pieces reads wait on that are being rebuilt locally.
    pub fn waited_deferred(&self, out: &mut Vec<u64>) {
        self.picker.waited_deferred(out);
    }

    /// Peers that found nothing to ask for look again (at once, not at their next tick):
    /// after a read claims pieces, or a rebuild gives pieces back to the swarm.
    pub fn wake_requesters(&self) {
        if let Some(live) = self.torrent.live() {
            live.wake_piece_requesters();
        }
    }

    pub fn stats(&self) -> SwarmStats {
        let mut s = stats_of(&self.session, &self.torrent, self.allow_peers.as_deref());
        s.downloaded_near_bytes = self.downloaded_near_bytes();
        if let Some(why) = self.halted.borrow().clone() {
            s.error = Some(why);
        }
        s
    }

    pub fn pieces(&self) -> &Arc<PieceMap> {
        &self.pieces
    }

    /// The boot profile's pieces here, and in all; `None` without a profile.
    pub fn boot_progress(&self) -> Option<(u64, u64)> {
        self.picker.boot_progress()
    }

    /// The peer this mount's boot profile came from, and its pieces in profile order,
    /// once one came (a mount that had none asks its peers).
    pub fn received_profile(&self) -> Option<&(std::net::IpAddr, Vec<u32>)> {
        self.picker.received_profile()
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.session.listen_addr()
    }

    /// Makes sure `files` (entry indices) are being downloaded, besides what already is.
    pub async fn fetch_files(&self, files: &[usize]) -> Result<(), SwarmError> {
        let mut set: std::collections::HashSet<usize> = match self.torrent.only_files() {
            Some(v) => v.into_iter().collect(),
            None => return Ok(()), // everything is selected already
        };
        let before = set.len();
        set.extend(files.iter().copied());
        if set.len() == before {
            return Ok(());
        }
        self.session
            .update_only_files(&self.torrent, &set)
            .await
            .map_err(SwarmError::AddTorrent)
    }

    pub async fn shutdown(&self) {
        self.session.stop().await;
    }
}

/// Clears the storage's checking flag once librqbit has finished checking the cache.
/// With `local`, then hands librqbit every verified piece it does not have (pieces
/// rebuilt from local data while it checked, which its check may have missed).
fn end_check_when_initialized(
    torrent: &Arc<ManagedTorrent>,
    checking: &Arc<std::sync::atomic::AtomicBool>,
    local: Option<Arc<PieceMap>>,
) {
    let (t, checking) = (torrent.clone(), checking.clone());
    tokio::spawn(
        async move {
            let r = t.wait_until_initialized().await;
            checking.store(false, std::sync::atomic::Ordering::Release);
            if let Err(e) = r {
                tracing::warn!("the swarm engine failed to start: {e:#}");
                return;
            }
            if let Some(pieces) = local {
                let mut added = 0u64;
                for p in (0..pieces.total()).filter(|&p| pieces.has(p)) {
                    if add_local(&t, p) {
                        added += 1;
                    }
                }
                tracing::debug!(added, "pieces rebuilt locally handed to the swarm engine");
            }
        }
        .in_current_span(),
    );
}

/// Tells the live torrent that piece `p` is here and verified; whether it was new to it.
fn add_local(torrent: &ManagedTorrent, p: u64) -> bool {
    let Some(live) = torrent.live() else {
        return false;
    };
    match live.add_local_piece(p as u32) {
        Ok(new) => new,
        Err(e) => {
            tracing::debug!(
                piece = p,
                "cannot hand a local piece to the swarm engine: {e:#}"
            );
            false
        }
    }
}

/// How often the supervisor looks at the engine.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// Watches the engine. librqbit stops a torrent for good on a write error (a full cache
/// disk): say why, fail reads that need the swarm at once, and restart it (librqbit
/// re-checks the cache, keeping every verified piece) once there is room again.
async fn supervise(fetcher: std::sync::Weak<Fetcher>) {
    use std::sync::atomic::Ordering;
    let mut backoff = Duration::from_secs(1);
    let mut next_try = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        let Some(f) = fetcher.upgrade() else { return };
        let (error, live) = f.torrent.with_state(|s| match s {
            librqbit::ManagedTorrentState::Error(e) => (Some(format!("{e:#}")), false),
            librqbit::ManagedTorrentState::Live(_) => (None, true),
            _ => (None, false),
        });
        if live && f.halted.borrow().is_some() {
            f.halted.send_replace(None);
            backoff = Duration::from_secs(1);
            info!("the swarm is running again; reads fetch from peers");
            continue;
        }
        let Some(error) = error else { continue };
        let free = cache_storage::free_bytes(&f.data_dir).unwrap_or(0);
        let errno = f.write_errno.load(Ordering::Acquire);
        let disk_full = errno == libc::ENOSPC || errno == libc::EDQUOT;
        if f.halted.borrow().is_none() {
            let why = if disk_full {
                format!(
                    "the cache disk is full ({} has {} free): pieces not yet cached cannot be \
                     fetched until space is freed; cached files are still served",
                    f.data_dir.display(),
                    indicatif::HumanBytes(free)
                )
            } else {
                format!("the swarm engine stopped: {error}; restarting it")
            };
            tracing::error!("{why}");
            f.halted.send_replace(Some(why));
        }
        // Room for a few pieces, or the restart would only fill the disk again at once.
        let room = 4 * f.release.piece_length + (1 << 20);
        if tokio::time::Instant::now() < next_try || (disk_full && free < room) {
            continue;
        }
        info!(free, "restarting the swarm engine");
        f.write_errno.store(0, Ordering::Release);
        f.checking.store(true, Ordering::Release);
        match f.session.unpause(&f.torrent).await {
            Ok(()) => end_check_when_initialized(&f.torrent, &f.checking, None),
            Err(e) => tracing::warn!("restarting the swarm engine failed: {e:#}"),
        }
        next_try = tokio::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Adds a release to a session from its .torrent bytes (never a magnet: DESIGN.md 11).
async fn add_release(
    session: &Arc<Session>,
    release: &Release,
    opts: AddTorrentOptions,
) -> Result<Arc<ManagedTorrent>, SwarmError> {
    session
        .add_torrent(
            AddTorrent::from_bytes(release.torrent_bytes.clone()),
            Some(opts),
        )
        .await
        .map_err(SwarmError::AddTorrent)?
        .into_handle()
        .ok_or_else(|| SwarmError::AddTorrent(anyhow::anyhow!("torrent was not added")))
}

/// Fetches a torrent's metadata (for a magnet link or a bare infohash) from peers.
pub async fn fetch_metadata(magnet: &str, opts: &SwarmOptions) -> Result<Vec<u8>, SwarmError> {
    let dir = std::env::temp_dir();
    let session = new_session(dir, opts).await?;
    let add_opts = AddTorrentOptions {
        list_only: true,
        initial_peers: (!opts.peers.is_empty()).then(|| opts.peers.clone()),
        ..Default::default()
    };
    let r = session
        .add_torrent(AddTorrent::from_url(magnet), Some(add_opts))
        .await
        .map_err(SwarmError::AddTorrent);
    session.stop().await;
    match r? {
        librqbit::AddTorrentResponse::ListOnly(l) => Ok(l.torrent_bytes.to_vec()),
        _ => Err(SwarmError::AddTorrent(anyhow::anyhow!(
            "metadata was not returned"
        ))),
    }
}

fn stats_of(session: &Session, t: &ManagedTorrent, allow: Option<&AllowPeers>) -> SwarmStats {
    let s = t.stats();
    let (live_peers, upload_bps, download_bps, downloaded_bytes) = match &s.live {
        Some(live) => (
            live.snapshot.peer_stats.live,
            live.upload_speed.mbps * 1024.0 * 1024.0,
            live.download_speed.mbps * 1024.0 * 1024.0,
            live.snapshot.fetched_bytes,
        ),
        None => (0, 0.0, 0.0, 0),
    };
    let (peers_refused_incoming, peers_refused_outgoing) = allow.map_or((0, 0), |a| a.refused());
    SwarmStats {
        uploaded_bytes: s.uploaded_bytes,
        downloaded_bytes,
        downloaded_near_bytes: 0,
        download_bps,
        have_bytes: s.progress_bytes,
        total_bytes: s.total_bytes,
        live_peers,
        peers_refused_incoming,
        peers_refused_outgoing,
        peers_over_limit: session.stats_snapshot().counters.refused_over_peer_limit,
        upload_bps,
        state: s.state.to_string(),
        // librqbit's text carries a backtrace: its first line says what happened.
        error: s
            .error
            .map(|e| e.lines().next().unwrap_or_default().to_string()),
    }
}

/// The address this host's peers know it by, for the picker's turns at the origin
/// (`picker::seeder_rank`) and its holds on pieces other hosts fetch from it: `--listen`'s
/// if it names one, else the one the kernel would send from towards the first peer given,
/// a tracker named by address, or the default route (a UDP socket's connect sends
/// nothing). Without it the picker took turns with nobody and held nothing: a fleet
/// mounted with the defaults asked the origin for every start-up piece at once, on
/// every host (the benchmarks pass `--listen` with the host's address, which hid it).
pub fn own_address(opts: &SwarmOptions, release: &Release) -> Option<IpAddr> {
    if let Some(ip) = opts
        .listen
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
    {
        return Some(ip);
    }
    let trackers = opts
        .trackers
        .iter()
        .chain(&release.trackers)
        .filter_map(|t| {
            let u = url::Url::parse(t).ok()?;
            let ip: IpAddr = match u.host()? {
                url::Host::Ipv4(v4) => v4.into(),
                url::Host::Ipv6(v6) => v6.into(),
                // (`udp://` is not a special scheme: its address comes as an opaque host)
                url::Host::Domain(d) => d.parse().ok()?, // a name: no DNS lookup here
            };
            Some(SocketAddr::new(ip, u.port_or_known_default().unwrap_or(80)))
        });
    let default_route = SocketAddr::from(([192, 0, 2, 1], 9)); // TEST-NET-1
    opts.peers
        .iter()
        .copied()
        .chain(trackers)
        .chain(std::iter::once(default_route))
        .find_map(|to| {
            let any: SocketAddr = match to {
                SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = std::net::UdpSocket::bind(any).ok()?;
            s.connect(to).ok()?;
            Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
        })
}

async fn new_session(
    default_folder: PathBuf,
    opts: &SwarmOptions,
) -> Result<Arc<Session>, SwarmError> {
    let mut listen_addr = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    if listen_addr.port() == 0 {
        listen_addr.set_port(free_port(listen_addr).map_err(|e| SwarmError::Session {
            listen: listen_addr.to_string(),
            source: e.into(),
        })?);
    }
    let mut trackers = std::collections::HashSet::new();
    for t in &opts.trackers {
        trackers.insert(url::Url::parse(t).map_err(|_| SwarmError::BadTracker(t.clone()))?);
    }
    let session_opts = SessionOptions {
        dht: opts.dht.then(Default::default),
        disable_local_service_discovery: !opts.lsd,
        fastresume: false,
        persistence: None,
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpAndUtp,
            listen_addr,
            ipv4_only: listen_addr.is_ipv4(),
            // librqbit announces no port for a loopback listener (and then a made-up
            // one); peers on 127.0.0.1 are real in tests and single-host fleets.
            announce_port: Some(listen_addr.port()),
            ..Default::default()
        }),
        ipv4_only: listen_addr.is_ipv4(),
        trackers,
        runtime_worker_threads: Some(WORKER_PERMITS),
        ratelimits: librqbit::limits::LimitsConfig {
            upload_bps: opts.upload_limit_bps,
            download_bps: opts.download_limit_bps,
        },
        client_name_and_version: Some(concat!("swarmfs ", env!("CARGO_PKG_VERSION")).into()),
        peer_filter: opts
            .allow_peers
            .clone()
            .map(|a| a as Arc<dyn librqbit::PeerFilter>),
        peer_limit: Some(opts.max_peers.max(1)),
        source_ip: Some(listen_addr.ip()).filter(|ip| !ip.is_unspecified()),
        ..Default::default()
    };
    Session::new_with_opts(default_folder, session_opts)
        .await
        .map_err(|source| SwarmError::Session {
            listen: listen_addr.to_string(),
            source,
        })
}

/// How long a connection may carry nothing before a keep-alive goes out. librqbit drops a
/// connection it has read nothing on for 10 s but sends its own keep-alives every 120 s:
/// two peers with nothing to ask of each other for 10 s (a host that holds back from the
/// origin while another host fetches a piece from it, a seed whose hosts wait on each
/// other) lost the connection and waited out a reconnect back-off. 8 hosts, 4 MB,
/// 1 Mbit/s: every host lost the origin near the end and the fleet stalled on three pieces
/// (docs/benchmarks.md, "A fleet of hundreds on one machine").
const KEEP_ALIVE: Duration = Duration::from_secs(4);

/// This host's announce interval: `interval` give or take a quarter, fixed per host. A
/// fleet starts together, so with one interval every host would announce in the same
/// instant every interval for as long as it runs (10,000 hosts every 5 s: 10,000 requests
/// in a burst where 2,000 a second reach the tracker spread out).
fn spread(interval: Duration, random: u64) -> Duration {
    // random % 501 / 1000 in [0, 0.5]: a factor in [0.75, 1.25].
    interval.mul_f64(0.75 + (random % 501) as f64 / 1000.0)
}

/// A port free for both TCP and UDP on `addr`'s IP, for uTP beside TCP.
fn free_port(addr: SocketAddr) -> std::io::Result<u16> {
    for _ in 0..32 {
        let tcp = std::net::TcpListener::bind(addr)?;
        let port = tcp.local_addr()?.port();
        let mut udp_addr = addr;
        udp_addr.set_port(port);
        if std::net::UdpSocket::bind(udp_addr).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no port is free for both TCP and UDP",
    ))
}

/// How often long-running commands log progress when not on a terminal.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_intervals_spread_a_quarter_either_way_and_differ_between_hosts() {
        let i = Duration::from_secs(5);
        assert_eq!(spread(i, 0), Duration::from_millis(3750));
        assert_eq!(spread(i, 500), Duration::from_millis(6250));
        let hosts: std::collections::BTreeSet<Duration> =
            (0..64).map(|_| spread(i, picker::random_seed())).collect();
        assert!(hosts
            .iter()
            .all(|d| (3750..=6250).contains(&(d.as_millis() as u64))));
        // 64 hosts starting together: their announces fall on many different instants.
        assert!(hosts.len() > 32, "{} distinct intervals of 64", hosts.len());
    }

    fn opts() -> SwarmOptions {
        SwarmOptions {
            listen: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            dht: false,
            lsd: false,
            upload_limit_bps: None,
            download_limit_bps: None,
            announce_interval: Duration::from_secs(60),
            allow_peers: None,
            max_peers: 50,
            local_net: Default::default(),
        }
    }

    #[test]
    fn a_host_knows_the_address_its_peers_see_without_being_told() {
        let r = crate::release::test_release(&[("a", 1 << 16)], 16 << 10);
        let lo = IpAddr::from([127, 0, 0, 1]);
        // --listen naming an address: that one.
        let mut o = opts();
        o.listen = Some("127.0.0.7:6881".parse().unwrap());
        assert_eq!(own_address(&o, &r), Some(IpAddr::from([127, 0, 0, 7])));
        // --listen on every address: the one that reaches the first peer given...
        o.listen = Some("0.0.0.0:6881".parse().unwrap());
        o.peers = vec!["127.0.0.1:7000".parse().unwrap()];
        assert_eq!(own_address(&o, &r), Some(lo));
        // ... or a tracker named by address (a name is not looked up here).
        let mut o = opts();
        o.trackers = vec![
            "http://tracker.invalid/announce".into(),
            "udp://127.0.0.1:6969".into(),
        ];
        assert_eq!(own_address(&o, &r), Some(lo));
        // Nothing to go by: the default route's address, if this machine has one; never
        // the unspecified address.
        assert!(own_address(&opts(), &r).is_none_or(|ip| !ip.is_unspecified()));
    }
}
