//! The fleet, on one machine and without root: a seeder and N hosts on 127.0.0.1 in one
//! process, each host a real swarm member (its own librqbit session, cache and piece
//! picker), links shaped by librqbit's rate limits. Tracks the figures of
//! ../shared/bench/fleet.sh between changes, without namespaces or FUSE:
//!
//!     cargo run --release --example fleet_local -- --hosts 4 --size-mb 64 --rate-mbit 100
//!
//! `--profile 1` gives every host the start-up set as its boot profile.
//!
//! Each host reads a start-up set (the first eighth of `bin/appserver` front to back,
//! the head of every library, a fifth of the small files and 16 page faults in the
//! binary, in a fixed order) through the same calls the FUSE adapter makes, then waits
//! until every piece is local. Prints one JSON line:
//! `boot_s`/`full_s` per host, medians and maxima, the lower bounds (bytes / rate), the
//! origin's bytes sent over the release size, the most any host received over the
//! release size, CPU seconds per GB received and the process's peak RSS (all hosts).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmfs::fs::readahead::Readahead;
use swarmfs::mount::profile::BootProfile;
use swarmfs::mount::store::Store;
use swarmfs::release::{publish, EntryKind, PublishOptions, Release};
use swarmfs::sample::{write_sample, SampleSpec};
use swarmfs::swarm::{Fetcher, Seeder, SwarmOptions};

struct Args {
    hosts: usize,
    size_mb: u64,
    rate_mbit: u64,
    /// Mount with the start-up set as a boot profile (`mount --boot-profile`).
    profile: bool,
}

fn args() -> Args {
    let mut a = Args {
        hosts: 4,
        size_mb: 64,
        rate_mbit: 100,
        profile: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let n = w.get(1).and_then(|s| s.parse().ok());
        match (w[0].as_str(), n) {
            ("--hosts", Some(n)) => a.hosts = n as usize,
            ("--size-mb", Some(n)) => a.size_mb = n,
            ("--rate-mbit", Some(n)) => a.rate_mbit = n,
            ("--profile", Some(n)) => a.profile = n != 0,
            _ => {
                eprintln!(
                    "usage: fleet_local [--hosts N] [--size-mb MB] [--rate-mbit MBIT] [--profile 0|1]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn free_addr() -> SocketAddr {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = t.local_addr().unwrap();
        if std::net::UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
}

/// One read of the start-up set: entry, offset, length.
type Read = (usize, u64, u64);

/// The start-up set, in read order (deterministic for a release).
fn boot_set(r: &Release) -> Vec<Read> {
    let find = |p: &str| {
        r.entries
            .iter()
            .position(|e| e.path.join("/") == p)
            .unwrap_or_else(|| panic!("{p} not in the sample"))
    };
    let bin = find("bin/appserver");
    let bin_len = r.entries[bin].length;
    let mut reads = Vec::new();
    let prefix = bin_len / 8;
    let mut off = 0;
    while off < prefix {
        reads.push((bin, off, (128 << 10).min(prefix - off)));
        off += 128 << 10;
    }
    let mut small = Vec::new();
    for (i, e) in r.entries.iter().enumerate() {
        if !matches!(e.kind, EntryKind::File { .. }) || e.length == 0 {
            continue;
        }
        let path = e.path.join("/");
        if path.starts_with("lib/") {
            reads.push((i, 0, e.length.min(256 << 10)));
        } else if path.ends_with(".txt") || path.starts_with("config/") {
            small.push(i);
        }
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut faults = 16;
    for i in small {
        if next() % 5 == 0 {
            reads.push((i, 0, r.entries[i].length));
        }
        if faults > 0 && next() % 8 == 0 {
            let off = (next() % (bin_len - (64 << 10))) & !0xfff;
            reads.push((bin, off, 64 << 10));
            faults -= 1;
        }
    }
    reads
}

fn pieces_of(r: &Release, (e, off, len): Read) -> std::ops::Range<u64> {
    let start = r.entries[e].offset + off;
    start / r.piece_length..(start + len).div_ceil(r.piece_length)
}

/// What one host does: the start-up reads, then waits for every piece. (boot, full) s.
async fn host(f: Arc<Fetcher>, r: Arc<Release>, reads: Arc<Vec<Read>>, t0: Instant) -> (f64, f64) {
    let ra = Readahead::default();
    for &(e, off, len) in reads.iter() {
        // What the FUSE adapter does: read-ahead for sequential readers, then the read.
        let window = ra.on_read(e as u64, off, len);
        let own = pieces_of(&r, (e, off, len));
        if window > 0 {
            let end = (off + len + window).min(r.entries[e].length);
            let ahead = pieces_of(&r, (e, off + len, end.saturating_sub(off + len)));
            let ahead = ahead.start.max(own.end)..ahead.end;
            if !ahead.is_empty() {
                f.fetch_ahead(ahead);
            }
        }
        let t = Instant::now();
        f.fetch(e, off, own.clone()).await.expect("fetch");
        if t.elapsed() > Duration::from_secs(2) {
            eprintln!("slow read: pieces {own:?} took {:?}", t.elapsed());
        }
    }
    let boot = t0.elapsed().as_secs_f64();
    eprintln!("booted in {boot:.2} s");
    let mut rx = f.pieces().subscribe();
    while !f.pieces().complete() {
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
    }
    (boot, t0.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let t = tempfile::tempdir()?;
    let dir = t.path().join("rel");
    write_sample(
        &dir,
        &SampleSpec {
            size: a.size_mb << 20,
            small_files: (a.size_mb as usize * 8).max(64),
            seed: 1,
        },
    )?;
    let opts = PublishOptions {
        name: None,
        piece_length: 0, // publish's default
        trackers: vec![],
        comment: None,
        creation_date: None,
        private: false,
        base: None,
        boot_profile: None,
    };
    let release = Arc::new(publish(&dir, &opts, &|_| {})?.release);
    eprintln!(
        "published {} bytes in {} pieces",
        release.total_length,
        release.piece_count()
    );
    let reads = Arc::new(boot_set(&release));
    // The start-up set as a boot profile, through the profile's own parser.
    let boot_pieces = if a.profile {
        let text: String = reads
            .iter()
            .map(|&(e, off, len)| format!("{}\t{off}\t{len}\n", release.entries[e].display_path()))
            .collect();
        BootProfile::parse(&text, std::path::Path::new("start-up set"))?
            .pieces(&release)
            .pieces
    } else {
        Vec::new()
    };
    let rate = NonZeroU32::new((a.rate_mbit * 125_000) as u32);
    let swarm_opts = |listen: SocketAddr, peers: Vec<SocketAddr>| SwarmOptions {
        listen: Some(listen),
        trackers: vec![],
        peers,
        dht: false,
        lsd: false,
        upload_limit_bps: rate,
        download_limit_bps: rate,
        announce_interval: Duration::from_secs(5),
        allow_peers: None,
    };

    let origin_addr = free_addr();
    let origin = Seeder::start(
        release.clone(),
        dir.clone(),
        &swarm_opts(origin_addr, vec![]),
    )
    .await?;
    // Every host starts at t0, as the fleet benchmark's mounts do: joining the swarm is
    // part of a host's time, and no host prefetches before the others start.
    let hosts: Vec<SocketAddr> = (0..a.hosts).map(|_| free_addr()).collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(h, &listen)| {
            let mut peers = vec![origin_addr];
            peers.extend(hosts.iter().filter(|&&p| p != listen));
            let opts = swarm_opts(listen, peers);
            let cache = t.path().join(format!("cache-{h}"));
            let (release, reads, boot_pieces) =
                (release.clone(), reads.clone(), boot_pieces.clone());
            tokio::spawn(async move {
                let store = Store::open(&cache, release.clone())?;
                let f = Fetcher::start(
                    release.clone(),
                    store.data_dir(),
                    store.pieces().clone(),
                    &opts,
                    true,
                    &boot_pieces,
                    None,
                    Default::default(),
                )
                .await?;
                let (b, full) = host(f.clone(), release, reads, t0).await;
                anyhow::Ok((f, store, b, full))
            })
        })
        .collect();
    let mut boot = Vec::new();
    let mut full = Vec::new();
    let mut fetchers = Vec::new();
    for task in tasks {
        let (f, store, b, fl) = task.await??;
        boot.push(round(b));
        full.push(round(fl));
        fetchers.push((f, store));
    }
    let size = release.total_length as f64;
    let received: Vec<f64> = fetchers
        .iter()
        .map(|(f, _)| f.stats().downloaded_bytes as f64)
        .collect();
    let boot_bytes: u64 = {
        let mut seen = std::collections::BTreeSet::new();
        for &r in reads.iter() {
            seen.extend(pieces_of(&release, r));
        }
        seen.len() as u64 * release.piece_length
    };
    let bps = (a.rate_mbit * 125_000) as f64;
    let usage = swarmfs::mount::usage::usage();
    let line = serde_json::json!({
        "bench": "fleet_local",
        "hosts": a.hosts,
        "size_bytes": release.total_length,
        "rate_mbit": a.rate_mbit,
        "boot_profile": a.profile,
        "boot_reads": reads.len(),
        "boot_piece_bytes": boot_bytes,
        "boot_s": boot,
        "boot_median_s": median(&boot),
        "full_s": full,
        "full_max_s": full.iter().cloned().fold(0.0, f64::max),
        "lb_boot_s": round(boot_bytes as f64 / bps),
        "lb_full_s": round(size / bps),
        "origin_tx_ratio": round(origin.stats().uploaded_bytes as f64 / size),
        "received_ratio_max": round(received.iter().cloned().fold(0.0, f64::max) / size),
        "cpu_s_per_gb": swarmfs::mount::usage::cpu_per_gb(&usage, received.iter().sum::<f64>() as u64).map(round),
        "peak_rss_mib_all_hosts": usage.peak_rss_bytes >> 20,
    });
    println!("{line}");
    for (f, _) in &fetchers {
        f.shutdown().await;
    }
    origin.shutdown().await;
    Ok(())
}
