//! A fleet too large for one machine, modelled: a piece-level simulation of a release
//! spreading from one origin to N hosts, calibrated against fleets of the real code
//! (`examples/fleet_local`, up to 256 hosts here), then run at 1,000 to 100,000 hosts, flat
//! and in racks.
//!
//!     cargo run --release --example fleet_model -- --calibrate docs/scale/measured.jsonl \
//!         --svg docs/scale/model.svg
//!
//! The model, in slots of one piece time (a piece at a host's full rate): each slot every
//! host sends at most one piece and receives at most one (links are symmetric, rate r);
//! the origin sends `--origin-rate` pieces per slot (default 1, one host's link). Hosts know
//! `--max-peers` others (a random graph, as a tracker's random handout builds it; the
//! origin is known to the first `--max-peers` hosts to connect). The policy is swarmfs's
//! picker's ([`swarmfs::swarm::picker`]): the boot set first (every host reads the same
//! start-up pieces), each host in its own shuffled order, and while no free peer has its
//! next start-up piece, a background piece from its peers; then the rarest of the pieces
//! its peers offer, ties at random; a piece some peer has is never asked of the origin.
//! The origin serves pieces readers wait on first, other first copies before repeats, and
//! begins a repeat only `repeat_hold` after the piece's last copy began (a waited-on
//! piece's after `read_hold`), and a host that gets from a peer a piece it asked the
//! origin for cancels the request (`--repeat-hold 0`: the rules before, first come, first
//! served, and nothing cancelled; `--read-hold 0`: waited-on pieces never held).
//! Racks (`--rack 40`): a rack's uplink carries a quarter of its hosts' rate, each way;
//! with `--locality`, half of a host's peers are in its rack (swarmfs prefers peers in
//! its own subnet) and a piece is taken from a peer in the rack when one has it.
//!
//! Calibration: the measured fleets' full times come out of slots through two factors
//! fitted here, a pace (the real seconds a slot stands for, over a piece time) and a
//! start-up time (tracker, connections). A pace above 1 is time the real code loses
//! (request windows, chokes, hashing); below 1 is the model's own slack: a host receives
//! one whole piece a slot from one source, where a real one takes chunks from several
//! at once, and its origin idles while every host waits on the same start-up piece (the
//! `origin idle` column, in piece times per piece), where the real origin is kept busy
//! by the hosts' background requests. Each measured run is printed beside the model's,
//! with the error, the origin's copies and the boot median; the table then uses the fit.
//! The boot is not fitted: the model's hosts ask for four start-up pieces at once where
//! a real start-up reads one file after another.

use std::fmt::Write as _;

/// One run's shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    hosts: usize,
    pieces: usize,
    /// Pieces every host reads first (the boot set).
    boot: usize,
    max_peers: usize,
    /// Pieces the origin sends per slot.
    origin_rate: usize,
    /// Hosts per rack (0: flat).
    rack: usize,
    /// Half the peers in the rack, the rack's peers asked first.
    locality: bool,
    /// Hosts take the boot set in an order of their own (a boot profile, a shuffled
    /// tier); without one every host reads it in the same order, as its start-up does.
    profile: bool,
    /// Hosts the origin serves at once (`seed --max-peers`).
    origin_peers: usize,
    /// The picker's origin policy in slots ([`Policy::of`]).
    policy: Policy,
    /// What-if: the origin tells every host it serves which piece it is sending and to
    /// whom (a `swarmfs_fetching` notice from the origin, not only from the fetcher's
    /// peers), so a host holds back whoever fetches it. Not built; the model's question.
    origin_notices: bool,
    seed: u64,
}

/// swarmfs's picker's rules for the origin (src/swarm/picker.rs), in slots of one piece
/// time: its constants, divided by the piece time at the host's rate and stretched below
/// 100 Mbit/s as the picker stretches them.
#[derive(Clone, Copy, Debug)]
struct Policy {
    /// Pieces a host may have asked of the origin and not yet received (`SEEDER_WINDOW`).
    window: usize,
    /// A read does not ask the origin for a piece a peer said it is fetching from it for
    /// this long (`FETCHING_HOLDS_READS`), the background for this long (`FETCHING_HOLDS`).
    hold_reads: u32,
    hold_background: u32,
    /// A read's turn: this many slots per place in the piece's host order
    /// (`SEEDER_STAGGER`), at most `STAGGER_RANKS` places. The background takes no turns
    /// (`may_ask_seeder_in_background` outside a delta deploy).
    stagger: u32,
    /// The origin's hold on repeats (`picker::repeat_hold`): it serves first copies
    /// first and begins a repeat of a piece only this long after its last copy, while a
    /// host that asked it for a piece takes it from a peer that has it and cancels. 0:
    /// the rules before (first come, first served, no cancels).
    repeat_hold: u32,
    /// Its hold on repeats of a piece a reader waits on (`picker::read_repeat_hold`),
    /// which otherwise go first and unheld. 0: not held.
    read_hold: u32,
}

impl Policy {
    fn of(piece_bytes: f64, rate_bytes: f64) -> Policy {
        use swarmfs::swarm::picker as pk;
        let slowdown = (pk::REFERENCE_RATE as f64 / rate_bytes).max(1.0);
        let slot_s = piece_bytes / rate_bytes;
        let slots = |d: std::time::Duration| (d.as_secs_f64() * slowdown / slot_s).ceil() as u32;
        // The holds on another host's copy stretch as the picker's do (at most
        // `MAX_HOLD_STRETCH` times).
        let stretch = pk::hold_stretch(std::num::NonZeroU32::new(rate_bytes as u32)) as f64;
        let held = |d: std::time::Duration| (d.as_secs_f64() * stretch / slot_s).ceil() as u32;
        Policy {
            window: ((pk::SEEDER_WINDOW as f64 / slowdown).max(2.0) * 16384.0 / piece_bytes).ceil()
                as usize,
            hold_reads: held(pk::FETCHING_HOLDS_READS),
            hold_background: held(pk::FETCHING_HOLDS),
            stagger: slots(pk::SEEDER_STAGGER),
            // The seed's hold is its own (at most ten times the unlimited one).
            repeat_hold: (pk::repeat_hold(std::num::NonZeroU32::new(rate_bytes as u32))
                .as_secs_f64()
                / slot_s)
                .ceil() as u32,
            read_hold: (pk::read_repeat_hold(std::num::NonZeroU32::new(rate_bytes as u32))
                .as_secs_f64()
                / slot_s)
                .ceil() as u32,
        }
    }
}

/// A host's place in a piece's order among `others`: the picker's own `seeder_rank`,
/// host `h` standing at the IPv4 address `h`.
fn rank(piece: u32, me: u32, others: &[u32]) -> usize {
    let ip = |h: u32| std::net::IpAddr::from(std::net::Ipv4Addr::from(h));
    let others: Vec<std::net::IpAddr> = others.iter().map(|&h| ip(h)).collect();
    swarmfs::swarm::picker::seeder_rank(piece, ip(me), &others)
}

/// What one run gives, in slots.
#[derive(Debug, Default)]
struct Outcome {
    /// Slot at which each host held every piece.
    full: Vec<u32>,
    /// Slot at which each host held its boot set.
    boot: Vec<u32>,
    origin_pieces: u64,
    /// Slots in which the origin had nothing asked of it to send, before the last host was
    /// complete (the model's own diagnostic: time lost at the bottleneck).
    origin_idle: u64,
    /// Pieces that crossed a rack uplink.
    cross_rack: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Missing pieces a host tries, at random, for one a free peer has, each slot past its
/// start-up. The code asks every connection with room in its window for the rarest piece
/// that peer has, so a host idles only when no free peer has anything it lacks; with 6
/// tries, 60% of the model's idle host-slots had such a peer (1,000 hosts), with 12, 35%
/// (more tries cost time: 10,000 hosts in racks take minutes).
const TRIES: usize = 12;

/// The peers of each host: a random graph of degree up to `max_peers` (each host dials
/// random others until its slots are full or the others it tries are, as librqbit dials
/// every address a tracker hands out up to its peer limit), half of them in the host's
/// rack with locality.
fn graph(s: &Shape, rng: &mut Rng) -> Vec<Vec<u32>> {
    let n = s.hosts;
    let mut peers: Vec<Vec<u32>> = vec![Vec::new(); n];
    let want = s.max_peers.min(n - 1);
    for h in 0..n {
        let mut tries = 0;
        while peers[h].len() < want && tries < 4 * want + 16 {
            tries += 1;
            let same_rack = s.locality && s.rack > 1 && peers[h].len() % 2 == 0;
            let o = if same_rack {
                let base = h / s.rack * s.rack;
                let size = s.rack.min(n - base);
                base + rng.below(size)
            } else {
                rng.below(n)
            };
            if o == h || peers[h].contains(&(o as u32)) || peers[o].len() >= s.max_peers {
                continue;
            }
            peers[h].push(o as u32);
            peers[o].push(h as u32);
        }
    }
    peers
}

/// Runs the model to the slot at which every host holds every piece.
fn simulate(s: &Shape) -> Outcome {
    let (n, m) = (s.hosts, s.pieces);
    let mut rng = Rng(s.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let peers = graph(s, &mut rng);
    // The origin: known to the first `max_peers` hosts (a random set).
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    let mut knows_origin = vec![false; n];
    for &h in order.iter().take(s.origin_peers) {
        knows_origin[h as usize] = true;
    }
    let words = m.div_ceil(64);
    let mut have = vec![0u64; n * words];
    let has = |have: &[u64], h: usize, p: usize| have[h * words + p / 64] >> (p % 64) & 1 == 1;
    // Each host's missing pieces: its boot pieces (shuffled) ahead of the rest.
    let mut missing: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let mut b: Vec<u32> = (0..s.boot as u32).collect();
            if s.profile {
                rng.shuffle(&mut b);
            }
            let mut r: Vec<u32> = (s.boot as u32..m as u32).collect();
            rng.shuffle(&mut r);
            b.extend(r);
            b
        })
        .collect();
    // How many hosts hold each piece (rarest first; in a random graph of tens of peers
    // the fleet's count orders pieces as a host's peers' counts do).
    let mut count = vec![0u32; m];
    let rack_of = |h: usize| if s.rack > 0 { h / s.rack } else { 0 };
    let racks = if s.rack > 0 { n.div_ceil(s.rack) } else { 1 };
    let uplink = (s.rack / 4).max(1) as u32;
    let mut out = Outcome {
        full: vec![0; n],
        boot: vec![0; n],
        ..Default::default()
    };
    // The origin's queue of requests (host, piece), served first come first served, and
    // what each host has asked of it; who said it is fetching a piece from it, and when.
    // (host, piece, a reader waits on it)
    let mut origin_q: std::collections::VecDeque<(u32, u32, bool)> = Default::default();
    // Per piece, the origin's copies begun and the slot of the last.
    let mut copies = vec![(0u32, 0u32); m];
    let mut asked = vec![0usize; n];
    let mut requested = vec![0u64; n * words];
    let mut fetchers: Vec<Vec<(u32, u32)>> = vec![Vec::new(); m];
    // Since when each host has waited on its first boot piece (for its turn).
    let mut waiting_since = vec![(u32::MAX, 0u32); n];
    let mut left = n;
    let mut sent = vec![false; n];
    let mut rack_up = vec![0u32; racks];
    let mut rack_down = vec![0u32; racks];
    // (host, piece, from the origin)
    let mut arrivals: Vec<(u32, u32, bool)> = Vec::new();
    let mut hosts: Vec<u32> = (0..n as u32).collect();
    let mut slot = 0u32;
    while left > 0 {
        slot += 1;
        sent.iter_mut().for_each(|x| *x = false);
        rack_up.iter_mut().for_each(|x| *x = 0);
        rack_down.iter_mut().for_each(|x| *x = 0);
        // The origin. Without a hold: what it was asked first (a piece the host has
        // meanwhile had from a peer is sent all the same). With one: requests cancelled
        // are dropped; a piece a reader waits on goes first (the seed's "wait" class,
        // `swarmfs_fetching {"wait": piece}`), a repeat of it once its last copy began
        // `read_hold` slots ago; then first copies before repeats, and a repeat waits
        // until the last copy of its piece began `repeat_hold` slots ago.
        for _ in 0..s.origin_rate {
            let hold = s.policy.repeat_hold;
            let next = if hold == 0 {
                origin_q.pop_front()
            } else {
                origin_q.retain(|&(h, p, _)| {
                    requested[h as usize * words + p as usize / 64] >> (p % 64) & 1 == 1
                });
                let read_hold = s.policy.read_hold;
                let read = origin_q.iter().position(|&(_, p, read)| {
                    let (begun, last) = copies[p as usize];
                    read && (begun == 0 || slot - last >= read_hold)
                });
                let first = || {
                    origin_q
                        .iter()
                        .position(|&(_, p, _)| copies[p as usize].0 == 0)
                };
                let i = read.or_else(first).or_else(|| {
                    origin_q
                        .iter()
                        .position(|&(_, p, _)| slot - copies[p as usize].1 >= hold)
                });
                i.and_then(|i| origin_q.remove(i))
            };
            let Some((h, p, _)) = next else {
                out.origin_idle += 1;
                break;
            };
            copies[p as usize] = (copies[p as usize].0 + 1, slot);
            out.origin_pieces += 1;
            arrivals.push((h, p, true));
        }
        rng.shuffle(&mut hosts);
        for &h in &hosts {
            let h = h as usize;
            let miss = &missing[h];
            if miss.is_empty() {
                continue;
            }
            // The boot set in order of this host's shuffle, then the rarest of `TRIES`
            // pieces tried at random.
            let booting = out.boot[h] == 0 && (miss[0] as usize) < s.boot;
            let tries = if booting { miss.len().min(4) } else { TRIES };
            if booting && waiting_since[h].0 != miss[0] {
                waiting_since[h] = (miss[0], slot);
            }
            let mut best: Option<(u32, usize, u32)> = None; // (count, index in miss, source)
            let mut ask_origin: Option<u32> = None;
            // A host whose start-up piece no free peer has meanwhile takes a background
            // piece from its peers (its other connections' windows do), never from the
            // origin.
            let passes = if booting { 2 } else { 1 };
            for pass in 0..passes {
                let bg = pass == 1;
                if bg && best.is_some() {
                    break;
                }
                let tries = if bg { TRIES } else { tries };
                for t in 0..tries.min(miss.len()) {
                    let i = if booting && !bg {
                        t
                    } else {
                        rng.below(miss.len())
                    };
                    let p = miss[i] as usize;
                    if booting && !bg && p >= s.boot {
                        break;
                    }
                    if bg && p < s.boot {
                        continue;
                    }
                    let on_its_way = requested[h * words + p / 64] >> (p % 64) & 1 == 1;
                    if on_its_way && s.policy.repeat_hold == 0 {
                        continue; // on its way from the origin
                    }
                    if best.is_some_and(|(c, _, _)| c <= count[p]) {
                        continue;
                    }
                    // A free peer holding it, the rack's first with locality.
                    let ps = &peers[h];
                    let start = if ps.is_empty() {
                        0
                    } else {
                        rng.below(ps.len())
                    };
                    let mut src: Option<u32> = None;
                    for k in 0..ps.len() {
                        let o = ps[(start + k) % ps.len()] as usize;
                        if sent[o] || !has(&have, o, p) {
                            continue;
                        }
                        let cross = s.rack > 0 && rack_of(o) != rack_of(h);
                        if cross
                            && (rack_up[rack_of(o)] >= uplink || rack_down[rack_of(h)] >= uplink)
                        {
                            continue;
                        }
                        let better = match src {
                            None => true,
                            Some(x) => {
                                s.locality
                                    && s.rack > 0
                                    && rack_of(x as usize) != rack_of(h)
                                    && !cross
                            }
                        };
                        if better {
                            src = Some(o as u32);
                            if !s.locality || !cross {
                                break;
                            }
                        }
                    }
                    // The origin only for a piece no peer of this host has or fetches from
                    // it, within the host's window, in its turn.
                    if src.is_none()
                        && !bg
                        && !on_its_way
                        && ask_origin.is_none()
                        && knows_origin[h]
                        && asked[h] < s.policy.window
                        && !ps.iter().any(|&o| has(&have, o as usize, p))
                    {
                        let hold = if booting {
                            s.policy.hold_reads
                        } else {
                            s.policy.hold_background
                        };
                        let held = fetchers[p].iter().any(|&(f, at)| {
                            slot - at < hold && (s.origin_notices || ps.contains(&f))
                        });
                        let turn = if booting {
                            let place = rank(p as u32, h as u32, ps);
                            let waited = slot - waiting_since[h].1;
                            waited
                                >= s.policy.stagger
                                    * place.min(swarmfs::swarm::picker::STAGGER_RANKS) as u32
                        } else {
                            true // `may_ask_seeder_in_background`: no turns outside a delta
                        };
                        if !held && turn {
                            ask_origin = Some(p as u32);
                        }
                    }
                    if let Some(src) = src {
                        best = Some((count[p], i, src));
                        if booting && !bg {
                            break;
                        }
                    }
                }
            }
            if let Some(p) = ask_origin {
                origin_q.push_back((h as u32, p, booting));
                asked[h] += 1;
                requested[h * words + p as usize / 64] |= 1 << (p % 64);
                let f = &mut fetchers[p as usize];
                f.retain(|&(_, at)| slot - at < s.policy.hold_background);
                f.push((h as u32, slot));
            }
            let Some((_, i, src)) = best else { continue };
            let p = missing[h].remove(i);
            // Taken from a peer while asked of the origin: the request is cancelled.
            let bit = 1u64 << (p % 64);
            if requested[h * words + p as usize / 64] & bit != 0 {
                requested[h * words + p as usize / 64] &= !bit;
                asked[h] -= 1;
            }
            {
                let o = src as usize;
                sent[o] = true;
                if s.rack > 0 && rack_of(o) != rack_of(h) {
                    rack_up[rack_of(o)] += 1;
                    rack_down[rack_of(h)] += 1;
                    out.cross_rack += 1;
                }
            }
            arrivals.push((h as u32, p, false));
        }
        for (h, p, from_origin) in arrivals.drain(..) {
            let (h, p) = (h as usize, p as usize);
            let bit = 1u64 << (p % 64);
            if from_origin && requested[h * words + p / 64] & bit != 0 {
                requested[h * words + p / 64] &= !bit;
                asked[h] -= 1;
            }
            if have[h * words + p / 64] & bit != 0 {
                continue; // a second copy (the origin's, after a peer's)
            }
            have[h * words + p / 64] |= bit;
            if let Some(i) = missing[h].iter().position(|&q| q as usize == p) {
                missing[h].remove(i);
            }
            count[p] += 1;
            if out.boot[h] == 0 && missing[h].first().is_none_or(|&q| q as usize >= s.boot) {
                out.boot[h] = slot;
            }
            if missing[h].is_empty() && out.full[h] == 0 {
                out.full[h] = slot;
                left -= 1;
            }
        }
        if slot > 100 * (m as u32 + 64) {
            panic!("the model stalled: {left} hosts incomplete at slot {slot} ({s:?})");
        }
    }
    out
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

/// A measured fleet (a line of `fleet_local`'s output).
struct Measured {
    shape: Shape,
    /// Seconds per slot at the full rate.
    slot_s: f64,
    full: [f64; 3],
    boot_median: f64,
    origin: f64,
    line: String,
}

fn measured(path: &str) -> anyhow::Result<Vec<Measured>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the measured runs {path}: {e}"))?;
    let mut v = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let j: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{path}:{}: not a fleet_local JSON line: {e}", i + 1))?;
        let f = |k: &str| {
            j[k].as_f64()
                .ok_or_else(|| anyhow::anyhow!("{path}:{}: no number {k:?}", i + 1))
        };
        let piece = f("piece_bytes")?;
        let size = f("size_bytes")?;
        let rate = f("rate_mbit")? * 125_000.0;
        let shape = Shape {
            hosts: f("hosts")? as usize,
            pieces: (size / piece).ceil() as usize,
            boot: (f("boot_piece_bytes")? / piece) as usize,
            max_peers: f("max_peers")? as usize,
            origin_rate: 1,
            rack: 0,
            locality: false,
            profile: j["boot_profile"].as_bool().unwrap_or(false),
            origin_peers: j["origin_max_peers"].as_f64().unwrap_or(50.0) as usize,
            policy: Policy::of(piece, rate),
            origin_notices: false,
            seed: 1,
        };
        v.push(Measured {
            shape,
            slot_s: piece / rate,
            full: [f("full_median_s")?, f("full_p99_s")?, f("full_max_s")?],
            boot_median: f("boot_median_s")?,
            origin: f("origin_tx_ratio")?,
            line: format!(
                "{} hosts, {:.1} MB, {} Mbit/s",
                shape.hosts,
                size / 1e6,
                f("rate_mbit")?
            ),
        });
    }
    anyhow::ensure!(!v.is_empty(), "{path} holds no measured run");
    Ok(v)
}

/// The model's full times (median, p99, max) and boot (median, p99) in slots, origin
/// copies, and the origin's idle slots over the pieces.
fn model_of(s: &Shape) -> ([f64; 3], f64, [f64; 2], f64) {
    let o = simulate(s);
    let full: Vec<f64> = o.full.iter().map(|&x| x as f64).collect();
    let boot: Vec<f64> = o.boot.iter().map(|&x| x as f64).collect();
    (
        [
            quantile(&full, 0.5),
            quantile(&full, 0.99),
            quantile(&full, 1.0),
        ],
        o.origin_pieces as f64 / s.pieces as f64,
        [quantile(&boot, 0.5), quantile(&boot, 0.99)],
        o.origin_idle as f64 / s.pieces as f64,
    )
}

/// Fits seconds = start + slots * slot_s * pace by least squares over the runs' median,
/// p99 and max (relative errors), on a grid.
fn calibrate(runs: &[Measured], modelled: &[[f64; 3]]) -> (f64, f64) {
    let mut best = (f64::MAX, 1.0, 0.0);
    for e in (50..=200).map(|x| x as f64 / 100.0) {
        for st in (0..=300).map(|x| x as f64 / 10.0) {
            let mut err = 0.0;
            for (r, m) in runs.iter().zip(modelled) {
                for k in 0..3 {
                    let t = st + m[k] * r.slot_s * e;
                    err += ((t - r.full[k]) / r.full[k]).powi(2);
                }
            }
            if err < best.0 {
                best = (err, e, st);
            }
        }
    }
    (best.1, best.2)
}

/// flat; racks with peers from anywhere; racks with half the peers in the rack.
const LAYOUTS: [&str; 3] = ["flat", "racks", "racks+local"];

struct Row {
    hosts: usize,
    /// Index in [`LAYOUTS`].
    layout: usize,
    full: [f64; 3],
    boot: [f64; 2],
    origin: f64,
    cross: f64,
}

fn main() -> anyhow::Result<()> {
    let mut calibrate_from = None;
    let mut svg = None;
    let mut max_peers = usize::from(swarmfs::swarm::MOUNT_MAX_PEERS);
    let mut origin_peers = usize::from(swarmfs::swarm::DEFAULT_MAX_PEERS);
    let mut profile = false;
    let mut origin_notices = false;
    let mut repeat_hold = true;
    let mut read_hold = true;
    let mut sizes = vec![1000usize, 2600, 10_000, 100_000];
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        match (w[0].as_str(), w.get(1)) {
            ("--calibrate", Some(p)) => calibrate_from = Some(p.clone()),
            ("--svg", Some(p)) => svg = Some(p.clone()),
            ("--max-peers", Some(n)) => max_peers = n.parse()?,
            ("--origin-max-peers", Some(n)) => origin_peers = n.parse()?,
            ("--profile", Some(n)) => profile = n != "0",
            ("--origin-notices", Some(n)) => origin_notices = n != "0",
            ("--repeat-hold", Some(n)) => repeat_hold = n != "0",
            ("--read-hold", Some(n)) => read_hold = n != "0",
            ("--hosts", Some(l)) => {
                sizes = l.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            _ => {
                eprintln!(
                    "usage: fleet_model [--calibrate MEASURED.jsonl] [--svg OUT.svg] \
                     [--max-peers N] [--origin-max-peers N] [--profile 0|1] [--origin-notices 0|1] \
                     [--repeat-hold 0|1] [--read-hold 0|1] [--hosts N,N,...]"
                );
                std::process::exit(2);
            }
        }
    }
    // Calibration against the measured fleets.
    let (pace, start) = match &calibrate_from {
        Some(path) => {
            let mut runs = measured(path)?;
            for r in &mut runs {
                if !repeat_hold {
                    r.shape.policy.repeat_hold = 0;
                }
                if !read_hold {
                    r.shape.policy.read_hold = 0;
                }
            }
            let models: Vec<_> = runs.iter().map(|r| model_of(&r.shape)).collect();
            let modelled: Vec<[f64; 3]> = models.iter().map(|m| m.0).collect();
            let (pace, start) = calibrate(&runs, &modelled);
            println!(
                "calibration on {} measured runs ({path}): pace {pace:.2}, start-up {start:.1} s",
                runs.len()
            );
            println!(
                "{:<28} {:>22} {:>22} {:>8} {:>14} {:>13} {:>11}",
                "measured run",
                "full p50/p99/max (s)",
                "model (s)",
                "worst",
                "origin / model",
                "boot / model",
                "origin idle"
            );
            for (r, m) in runs.iter().zip(&models) {
                let secs = |x: f64| start + x * r.slot_s * pace;
                let t: Vec<f64> = m.0.iter().map(|&x| secs(x)).collect();
                let worst = (0..3)
                    .map(|k| (t[k] - r.full[k]) / r.full[k] * 100.0)
                    .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
                println!(
                    "{:<28} {:>6.1} {:>6.1} {:>6.1}   {:>6.1} {:>6.1} {:>6.1} {:>+7.0}% {:>6.2} / {:.2} {:>5.1} / {:.1} {:>11.2}",
                    r.line, r.full[0], r.full[1], r.full[2], t[0], t[1], t[2], worst, r.origin,
                    m.1, r.boot_median, secs(m.2[0]), m.3
                );
            }
            (pace, start)
        }
        None => (1.0, 0.0),
    };
    // The table: 300 MB in 256 KiB pieces at 100 Mbit/s (F/r = 24 s), an 8 MiB boot set.
    let (f_bytes, piece, rate) = (300e6, 262_144.0, 12.5e6);
    let slot_s = piece / rate;
    let floor = f_bytes / rate;
    let boot_pieces = (8 << 20) / 262_144;
    println!(
        "\nmodel: 300 MB, 256 KiB pieces (1 MiB past 10,000 hosts), 100 Mbit/s, --max-peers {max_peers}, \
         origin serves {origin_peers}, boot profile {profile}, origin notices {origin_notices}, \
         repeats held {repeat_hold}, read repeats held {read_hold}; \
         pace {pace:.2}, start-up {start:.1} s; F/r = {floor:.1} s"
    );
    println!(
        "{:>7} {:<6} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>11}",
        "hosts",
        "layout",
        "p50/F/r",
        "p99/F/r",
        "max/F/r",
        "boot p50 s",
        "boot bound",
        "origin",
        "rack xings"
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        for layout in 0..LAYOUTS.len() {
            // Racks with peers from anywhere only up to 10,000 hosts: the comparison is
            // made there, and past it the uplinks make that run minutes long.
            if layout == 1 && n > 10_000 {
                continue;
            }
            let rack = layout > 0;
            // Coarser pieces past 10,000 hosts keep the run to seconds: the same bytes.
            let scale = if n > 10_000 { 4 } else { 1 };
            let s = Shape {
                hosts: n,
                pieces: (f_bytes / (piece * scale as f64)).ceil() as usize,
                boot: (boot_pieces / scale).max(1),
                max_peers,
                origin_rate: 1,
                rack: if rack { 40 } else { 0 },
                locality: layout == 2,
                profile,
                origin_peers,
                policy: {
                    let p = Policy::of(piece * scale as f64, rate);
                    Policy {
                        repeat_hold: if repeat_hold { p.repeat_hold } else { 0 },
                        read_hold: if read_hold { p.read_hold } else { 0 },
                        ..p
                    }
                },
                origin_notices,
                seed: 7,
            };
            let o = simulate(&s);
            let secs = |slots: u32| start + slots as f64 * slot_s * scale as f64 * pace;
            let full: Vec<f64> = o.full.iter().map(|&x| secs(x)).collect();
            let boot: Vec<f64> = o.boot.iter().map(|&x| secs(x)).collect();
            let row = Row {
                hosts: n,
                layout,
                full: [
                    quantile(&full, 0.5),
                    quantile(&full, 0.99),
                    quantile(&full, 1.0),
                ],
                boot: [quantile(&boot, 0.5), quantile(&boot, 0.99)],
                origin: o.origin_pieces as f64 / s.pieces as f64,
                cross: o.cross_rack as f64 / s.pieces as f64 / n.div_ceil(40) as f64,
            };
            let boot_bound = (boot_pieces as f64 + (n as f64).log2().ceil()) * slot_s;
            println!(
                "{:>7} {:<11} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>9.2} {:>11}",
                n,
                LAYOUTS[layout],
                row.full[0] / floor,
                row.full[1] / floor,
                row.full[2] / floor,
                row.boot[0],
                boot_bound,
                row.origin,
                if rack {
                    format!("{:.2}", row.cross)
                } else {
                    "-".into()
                },
            );
            rows.push(row);
        }
    }
    if let Some(path) = svg {
        std::fs::write(&path, plot(&rows, floor))
            .map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?;
        println!("\nwrote {path}");
    }
    Ok(())
}

/// Two panels, hosts on a log axis: full time over F/r (p50, p99), and origin copies.
fn plot(rows: &[Row], floor: f64) -> String {
    let (w, h) = (760.0, 300.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let xs: Vec<f64> = rows.iter().map(|r| (r.hosts as f64).log10()).collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let panels: [(
        &str,
        f64,
        Vec<(&str, &str, usize, Box<dyn Fn(&Row) -> f64>)>,
    ); 2] = [
        (
            "full time / (F/r)",
            0.0,
            vec![
                (
                    "p50 flat",
                    "#1f77b4",
                    0,
                    Box::new(|r: &Row| r.full[0] / floor),
                ),
                (
                    "p99 flat",
                    "#ff7f0e",
                    0,
                    Box::new(|r: &Row| r.full[1] / floor),
                ),
                (
                    "p50 racks, local peers",
                    "#1f77b4",
                    2,
                    Box::new(|r: &Row| r.full[0] / floor),
                ),
                (
                    "p99 racks, local peers",
                    "#ff7f0e",
                    2,
                    Box::new(|r: &Row| r.full[1] / floor),
                ),
            ],
        ),
        (
            "origin copies",
            380.0,
            vec![
                ("flat", "#2ca02c", 0, Box::new(|r: &Row| r.origin)),
                (
                    "racks, local peers",
                    "#2ca02c",
                    2,
                    Box::new(|r: &Row| r.origin),
                ),
            ],
        ),
    ];
    for (title, left, series) in panels.iter() {
        let (px, py, pw, ph) = (left + 50.0, 30.0, 300.0, 220.0);
        let ymax = series
            .iter()
            .flat_map(|(_, _, layout, f)| rows.iter().filter(|r| r.layout == *layout).map(f))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.15;
        let sx = |x: f64| px + (x - x0) / (x1 - x0).max(1e-9) * pw;
        let sy = |y: f64| py + ph - y / ymax * ph;
        let _ = write!(
            s,
            r##"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{title}</text><rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
            px + pw / 2.0
        );
        for k in 0..=4 {
            let y = ymax * k as f64 / 4.0;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{y:.2}</text>"#,
                px - 4.0,
                sy(y) + 4.0
            );
        }
        for r in rows.iter().filter(|r| r.layout == 0) {
            let x = sx((r.hosts as f64).log10());
            let _ = write!(
                s,
                r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
                py + ph + 16.0,
                r.hosts
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">hosts</text>"#,
            px + pw / 2.0,
            py + ph + 32.0
        );
        for (i, (name, color, layout, f)) in series.iter().enumerate() {
            let pts: Vec<String> = rows
                .iter()
                .filter(|r| r.layout == *layout)
                .map(|r| format!("{:.1},{:.1}", sx((r.hosts as f64).log10()), sy(f(r))))
                .collect();
            let dash = if *layout > 0 {
                r#" stroke-dasharray="5,3""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" fill="{color}">{name}</text>"#,
                pts.join(" "),
                px + 8.0,
                py + 14.0 + 14.0 * i as f64
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
