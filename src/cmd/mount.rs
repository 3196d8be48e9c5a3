//! `swarmfs mount SOURCE MNT`: mount a release lazily; `swarmfs unmount MNT`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tracing::{info, warn};

use super::seed::SwarmArgs;
use crate::control::{self, MountInfo};
use crate::fs::FsTree;
use crate::fuse::{ReadStats, SwarmFs};
use crate::mountpoint::{self, MountpointState, FSNAME_PREFIX};
use crate::profile::{BootProfile, Recorder};
use crate::release::Release;
use crate::store::Store;
use crate::swarm::{self, Fetcher};

/// Set in the environment of the background daemon so it reports readiness on stdout.
const READY_ENV: &str = "SWARMFS_NOTIFY_READY";
const READY_LINE: &str = "SWARMFS-READY";

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The release: a .torrent file (best: no metadata fetch), a magnet link, or a 40-hex
    /// infohash (its metadata then comes from --peer/--tracker, or the cache of an earlier mount).
    pub source: String,
    /// Where to mount it: an existing directory. The release's content appears at its root.
    pub mountpoint: PathBuf,
    /// Stay attached (for systemd and benchmarks) instead of returning once mounted.
    #[arg(long)]
    pub foreground: bool,
    /// Where verified pieces are kept; a restart reuses them.
    #[arg(long, default_value = "/var/cache/swarmfs")]
    pub cache_dir: PathBuf,
    /// A read whose pieces cannot be had in this long fails with EIO (e.g. 30s, 500ms).
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub read_timeout: Duration,
    /// Fetch only what is read (and what `swarmfs prewarm` asks for); no background download.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Download limit in bytes per second (e.g. 50M).
    #[arg(long, value_parser = super::parse_rate)]
    pub download_limit: Option<std::num::NonZeroU32>,
    /// Let users other than the mount's owner read the mount (FUSE `allow_other`).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// How long to look for the metadata of a magnet link or infohash.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub metadata_timeout: Duration,
    /// A boot profile (what a server reads while it starts, in order: `path<TAB>offset<TAB>length`
    /// per line, as --record-profile writes it): its pieces are fetched first, before
    /// anything else of the background, so that the start-up reads find them here.
    #[arg(long, value_name = "FILE", conflicts_with = "no_prefetch")]
    pub boot_profile: Option<PathBuf>,
    /// Write a boot profile to FILE: every read that touches a piece no earlier read did,
    /// in order, each line as it happens. Mount a release on one host with this, start
    /// the service, unmount; then mount it everywhere with --boot-profile FILE.
    #[arg(long, value_name = "FILE")]
    pub record_profile: Option<PathBuf>,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

pub fn run(args: MountArgs) -> Result<()> {
    let mnt = std::path::absolute(&args.mountpoint)
        .with_context(|| format!("bad mountpoint {}", args.mountpoint.display()))?;
    match mountpoint::inspect(&mnt).map_err(anyhow::Error::msg)? {
        MountpointState::Free => {}
        MountpointState::Stale => {
            warn!(
                "{}: clearing a stale mount left by a killed daemon",
                mnt.display()
            );
            mountpoint::clear_stale(&mnt)
                .with_context(|| format!("cannot clear the stale mount at {}", mnt.display()))?;
        }
        MountpointState::Mounted(fstype) => bail!(
            "{} is already mounted ({fstype}); unmount it first (swarmfs unmount {0})",
            mnt.display()
        ),
    }
    // A bad profile is refused here, before a daemon starts, naming the file and line.
    let profile = args
        .boot_profile
        .as_deref()
        .map(BootProfile::load)
        .transpose()?;
    if !args.foreground && std::env::var_os(READY_ENV).is_none() {
        return daemonize(&args, &mnt);
    }
    serve(args, mnt, profile)
}

/// Re-runs this command in the foreground as a detached child, logging to the cache
/// directory, and returns once it reports the mount ready (or fails).
fn daemonize(args: &MountArgs, mnt: &Path) -> Result<()> {
    std::fs::create_dir_all(&args.cache_dir).with_context(|| {
        format!(
            "cannot create the cache directory {}",
            args.cache_dir.display()
        )
    })?;
    let log_path = args
        .cache_dir
        .join(format!("mount-{}.log", control::mount_id(mnt)));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session and terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    let out = child.stdout.take().expect("piped");
    for line in BufReader::new(out).lines() {
        if line.map(|l| l == READY_LINE).unwrap_or(false) {
            eprintln!(
                "mounted at {} (daemon pid {}, log {})",
                mnt.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
    }
    let status = child.wait()?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!("the mount daemon failed ({status}):\n{}", tail.join("\n"))
}

/// Resolves SOURCE to a validated release: a file, a magnet link or an infohash.
fn resolve(args: &MountArgs, rt: &tokio::runtime::Runtime) -> Result<Release> {
    let src = args.source.trim();
    let Some(infohash) = super::info::infohash_of_link(src) else {
        let path = Path::new(src);
        let bytes = std::fs::read(path).with_context(|| {
            format!("cannot read the torrent {src} (SOURCE is a .torrent file, a magnet link or a 40-hex infohash)")
        })?;
        return Release::from_torrent(&bytes)
            .with_context(|| format!("{src} is not a usable torrent"));
    };
    let mut magnet = if src.starts_with("magnet:") {
        src.to_string()
    } else {
        format!("magnet:?xt=urn:btih:{infohash}")
    };
    for t in &args.swarm.trackers {
        magnet.push_str("&tr=");
        magnet.push_str(&url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
    }
    let ih = infohash.to_string();
    if let Some(bytes) = Store::cached_torrent(&args.cache_dir, &ih) {
        if let Ok(r) = Release::from_torrent(&bytes) {
            if r.info_hash == infohash {
                info!("metadata of {ih} from the cache");
                return Ok(r);
            }
        }
    }
    if args.swarm.peers.is_empty()
        && args.swarm.trackers.is_empty()
        && !args.swarm.dht
        && !src.contains("tr=")
    {
        bail!(
            "the metadata of {ih} is not in the cache {} and there is no way to find peers: \
             give --peer or --tracker (or --dht), or mount the .torrent file",
            args.cache_dir.display()
        );
    }
    info!("fetching the metadata of {ih} from peers");
    let opts = args.swarm.options();
    let bytes = rt
        .block_on(async {
            tokio::time::timeout(args.metadata_timeout, swarm::fetch_metadata(&magnet, &opts)).await
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "no peer sent the metadata of {ih} within {:?}; give --peer or --tracker, or mount the .torrent file",
                args.metadata_timeout
            )
        })??;
    let r = Release::from_torrent(&bytes).context("the metadata peers sent is not usable")?;
    if r.info_hash != infohash {
        bail!("peers sent metadata for {} instead of {ih}", r.info_hash);
    }
    Ok(r)
}

/// Mounts and serves until SIGINT/SIGTERM or an external unmount.
fn serve(args: MountArgs, mnt: PathBuf, profile: Option<BootProfile>) -> Result<()> {
    // One runtime thread. librqbit hands each chunk's disk write and read to
    // `block_in_place` on a multi-threaded runtime, which moves the worker to another
    // thread every time: 8-host fleet, 256 MB, 21-25 CPU s per GB received and 28-38 MiB
    // peak RSS per host with two workers; 12-13 CPU s per GB and 21 MiB on one thread,
    // where librqbit calls them in place (cache writes and reads are page-cache copies of
    // 16 KiB). FUSE callbacks run on fuser's own threads and hand reads that wait to
    // this runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("swarmfs-rt")
        .build()
        .context("cannot start the async runtime")?;
    let release = Arc::new(resolve(&args, &rt)?);
    let store = Arc::new(Store::open(&args.cache_dir, release.clone())?);
    let pieces = store.pieces().clone();
    info!(
        name = %release.name, infohash = %release.info_hash,
        present = pieces.present(), total = pieces.total(), "cache checked"
    );
    let boot = match (&args.boot_profile, profile) {
        (Some(path), Some(profile)) => {
            let p = profile.pieces(&release);
            if p.unknown_paths > 0 {
                warn!(
                    "{}: {} lines name files that {} does not have (a profile of another \
                     release?); they are skipped",
                    path.display(),
                    p.unknown_paths,
                    release.name
                );
            }
            info!(
                profile = %path.display(),
                pieces = p.pieces.len(),
                bytes = p.pieces.len() as u64 * release.piece_length,
                "boot profile: these pieces come first"
            );
            p.pieces
        }
        _ => Vec::new(),
    };
    let recorder = match &args.record_profile {
        None => None,
        Some(path) => Some(Arc::new(Recorder::create(path, &release)?)),
    };
    let mut opts = args.swarm.options();
    opts.download_limit_bps = args.download_limit;
    let fetcher = rt
        .block_on(Fetcher::start(
            release.clone(),
            store.data_dir(),
            pieces.clone(),
            &opts,
            !args.no_prefetch,
            &boot,
        ))
        .context("cannot join the swarm")?;
    let stats = Arc::new(ReadStats::default());
    let fs = SwarmFs {
        tree: Arc::new(FsTree::new(&release)),
        store: store.clone(),
        fetcher: fetcher.clone(),
        rt: rt.handle().clone(),
        read_timeout: args.read_timeout,
        stats: stats.clone(),
        paths: Arc::new(release.entries.iter().map(|e| e.display_path()).collect()),
        opens: Default::default(),
        readahead: Default::default(),
        passthrough_enabled: Default::default(),
        recorder: recorder.clone(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("{FSNAME_PREFIX}{}", release.name)),
        fuser::MountOption::Subtype("swarmfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(4);
    let session = fuser::Session::new(fs, &mnt, &config).with_context(|| {
        format!(
            "cannot mount on {} (is /dev/fuse there and are you root?)",
            mnt.display()
        )
    })?;
    let bg = session.spawn().context("cannot start the FUSE session")?;

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
    });
    if let Some(addr) = args.metrics {
        rt.block_on(async { crate::metrics::serve(addr) })?;
        let info = info.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                crate::metrics::update(&info.status());
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
    if std::env::var_os(READY_ENV).is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{READY_LINE}");
        let _ = out.flush();
    }

    let externally_unmounted = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<bool, anyhow::Error>(false),
                _ = term.recv() => return Ok(false),
                _ = tick.tick() => if bg.guard.is_finished() { return Ok(true) },
            }
        }
    })?;
    control::remove(&mnt);
    if !externally_unmounted {
        info!("unmounting {}", mnt.display());
        match mountpoint::unmount(&mnt) {
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
    let usage = crate::usage::usage();
    info!(
        downloaded_bytes = stats.downloaded_bytes,
        uploaded_bytes = stats.uploaded_bytes,
        cpu_seconds = format!("{:.2}", usage.cpu_seconds),
        cpu_seconds_per_gb =
            crate::usage::cpu_per_gb(&usage, stats.downloaded_bytes).map(|c| format!("{c:.2}")),
        peak_rss_mib = usage.peak_rss_bytes >> 20,
        "mount ends"
    );
    rt.block_on(fetcher.shutdown());
    drop(bg);
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mountpoint of a swarmfs mount.
    pub mountpoint: PathBuf,
}

/// `swarmfs unmount MNT`: unmounts (detaching if busy) and waits for the daemon to exit.
pub fn unmount(args: UnmountArgs) -> Result<()> {
    let mnt = std::path::absolute(&args.mountpoint)?;
    match mountpoint::mount_at(&mnt)? {
        Some(m) if m.is_swarmfs() => {}
        Some(m) => bail!(
            "{} is a {} mount, not swarmfs; not touching it",
            mnt.display(),
            m.fstype
        ),
        None => bail!("{}: nothing is mounted there", mnt.display()),
    }
    let pid = std::fs::read_to_string(control::record_path(&mnt))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["pid"].as_u64());
    if mountpoint::unmount(&mnt).with_context(|| format!("cannot unmount {}", mnt.display()))? {
        eprintln!(
            "{} was busy: detached; it disappears when its last user closes it",
            mnt.display()
        );
    }
    if let Some(pid) = pid {
        for _ in 0..100 {
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    control::remove(&mnt);
    Ok(())
}
