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
use std::sync::Mutex;

use crate::release::{EntryKind, Release, MIN_PIECE_LENGTH};

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
pub struct Recorder {
    path: PathBuf,
    /// Path and index of its first block in `RecorderState::seen`, by entry index.
    files: Vec<(String, usize)>,
    state: Mutex<RecorderState>,
}

struct RecorderState {
    file: std::fs::File,
    seen: Vec<bool>,
    lines: u64,
    failed: bool,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes a header naming the release.
    pub fn create(path: &Path, release: &Release) -> Result<Recorder, ProfileError> {
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
            state: Mutex::new(RecorderState {
                file,
                seen: vec![false; blocks],
                lines: 0,
                failed: false,
            }),
        })
    }

    /// Records a read of `len` bytes at `offset` of entry `entry` (an index into
    /// `Release::entries`).
    pub fn record(&self, entry: usize, offset: u64, len: u64) {
        let Some((path, first)) = self.files.get(entry) else {
            return;
        };
        if len == 0 {
            return;
        }
        // The file's blocks end where the next file's begin.
        let end = self.files.get(entry + 1).map_or(usize::MAX, |f| f.1);
        let a = first + (offset / MIN_PIECE_LENGTH) as usize;
        let b = (first + (offset + len).div_ceil(MIN_PIECE_LENGTH) as usize).min(end);
        let mut s = self.state.lock().expect("not poisoned");
        let b = b.min(s.seen.len());
        let mut new = false;
        for seen in s.seen.get_mut(a..b).unwrap_or_default() {
            new |= !std::mem::replace(seen, true);
        }
        if !new || s.failed {
            return;
        }
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
        let rec = Recorder::create(&path, &r).unwrap();
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
        let rec = Recorder::create(&path, &big).unwrap();
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
        let rec = Recorder::create(&path, &r).unwrap();
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
}
