//! The fleet, on one machine and without root: a seeder and N hosts in one process, each
//! host a real swarm member (its own librqbit session, cache and piece picker) with its own
//! loopback address (127.1.x.y; the origin is 127.0.0.1), links shaped by librqbit's rate
//! limits. The hosts find each other only through opentracker, started here (`--tracker 0`
//! hands every host the others' addresses instead), each with the connection limit a
//! production host has (`--max-peers`, swarmfs's default). Tracks the figures of
//! ../shared/bench/fleet.sh between changes and reaches past its 32 hosts, without
//! namespaces or FUSE:
//!
//!     cargo run --release --example fleet_local -- --hosts 4 --size-mb 64 --rate-mbit 100
//!     cargo run --release --example fleet_local -- --hosts 256 --size-mb 4 --rate-mbit 4
//!
//! `--profile 1` gives every host the start-up set as its boot profile.
//!
//! Each host reads a start-up set (the first eighth of `bin/appserver` front to back,
//! the head of every library, a fifth of the small files and 16 page faults in the
//! binary, in a fixed order) through the same calls the FUSE adapter makes, then waits
//! until every piece is local. Prints one JSON line:
//! `boot_s`/`full_s` per host, their median, 99th percentile and maximum, the lower bounds
//! (bytes / rate), the origin's bytes sent over the release size, the most any host
//! received over the release size, CPU seconds per GB received and the process's peak RSS
//! (all hosts).

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
    /// Find peers through opentracker (else every host is given every address).
    tracker: bool,
    max_peers: usize,
    /// The origin's `seed --max-peers`.
    origin_max_peers: usize,
    /// Piece size in KiB (0: publish's default).
    piece_kb: u64,
    /// Small files in the sample (0: the sample's default). Each host keeps every cache
    /// file it wrote open: 256 hosts of the default 64 exhaust a 20,000-descriptor limit.
    small_files: usize,
    /// Hosts per rack (0: one flat network). Rack `r`'s hosts are 127.1.r.x: a rack is a
    /// /24, which `mount --local-net auto` takes as the neighbours.
    rack_size: usize,
    /// `mount --local-net` (auto, off); default: auto in racks, off when flat.
    local_net: swarmfs::swarm::LocalNet,
}

fn args() -> Args {
    let mut a = Args {
        hosts: 4,
        size_mb: 64,
        rate_mbit: 100,
        profile: false,
        tracker: true,
        max_peers: swarmfs::swarm::MOUNT_MAX_PEERS.into(),
        origin_max_peers: swarmfs::swarm::DEFAULT_MAX_PEERS.into(),
        piece_kb: 0,
        small_files: 0,
        rack_size: 0,
        local_net: swarmfs::swarm::LocalNet::Off,
    };
    let mut local_net = None;
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let n = w.get(1).and_then(|s| s.parse().ok());
        match (w[0].as_str(), n) {
            ("--hosts", Some(n)) => a.hosts = n as usize,
            ("--size-mb", Some(n)) => a.size_mb = n,
            ("--rate-mbit", Some(n)) => a.rate_mbit = n,
            ("--profile", Some(n)) => a.profile = n != 0,
            ("--tracker", Some(n)) => a.tracker = n != 0,
            ("--max-peers", Some(n)) if n > 0 => a.max_peers = n as usize,
            ("--origin-max-peers", Some(n)) if n > 0 => a.origin_max_peers = n as usize,
            ("--piece-kb", Some(n)) => a.piece_kb = n,
            ("--small-files", Some(n)) => a.small_files = n as usize,
            ("--rack-size", Some(n)) if n < 255 => a.rack_size = n as usize,
            ("--local-net", _)
                if w.len() == 2 && w[1].parse::<swarmfs::swarm::LocalNet>().is_ok() =>
            {
                local_net = w[1].parse().ok()
            }
            _ => {
                eprintln!(
                    "usage: fleet_local [--hosts N] [--size-mb MB] [--rate-mbit MBIT] [--profile 0|1] \
                     [--tracker 0|1] [--max-peers N] [--origin-max-peers N] [--piece-kb KB] \
                     [--small-files N] [--rack-size N (< 255)] [--local-net auto|off|CIDR]"
                );
                std::process::exit(2);
            }
        }
    }
    a.local_net = local_net.unwrap_or(if a.rack_size > 0 {
        swarmfs::swarm::LocalNet::Auto
    } else {
        swarmfs::swarm::LocalNet::Off
    });
    a
}

/// Host `h`'s own loopback address (Linux routes all of 127.0.0.0/8 to `lo`): peers tell
/// hosts apart by address, as the picker's per-piece host order does.
/// In racks (`rack_size` > 0), rack `r`'s hosts are 127.1.r.1, 127.1.r.2, ...
fn host_ip(h: usize, rack_size: usize) -> std::net::IpAddr {
    if rack_size > 0 {
        let (r, i) = (h / rack_size, h % rack_size);
        return std::net::Ipv4Addr::new(127, 1, r as u8, i as u8 + 1).into();
    }
    let n = h as u32 + 1;
    std::net::Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8).into()
}

/// The rack of an address made by `host_ip` (the origin, 127.0.0.1, is in none).
fn rack_of(ip: std::net::IpAddr) -> Option<u8> {
    match ip {
        std::net::IpAddr::V4(v4) if v4.octets()[1] == 1 => Some(v4.octets()[2]),
        _ => None,
    }
}

/// opentracker on 127.0.0.1, serving only `info_hash`; killed on drop.
struct Tracker(std::process::Child, String);

impl Tracker {
    fn start(dir: &std::path::Path, info_hash: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("whitelist"), format!("{info_hash}\n"))?;
        let port = free_addr(std::net::Ipv4Addr::LOCALHOST.into())
            .port()
            .to_string();
        let child = std::process::Command::new("opentracker")
            .current_dir(dir)
            .args(["-i", "127.0.0.1", "-p", &port, "-P", &port, "-d"])
            .arg(dir)
            .args(["-w", "whitelist"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start opentracker (apt install opentracker, or --tracker 0)")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "opentracker did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self(child, format!("http://{addr}/announce")))
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr(ip: std::net::IpAddr) -> SocketAddr {
    loop {
        let t = std::net::TcpListener::bind((ip, 0)).unwrap();
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
        // What the FUSE adapter does: the read claims its pieces, a file read in pages
        // is fetched whole soon, read-ahead for sequential readers is asked for, then
        // the read waits.
        let own = pieces_of(&r, (e, off, len));
        let claim = f.claim(own.clone());
        let access = ra.on_read(e as u64, off, len);
        f.fetch_paged(e, access);
        let window = access.window;
        if window > 0 {
            let end = (off + len + window).min(r.entries[e].length);
            let ahead = pieces_of(&r, (e, off + len, end.saturating_sub(off + len)));
            let ahead = ahead.start.max(own.end)..ahead.end;
            if !ahead.is_empty() {
                f.fetch_ahead(ahead);
            }
        }
        let t = Instant::now();
        f.fetch(e, off, own.clone(), claim).await.expect("fetch");
        if t.elapsed() > Duration::from_secs(2) {
            eprintln!("slow read: pieces {own:?} took {:?}", t.elapsed());
        }
    }
    let boot = t0.elapsed().as_secs_f64();
    eprintln!("booted in {boot:.2} s");
    let mut rx = f.pieces().subscribe();
    let mut last_report = Instant::now();
    while !f.pieces().complete() {
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        // A host that waits long says for what (a stalled swarm shows here).
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            let p = f.pieces();
            let missing: Vec<u64> = (0..p.total()).filter(|&i| !p.has(i)).take(8).collect();
            let s = f.stats();
            eprintln!(
                "host {:?} at {:.0} s: {} of {} pieces, missing {missing:?}..., {} peers, state {}",
                f.listen_addr(),
                t0.elapsed().as_secs_f64(),
                p.present(),
                p.total(),
                s.live_peers,
                s.state
            );
            for &i in missing.iter().take(2) {
                eprintln!("  {}", f.describe_piece(i as u32));
            }
        }
    }
    (boot, t0.elapsed().as_secs_f64())
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    // Every host's sockets and cache files are this one process's: a production host has
    // its own limit. 256 hosts hold about 30,000 descriptors.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let hard = lim.rlim_max;
            // Root may raise the hard limit too; others get theirs.
            lim.rlim_cur = hard.max(1 << 18);
            lim.rlim_max = lim.rlim_cur;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = hard;
                lim.rlim_max = hard;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
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
            small_files: match a.small_files {
                0 => (a.size_mb as usize * 8).max(64),
                n => n,
            },
            seed: 1,
        },
    )?;
    let opts = PublishOptions {
        name: None,
        piece_length: a.piece_kb << 10, // 0: publish's default
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
    let tracker = if a.tracker {
        Some(Tracker::start(
            &t.path().join("tracker"),
            &release.info_hash.to_string(),
        )?)
    } else {
        None
    };
    let swarm_opts = |listen: SocketAddr, peers: Vec<SocketAddr>, max_peers| SwarmOptions {
        listen: Some(listen),
        trackers: tracker.iter().map(|t| t.1.clone()).collect(),
        peers,
        dht: false,
        lsd: false,
        upload_limit_bps: rate,
        download_limit_bps: rate,
        announce_interval: Duration::from_secs(5),
        allow_peers: None,
        max_peers,
        local_net: a.local_net.clone(),
    };

    let origin_addr = free_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let origin = Seeder::start(
        release.clone(),
        dir.clone(),
        &swarm_opts(origin_addr, vec![], a.origin_max_peers),
    )
    .await?;
    // Every host starts at t0, as the fleet benchmark's mounts do: joining the swarm is
    // part of a host's time, and no host prefetches before the others start.
    let hosts: Vec<SocketAddr> = (0..a.hosts)
        .map(|h| free_addr(host_ip(h, a.rack_size)))
        .collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(h, &listen)| {
            let mut peers = Vec::new();
            if tracker.is_none() {
                peers.push(origin_addr);
                peers.extend(hosts.iter().filter(|&&p| p != listen));
            }
            let opts = swarm_opts(listen, peers, a.max_peers);
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
    // Racks: the bytes each rack's hosts received from outside it (its uplink's inbound
    // side, the origin's bytes included), in release copies.
    let mut rack_in: std::collections::BTreeMap<u8, f64> = Default::default();
    let mut near_bytes = 0.0;
    // Every byte that came in, by peer, and of it what was not used (the piece done or
    // taken from another peer meanwhile, the chunk come already, its request cancelled
    // too late), in all and from the origin.
    let (mut arrived, mut discarded, mut from_origin, mut origin_discarded) = (0.0, 0.0, 0.0, 0.0);
    for (h, (f, _)) in fetchers.iter().enumerate() {
        let mine = rack_of(host_ip(h, a.rack_size));
        for p in f.downloaded_by_peer() {
            let (peer, n) = (p.addr, p.bytes as f64);
            arrived += n;
            discarded += p.discarded as f64;
            if peer == origin_addr {
                from_origin += n;
                origin_discarded += p.discarded as f64;
            }
            if a.rack_size == 0 {
                continue;
            }
            if rack_of(peer.ip()) == mine {
                near_bytes += n;
            } else {
                *rack_in.entry(mine.unwrap_or(0)).or_default() += n / size;
            }
        }
    }
    let rack_in: Vec<f64> = rack_in.into_values().map(round).collect();
    let usage = swarmfs::mount::usage::usage();
    let line = serde_json::json!({
        "bench": "fleet_local",
        "hosts": a.hosts,
        "size_bytes": release.total_length,
        "rate_mbit": a.rate_mbit,
        "files": release.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).count(),
        "piece_bytes": release.piece_length,
        "tracker": a.tracker,
        "max_peers": a.max_peers,
        "origin_max_peers": a.origin_max_peers,
        "boot_profile": a.profile,
        "rack_size": a.rack_size,
        "local_net": format!("{:?}", a.local_net).to_lowercase(),
        "rack_in_copies": rack_in,
        "rack_in_copies_median": median(&rack_in),
        "rack_in_copies_max": rack_in.iter().cloned().fold(0.0, f64::max),
        "in_rack_share": round(near_bytes / arrived.max(1.0)),
        // Copies of the release the hosts got from the origin, and of those the copies
        // not used; of all the bytes that arrived, the share not used.
        "from_origin_copies": round(from_origin / size),
        "origin_discarded_copies": round(origin_discarded / size),
        "discarded_share": round(discarded / arrived.max(1.0)),
        "boot_reads": reads.len(),
        "boot_piece_bytes": boot_bytes,
        "boot_s": boot,
        "boot_median_s": median(&boot),
        "boot_p99_s": quantile(&boot, 0.99),
        "full_s": full,
        "full_median_s": median(&full),
        "full_p99_s": quantile(&full, 0.99),
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
