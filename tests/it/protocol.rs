//! The wire protocol as a plain BitTorrent peer sees it from a swarmfs seeder: a peer
//! written here, byte by byte, against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

const CHUNK: u64 = 16 << 10;

fn send(c: &mut TcpStream, id: u8, body: &[u8]) {
    let mut m = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(body);
    c.write_all(&m).unwrap();
}

/// Reads one message: (id, body); a keep-alive is skipped.
fn recv(c: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            continue;
        }
        assert!(len <= (1 << 20), "a message of {len} bytes");
        let mut m = vec![0u8; len];
        c.read_exact(&mut m).unwrap();
        let id = m.remove(0);
        return (id, m);
    }
}

/// (index, begin, length) of the `k`th chunk of the release.
fn chunk(k: u64, piece_len: u64) -> [u8; 12] {
    let at = k * CHUNK;
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&((at / piece_len) as u32).to_be_bytes());
    b[4..8].copy_from_slice(&((at % piece_len) as u32).to_be_bytes());
    b[8..].copy_from_slice(&(CHUNK as u32).to_be_bytes());
    b
}

/// The piece a `piece` message (id 7) is of.
fn piece_of(body: &[u8]) -> u64 {
    u32::from_be_bytes(body[..4].try_into().unwrap()) as u64
}

/// Asks for (`id` 6) or cancels (`id` 8) every chunk of `piece`.
fn ask(c: &mut TcpStream, rel: &swarmfs::release::Release, id: u8, piece: u64) {
    let per_piece = rel.piece_length / CHUNK;
    for k in piece * per_piece..(piece + 1) * per_piece {
        send(c, id, &chunk(k, rel.piece_length));
    }
}

/// Reads until every chunk of `piece` came, and no chunk of another.
fn recv_piece(c: &mut TcpStream, rel: &swarmfs::release::Release, piece: u64) {
    let mut got = 0;
    while got < rel.piece_length / CHUNK {
        let (id, body) = recv(c);
        if id == 7 {
            assert_eq!(piece_of(&body), piece);
            got += 1;
        }
    }
}

/// Tells the seeder a reader waits on `piece` (`swarmfs_fetching {"wait": piece}`, under
/// the id the seeder gave it).
fn wait_on(c: &mut TcpStream, fetching_id: u8, piece: u64) {
    let mut notice = vec![fetching_id];
    notice.extend_from_slice(format!("d4:waiti{piece}ee").as_bytes());
    send(c, 20, &notice);
}

/// A sample release published under `t` and seeded at 128 KiB/s on a free port:
/// (the release, the port, the seeder).
fn slow_seed(t: &std::path::Path) -> (swarmfs::release::Release, u16, Proc) {
    let dir = t.join("rel");
    sample(&dir, 4 << 20, 16);
    let torrent = t.join("rel.torrent");
    publish(&dir, &torrent, &[]);
    let rel = swarmfs::release::Release::from_torrent(&std::fs::read(&torrent).unwrap()).unwrap();
    let port = free_port();
    let seeder = seed(&torrent, &dir, port, &["--upload-limit", "128K"]);
    (rel, port, seeder)
}

/// Keep-alives every 2 s from a thread, so that the seeder keeps the connection while it
/// sends (it drops a peer silent for 10 s).
fn keep_alive(c: &TcpStream) {
    let mut ka = c.try_clone().unwrap();
    std::thread::spawn(move || {
        while ka.write_all(&[0u8; 4]).is_ok() {
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

/// Connects to a seeder as a plain peer (`extended`: one that speaks BEP 10) and waits
/// until it unchokes us. Returns the stream and the id the seeder takes
/// `swarmfs_fetching` messages under, if it said.
fn join(
    port: u16,
    rel: &swarmfs::release::Release,
    peer_id: &[u8; 20],
    extended: bool,
) -> (TcpStream, Option<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    let mut reserved = [0u8; 8];
    if extended {
        reserved[5] |= 0x10;
    }
    hs.extend_from_slice(&reserved);
    hs.extend_from_slice(&rel.info_hash.0);
    hs.extend_from_slice(peer_id);
    c.write_all(&hs).unwrap();
    let mut theirs = [0u8; 68];
    c.read_exact(&mut theirs).unwrap();
    assert_eq!(theirs[28..48], rel.info_hash.0, "the seeder's handshake");
    if extended {
        send(&mut c, 20, b"\x00d1:mdee");
    }
    send(&mut c, 2, &[]); // interested
    let mut fetching_id = None;
    loop {
        let (id, body) = recv(&mut c);
        if id == 20 && body.first() == Some(&0) {
            // Its extended handshake: "16:swarmfs_fetchingi<id>e" in its `m`.
            let key = b"16:swarmfs_fetchingi";
            if let Some(at) = body.windows(key.len()).position(|w| w == key) {
                let rest = &body[at + key.len()..];
                let end = rest.iter().position(|&b| b == b'e').unwrap();
                fetching_id = std::str::from_utf8(&rest[..end]).unwrap().parse().ok();
            }
        }
        if id == 1 {
            return (c, fetching_id); // unchoked
        }
    }
}

/// A peer that got a piece elsewhere cancels its request (BEP 3); the origin, whose
/// uplink a whole fleet queues on, must not send it anyway (stock librqbit did).
#[test]
fn a_seeder_does_not_send_the_chunks_a_peer_cancelled() {
    let t = tempfile::tempdir().unwrap();
    // Slow enough that the requests queue at the seeder (128 chunks: 16 s).
    let (rel, port, _seed) = slow_seed(t.path());
    let (mut c, _) = join(port, &rel, b"-CN0001-cancelcancel", false);

    let asked = 128u64.min(rel.total_length / CHUNK);
    let kept = 4;
    for k in 0..asked {
        send(&mut c, 6, &chunk(k, rel.piece_length));
    }
    // Every request but the last `kept`, cancelled at once.
    for k in 0..asked - kept {
        send(&mut c, 8, &chunk(k, rel.piece_length));
    }
    let last: Vec<[u8; 8]> = (asked - kept..asked)
        .map(|k| chunk(k, rel.piece_length)[..8].try_into().unwrap())
        .collect();
    keep_alive(&c);
    let (mut got, mut got_kept) = (0u64, 0usize);
    while got_kept < last.len() {
        let (id, body) = recv(&mut c);
        if id != 7 {
            continue;
        }
        got += 1;
        assert_eq!(body.len() as u64, 8 + CHUNK, "a whole chunk");
        if last.iter().any(|h| h[..] == body[..8]) {
            got_kept += 1;
        }
    }
    eprintln!(
        "asked for {asked} chunks, cancelled {}, received {got}",
        asked - kept
    );
    // The chunks already on their way when the cancels came still arrive (the rate
    // limiter's burst); the rest of the cancelled ones do not.
    assert!(
        got < asked / 2,
        "{got} of {asked} chunks sent though {} were cancelled",
        asked - kept
    );
}

/// A host whose reader waits on a piece says so (`swarmfs_fetching` `{"wait": piece}`)
/// before asking for it; the seeder sends it before the background chunks the host asked
/// for earlier. Without that, a read's piece waited at the origin behind every chunk of
/// prefetch queued there (at 1 MiB/s, a 64-chunk window is a second).
#[test]
fn a_seeder_sends_first_the_piece_a_reader_waits_on() {
    let t = tempfile::tempdir().unwrap();
    // Slow enough that the requests queue at the seeder (64 chunks: 8 s).
    let (rel, port, _seed) = slow_seed(t.path());
    let (mut c, fetching_id) = join(port, &rel, b"-CN0001-waitwaitwait", true);
    let fetching_id = fetching_id.expect("the seeder takes swarmfs_fetching");

    let background = 64u64;
    for k in 0..background {
        send(&mut c, 6, &chunk(k, rel.piece_length));
    }
    // The last whole piece: a reader waits on it.
    let per_piece = rel.piece_length / CHUNK;
    let piece = rel.total_length / rel.piece_length - 1;
    assert!(
        piece * per_piece >= background,
        "the piece is not among the background"
    );
    wait_on(&mut c, fetching_id, piece);
    ask(&mut c, &rel, 6, piece);
    keep_alive(&c);
    let (mut before, mut got) = (0u64, 0u64);
    while got < per_piece {
        let (id, body) = recv(&mut c);
        if id != 7 {
            continue;
        }
        if piece_of(&body) == piece {
            got += 1;
        } else {
            before += 1;
        }
    }
    eprintln!("{before} of {background} background chunks came before the piece a reader waits on");
    // The chunks already on their way (the rate limiter's burst, those in the writer)
    // still come first; not the rest of the queue.
    assert!(
        before < background / 2,
        "{before} of {background} background chunks were sent before the waited-on piece"
    );
}

/// The origin sends a piece's first copies before its repeats, and holds a repeat back
/// for a while after the last copy began (`swarm::picker::REPEAT_HOLD`, ten times as
/// long at this seeder's limited uplink): the hosts that got a copy pass it on meanwhile,
/// and a host that asked the origin too takes it from them and cancels. Without the
/// hold, every host that asked the origin for a piece before any host had it was sent a
/// copy.
#[test]
fn a_seeder_holds_back_a_repeat_until_the_swarm_could_pass_the_first_copy_on() {
    let t = tempfile::tempdir().unwrap();
    let (rel, port, _seed) = slow_seed(t.path());
    let per_piece = rel.piece_length / CHUNK;
    let ask = |c: &mut TcpStream, id: u8, piece: u64| ask(c, &rel, id, piece);

    // One host gets piece 0.
    let (mut x, _) = join(port, &rel, b"-CN0001-firstcopy000", false);
    ask(&mut x, 6, 0);
    recv_piece(&mut x, &rel, 0);
    let first_copy = std::time::Instant::now();
    keep_alive(&x);

    // Another asks for it too, and cancels once a peer passed it on.
    let (mut y, _) = join(port, &rel, b"-CN0001-repeatrepeat", false);
    keep_alive(&y);
    ask(&mut y, 6, 0);
    std::thread::sleep(Duration::from_millis(300));
    ask(&mut y, 8, 0);
    // A piece nobody has goes out at once; piece 0, asked for again, only after the hold.
    ask(&mut y, 6, 1);
    ask(&mut y, 6, 0);
    let mut order = Vec::new();
    while order.iter().filter(|&&p| p == 0).count() < per_piece as usize {
        let (id, body) = recv(&mut y);
        if id == 7 {
            order.push(piece_of(&body));
        }
    }
    let repeat_after = first_copy.elapsed();
    eprintln!("chunks by piece, in the order they came: {order:?}; the repeat came {repeat_after:?} after the first copy");
    assert_eq!(
        order[..per_piece as usize],
        vec![1; per_piece as usize][..],
        "a repeat went out before a first copy (or the cancelled request was served)"
    );
    assert_eq!(
        order.len(),
        2 * per_piece as usize,
        "chunks sent twice: {order:?}"
    );
    assert!(
        repeat_after >= Duration::from_secs(5),
        "the repeat came {repeat_after:?} after the first copy"
    );
}

/// A repeat of a piece a reader waits on goes first, but only a while after the last copy
/// began (`swarm::picker::READ_REPEAT_HOLD`, ten times as long at this seeder's limited
/// uplink): a fleet starting up reads the same pieces at once, and the host the first
/// copy went to passes it on meanwhile. Without the hold the origin sent every start-up
/// piece to each host that asked before a peer had it.
#[test]
fn a_seeder_holds_a_repeat_of_a_waited_on_piece_briefly() {
    let t = tempfile::tempdir().unwrap();
    let (rel, port, _seed) = slow_seed(t.path());
    let per_piece = rel.piece_length / CHUNK;
    let ask = |c: &mut TcpStream, piece: u64| ask(c, &rel, 6, piece);

    // One host's reader waits on piece 0 and gets it.
    let (mut x, id) = join(port, &rel, b"-CN0001-firstreader0", true);
    let id = id.expect("the seeder takes swarmfs_fetching");
    wait_on(&mut x, id, 0);
    let asked = std::time::Instant::now();
    ask(&mut x, 0);
    recv_piece(&mut x, &rel, 0);
    keep_alive(&x);

    // Another host's reader waits on it too, and asks for a piece nobody has after it.
    let (mut y, id) = join(port, &rel, b"-CN0001-secondreader", true);
    let id = id.expect("the seeder takes swarmfs_fetching");
    keep_alive(&y);
    wait_on(&mut y, id, 0);
    ask(&mut y, 0);
    ask(&mut y, 1);
    let mut order = Vec::new();
    let mut repeat_after = None;
    while order.len() < 2 * per_piece as usize {
        let (m, body) = recv(&mut y);
        if m == 7 {
            order.push(piece_of(&body));
            if piece_of(&body) == 0 && repeat_after.is_none() {
                repeat_after = Some(asked.elapsed());
            }
        }
    }
    let repeat_after = repeat_after.unwrap();
    eprintln!("chunks by piece, in the order they came: {order:?}; the repeat came {repeat_after:?} after the first was asked for");
    assert_eq!(
        order[..per_piece as usize],
        vec![1; per_piece as usize][..],
        "the waited-on repeat went out at once, before a first copy"
    );
    // The first copy began after it was asked for; the repeat a hold after that.
    let hold = swarmfs::swarm::picker::READ_REPEAT_HOLD * swarmfs::swarm::picker::MAX_HOLD_STRETCH;
    assert!(
        repeat_after >= hold,
        "the repeat came {repeat_after:?} after the first copy was asked for, within the hold of {hold:?}"
    );
}
