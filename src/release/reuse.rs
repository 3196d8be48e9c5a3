//! Where a release's pieces may be rebuilt from the files of other releases held on this
//! host (a delta deploy: the host holds release N and mounts N+1).
//!
//! Local bytes are candidates, never trusted: a [`Plan`] says, for each piece of the
//! target, from which local bytes it may be built, and the caller keeps a built piece
//! only when it hashes to the target's own piece SHA-1. Two kinds of candidate:
//! - **by file** ([`Candidate::Files`]): every file the piece touches has a local source,
//!   and padding is zeros. A target file's source is, first, a local file with the same
//!   BEP 47 `sha1` and length, whatever its path (renamed and moved files, and small files
//!   that shifted inside the packed region); else the local file at the same path,
//!   whatever its length (a file changed in place keeps its unchanged pieces). Works for
//!   torrents of any layout and piece length.
//! - **by piece** ([`Candidate::Piece`]): a local release with the same piece length has a
//!   piece with the same SHA-1 (BEP 38's rule); its bytes are read through that release's
//!   own layout. Catches aligned files renamed in torrents without `sha1` (mktorrent's).
//!
//! It reads the local releases' cache files and writes nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::model::{fill_from_stream, Entry, EntryKind, Release};

/// A release held on this host: its metadata and the folder of its files.
#[derive(Debug, Clone)]
pub struct Local {
    pub release: Arc<Release>,
    pub data_dir: PathBuf,
}

/// How a piece may be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// From the sources of the files it touches (and zeros for padding).
    Files,
    /// From piece `piece` of local release `local` (same piece length, same hash).
    Piece { local: usize, piece: u64 },
}

/// The local source of one of the target's files.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    /// Found by content (`sha1`), not by path.
    by_sha1: bool,
}

/// Where each piece of a target release may be rebuilt from.
pub struct Plan {
    target: Arc<Release>,
    locals: Vec<Local>,
    /// Per target entry: the local file to read its bytes from.
    sources: Vec<Option<Source>>,
    /// Piece SHA-1 -> (local, piece), over the locals with the target's piece length.
    by_hash: HashMap<[u8; 20], (usize, u64)>,
}

/// Which of the target's files have a local source, and how they were found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub files_by_sha1: u64,
    pub files_by_path: u64,
}

impl Plan {
    /// Plans the rebuild of `target` from `locals` (best first: a source found in an
    /// earlier local wins). The target itself is skipped if listed.
    pub fn new(target: Arc<Release>, locals: Vec<Local>) -> Plan {
        let locals: Vec<Local> = locals
            .into_iter()
            .filter(|l| l.release.info_hash != target.info_hash)
            .collect();
        let mut by_content: HashMap<([u8; 20], u64), PathBuf> = HashMap::new();
        let mut by_path: HashMap<&[String], PathBuf> = HashMap::new();
        let mut by_hash = HashMap::new();
        for (li, l) in locals.iter().enumerate() {
            for e in &l.release.entries {
                if !matches!(e.kind, EntryKind::File { .. }) || e.length == 0 {
                    continue;
                }
                let path = data_path(&l.data_dir, e);
                if let Some(h) = e.sha1 {
                    by_content
                        .entry((h, e.length))
                        .or_insert_with(|| path.clone());
                }
                by_path.entry(e.path.as_slice()).or_insert(path);
            }
            if l.release.piece_length == target.piece_length {
                for (q, h) in l.release.piece_hashes.iter().enumerate() {
                    by_hash.entry(*h).or_insert((li, q as u64));
                }
            }
        }
        let sources = target
            .entries
            .iter()
            .map(|e| {
                if !matches!(e.kind, EntryKind::File { .. }) || e.length == 0 {
                    return None;
                }
                if let Some(p) = e.sha1.and_then(|h| by_content.get(&(h, e.length))) {
                    return Some(Source {
                        path: p.clone(),
                        by_sha1: true,
                    });
                }
                by_path.get(e.path.as_slice()).map(|p| Source {
                    path: p.clone(),
                    by_sha1: false,
                })
            })
            .collect();
        Plan {
            target,
            locals,
            sources,
            by_hash,
        }
    }

    pub fn target(&self) -> &Arc<Release> {
        &self.target
    }

    /// The ways piece `p` may be built, most likely first (empty: only the swarm has it).
    pub fn candidates(&self, p: u64) -> Vec<Candidate> {
        let mut out = Vec::new();
        if self
            .entries_of(p)
            .all(|(i, e)| !matches!(e.kind, EntryKind::File { .. }) || self.sources[i].is_some())
        {
            out.push(Candidate::Files);
        }
        if let Some(&(local, piece)) = self
            .target
            .piece_hashes
            .get(p as usize)
            .and_then(|h| self.by_hash.get(h))
        {
            out.push(Candidate::Piece { local, piece });
        }
        out
    }

    /// Whether some bytes of piece `p` are known without its hash (see
    /// [`Plan::read_known`]): a piece no candidate builds may still come from the swarm
    /// only in part.
    pub fn has_known(&self, p: u64) -> bool {
        self.entries_of(p)
            .any(|(i, e)| matches!(e.kind, EntryKind::File { .. }) && self.by_content(i).is_some())
    }

    /// The local source of target entry `i` if it was found by content (its bytes are
    /// known; a source found by path may have changed).
    fn by_content(&self, i: usize) -> Option<&Source> {
        self.sources[i].as_ref().filter(|s| s.by_sha1)
    }

    pub fn stats(&self) -> PlanStats {
        let mut s = PlanStats::default();
        for src in self.sources.iter().flatten() {
            if src.by_sha1 {
                s.files_by_sha1 += 1;
            } else {
                s.files_by_path += 1;
            }
        }
        s
    }

    /// Fills `buf` (the piece's length) with the candidate's bytes for target piece `p`.
    /// An error means this candidate cannot build it (a source missing or too short).
    pub fn read(&self, p: u64, c: Candidate, buf: &mut [u8], files: &mut Reader) -> io::Result<()> {
        match c {
            Candidate::Files => {
                let start = p * self.target.piece_length;
                read_stream(&self.target, start, buf, |i, e, at, dst| {
                    let src = self.sources[i].as_ref().ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("no local source for {}", e.display_path()),
                        )
                    })?;
                    files.read(&src.path, at, dst)
                })
            }
            Candidate::Piece { local, piece } => {
                let l = &self.locals[local];
                let start = piece * l.release.piece_length;
                read_stream(&l.release, start, buf, |_, e, at, dst| {
                    files.read(&data_path(&l.data_dir, e), at, dst)
                })
            }
        }
    }

    /// Fills the bytes of target piece `p` that are known without the piece's hash: the
    /// files found by content (their BEP 47 `sha1` matched a local file's) and padding.
    /// Returns those ranges (within the piece, merged, in order); the rest of `buf` is
    /// left as it was. For a piece no candidate built: its unchanged files' bytes need
    /// not cross the network (the piece's hash still decides). Files found only by path
    /// are not known: a file changed in place keeps its path.
    pub fn read_known(
        &self,
        p: u64,
        buf: &mut [u8],
        files: &mut Reader,
    ) -> io::Result<Vec<std::ops::Range<u32>>> {
        let start = p * self.target.piece_length;
        let end = start + buf.len() as u64;
        let mut known: Vec<std::ops::Range<u32>> = Vec::new();
        for (i, e) in self.entries_of(p) {
            let (a, b) = (start.max(e.offset), end.min(e.offset + e.length));
            let dst = &mut buf[(a - start) as usize..(b - start) as usize];
            match (&e.kind, self.by_content(i)) {
                (EntryKind::Padding, _) => dst.fill(0),
                (EntryKind::File { .. }, Some(src)) => files.read(&src.path, a - e.offset, dst)?,
                _ => continue,
            }
            let r = (a - start) as u32..(b - start) as u32;
            match known.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => known.push(r),
            }
        }
        Ok(known)
    }

    /// The target's entries that piece `p` overlaps, with their indices.
    fn entries_of(&self, p: u64) -> impl Iterator<Item = (usize, &Entry)> {
        let pl = self.target.piece_length;
        let (start, end) = (p * pl, ((p + 1) * pl).min(self.target.total_length));
        let first = self
            .target
            .entries
            .partition_point(|e| e.offset + e.length <= start);
        self.target.entries[first..]
            .iter()
            .enumerate()
            .map(move |(k, e)| (first + k, e))
            .take_while(move |(_, e)| e.offset < end)
            .filter(|(_, e)| e.length > 0)
    }
}

/// Reads local files for a plan, keeping the last one open (pieces are mostly read in
/// file order).
#[derive(Default)]
pub struct Reader {
    open: Option<(PathBuf, File)>,
}

impl Reader {
    fn read(&mut self, path: &PathBuf, at: u64, dst: &mut [u8]) -> io::Result<()> {
        if self.open.as_ref().map(|(p, _)| p) != Some(path) {
            self.open = Some((
                path.clone(),
                super::hash::open_nofollow(path).map_err(io::Error::other)?,
            ));
        }
        let f = &self.open.as_ref().expect("opened above").1;
        f.read_exact_at(dst, at)
    }
}

/// Where a release's entry is kept under its data folder.
fn data_path(data_dir: &std::path::Path, e: &Entry) -> PathBuf {
    let mut p = data_dir.to_path_buf();
    p.extend(&e.path);
    p
}

/// Fills `buf` with `release`'s byte stream from `start`; past its end is an error (a
/// local release shorter than its piece says).
fn read_stream(
    release: &Release,
    start: u64,
    buf: &mut [u8],
    file: impl FnMut(usize, &Entry, u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    if start + buf.len() as u64 > release.total_length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "past the release's end",
        ));
    }
    fill_from_stream(&release.entries, start, buf, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    /// Publishes `files` (path, bytes) from a fresh directory; returns it and the release.
    fn release_of(files: &[(&str, Vec<u8>)], piece: u64) -> (tempfile::TempDir, Arc<Release>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let opts = super::super::PublishOptions {
            piece_length: piece,
            ..Default::default()
        };
        let r = super::super::publish(dir.path(), &opts, &|_| {})
            .unwrap()
            .release;
        (dir, Arc::new(r))
    }

    /// `n` pseudo-random bytes (no two pieces alike).
    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed as u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The plan of `target` from one local release `n` held in `dir`.
    fn plan_from(target: &Arc<Release>, n: &Arc<Release>, dir: &tempfile::TempDir) -> Plan {
        Plan::new(
            target.clone(),
            vec![Local {
                release: n.clone(),
                data_dir: dir.path().to_path_buf(),
            }],
        )
    }

    /// Builds every piece it can and returns which ones hash right.
    fn rebuilt(plan: &Plan) -> Vec<bool> {
        let t = plan.target().clone();
        let mut reader = Reader::default();
        (0..t.piece_count())
            .map(|p| {
                let len = t.piece_length.min(t.total_length - p * t.piece_length) as usize;
                let mut buf = vec![0u8; len];
                plan.candidates(p).into_iter().any(|c| {
                    plan.read(p, c, &mut buf, &mut reader).is_ok()
                        && <[u8; 20]>::from(Sha1::digest(&buf)) == t.piece_hashes[p as usize]
                })
            })
            .collect()
    }

    const PL: u64 = 16 * 1024;

    #[test]
    fn renamed_shifted_and_changed_files_rebuild_every_piece_they_still_hold() {
        let big = bytes(5 * PL as usize, 1);
        let (n_dir, n) = release_of(
            &[
                ("a/big", big.clone()),
                ("c/one", bytes(5000, 2)),
                ("c/two", bytes(7000, 3)),
            ],
            PL,
        );
        // N+1: big renamed, a small file added before the others (they shift), and
        // "c/two" changed in its last byte.
        let mut two = bytes(7000, 3);
        *two.last_mut().unwrap() ^= 1;
        let (_m_dir, m) = release_of(
            &[
                ("b/big2", big),
                ("c/0new", bytes(3000, 9)),
                ("c/one", bytes(5000, 2)),
                ("c/two", two),
            ],
            PL,
        );
        let plan = plan_from(&m, &n, &n_dir);
        let s = plan.stats();
        assert_eq!((s.files_by_sha1, s.files_by_path), (2, 1), "{s:?}");
        let ok = rebuilt(&plan);
        // The renamed file's five pieces come from N; the packed piece holding the new
        // and the changed file cannot.
        let big_pieces = m
            .entries
            .iter()
            .find(|e| e.display_path() == "b/big2")
            .map(|e| e.offset / PL..(e.offset + e.length).div_ceil(PL))
            .unwrap();
        for p in big_pieces.clone() {
            assert!(ok[p as usize], "piece {p} of the renamed file");
        }
        assert!(ok.iter().filter(|&&b| !b).count() >= 1);
        assert!(ok.iter().filter(|&&b| b).count() as u64 >= big_pieces.end - big_pieces.start);
    }

    #[test]
    fn of_a_piece_no_candidate_builds_the_files_found_by_content_are_known() {
        // One packed piece: "a" unchanged, "b" changed in place (same path), "c" new,
        // "d" unchanged.
        let (a, b, d) = (bytes(3000, 1), bytes(5000, 2), bytes(4000, 4));
        let (n_dir, n) = release_of(&[("a", a.clone()), ("b", b.clone()), ("d", d.clone())], PL);
        let mut b2 = b.clone();
        b2[100] ^= 1;
        let c = bytes(2000, 3);
        let (_m_dir, m) = release_of(
            &[("a", a.clone()), ("b", b2), ("c", c), ("d", d.clone())],
            PL,
        );
        let plan = plan_from(&m, &n, &n_dir);
        assert!(plan.candidates(0).is_empty(), "a new file: no candidate");
        assert!(plan.has_known(0));
        let len = m.total_length as usize;
        let mut buf = vec![0xAAu8; len];
        let known = plan
            .read_known(0, &mut buf, &mut Reader::default())
            .unwrap();
        let at = |name: &str| {
            let e = m.entries.iter().find(|e| e.display_path() == name).unwrap();
            e.offset as u32..(e.offset + e.length) as u32
        };
        assert_eq!(known, vec![at("a"), at("d")]);
        assert_eq!(&buf[at("a").start as usize..at("a").end as usize], &a[..]);
        assert_eq!(&buf[at("d").start as usize..at("d").end as usize], &d[..]);
        // The changed and the new file's bytes are left alone.
        assert!(buf[at("b").start as usize..at("c").end as usize]
            .iter()
            .all(|&x| x == 0xAA));
        // Without `sha1` (a torrent of another tool), nothing is known.
        let mut m_nosha = (*m).clone();
        for e in &mut m_nosha.entries {
            e.sha1 = None;
        }
        let plan = plan_from(&Arc::new(m_nosha), &n, &n_dir);
        assert!(!plan.has_known(0));
        assert!(plan
            .read_known(0, &mut buf, &mut Reader::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_piece_of_the_same_hash_is_read_through_the_local_layout_and_rot_is_refused() {
        let big = bytes(3 * PL as usize, 5);
        let (n_dir, n) = release_of(&[("x/data", big.clone())], PL);
        let (_m_dir, m) = release_of(&[("y/other-name", big)], PL);
        // Without `sha1` (a torrent of another tool) only the piece hashes match.
        let mut n_nosha = (*n).clone();
        for e in &mut n_nosha.entries {
            e.sha1 = None;
        }
        let local = Local {
            release: Arc::new(n_nosha),
            data_dir: n_dir.path().to_path_buf(),
        };
        let plan = Plan::new(m.clone(), vec![local]);
        assert_eq!(
            plan.candidates(0),
            vec![Candidate::Piece { local: 0, piece: 0 }]
        );
        assert_eq!(rebuilt(&plan), vec![true, true, true]);
        // A byte rotted in the local copy: that piece does not hash right, the others do.
        let f = n_dir.path().join("x/data");
        let mut b = std::fs::read(&f).unwrap();
        b[PL as usize + 10] ^= 0xff;
        std::fs::write(&f, b).unwrap();
        assert_eq!(rebuilt(&plan), vec![true, false, true]);
    }
}
