//! `swarmfs seed TORRENT --data DIR`: check DIR against the torrent, then serve it.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tracing::info;

use super::ByteProgress;
use crate::release::{self, Release};
use crate::swarm::{AllowPeers, Seeder, SwarmOptions, PROGRESS_INTERVAL};

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The release's .torrent file (from `swarmfs publish` or any BitTorrent v1 tool).
    pub torrent: PathBuf,
    /// The release directory to serve. It is checked first and only ever read.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

/// How this peer joins the swarm; shared by every command that talks to peers.
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// Address for incoming peer connections, TCP and uTP [default: 0.0.0.0 and a free port].
    /// A specific address is also the one outgoing peer connections and tracker requests
    /// leave from.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Extra tracker to announce to (repeatable), besides the torrent's own.
    #[arg(long = "tracker", value_name = "URL", id = "swarm_tracker")]
    pub trackers: Vec<String>,
    /// Peer to connect to at once (repeatable).
    #[arg(long = "peer", value_name = "ADDR:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Upload limit in bytes per second (e.g. 10M).
    #[arg(long, value_parser = super::parse_rate)]
    pub upload_limit: Option<NonZeroU32>,
    /// Download limit in bytes per second (e.g. 10M), to keep a deploy from taking a busy
    /// server's whole link. Below 100 Mbit/s the swarm's waits stretch and its request
    /// windows shrink in proportion, so requests do not queue behind the limit.
    #[arg(long, value_parser = super::parse_rate)]
    pub download_limit: Option<NonZeroU32>,
    /// Join the public mainline DHT. Off by default: a private fleet must not announce its code.
    #[arg(long)]
    pub dht: bool,
    /// Do not use local service discovery (BEP 14 multicast on the LAN).
    #[arg(long)]
    pub no_lsd: bool,
    /// How often to announce to the trackers, for a mount or a seed (a fleet starting
    /// together finds its peers through these announces; a seed dials the peers it learns
    /// of, so a client that cannot reach it first is served within one interval). Each
    /// host takes it give or take a quarter, so a fleet started together does not reach
    /// the tracker in one burst every interval.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub announce_interval: std::time::Duration,
    /// Peers only from these networks (CIDR, comma-separated, e.g. 10.0.0.0/8,fd00::/8):
    /// connections from other addresses are refused before their handshake, and other
    /// addresses a tracker, LSD, PEX or --peer offers are never dialled; refusals are
    /// counted in `status` and the metrics [default: any address].
    #[arg(long, value_name = "CIDR,...", value_parser = parse_allow)]
    pub allow_peers: Option<std::sync::Arc<AllowPeers>>,
    /// Peers connected at once, per release, incoming and outgoing together: past it,
    /// connections are refused (counted in `status` and the metrics) and dialling waits for
    /// a free slot. Every peer costs a host CPU for each piece (a `have` each way), but a
    /// host asks the origin for what none of its peers has: fewer peers save CPU and, in a
    /// fleet of hundreds, cost origin copies. Up to 32 hosts, 8 halved the CPU and the
    /// time of a full mesh; at 256 hosts 16 took 1.45x as long as 32 (docs/experiments.md)
    /// [default: 50]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_peers: Option<u16>,
}

fn parse_allow(s: &str) -> Result<std::sync::Arc<AllowPeers>, String> {
    AllowPeers::parse(s).map(std::sync::Arc::new)
}

impl SwarmArgs {
    pub fn options(&self) -> SwarmOptions {
        if let Some(a) = &self.allow_peers {
            for p in self.peers.iter().filter(|p| !a.contains(p.ip())) {
                tracing::warn!("--peer {p} is outside --allow-peers: it will not be dialled");
            }
        }
        SwarmOptions {
            listen: self.listen,
            trackers: self.trackers.clone(),
            peers: self.peers.clone(),
            dht: self.dht,
            lsd: !self.no_lsd,
            upload_limit_bps: self.upload_limit,
            download_limit_bps: self.download_limit,
            announce_interval: self.announce_interval,
            allow_peers: self.allow_peers.clone(),
            max_peers: usize::from(self.max_peers.unwrap_or(crate::swarm::DEFAULT_MAX_PEERS)),
            // A seed fetches nothing: it has no neighbours to prefer.
            local_net: crate::swarm::LocalNet::Off,
        }
    }
}

pub fn run(args: SeedArgs) -> Result<()> {
    let bytes = std::fs::read(&args.torrent)
        .with_context(|| format!("cannot read the torrent {}", args.torrent.display()))?;
    let rel = Release::from_torrent(&bytes).with_context(|| {
        format!(
            "{} is not a usable torrent; make one with `swarmfs publish`",
            args.torrent.display()
        )
    })?;
    let progress = ByteProgress::new("checking", Some(rel.total_length));
    release::verify_dir(&rel, &args.data, &|n| progress.inc(n)).with_context(|| {
        format!(
            "refusing to seed {}: {} does not hold this release",
            rel.name,
            args.data.display()
        )
    })?;
    let (bytes, secs) = progress.finish();
    info!(
        bytes,
        seconds = format!("{secs:.2}"),
        "{} verified",
        args.data.display()
    );
    serve_until_signal(Arc::new(rel), args.data, &args.swarm)
}

/// Serves `rel` from `dir` until SIGINT or SIGTERM, logging progress. This is where the
/// seeding commands enter async code: one runtime, blocked on from the main thread.
pub fn serve_until_signal(rel: Arc<Release>, dir: PathBuf, swarm: &SwarmArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let opts = swarm.options();
    rt.block_on(async move {
        let seeder = Seeder::start(rel.clone(), dir, &opts)
            .await
            .context("cannot start seeding")?;
        let addr = seeder
            .listen_addr()
            .map_or_else(|| "nowhere".to_string(), |a| a.to_string());
        eprintln!(
            "seeding {} ({}) on {addr}, TCP and uTP; stop with Ctrl-C or SIGTERM",
            rel.name, rel.info_hash
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        let mut last_uploaded = u64::MAX;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let s = seeder.stats();
                    if s.uploaded_bytes != last_uploaded {
                        last_uploaded = s.uploaded_bytes;
                        info!(uploaded = s.uploaded_bytes, peers = s.live_peers,
                              refused_incoming = s.peers_refused_incoming,
                              refused_outgoing = s.peers_refused_outgoing,
                              over_max_peers = s.peers_over_limit,
                              upload_bps = s.upload_bps as u64, state = %s.state, "seed progress");
                    }
                    if let Some(e) = s.error {
                        anyhow::bail!("seeding {} failed: {e}", rel.name);
                    }
                }
            }
        }
        let s = seeder.stats();
        info!(
            uploaded = s.uploaded_bytes,
            over_max_peers = s.peers_over_limit,
            "stopping"
        );
        seeder.shutdown().await;
        Ok(())
    })
}
