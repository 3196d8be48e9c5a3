//! `swarmfs prewarm MNT`: fetch every remaining piece; return once all are local.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::mount::control;

#[derive(Debug, Args)]
pub struct PrewarmArgs {
    /// The mountpoint of a swarmfs mount.
    pub mountpoint: PathBuf,
    /// Only the files matching this glob (repeatable): `bin/**`, `lib/*.so`. `*` does not
    /// cross `/`; `**` does.
    #[arg(long = "paths", value_name = "GLOB")]
    pub paths: Vec<String>,
    /// Give up after this long (exit code 5), saying how far it got (e.g. 10m).
    #[arg(long, value_parser = super::parse_duration)]
    pub timeout: Option<Duration>,
    /// Give up (exit code 6) when no peer has been connected and nothing has arrived for this long.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    pub no_peer_timeout: Duration,
}

/// Prewarm saw no peer and no progress for `--no-peer-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("prewarm of {mnt}: no peer reachable for {secs} s ({present} of {total} bytes local); check the trackers, --peer addresses and the network")]
pub struct NoPeer {
    pub mnt: PathBuf,
    pub secs: u64,
    pub present: u64,
    pub total: u64,
}

/// Prewarm did not finish within `--timeout`.
#[derive(Debug, thiserror::Error)]
#[error("prewarm of {mnt} timed out after {secs} s with {present} of {total} bytes local")]
pub struct TimedOut {
    pub mnt: PathBuf,
    pub secs: u64,
    pub present: u64,
    pub total: u64,
}

pub fn run(args: PrewarmArgs) -> Result<()> {
    let mnt = std::path::absolute(&args.mountpoint)?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let bar = super::ByteProgress::new("prewarm", None);
    let mut last_log = Instant::now() - Duration::from_secs(60);
    let mut last = None;
    let mut timed_out = false;
    let mut no_peer = false;
    let mut stalled_since = Instant::now();
    let mut last_have = u64::MAX;
    control::request(&mnt, "prewarm", &args.paths, None, |s| {
        let (have, want) = (
            s.prewarm_present_bytes.unwrap_or(s.present_bytes),
            s.prewarm_total_bytes.unwrap_or(s.total_bytes),
        );
        let sources = format!(
            "{} peers, {} downloaded, {} reused from the cache",
            s.peers,
            indicatif::HumanBytes(s.downloaded_bytes),
            indicatif::HumanBytes(s.reused_bytes)
        );
        if tty {
            bar.set(have, want, &sources);
        } else if last_log.elapsed() >= Duration::from_secs(5) || have == want {
            eprintln!(
                "prewarm {}: {have}/{want} bytes ({:.0}%), {:.1} MiB/s, {sources}",
                s.name,
                100.0 * have as f64 / want.max(1) as f64,
                s.download_bps / 1048576.0,
            );
            last_log = Instant::now();
        }
        last = Some(s.clone());
        if have != last_have || s.peers > 0 {
            stalled_since = Instant::now();
            last_have = have;
        } else if stalled_since.elapsed() >= args.no_peer_timeout {
            no_peer = true;
            return false;
        }
        if let Some(t) = args.timeout {
            if started.elapsed() >= t && have != want {
                timed_out = true;
                return false;
            }
        }
        true
    })?;
    bar.finish();
    let s = last.ok_or_else(|| anyhow::anyhow!("the mount sent no status"))?;
    let (have, want) = (
        s.prewarm_present_bytes.unwrap_or(s.present_bytes),
        s.prewarm_total_bytes.unwrap_or(s.total_bytes),
    );
    if no_peer {
        return Err(NoPeer {
            mnt,
            secs: args.no_peer_timeout.as_secs(),
            present: have,
            total: want,
        }
        .into());
    }
    if timed_out || have != want {
        return Err(TimedOut {
            mnt,
            secs: started.elapsed().as_secs(),
            present: have,
            total: want,
        }
        .into());
    }
    eprintln!(
        "{}: all {want} bytes{} local and verified ({:.1} s; {} downloaded, {} reused from other releases in the cache)",
        s.name,
        if args.paths.is_empty() {
            ""
        } else {
            " of the matching files"
        },
        started.elapsed().as_secs_f64(),
        s.downloaded_bytes,
        s.reused_bytes
    );
    Ok(())
}
