//! What a mount tells about itself: the read path's counters ([`ReadStats`], kept by the
//! FUSE adapter), and the [`Status`] snapshot that the control socket sends to `status`
//! and `prewarm` and that the metrics exporter copies.
//!
//! It owns these types and their assembly from the layers below (the swarm's counters,
//! the piece map, the rebuild's counters, the recorder's, the process's usage); it serves nothing and
//! imports neither the FUSE adapter nor the control socket, so that both (and the
//! metrics) can depend on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::profile::Recorder;
use super::reuse::Reuse;
use super::usage;
use crate::release::Release;
use crate::swarm::Fetcher;

/// Counters of the read path, for `status`.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub passthrough_opens: AtomicU64,
    pub backing_files: AtomicU64,
    pub cached_reads: AtomicU64,
    pub swarm_reads: AtomicU64,
    pub swarm_read_bytes: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
}

/// What a mount tells about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub infohash: String,
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    pub pid: u32,
    pub total_bytes: u64,
    pub present_bytes: u64,
    pub pieces_present: u64,
    pub pieces_total: u64,
    pub complete: bool,
    pub downloaded_bytes: u64,
    /// Of those, from neighbours (`mount --local-net`).
    #[serde(default)]
    pub downloaded_near_bytes: u64,
    pub uploaded_bytes: u64,
    pub peers: u32,
    /// Connections refused by `--allow-peers` (from other addresses), and addresses
    /// outside it not dialled.
    #[serde(default)]
    pub peers_refused_incoming: u64,
    #[serde(default)]
    pub peers_refused_outgoing: u64,
    /// Incoming connections refused because `--max-peers` were connected.
    #[serde(default)]
    pub peers_over_limit: u64,
    pub download_bps: f64,
    pub upload_bps: f64,
    pub passthrough_opens: u64,
    /// Complete files whose cache file was registered with the kernel for passthrough
    /// (a file opened again while its backing id is kept is not counted again).
    pub backing_files: u64,
    pub cached_reads: u64,
    pub swarm_reads: u64,
    pub swarm_read_bytes: u64,
    pub read_timeouts: u64,
    pub read_errors: u64,
    /// Pieces downloaded whole that failed their SHA-1 check (never served).
    pub hash_failures: u64,
    pub swarm_error: Option<String>,
    /// CPU seconds (user + system) the daemon has used, and its peak resident memory.
    #[serde(default)]
    pub cpu_seconds: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// With a boot profile (`mount --boot-profile`): its pieces here, and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_pieces_present: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_pieces_total: Option<u64>,
    /// Where the boot profile came from (a file, this host's recording of the release or
    /// of a related one, the release itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_profile: Option<String>,
    /// Reads recorded of this mount's start-up (or of its whole life, with
    /// `--record-profile`), and whether the recording goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_reads: Option<u64>,
    #[serde(default)]
    pub recording: bool,
    /// Bytes and pieces rebuilt from other releases in the cache (a delta deploy), and
    /// whether that is still going on; the rest came (or comes) from the swarm.
    #[serde(default)]
    pub reused_bytes: u64,
    #[serde(default)]
    pub reused_pieces: u64,
    /// Pieces of which only the changed files' bytes came from the swarm (the rest,
    /// counted in `reused_bytes`, from other releases in the cache).
    #[serde(default)]
    pub reused_partial_pieces: u64,
    #[serde(default)]
    pub reuse_running: bool,
    /// How long the rebuild took, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_seconds: Option<f64>,
    /// During `prewarm`: bytes wanted (every byte, or those of `--paths`) and local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prewarm_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prewarm_present_bytes: Option<u64>,
}

/// What the server needs to answer.
pub struct MountInfo {
    pub release: Arc<Release>,
    pub name: String,
    pub infohash: String,
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    pub total_bytes: u64,
    pub piece_length: u64,
    pub fetcher: Arc<Fetcher>,
    pub stats: Arc<ReadStats>,
    /// The rebuild from other releases in the cache, when there was one.
    pub reuse: Option<Arc<Reuse>>,
    /// Where the boot profile came from, when there is one.
    pub boot_source: Option<String>,
    /// The recording of this mount's reads, when there is one.
    pub recorder: Option<Arc<Recorder>>,
}

impl MountInfo {
    pub fn status(&self) -> Status {
        let s = self.fetcher.stats();
        let pieces = self.fetcher.pieces();
        let present = pieces.present();
        let usage = usage::usage();
        let boot = self.fetcher.boot_progress();
        let reuse = self.reuse.as_ref().map(|r| r.stats()).unwrap_or_default();
        Status {
            name: self.name.clone(),
            infohash: self.infohash.clone(),
            mountpoint: self.mountpoint.clone(),
            cache_dir: self.cache_dir.clone(),
            pid: std::process::id(),
            total_bytes: self.total_bytes,
            present_bytes: (present * self.piece_length).min(self.total_bytes),
            pieces_present: present,
            pieces_total: pieces.total(),
            complete: pieces.complete(),
            downloaded_bytes: s.downloaded_bytes,
            downloaded_near_bytes: s.downloaded_near_bytes,
            uploaded_bytes: s.uploaded_bytes,
            peers: s.live_peers,
            peers_refused_incoming: s.peers_refused_incoming,
            peers_refused_outgoing: s.peers_refused_outgoing,
            peers_over_limit: s.peers_over_limit,
            download_bps: s.download_bps,
            upload_bps: s.upload_bps,
            passthrough_opens: self.stats.passthrough_opens.load(Ordering::Relaxed),
            backing_files: self.stats.backing_files.load(Ordering::Relaxed),
            cached_reads: self.stats.cached_reads.load(Ordering::Relaxed),
            swarm_reads: self.stats.swarm_reads.load(Ordering::Relaxed),
            swarm_read_bytes: self.stats.swarm_read_bytes.load(Ordering::Relaxed),
            read_timeouts: self.stats.timeouts.load(Ordering::Relaxed),
            read_errors: self.stats.errors.load(Ordering::Relaxed),
            hash_failures: pieces.hash_failures(),
            swarm_error: s.error,
            cpu_seconds: usage.cpu_seconds,
            peak_rss_bytes: usage.peak_rss_bytes,
            boot_pieces_present: boot.map(|b| b.0),
            boot_pieces_total: boot.map(|b| b.1),
            boot_profile: match self.fetcher.received_profile() {
                Some((peer, _)) => Some(format!("received from the peer {peer}")),
                None => self.boot_source.clone(),
            },
            recorded_reads: self.recorder.as_ref().map(|r| r.lines()),
            recording: self.recorder.as_ref().is_some_and(|r| !r.closed()),
            reused_bytes: reuse.bytes_reused,
            reused_pieces: reuse.pieces_reused,
            reused_partial_pieces: reuse.pieces_partial,
            reuse_running: reuse.running,
            reuse_seconds: reuse.seconds,
            prewarm_total_bytes: None,
            prewarm_present_bytes: None,
        }
    }
}
