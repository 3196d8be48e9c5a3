//! Boot profiles: the order in which a release is read while a server starts, recorded
//! on one host and replayed by every other (DESIGN.md, "Boot profiles").
//!
//! A server's start-up reads a few percent of a release, in the same order on every
//! host. Without a profile each read is a round trip to the swarm, one after another;
//! with one, a mount asks for every start-up piece from the first second, ahead of the
//! rest of the background (and each host in an order of its own, so that the fleet
//! fetches each piece from the origin about once and trades it), and the start-up reads
//! find their pieces already here.
//!
//! The format is text, one read per line: `path<TAB>offset<TAB>length`, the path relative
//! to the release root with `/` between components; a line with only a path stands for
//! the whole file; blank lines and lines starting with `#` are skipped. It is the format
//! of the fleet benchmark's `.bootset` files. Paths are looked up by name, so a profile
//! recorded on one release serves the next: lines naming files that are gone are skipped.
//!
//! It owns the format, its mapping to a release's pieces ([`BootProfile`]) and the file
//! a recording mount writes ([`Recorder`]); the swarm's picker receives only the piece
//! list, and the FUSE adapter only calls `Recorder::record`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::release::{EntryKind, Release, MIN_PIECE_LENGTH};

/// The file, in a release's cache folder, where a mount records its start-up.
pub const LEARNT_FILE: &str = "startup.profile";

/// Where a mount's boot profile came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// `mount --boot-profile FILE`.
    File(PathBuf),
    /// This host's recording of the same release's start-up.
    Learnt,
    /// Carried in the release (`publish --boot-profile`).
    Torrent,
    /// This host's recording of a related release's start-up (its base, or one of the
    /// same name).
    Related { name: String, infohash: String },
}

impl std::fmt::Display for BootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootSource::File(p) => write!(f, "{}", p.display()),
            BootSource::Learnt => write!(f, "learnt at this release's last start-up here"),
            BootSource::Torrent => write!(f, "carried in the release"),
            BootSource::Related { name, infohash } => {
                write!(f, "learnt at the start-up of {name} ({infohash})")
            }
        }
    }
}

/// A recording in `path` that holds at least one read (a start-up that began), if any.
/// A recording that does not parse (a torn last line of a killed mount is skipped, not
/// refused: only whole lines are kept) is treated as none.
pub fn load_learnt(path: &Path) -> Option<BootProfile> {
    let text = std::fs::read_to_string(path).ok()?;
    // A killed mount may leave a last line without its newline: drop it.
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    BootProfile::parse(whole, path)
        .ok()
        .filter(|p| !p.reads.is_empty())
}

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the boot profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {why} (expected path<TAB>offset<TAB>length, or a path alone)")]
    Syntax {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("cannot write the boot profile {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of a profile: bytes of a file, or the whole file (`len: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRead {
    pub path: String,
    pub offset: u64,
    pub len: Option<u64>,
}

/// A parsed profile, in read order.
#[derive(Debug, Clone, Default)]
pub struct BootProfile {
    pub reads: Vec<ProfileRead>,
}

/// The pieces a profile names in one release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePieces {
    /// Every piece the profile's reads touch, once, in the order first touched.
    pub pieces: Vec<u32>,
    /// Lines naming a path that is not a file of this release (skipped).
    pub unknown_paths: usize,
}

impl BootProfile {
    pub fn load(path: &Path) -> Result<BootProfile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        BootProfile::parse(&text, path)
    }

    /// Parses profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<BootProfile, ProfileError> {
        let mut reads = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| ProfileError::Syntax {
                path: origin.to_path_buf(),
                line: i + 1,
                why,
            };
            let mut fields = line.split('\t');
            let path = fields.next().unwrap_or_default().trim_matches('/');
            if path.is_empty() {
                return Err(bad("the path is empty".into()));
            }
            let number = |s: Option<&str>, what: &str| -> Result<Option<u64>, ProfileError> {
                match s {
                    None => Ok(None),
                    Some(s) => s
                        .trim()
                        .parse()
                        .map(Some)
                        .map_err(|_| bad(format!("the {what} {s:?} is not a number"))),
                }
            };
            let offset = number(fields.next(), "offset")?;
            let len = number(fields.next(), "length")?;
            if fields.next().is_some() {
                return Err(bad("more than three fields".into()));
            }
            if offset.is_some() && len.is_none() {
                return Err(bad("an offset without a length".into()));
            }
            reads.push(ProfileRead {
                path: path.to_string(),
                offset: offset.unwrap_or(0),
                len,
            });
        }
        Ok(BootProfile { reads })
    }

    /// The profile as text, one read per line (what [`BootProfile::parse`] reads back).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for r in &self.reads {
            match r.len {
                Some(len) => out.push_str(&format!("{}\t{}\t{len}\n", r.path, r.offset)),
                None => out.push_str(&format!("{}\n", r.path)),
            }
        }
        out
    }

    /// The pieces of `release` the profile's reads touch, in order of first touch.
    pub fn pieces(&self, release: &Release) -> ProfilePieces {
        let files: HashMap<String, (u64, u64)> = release
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .map(|e| (e.display_path(), (e.offset, e.length)))
            .collect();
        let pl = release.piece_length;
        let mut seen = vec![false; release.piece_count() as usize];
        let mut out = ProfilePieces::default();
        for r in &self.reads {
            let Some(&(start, size)) = files.get(&r.path) else {
                out.unknown_paths += 1;
                continue;
            };
            let from = r.offset.min(size);
            let to = r.len.map_or(size, |l| from.saturating_add(l).min(size));
            if from >= to {
                continue;
            }
            for p in (start + from) / pl..(start + to).div_ceil(pl) {
                if !std::mem::replace(&mut seen[p as usize], true) {
                    out.pieces.push(p as u32);
                }
            }
        }
        out
    }
}

/// Writes a profile while a mount is read: one line for every read that touches a 16 KiB
/// block of its file that no earlier read touched. Each line is written as it happens, so
/// a killed mount leaves every read up to then.
///
/// Blocks of the file, not the recording torrent's pieces: the profile is replayed against
/// torrents of other piece sizes and layouts (the next release, the fleet's own torrent
/// made by another tool), and a read left out because its piece was already touched by a
/// neighbour's read is a miss where the neighbour lies elsewhere. Seen in the fleet
/// benchmark: a profile recorded at 256 KiB replayed at 64 KiB booted in 12.6 s with every
/// piece it named local at 4.3 s. 16 KiB is the smallest piece a torrent can have.
///
/// A recording asked for (`mount --record-profile`) lasts until unmount. A learning one
/// (every mount's, [`Window::StartUp`]) keeps only the start-up: it ends once no read
/// has been in flight for a quiet time ([`QUIET`]), or after [`MAX_LINES`] lines or an eighth of the
/// release's blocks, whichever comes first; a read waiting for the swarm keeps it open,
/// however long it waits. After it ends a read costs one atomic load here.
pub struct Recorder {
    path: PathBuf,
    /// Path and index of its first block in `RecorderState::seen`, by entry index.
    files: Vec<(String, usize)>,
    window: Window,
    /// The recording has ended (no line is written any more).
    closed: AtomicBool,
    state: Mutex<RecorderState>,
}

/// How long a recording lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Until the mount ends (`--record-profile`).
    Mount,
    /// The start-up only (a mount learning its boot profile): until no read has been in
    /// flight for this long.
    StartUp(Duration),
}

/// A learning recording ends when no read has been in flight for this long: a server's
/// start-up reads follow each other closely (the benchmark's reader, an interpreter's
/// imports: gaps of milliseconds), and what it reads later is its traffic, not its boot.
pub const QUIET: Duration = Duration::from_secs(5);
/// At most this many lines in a learnt profile (a few hundred KiB of text).
pub const MAX_LINES: u64 = 16_384;
/// A learnt profile names at most an eighth of its release's 16 KiB blocks, or this many
/// (64 MiB) in a smaller one: what a start-up reads is a small part of a release, and
/// the profile's pieces all come first, so one that held the whole release would order
/// nothing.
pub const MIN_BLOCKS: usize = 4096;

struct RecorderState {
    file: std::fs::File,
    seen: Vec<bool>,
    /// Blocks marked in `seen`.
    blocks: usize,
    lines: u64,
    failed: bool,
    /// Reads recorded and not yet answered.
    in_flight: usize,
    /// When the last read was answered (or the recording began).
    last_answer: Instant,
}

/// Held while a recorded read is answered; a learning recording does not end while one
/// is held.
pub struct Reading(Option<Arc<Recorder>>);

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            let mut s = r.state.lock().expect("not poisoned");
            s.in_flight -= 1;
            s.last_answer = Instant::now();
        }
    }
}

impl Recorder {
    /// Creates (or truncates) `path` and writes a header naming the release.
    pub fn create(
        path: &Path,
        release: &Release,
        window: Window,
    ) -> Result<Recorder, ProfileError> {
        let err = |source| ProfileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut blocks = 0;
        let files = release
            .entries
            .iter()
            .map(|e| {
                let first = blocks;
                blocks += e.length.div_ceil(MIN_PIECE_LENGTH) as usize;
                (e.display_path(), first)
            })
            .collect();
        let mut file = std::fs::File::create(path).map_err(err)?;
        writeln!(
            file,
            "# swarmfs boot profile of {} ({}): path<TAB>offset<TAB>length, in read order",
            release.name, release.info_hash
        )
        .map_err(err)?;
        Ok(Recorder {
            path: path.to_path_buf(),
            files,
            window,
            closed: AtomicBool::new(false),
            state: Mutex::new(RecorderState {
                file,
                seen: vec![false; blocks],
                blocks: 0,
                lines: 0,
                failed: false,
                in_flight: 0,
                last_answer: Instant::now(),
            }),
        })
    }

    /// Records a read of `len` bytes at `offset` of entry `entry` (an index into
    /// `Release::entries`). Hold what it returns until the read is answered.
    pub fn record(self: &Arc<Self>, entry: usize, offset: u64, len: u64) -> Reading {
        if self.closed.load(Ordering::Relaxed) || len == 0 {
            return Reading(None);
        }
        let Some((path, first)) = self.files.get(entry) else {
            return Reading(None);
        };
        // The file's blocks end where the next file's begin.
        let end = self.files.get(entry + 1).map_or(usize::MAX, |f| f.1);
        let a = first + (offset / MIN_PIECE_LENGTH) as usize;
        let b = (first + (offset + len).div_ceil(MIN_PIECE_LENGTH) as usize).min(end);
        let mut s = self.state.lock().expect("not poisoned");
        if self.start_up_over(&s) {
            return Reading(None);
        }
        let b = b.min(s.seen.len());
        let mut new = 0;
        for seen in s.seen.get_mut(a..b).unwrap_or_default() {
            new += usize::from(!std::mem::replace(seen, true));
        }
        s.blocks += new;
        if new > 0 && !s.failed {
            if let Err(e) = writeln!(s.file, "{path}\t{offset}\t{len}") {
                s.failed = true;
                tracing::error!(
                    "cannot write the boot profile {}: {e}; recording stops",
                    self.path.display()
                );
            } else {
                s.lines += 1;
            }
        }
        if self.window == Window::Mount {
            return Reading(None);
        }
        s.in_flight += 1;
        Reading(Some(self.clone()))
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Whether a learning recording's start-up is over (and closes it if so).
    fn start_up_over(&self, s: &RecorderState) -> bool {
        let Window::StartUp(quiet) = self.window else {
            return false;
        };
        let quiet = s.in_flight == 0 && s.last_answer.elapsed() >= quiet;
        let full = s.lines >= MAX_LINES || s.blocks >= (s.seen.len() / 8).max(MIN_BLOCKS);
        // A mount nobody read yet has not started up: its window opens at the first read.
        if (quiet && s.lines > 0) || full {
            self.closed.store(true, Ordering::Relaxed);
            tracing::info!(
                profile = %self.path.display(),
                lines = s.lines,
                "the start-up is over: its boot profile is recorded"
            );
            return true;
        }
        false
    }

    /// Whether the recording has ended (a learning one, after the start-up; asked at
    /// open, so that the first open after the start-up is a passthrough one).
    pub fn closed(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return true;
        }
        let s = self.state.lock().expect("not poisoned");
        self.start_up_over(&s)
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.state.lock().expect("not poisoned").lines
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::release::test_release as release;

    #[test]
    fn parses_lines_and_names_the_bad_one() {
        let p = Path::new("boot.profile");
        let ok = BootProfile::parse(
            "# comment\n\nbin/app\t0\t4096\r\n/etc/a.conf\nlib/x.so\t100\t5\n",
            p,
        )
        .unwrap();
        assert_eq!(
            ok.reads,
            vec![
                ProfileRead {
                    path: "bin/app".into(),
                    offset: 0,
                    len: Some(4096)
                },
                ProfileRead {
                    path: "etc/a.conf".into(),
                    offset: 0,
                    len: None
                },
                ProfileRead {
                    path: "lib/x.so".into(),
                    offset: 100,
                    len: Some(5)
                },
            ]
        );
        for (text, needle) in [
            ("a\tx\t1\n", "offset \"x\" is not a number"),
            ("ok\nb\t1\n", "line 2: an offset without a length"),
            ("\t1\t2\n", "the path is empty"),
            ("a\t1\t2\t3\n", "more than three fields"),
        ] {
            let e = BootProfile::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should say {needle:?}");
            assert!(e.starts_with("boot.profile, line"), "{e}");
        }
    }

    #[test]
    fn pieces_in_first_touch_order_once_unknown_paths_counted() {
        let piece = 16 << 10;
        let r = release(
            &[
                ("bin/app", 8 * piece),
                ("etc/a.conf", 100),
                ("lib/x.so", 3 * piece),
            ],
            piece,
        );
        let at = |name: &str| {
            r.entries
                .iter()
                .find(|e| e.display_path() == name)
                .unwrap()
                .offset
                / piece
        };
        let (app, conf, lib) = (
            at("bin/app") as u32,
            at("etc/a.conf") as u32,
            at("lib/x.so"),
        );
        let text = format!(
            "bin/app\t{}\t10\netc/a.conf\ngone/file\t0\t1\nbin/app\t0\t{}\nlib/x.so\t{}\t1\nbin/app\t{}\t0\n",
            5 * piece,
            2 * piece,
            10 * piece, // past the end: nothing
            piece
        );
        let got = BootProfile::parse(&text, Path::new("p"))
            .unwrap()
            .pieces(&r);
        assert_eq!(got.unknown_paths, 1);
        assert_eq!(got.pieces, vec![app + 5, conf, app, app + 1]);
        let _ = lib;
    }

    #[test]
    fn a_recorded_profile_replays_the_same_pieces() {
        let piece = 16 << 10;
        let r = release(&[("bin/app", 8 * piece), ("etc/a.conf", 100)], piece);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.profile");
        let rec = Arc::new(Recorder::create(&path, &r, Window::Mount).unwrap());
        let app = r
            .entries
            .iter()
            .find(|e| e.display_path() == "bin/app")
            .unwrap();
        let conf = r
            .entries
            .iter()
            .find(|e| e.display_path() == "etc/a.conf")
            .unwrap();
        let idx =
            |e: &crate::release::Entry| r.entries.iter().position(|x| x.path == e.path).unwrap();
        let (ia, ic) = (idx(app), idx(conf));
        rec.record(ia, 3 * piece, 4096);
        rec.record(ia, 3 * piece + 4096, 4096); // same piece: no line
        rec.record(ic, 0, 100);
        rec.record(ia, 0, 2 * piece);
        assert_eq!(rec.lines(), 3);
        let replay = BootProfile::load(&path).unwrap().pieces(&r);
        let a = (app.offset / piece) as u32;
        let c = (conf.offset / piece) as u32;
        assert_eq!(replay.pieces, vec![a + 3, c, a, a + 1]);
        assert_eq!(replay.unknown_paths, 0);
    }

    #[test]
    fn a_profile_recorded_with_large_pieces_serves_small_ones() {
        let files = [("bin/app", 8 << 16)];
        let big = release(&files, 64 << 10);
        let small = release(&files, 16 << 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.profile");
        let rec = Arc::new(Recorder::create(&path, &big, Window::Mount).unwrap());
        let ia = big
            .entries
            .iter()
            .position(|e| e.display_path() == "bin/app")
            .unwrap();
        let start = big.entries[ia].offset / (16 << 10);
        rec.record(ia, 0, 4096);
        rec.record(ia, 40 << 10, 4096); // the same 64 KiB piece, another 16 KiB block
        rec.record(ia, 44 << 10, 4096); // a block already read: no line
        assert_eq!(rec.lines(), 2);
        let replay = BootProfile::load(&path).unwrap().pieces(&small);
        assert_eq!(replay.pieces, vec![start as u32, start as u32 + 2]);
    }

    #[test]
    fn a_read_is_recorded_though_a_neighbour_touched_its_piece() {
        // Packed into one piece here; in another torrent of the same files (another tool's
        // layout, another order) they may lie in different pieces.
        let r = release(&[("a/x.txt", 1000), ("a/y.txt", 1000)], 16 << 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.profile");
        let rec = Arc::new(Recorder::create(&path, &r, Window::Mount).unwrap());
        let idx = |n: &str| {
            r.entries
                .iter()
                .position(|e| e.display_path() == n)
                .unwrap()
        };
        rec.record(idx("a/x.txt"), 0, 1000);
        rec.record(idx("a/y.txt"), 0, 1000);
        rec.record(idx("a/y.txt"), 500, 100); // y's block again: no line
        assert_eq!(rec.lines(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("a/y.txt\t0\t1000\n"), "{text}");
    }

    #[test]
    fn a_learnt_start_up_ends_when_no_read_is_in_flight_for_the_quiet_time() {
        let piece = 16 << 10;
        let r = release(&[("bin/app", 64 * piece), ("etc/a.conf", 100)], piece);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEARNT_FILE);
        let quiet = Duration::from_millis(250);
        let rec = Arc::new(Recorder::create(&path, &r, Window::StartUp(quiet)).unwrap());
        let app = r
            .entries
            .iter()
            .position(|e| e.display_path() == "bin/app")
            .unwrap();
        // Nothing read yet: a mount nobody reads has not started up, however long.
        std::thread::sleep(2 * quiet);
        let waiting = rec.record(app, 0, 4096); // a read that waits for the swarm
        std::thread::sleep(2 * quiet);
        drop(rec.record(app, piece, 4096)); // answered at once
        assert!(!rec.closed(), "a read in flight keeps the start-up open");
        drop(waiting);
        drop(rec.record(app, 2 * piece, 4096)); // right after: still the start-up
        std::thread::sleep(2 * quiet);
        assert!(
            rec.closed(),
            "asked (at an open) after the quiet time: over"
        );
        drop(rec.record(app, 3 * piece, 4096)); // after the quiet time: not recorded
        drop(rec.record(app, 4 * piece, 4096));
        assert_eq!(rec.lines(), 3);
        let p = load_learnt(&path).unwrap();
        assert_eq!(p.reads.len(), 3);
        assert_eq!(p.reads[2].offset, 2 * piece);
    }

    #[test]
    fn a_learnt_start_up_is_bounded_and_a_torn_last_line_is_dropped() {
        let piece = 16 << 10;
        // 4200 blocks (a sparse file): the bound is MIN_BLOCKS, more than an eighth.
        let tree = tempfile::tempdir().unwrap();
        std::fs::File::create(tree.path().join("big"))
            .unwrap()
            .set_len(4200 * piece)
            .unwrap();
        let opts = crate::release::PublishOptions {
            piece_length: piece,
            ..Default::default()
        };
        let r = crate::release::publish(tree.path(), &opts, &|_| {})
            .unwrap()
            .release;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEARNT_FILE);
        let rec = Arc::new(
            Recorder::create(&path, &r, Window::StartUp(Duration::from_secs(3600))).unwrap(),
        );
        for i in 0..4200u64 {
            drop(rec.record(0, i * piece, 100));
        }
        assert!(rec.closed());
        assert_eq!(rec.lines(), MIN_BLOCKS as u64);
        // A killed mount's torn last line, and an empty recording.
        std::fs::write(&path, "# header\nbig\t0\t100\nbig\t16384\t1").unwrap();
        assert_eq!(load_learnt(&path).unwrap().reads.len(), 1);
        std::fs::write(&path, "# header\n").unwrap();
        assert!(load_learnt(&path).is_none());
    }

    #[test]
    fn a_profile_as_text_parses_back_to_itself() {
        let p = BootProfile::parse("a/b\t5\t10\n# c\nd/e\n", Path::new("p")).unwrap();
        let again = BootProfile::parse(&p.to_text(), Path::new("p")).unwrap();
        assert_eq!(p.reads, again.reads);
        assert_eq!(p.to_text(), "a/b\t5\t10\nd/e\n");
    }
}
