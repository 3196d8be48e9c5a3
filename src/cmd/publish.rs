//! `swarmfs publish DIR`: write the release's torrent, print its infohash, optionally seed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use tracing::{info, warn};

use super::seed::{serve_until_signal, SwarmArgs};
use super::ByteProgress;
use crate::mount::profile::BootProfile;
use crate::release::{self, Delta, PublishOptions, Release};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The release directory. It is only read, never modified.
    pub dir: PathBuf,
    /// Where to write the torrent [default: ./<name>.torrent]. Must be outside DIR.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Release name (the torrent's `name`) [default: DIR's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Piece size: a power of two from 16K to 16M [default: 32K, doubled while the
    /// release would have more than 16384 pieces]. A fleet's boot waits for every piece
    /// its start-up reads touch, so smaller pieces boot it sooner; larger ones cost less
    /// CPU per byte.
    #[arg(long, value_parser = super::parse_size)]
    pub piece_size: Option<u64>,
    /// Tracker announce URL (repeatable); the first is `announce`, all go in `announce-list`.
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Free-text comment stored in the torrent (outside the infohash).
    #[arg(long)]
    pub comment: Option<String>,
    /// Store the current time as `creation date` (off by default so that the torrent
    /// file is byte-for-byte reproducible; the infohash never depends on it).
    #[arg(long)]
    pub creation_date: bool,
    /// Set the private bit (BEP 27): peers then come from trackers and --peer only.
    #[arg(long)]
    pub private: bool,
    /// The previous release's torrent: publish this one as its delta. Its piece size is
    /// kept, its unchanged small files stay where they were, and the new torrent names it
    /// (BEP 38 `similar`), so that every unchanged file has the same pieces in both and a
    /// host that holds the base fetches only what changed. Prints what is new against it.
    #[arg(long, value_name = "PREV.torrent")]
    pub base: Option<PathBuf>,
    /// A boot profile (as `mount --record-profile` writes it) to carry in the release:
    /// every mount of it, by torrent file, magnet link or infohash, fetches its pieces
    /// first without being told. Lines naming files DIR does not have are dropped (with a
    /// warning). At most 256 KiB of profile; it is part of the infohash.
    #[arg(long, value_name = "FILE")]
    pub boot_profile: Option<PathBuf>,
    /// Sign the release with this secret key (`swarmfs keygen`): the torrent then carries
    /// an Ed25519 signature of its infohash, name and sequence number (outside the info
    /// dict: the infohash is the same), and hosts that mount with `--trust KEY.pub` accept
    /// it, and never an older one after it.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// The sequence number to sign (e.g. the build number): hosts refuse a release of the
    /// same name and key numbered lower than one they have mounted [default with --base:
    /// one more than the base's].
    #[arg(long, value_name = "N", requires = "sign")]
    pub seq: Option<u64>,
    /// Print one JSON object (name, infohash, magnet, torrent, sizes) instead of text.
    #[arg(long)]
    pub json: bool,
    /// After publishing, serve the release from DIR until SIGINT/SIGTERM (as `swarmfs seed`).
    #[arg(long)]
    pub seed: bool,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

pub fn run(args: PublishArgs) -> Result<()> {
    for t in &args.trackers {
        url::Url::parse(t).with_context(|| format!("--tracker {t:?} is not a URL"))?;
    }
    let base = match &args.base {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read the base torrent {}", p.display()))?;
            Some(Release::from_torrent(&bytes).with_context(|| {
                format!(
                    "the base {} is not a usable torrent; give the previous release's .torrent",
                    p.display()
                )
            })?)
        }
    };
    let signing = match &args.sign {
        None => None,
        Some(p) => {
            let key = super::keygen::read_secret(p)?;
            let base_seq = base
                .as_ref()
                .and_then(|b| b.signature.as_ref())
                .and_then(|s| s.claimed())
                .map(|(_, seq)| seq);
            let seq = match (args.seq, base_seq) {
                (Some(n), _) => n,
                (None, Some(b)) => b.checked_add(1).context("the base's sequence number is the largest there is; give --seq")?,
                (None, None) => bail!(
                    "--sign needs a sequence number: give --seq N (e.g. the build number), or --base with the previous release's signed torrent (its number plus one)"
                ),
            };
            if let (Some(n), Some(b)) = (args.seq, base_seq) {
                if n <= b {
                    warn!("--seq {n} is not above the base's sequence number {b}: hosts that mounted the base will refuse this release");
                }
            }
            Some((key, seq))
        }
    };
    let boot_profile = match &args.boot_profile {
        None => None,
        Some(p) => Some(profile_text(p, &args.dir)?),
    };
    let opts = PublishOptions {
        name: args.name.clone(),
        piece_length: args.piece_size.unwrap_or(0),
        trackers: args.trackers.clone(),
        comment: args.comment.clone(),
        creation_date: args.creation_date.then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
        private: args.private,
        base,
        boot_profile,
    };
    let progress = ByteProgress::new("hashing", None);
    let published = release::publish(&args.dir, &opts, &|n| progress.inc(n))
        .with_context(|| format!("cannot publish {}", args.dir.display()))?;
    let (bytes, secs) = progress.finish();
    for d in &published.empty_dirs {
        warn!(
            "empty directory {d:?} is not in the torrent: BitTorrent v1 cannot carry empty directories"
        );
    }
    let delta = published.delta;
    let mut rel = published.release;
    if let Some((key, seq)) = &signing {
        let bytes = rel
            .signed_torrent(key, *seq)
            .map_err(|e| anyhow::anyhow!("cannot sign {}: {e}", rel.name))?;
        rel = Release::from_torrent(&bytes).context("the signed torrent does not parse")?;
    }
    info!(
        files = rel.visible_entries().count(),
        bytes,
        seconds = format!("{secs:.2}"),
        "hashed {} at {:.0} MiB/s",
        rel.name,
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
    );

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", rel.name)));
    refuse_inside(&out, &args.dir)?;
    write_atomically(&out, &rel.torrent_bytes)
        .with_context(|| format!("cannot write the torrent to {}", out.display()))?;

    print_result(&rel, &out, delta.as_ref(), args.json)?;
    if args.seed {
        let rel = Arc::new(rel);
        serve_until_signal(rel, args.dir.clone(), &args.swarm)?;
    }
    Ok(())
}

/// The text of a boot profile to carry in the torrent: parsed (a bad line is refused,
/// naming it), lines naming no file of `dir` dropped, written in the canonical form so
/// that the same profile gives the same infohash.
fn profile_text(path: &Path, dir: &Path) -> Result<String> {
    let profile = BootProfile::load(path)?;
    let (kept, gone): (Vec<_>, Vec<_>) = profile.reads.into_iter().partition(|r| {
        r.path.split('/').all(|c| !matches!(c, "" | "." | "..")) && dir.join(&r.path).is_file()
    });
    if !gone.is_empty() {
        warn!(
            "{}: {} lines name files that {} does not have (first: {}); they are left out",
            path.display(),
            gone.len(),
            dir.display(),
            gone[0].path
        );
    }
    let text = BootProfile { reads: kept }.to_text();
    if text.len() > release::MAX_BOOT_PROFILE {
        bail!(
            "the boot profile {} is {} bytes; a release carries at most {} (keep the start-up's \
             first reads, or give it to each mount with --boot-profile)",
            path.display(),
            text.len(),
            release::MAX_BOOT_PROFILE
        );
    }
    Ok(text)
}

fn print_result(rel: &Release, out: &Path, delta: Option<&Delta>, json: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        let mut v = serde_json::json!({
            "name": rel.name,
            "infohash": rel.info_hash.to_string(),
            "magnet": rel.magnet(),
            "torrent": out,
            "piece_length": rel.piece_length,
            "pieces": rel.piece_count(),
            "total_bytes": rel.total_length,
            "files": rel.visible_entries().count(),
            "private": rel.private,
        });
        if let Some(d) = delta {
            v["delta"] = serde_json::to_value(d)?;
        }
        if let Some((key, seq)) = rel.signature.as_ref().and_then(|s| s.claimed()) {
            v["signed_by"] = key.to_string().into();
            v["seq"] = seq.into();
        }
        writeln!(stdout, "{v}")?;
    } else {
        writeln!(stdout, "{}", rel.info_hash)?;
        writeln!(stdout, "{}", rel.magnet())?;
        eprintln!(
            "published {}: {} entries, {} bytes in {} pieces of {} KiB -> {}",
            rel.name,
            rel.visible_entries().count(),
            rel.total_length,
            rel.piece_count(),
            rel.piece_length / 1024,
            out.display()
        );
        if let Some((key, seq)) = rel.signature.as_ref().and_then(|s| s.claimed()) {
            eprintln!("signed by {key}, sequence {seq}");
        }
        if let Some(d) = delta {
            eprintln!(
                "against the base {}: {} of {} pieces new ({} bytes); files: {} unchanged, \
                 {} changed, {} added, {} removed ({} bytes changed or added){}",
                d.base,
                d.pieces_new,
                d.pieces,
                d.bytes_new,
                d.files_unchanged,
                d.files_changed,
                d.files_added,
                d.files_removed,
                d.bytes_changed,
                if d.repacked {
                    "; small files repacked (the holes passed a tenth of them)".to_string()
                } else if d.hole_bytes > 0 {
                    format!("; {} bytes of padding where small files were", d.hole_bytes)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// The published directory is never modified: refuse an output path inside it.
fn refuse_inside(out: &Path, dir: &Path) -> Result<()> {
    let dir = std::fs::canonicalize(dir)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("the directory of --out {} does not exist", out.display()))?;
    if parent.starts_with(&dir) {
        bail!(
            "refusing to write {} inside the release directory {}: pass --out with a path outside it",
            out.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash never leaves half a torrent.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
