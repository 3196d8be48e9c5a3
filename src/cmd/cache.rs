//! `swarmfs cache`: what the cache directory holds, and removing releases from it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::mount::cache::{self, Budget};

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The cache directory (as given to `swarmfs mount --cache-dir`).
    #[arg(long, default_value = "/var/cache/swarmfs", global = true)]
    pub cache_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<CacheCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached releases, least recently mounted first (the default).
    List {
        /// One JSON object per release, a line each.
        #[arg(long)]
        json: bool,
    },
    /// Remove releases (by infohash) that are not mounted.
    Remove {
        #[arg(required = true, value_name = "INFOHASH")]
        infohashes: Vec<String>,
    },
    /// Remove releases, least recently mounted first, until the cache holds at most SIZE
    /// (e.g. 20G); mounted ones stay.
    Prune {
        #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
        max_size: u64,
    },
}

pub fn run(args: CacheArgs) -> Result<()> {
    let dir = &args.cache_dir;
    match args.command.unwrap_or(CacheCommand::List { json: false }) {
        CacheCommand::List { json } => {
            let entries = cache::list(dir)?;
            if json {
                for c in &entries {
                    println!("{}", serde_json::to_string(c)?);
                }
                return Ok(());
            }
            if entries.is_empty() {
                eprintln!("{}: no release cached", dir.display());
                return Ok(());
            }
            println!("INFOHASH\tNAME\tON DISK\tOF\tLAST MOUNTED\tMOUNTED");
            for c in &entries {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    c.infohash,
                    c.name.as_deref().unwrap_or("?"),
                    indicatif::HumanBytes(c.bytes),
                    c.total_bytes
                        .map_or("?".into(), |t| indicatif::HumanBytes(t).to_string()),
                    ago(c.last_used),
                    if c.mounted { "yes" } else { "no" }
                );
            }
            let total: u64 = entries.iter().map(|c| c.bytes).sum();
            eprintln!(
                "{} releases, {} on disk in {}",
                entries.len(),
                indicatif::HumanBytes(total),
                dir.display()
            );
        }
        CacheCommand::Remove { infohashes } => {
            for ih in infohashes {
                let freed = cache::remove(dir, &ih)
                    .with_context(|| format!("cannot remove {ih} from {}", dir.display()))?;
                eprintln!("removed {ih} ({} freed)", indicatif::HumanBytes(freed));
            }
        }
        CacheCommand::Prune { max_size } => {
            let removed = cache::evict(dir, &cache::scan(dir)?, Budget::Bytes(max_size), 0, &[])?;
            for c in &removed {
                eprintln!(
                    "removed {} ({}, {})",
                    c.infohash,
                    c.name.as_deref().unwrap_or("?"),
                    indicatif::HumanBytes(c.bytes)
                );
            }
            let left: u64 = cache::list(dir)?.iter().map(|c| c.bytes).sum();
            eprintln!(
                "{} releases removed; {} left in {}{}",
                removed.len(),
                indicatif::HumanBytes(left),
                dir.display(),
                if left > max_size {
                    " (more than asked: the rest is mounted)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// "3 h ago" for a time in seconds since the epoch.
fn ago(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = now.saturating_sub(secs);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}
