//! One mount from start to end: check the cache, join the swarm, mount the FUSE
//! filesystem, open the control socket (and the metrics), serve until SIGINT, SIGTERM or
//! an external unmount, then unmount and leave the swarm.
//!
//! It owns the mount's tokio runtime and its order of start and stop; it decides no
//! policy of its own (the piece order is the swarm's picker, the read path the FUSE
//! adapter's). The caller has resolved the release and checked the mountpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::cache::{self, Budget};
use super::control::{self, MountInfo};
use super::fuse::SwarmFs;
use super::profile::{self, BootProfile, BootSource, Recorder, Window};
use super::reuse::Reuse;
use super::status::ReadStats;
use super::store::Store;
use super::table as mount_table;
use super::{metrics, usage};
use crate::fs::FsTree;
use crate::release::reuse::{Local, Plan};
use crate::release::Release;
use crate::swarm::{Fetcher, ProfileExchange, SwarmOptions};

/// How to mount, as the command line says it.
pub struct MountConfig {
    /// Absolute path of the mountpoint (checked free by the caller).
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    /// A read whose pieces cannot be had in this long fails with EIO.
    pub read_timeout: Duration,
    /// Fetch the whole release in the background (not only what is read).
    pub prefetch: bool,
    /// FUSE `allow_other`.
    pub allow_other: bool,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// A boot profile and the file it came from: its pieces come first.
    pub boot_profile: Option<(PathBuf, BootProfile)>,
    /// Record a boot profile into this file.
    pub record_profile: Option<PathBuf>,
    /// Record the start-up into the release's cache folder, and boot from such
    /// recordings when no profile is given ([`profile`]).
    pub learn: bool,
    /// Rebuild what the other releases in the cache directory hold (delta deploys).
    pub reuse: bool,
    /// How much the cache directory may hold; older releases are evicted to fit.
    pub cache_budget: Budget,
    pub swarm: SwarmOptions,
}

/// The runtime of a mount: one thread.
///
/// librqbit hands each chunk's disk write and read to `block_in_place` on a
/// multi-threaded runtime, which moves the worker to another thread every time: 8-host
/// fleet, 256 MB, 21-25 CPU s per GB received and 28-38 MiB peak RSS per host with two
/// workers; 12-13 CPU s per GB and 21 MiB on one thread, where librqbit calls them in
/// place (cache writes and reads are page-cache copies of 16 KiB). FUSE callbacks run on
/// fuser's own threads and hand reads that wait to this runtime.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("swarmfs-rt")
        .build()
        .context("cannot start the async runtime")
}

/// Mounts `release` and serves it until SIGINT/SIGTERM or an external unmount.
/// `on_ready` is called once the mount is usable (the daemon then tells its parent).
pub fn serve(
    rt: tokio::runtime::Runtime,
    release: Release,
    config: MountConfig,
    on_ready: impl FnOnce(),
) -> Result<()> {
    let mnt = config.mountpoint.clone();
    Store::check_paths(&release, &config.cache_dir, &mnt)?;
    let release = Arc::new(release);
    let store = Arc::new(Store::open(&config.cache_dir, release.clone())?);
    let pieces = store.pieces().clone();
    info!(
        name = %release.name, infohash = %release.info_hash,
        present = pieces.present(), total = pieces.total(), "cache checked"
    );
    // Room for what is still to come: older releases go, least recently used first, but
    // never a mounted one, nor this release's base or the best source of its pieces.
    let cached = cache::scan(&config.cache_dir).unwrap_or_else(|e| {
        warn!("{e}");
        Vec::new()
    });
    let learnt_here = store.root().join(profile::LEARNT_FILE);
    let own = config
        .learn
        .then(|| profile::load_learnt(&learnt_here))
        .flatten();
    let record_startup = config.learn && own.is_none();
    let mut locals = cache::sources(&cached, &release);
    let chosen = choose_profile(&config, &release, &locals, own);
    let boot = match &chosen {
        Some((source, profile)) => {
            let p = profile.pieces(&release);
            if p.unknown_paths > 0 {
                warn!(
                    "boot profile {source}: {} lines name files that {} does not have (a \
                     profile of another release?); they are skipped",
                    p.unknown_paths, release.name
                );
            }
            info!(
                profile = %source,
                pieces = p.pieces.len(),
                bytes = p.pieces.len() as u64 * release.piece_length,
                "boot profile: these pieces come first"
            );
            p.pieces
        }
        None => Vec::new(),
    };
    let recorder = match &config.record_profile {
        Some(path) => Some(Arc::new(Recorder::create(path, &release, Window::Mount)?)),
        None if record_startup => {
            match Recorder::create(&learnt_here, &release, Window::StartUp(profile::QUIET)) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    warn!("{e}; this mount does not learn its start-up");
                    None
                }
            }
        }
        None => None,
    };
    let mut protect = vec![release.info_hash];
    protect.extend(release.similar.iter().copied());
    protect.extend(locals.first().map(|l| l.release.info_hash));
    let incoming = release
        .total_length
        .saturating_sub(pieces.present() * release.piece_length);
    match cache::evict(
        &config.cache_dir,
        &cached,
        config.cache_budget,
        incoming,
        &protect,
    ) {
        Ok(removed) => {
            for c in &removed {
                info!(
                    infohash = %c.infohash,
                    name = c.name.as_deref().unwrap_or("?"),
                    bytes = c.bytes,
                    "evicted from the cache (least recently used) to make room"
                );
            }
            locals.retain(|l| !removed.iter().any(|c| c.dir.join("data") == l.data_dir));
        }
        Err(e) => warn!("cannot make room in the cache: {e}"),
    }
    // Pieces other releases in the cache can give are rebuilt while the mount joins the
    // swarm; no peer is asked for them meanwhile.
    let reuse = match (config.reuse, locals.is_empty()) {
        (true, false) => Reuse::start(Plan::new(release.clone(), locals), store.clone(), &boot),
        _ => None,
    };
    let fetcher = rt
        .block_on(Fetcher::start(
            release.clone(),
            store.data_dir(),
            pieces.clone(),
            &config.swarm,
            config.prefetch,
            &boot,
            reuse.as_ref().map(|r| r.deferred()),
            profile_exchange(&config, &release, chosen.as_ref().map(|c| &c.1)),
        ))
        .context("cannot join the swarm")?;
    if let Some(r) = &reuse {
        r.attach(fetcher.clone());
    }
    let stats = Arc::new(ReadStats::default());
    let fs = SwarmFs {
        tree: Arc::new(FsTree::new(&release)),
        store: store.clone(),
        fetcher: fetcher.clone(),
        rt: rt.handle().clone(),
        read_timeout: config.read_timeout,
        stats: stats.clone(),
        paths: Arc::new(release.entries.iter().map(|e| e.display_path()).collect()),
        opens: Default::default(),
        readahead: Default::default(),
        passthrough_enabled: Default::default(),
        recorder: recorder.clone(),
    };
    let kernel = fs.mount(&mnt, &release.name, config.allow_other)?;

    let info = Arc::new(MountInfo {
        release: release.clone(),
        name: release.name.clone(),
        infohash: release.info_hash.to_string(),
        mountpoint: mnt.clone(),
        cache_dir: store.root().to_path_buf(),
        total_bytes: release.total_length,
        piece_length: release.piece_length,
        fetcher: fetcher.clone(),
        stats,
        reuse,
        boot_source: chosen.map(|(s, _)| s.to_string()),
        recorder: recorder.clone(),
    });
    if let Some(addr) = config.metrics {
        rt.block_on(async { metrics::serve(addr) })?;
        let info = info.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                metrics::update(&info.status());
            }
        });
    }
    let sock = rt
        .block_on(async { control::serve(info) })
        .context("cannot open the control socket")?;
    info!(socket = %sock.display(), listen = ?fetcher.listen_addr(), "mounted {} ({}) at {}",
        release.name, release.info_hash, mnt.display());
    eprintln!(
        "mounted {} ({}) at {}",
        release.name,
        release.info_hash,
        mnt.display()
    );
    on_ready();

    let externally_unmounted = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<bool, anyhow::Error>(false),
                _ = term.recv() => return Ok(false),
                _ = tick.tick() => if kernel.is_finished() { return Ok(true) },
            }
        }
    })?;
    control::remove(&mnt);
    if !externally_unmounted {
        info!("unmounting {}", mnt.display());
        match mount_table::unmount(&mnt) {
            Ok(true) => warn!(
                "{} was busy: detached; it disappears when its last user closes it",
                mnt.display()
            ),
            Ok(false) => {}
            Err(e) => warn!("cannot unmount {}: {e}", mnt.display()),
        }
    }
    if let Some(r) = &recorder {
        info!(
            "boot profile {}: {} reads recorded",
            r.path().display(),
            r.lines()
        );
    }
    let stats = fetcher.stats();
    let usage = usage::usage();
    info!(
        downloaded_bytes = stats.downloaded_bytes,
        from_neighbours_bytes = stats.downloaded_near_bytes,
        discarded_bytes = fetcher.discarded_bytes(),
        uploaded_bytes = stats.uploaded_bytes,
        cpu_seconds = format!("{:.2}", usage.cpu_seconds),
        system_seconds = format!("{:.2}", usage.system_seconds),
        waits = usage.waits,
        cpu_seconds_per_gb =
            usage::cpu_per_gb(&usage, stats.downloaded_bytes).map(|c| format!("{c:.2}")),
        peak_rss_mib = usage.peak_rss_bytes >> 20,
        "mount ends"
    );
    rt.block_on(fetcher.shutdown());
    drop(kernel);
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The boot profile of a mount: `--boot-profile`, else (learning) this host's recording
/// of the same release, else the one the release carries, else (learning) this host's
/// recording of a related release: its base (`similar`) first, then the most recently
/// used of the same name. None without prefetch (nothing is fetched in the background).
fn choose_profile(
    config: &MountConfig,
    release: &Release,
    locals: &[Local],
    own: Option<BootProfile>,
) -> Option<(BootSource, BootProfile)> {
    if let Some((path, p)) = &config.boot_profile {
        return Some((BootSource::File(path.clone()), p.clone()));
    }
    if !config.prefetch {
        return None;
    }
    if let Some(p) = own {
        return Some((BootSource::Learnt, p));
    }
    if let Some(text) = &release.boot_profile {
        match BootProfile::parse(text, std::path::Path::new("the release's boot profile")) {
            Ok(p) if !p.reads.is_empty() => return Some((BootSource::Torrent, p)),
            Ok(_) => {}
            Err(e) => warn!("{e}; it is ignored"),
        }
    }
    if !config.learn {
        return None;
    }
    // The cache's other releases, best source first (its base, then the most recently
    // used): the first related one with a recording.
    locals.iter().find_map(|l| {
        let r = &l.release;
        if !release.similar.contains(&r.info_hash) && r.name != release.name {
            return None;
        }
        let dir = l.data_dir.parent()?;
        let p = profile::load_learnt(&dir.join(profile::LEARNT_FILE))?;
        Some((
            BootSource::Related {
                name: r.name.clone(),
                infohash: r.info_hash.to_string(),
            },
            p,
        ))
    })
}

/// What a mount shares with its peers: the profile it boots from, offered to any that
/// asks; and, learning with none of its own, the first usable profile a peer offers
/// (a hint for the order of fetching: it never makes a read wrong or a mount fail).
fn profile_exchange(
    config: &MountConfig,
    release: &Arc<Release>,
    chosen: Option<&BootProfile>,
) -> ProfileExchange {
    let offer = chosen
        .map(|p| p.to_text().into_bytes())
        .filter(|t| !t.is_empty() && t.len() <= crate::release::MAX_BOOT_PROFILE)
        .map(Arc::from);
    let accept = (chosen.is_none() && config.learn && config.prefetch).then(|| {
        let release = release.clone();
        Box::new(move |bytes: &[u8]| {
            let text = std::str::from_utf8(bytes).ok()?;
            let p = BootProfile::parse(text, std::path::Path::new("a peer's boot profile")).ok()?;
            Some(p.pieces(&release).pieces)
        }) as Box<dyn Fn(&[u8]) -> Option<Vec<u32>> + Send + Sync>
    });
    ProfileExchange { offer, accept }
}
