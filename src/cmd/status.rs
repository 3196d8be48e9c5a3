//! `swarmfs status [MNT]`: how far a mount is.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::mount::control::{self, Status};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A swarmfs mountpoint; without it, every swarmfs mount on this host, a line each.
    pub mountpoint: Option<PathBuf>,
    /// Print JSON (one object per mount, a line each).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> Result<()> {
    let mnts: Vec<PathBuf> = match &args.mountpoint {
        Some(m) => vec![std::path::absolute(m)?],
        None => crate::mount::table::mounts()?
            .into_iter()
            .filter(|m| m.is_swarmfs())
            .map(|m| m.mountpoint)
            .collect(),
    };
    let mut first_err = None;
    for mnt in mnts {
        let r = control::request(&mnt, "status", &[], None, |s| {
            print(s, args.json);
            false
        });
        if let Err(e) = r {
            if args.mountpoint.is_some() {
                return Err(e.into());
            }
            println!("{}\tNOT ANSWERING\t{e}", mnt.display());
            first_err.get_or_insert(e);
        }
    }
    Ok(())
}

fn print(s: &Status, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("serialisable"));
        return;
    }
    println!(
        "{}\t{} ({})\t{}/{} bytes ({:.0}%){}{}\tdownloaded {}{} reused {}{}\tpeers {}{}\tdown {:.1} MiB/s up {:.1} MiB/s\tuploaded {}\treads {} cached {} swarm\ttimeouts {} errors {} hash failures {}\tcpu {:.1} s rss {} MiB\tcache {}",
        s.mountpoint.display(),
        s.name,
        s.infohash,
        s.present_bytes,
        s.total_bytes,
        100.0 * s.present_bytes as f64 / s.total_bytes.max(1) as f64,
        if s.complete { " complete" } else { "" },
        match (s.boot_pieces_present, s.boot_pieces_total) {
            (Some(h), Some(t)) => format!(
                ", boot profile {h}/{t} pieces ({})",
                s.boot_profile.as_deref().unwrap_or("given")
            ),
            _ => String::new(),
        } + &match (s.recorded_reads, s.recording) {
            (Some(n), true) => format!(", recording the start-up ({n} reads)"),
            (Some(n), false) => format!(", start-up recorded ({n} reads)"),
            _ => String::new(),
        },
        s.downloaded_bytes,
        match s.downloaded_near_bytes {
            0 => String::new(),
            n => format!(" ({n} from neighbours)"),
        },
        s.reused_bytes,
        if s.reuse_running { " (rebuilding)" } else { "" },
        s.peers,
        match s.peers_refused_incoming + s.peers_refused_outgoing {
            0 => String::new(),
            _ => format!(
                " (refused by --allow-peers: {} incoming, {} not dialled)",
                s.peers_refused_incoming, s.peers_refused_outgoing
            ),
        } + &match s.peers_over_limit {
            0 => String::new(),
            n => format!(" ({n} refused at --max-peers)"),
        },
        s.download_bps / 1048576.0,
        s.upload_bps / 1048576.0,
        s.uploaded_bytes,
        s.cached_reads,
        s.swarm_reads,
        s.read_timeouts,
        s.read_errors,
        s.hash_failures,
        s.cpu_seconds,
        s.peak_rss_bytes >> 20,
        s.cache_dir.display()
    );
}
