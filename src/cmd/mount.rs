//! `swarmfs mount SOURCE MNT`: mount a release lazily; `swarmfs unmount MNT`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tracing::{info, warn};

use super::seed::SwarmArgs;
use crate::mount::cache;
use crate::mount::control;
use crate::mount::daemon::{self, MountConfig};
use crate::mount::profile::BootProfile;
use crate::mount::store::Store;
use crate::mount::table::{self as mountpoint, MountpointState};
use crate::mount::trust;
use crate::release::Release;
use crate::swarm;

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
    /// Where verified pieces are kept; a restart reuses them, and the next release
    /// rebuilds what it shares with them.
    #[arg(long, default_value = "/var/cache/swarmfs")]
    pub cache_dir: PathBuf,
    /// How much the cache directory may hold (e.g. 20G): at mount, releases are evicted,
    /// least recently mounted first, to fit this with the new release complete; never a
    /// mounted one, nor the release this one is rebuilt from [default: keep a tenth of
    /// the cache's filesystem free].
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub cache_size: Option<u64>,
    /// A read whose pieces cannot be had in this long fails with EIO (e.g. 30s, 500ms).
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub read_timeout: Duration,
    /// Fetch only what is read (and what `swarmfs prewarm` asks for); no background download.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Download limit in bytes per second (e.g. 50M).
    #[arg(long, value_parser = super::parse_rate)]
    pub download_limit: Option<std::num::NonZeroU32>,
    /// Which peers are neighbours (the same subnet or rack): a piece a neighbour has is
    /// asked of neighbours, not of peers farther away (a slow neighbour loses a piece a
    /// reader waits on to others), a piece none has is fetched from afar by one of them,
    /// and neighbours are dialled first, so a piece crosses a rack's uplink about once.
    /// `auto`: this host's /24 (IPv4) or /64 (IPv6); CIDRs such as 10.2.3.0/26 where a
    /// rack is smaller or larger; `off`. `status` shows the bytes received from
    /// neighbours.
    #[arg(long, value_name = "auto|off|CIDR,...", default_value = "auto")]
    pub local_net: swarm::LocalNet,
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
    /// Without it a mount takes, in this order: the start-up this host recorded of the
    /// same release, the profile carried in the release (`publish --boot-profile`), the
    /// start-up recorded of a related release in the cache directory (its base, else one
    /// of the same name), the first profile a peer offers; see --no-learn.
    #[arg(long, value_name = "FILE", conflicts_with = "no_prefetch")]
    pub boot_profile: Option<PathBuf>,
    /// Write a boot profile to FILE: every read that touches a piece no earlier read did,
    /// in order, each line as it happens. Mount a release on one host with this, start
    /// the service, unmount; then mount it everywhere with --boot-profile FILE.
    #[arg(long, value_name = "FILE")]
    pub record_profile: Option<PathBuf>,
    /// Neither record this mount's start-up nor boot from recordings (this host's or its
    /// peers'). By default every
    /// mount learns: the reads of its start-up (until no read has been in flight for 5 s)
    /// are written to `<cache-dir>/<infohash>/startup.profile` as they happen, and the
    /// next mount of this release or of a release published against it boots from them.
    #[arg(long)]
    pub no_learn: bool,
    /// Do not rebuild pieces from the other releases in the cache directory. By default a
    /// mount takes every piece it can build from a release already here (the one it was
    /// published against first; files found by content or path), checks each against
    /// this release's own hashes, and fetches only the rest: a delta deploy.
    #[arg(long)]
    pub no_reuse: bool,
    /// Mount only a release signed (`publish --sign`) by this key: a public key file
    /// (`keygen`'s KEY.pub) or its 64 hex digits; repeatable (any one of them). A release
    /// numbered lower than one this host has accepted for the same key and name is
    /// refused (no rollback); accepted numbers are kept in `<cache-dir>/trust.json`. The
    /// source must be the signed .torrent file (or an infohash mounted from one before).
    /// [default: any release is mounted]
    #[arg(long, value_name = "KEY", value_parser = super::keygen::parse_trusted)]
    pub trust: Vec<crate::release::PublicKey>,
    /// With --trust: mount an older release than one accepted before (a deliberate
    /// rollback). The highest number accepted stays recorded.
    #[arg(long, requires = "trust")]
    pub allow_rollback: bool,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

impl MountArgs {
    /// The swarm's options for this mount: `--max-peers` defaults to
    /// [`swarm::MOUNT_MAX_PEERS`] here (a seed's default is larger).
    fn swarm_options(&self) -> swarm::SwarmOptions {
        let mut o = self.swarm.options();
        o.download_limit_bps = self.download_limit;
        o.max_peers = usize::from(self.swarm.max_peers.unwrap_or(swarm::MOUNT_MAX_PEERS));
        o.local_net = self.local_net.clone();
        o
    }
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
        // A bad source is refused here, once, before a daemon starts: a .torrent file is
        // read and checked whole (a magnet link or an infohash needs peers: the daemon).
        // In the foreground (and in the daemon) `resolve` says the same.
        check_source(&args, &mnt)?;
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

/// What SOURCE is, checked without the swarm: a magnet link or an infohash is well
/// formed; a .torrent file exists, parses, and its paths fit this host; with --trust, the
/// release is signed by a trusted key and not older than one accepted before.
fn check_source(args: &MountArgs, mnt: &Path) -> Result<()> {
    let src = args.source.trim();
    if let Some(ih) = super::info::infohash_of_link(src) {
        if args.trust.is_empty() {
            return Ok(());
        }
        let cached = Store::cached_torrent(&args.cache_dir, &ih.to_string())
            .and_then(|b| Release::from_torrent(&b).ok())
            .filter(|r| r.info_hash == ih);
        let Some(release) = cached else {
            bail!(
                "{src}: with --trust, mount the signed .torrent file: a magnet link or an infohash carries no signature (unless this host mounted its torrent before)"
            );
        };
        return check_trust(args, &release, false);
    }
    let release = read_torrent(src)?;
    Store::check_paths(&release, &args.cache_dir, mnt)?;
    check_trust(args, &release, false)
}

/// With --trust: the release's signature and sequence number, checked (the parent of a
/// daemon) or checked and recorded as accepted (the mount itself, before it mounts).
fn check_trust(args: &MountArgs, release: &Release, record: bool) -> Result<()> {
    if args.trust.is_empty() {
        return Ok(());
    }
    let f = if record { trust::accept } else { trust::check };
    let v = f(&args.cache_dir, release, &args.trust, args.allow_rollback).with_context(|| {
        format!(
            "refusing to mount {} ({}) from {}",
            release.name,
            release.info_hash,
            args.source.trim()
        )
    })?;
    if record {
        match v.previous {
            Some(p) if p.seq > v.signed.seq => warn!(
                "rollback: mounting {} sequence {} although {} ({}) was accepted (--allow-rollback)",
                release.name, v.signed.seq, p.seq, p.infohash
            ),
            _ => info!(
                "{} sequence {} signed by {}: accepted",
                release.name, v.signed.seq, v.signed.key
            ),
        }
    }
    Ok(())
}

/// Reads SOURCE that is neither a magnet link nor an infohash: a .torrent file, or
/// something that looks like a link and is named as a malformed one.
fn read_torrent(src: &str) -> Result<Release> {
    if src.starts_with("magnet:") {
        bail!("{src}: a magnet link must name a BitTorrent v1 infohash (xt=urn:btih: and 40 hex digits)");
    }
    let path = Path::new(src);
    if !path.exists() && !src.is_empty() && src.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "{src} is not an infohash (an infohash has 40 hex digits; this has {}), nor a .torrent file here; \
             give a .torrent file, a magnet link or a 40-hex infohash",
            src.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!("cannot read the torrent {src} (SOURCE is a .torrent file, a magnet link or a 40-hex infohash)")
    })?;
    Release::from_torrent(&bytes).with_context(|| format!("{src} is not a usable torrent"))
}

/// Resolves SOURCE to a validated release: a file, a magnet link or an infohash.
fn resolve(args: &MountArgs, rt: &tokio::runtime::Runtime) -> Result<Release> {
    let src = args.source.trim();
    let Some(infohash) = super::info::infohash_of_link(src) else {
        return read_torrent(src);
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
    let opts = args.swarm_options();
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
    let rt = daemon::runtime()?;
    let release = resolve(&args, &rt)?;
    check_trust(&args, &release, true)?;
    let swarm = args.swarm_options();
    let config = MountConfig {
        mountpoint: mnt,
        cache_dir: args.cache_dir,
        read_timeout: args.read_timeout,
        prefetch: !args.no_prefetch,
        allow_other: args.allow_other,
        metrics: args.metrics,
        boot_profile: args.boot_profile.zip(profile),
        record_profile: args.record_profile,
        learn: !args.no_learn,
        reuse: !args.no_reuse,
        cache_budget: args
            .cache_size
            .map_or(cache::DEFAULT_BUDGET, cache::Budget::Bytes),
        swarm,
    };
    daemon::serve(rt, release, config, || {
        if std::env::var_os(READY_ENV).is_some() {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{READY_LINE}");
            let _ = out.flush();
        }
    })
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mountpoint of a swarmfs mount.
    pub mountpoint: PathBuf,
}

/// How long `unmount` waits for the daemon to exit.
const UNMOUNT_WAIT: Duration = Duration::from_secs(60);

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
    // The daemon holds the release's cache until it exits (its swarm engine stops first):
    // a mount of the same cache right after this returns must find it free. It usually
    // takes 1-3 s; on a loaded host (the test suite on two cores) it took over 10 s.
    if let Some(pid) = pid {
        let start = std::time::Instant::now();
        let mut said = false;
        while running(pid as u32) {
            if start.elapsed() > UNMOUNT_WAIT {
                eprintln!(
                    "the daemon (pid {pid}) is still stopping after {} s; its cache stays in use until it exits",
                    UNMOUNT_WAIT.as_secs()
                );
                break;
            }
            if !said && start.elapsed() > Duration::from_secs(5) {
                eprintln!("waiting for the daemon (pid {pid}) to stop its swarm engine...");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    control::remove(&mnt);
    Ok(())
}

/// Whether process `pid` still runs: it exists and is not a zombie. A daemon run with
/// `--foreground` whose parent has not reaped it yet has exited all the same (a benchmark
/// harness's unmounts each waited the whole `UNMOUNT_WAIT` for one).
fn running(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    // "pid (comm) S ...": the state follows the last ')' (comm may hold one).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn a_zombie_daemon_counts_as_stopped() {
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(super::running(live.id()));
        // Exits at once and stays a zombie: not waited for until the end.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let t = std::time::Instant::now();
        while super::running(gone.id()) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "`true` still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{}", gone.id())).exists(),
            "a zombie until reaped"
        );
        gone.wait().unwrap();
        live.kill().unwrap();
        live.wait().unwrap();
    }

    #[derive(Parser)]
    struct Mount {
        #[command(flatten)]
        args: super::MountArgs,
    }

    #[derive(Parser)]
    struct Seed {
        #[command(flatten)]
        args: super::SwarmArgs,
    }

    #[test]
    fn a_mount_keeps_fewer_peers_than_a_seed_unless_told() {
        let max = |argv: &[&str]| Mount::parse_from(argv).args.swarm_options().max_peers;
        assert_eq!(max(&["m", "x.torrent", "/mnt"]), 50);
        assert_eq!(max(&["m", "x.torrent", "/mnt", "--max-peers", "20"]), 20);
        assert_eq!(Seed::parse_from(["s"]).args.options().max_peers, 50);
        assert_eq!(
            Seed::parse_from(["s", "--max-peers", "3"])
                .args
                .options()
                .max_peers,
            3
        );
    }
}
