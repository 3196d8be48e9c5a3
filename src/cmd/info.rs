//! `swarmfs info SOURCE`: what a torrent, magnet link or infohash names, without mounting.

use anyhow::{Context, Result};
use clap::Args;

use crate::release::{InfoHash, Release};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A .torrent file, a magnet link or a 40-hex infohash.
    pub source: String,
    /// Print one JSON object (name, infohash, sizes, files) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let src = args.source.trim();
    if let Some(ih) = infohash_of_link(src) {
        if args.json {
            println!("{}", serde_json::json!({ "infohash": ih.to_string() }));
        } else {
            println!("{ih}");
        }
        return Ok(());
    }
    let bytes = std::fs::read(src).with_context(|| format!("cannot read the torrent {src}"))?;
    let r =
        Release::from_torrent(&bytes).with_context(|| format!("{src} is not a usable torrent"))?;
    let signer = r.signature.as_ref().and_then(|s| s.claimed());
    if args.json {
        let files: Vec<_> = r
            .visible_entries()
            .map(|e| serde_json::json!({ "path": e.display_path(), "length": e.length }))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "name": r.name, "infohash": r.info_hash.to_string(), "magnet": r.magnet(),
                "total_bytes": r.total_length, "piece_length": r.piece_length,
                "pieces": r.piece_count(), "private": r.private, "trackers": r.trackers,
                "files": files,
                "signed_by": signer.map(|(k, _)| k.to_string()),
                "seq": signer.map(|(_, n)| n),
            })
        );
    } else {
        println!("{}", r.info_hash);
        eprintln!(
            "{}: {} files, {} bytes, {} pieces of {} KiB, trackers {:?}",
            r.name,
            r.visible_entries().count(),
            r.total_length,
            r.piece_count(),
            r.piece_length / 1024,
            r.trackers
        );
        match signer {
            Some((key, seq)) => {
                eprintln!("signed by {key}, sequence {seq} (as claimed: `mount --trust` checks it)")
            }
            None => eprintln!("not signed"),
        }
    }
    Ok(())
}

/// The infohash of a magnet link or a bare 40-hex infohash.
pub fn infohash_of_link(src: &str) -> Option<InfoHash> {
    if src.len() == 40 {
        return InfoHash::from_hex(src);
    }
    let u = url::Url::parse(src)
        .ok()
        .filter(|u| u.scheme() == "magnet")?;
    let (_, v) = u
        .query_pairs()
        .find(|(k, v)| k == "xt" && v.starts_with("urn:btih:"))?;
    InfoHash::from_hex(&v[9..])
}
