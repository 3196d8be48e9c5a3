//! The filesystem logic, without a kernel: inodes built from a [`Release`], lookups,
//! attributes, directory listings, symlink targets and read plans (which file bytes and
//! which pieces a read touches); the [`PieceMap`] of verified pieces that every read is
//! checked against; sequential-read detection ([`readahead`]); [`FsError`] with the one
//! errno mapping.
//!
//! It owns no file, socket or thread and does no I/O: the FUSE adapter
//! (`crate::mount::fuse`) translates kernel requests into calls here, and the swarm sets
//! bits of the `PieceMap`. It may import only `release`.
//!
//! The tree is immutable once built: a release never changes, so it is a plain vector
//! indexed by inode number and needs no locks.

mod error;
mod pieces;
pub mod readahead;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::FsError;
pub use pieces::{PieceMap, PieceSet};

use crate::release::{EntryKind, Release};

/// An inode number; 1 is the root.
pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Time stamp of directories and symlinks, and base of file mtimes: 2000-01-01.
const EPOCH_2000: u64 = 946_684_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
}

#[derive(Debug)]
enum NodeData {
    Dir { children: BTreeMap<String, Ino> },
    File { entry: usize, executable: bool },
    Symlink { target: String },
}

#[derive(Debug)]
struct Node {
    parent: Ino,
    size: u64,
    mtime: SystemTime,
    data: NodeData,
}

/// Which bytes a read needs: a range of one torrent entry, and the pieces holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// Index of the entry in `Release::entries` (librqbit's file index too).
    pub entry: usize,
    pub offset: u64,
    pub len: u64,
    pub pieces: Range<u64>,
}

/// The inode tree of one release.
#[derive(Debug)]
pub struct FsTree {
    /// Index = inode number; 0 is unused.
    nodes: Vec<Node>,
    piece_length: u64,
    offsets: Vec<u64>,
    total_length: u64,
    file_count: u64,
}

impl FsTree {
    pub fn new(release: &Release) -> FsTree {
        let dir_time = UNIX_EPOCH + Duration::from_secs(EPOCH_2000);
        let mut nodes = vec![
            Node {
                parent: 0,
                size: 0,
                mtime: dir_time,
                data: NodeData::Dir {
                    children: BTreeMap::new(),
                },
            },
            Node {
                parent: ROOT_INO,
                size: 0,
                mtime: dir_time,
                data: NodeData::Dir {
                    children: BTreeMap::new(),
                },
            },
        ];
        let mut file_count = 0;
        for (i, e) in release.entries.iter().enumerate() {
            let (data, size, mtime) = match &e.kind {
                EntryKind::Padding => continue,
                EntryKind::File { executable } => (
                    NodeData::File {
                        entry: i,
                        executable: *executable,
                    },
                    e.length,
                    file_mtime(
                        e.sha1.as_ref().or(release
                            .piece_hashes
                            .get((e.offset / release.piece_length) as usize)),
                    ),
                ),
                EntryKind::Symlink { target } => {
                    let t = relative_target(&e.path[..e.path.len() - 1], target);
                    let len = t.len() as u64;
                    (NodeData::Symlink { target: t }, len, dir_time)
                }
            };
            file_count += 1;
            let mut dir = ROOT_INO;
            for c in &e.path[..e.path.len() - 1] {
                dir = child_dir(&mut nodes, dir, c, dir_time);
            }
            let ino = nodes.len() as Ino;
            nodes.push(Node {
                parent: dir,
                size,
                mtime,
                data,
            });
            if let NodeData::Dir { children } = &mut nodes[dir as usize].data {
                children.insert(e.path[e.path.len() - 1].clone(), ino);
            }
        }
        FsTree {
            nodes,
            piece_length: release.piece_length,
            offsets: release.entries.iter().map(|e| e.offset).collect(),
            total_length: release.total_length,
            file_count,
        }
    }

    fn node(&self, ino: Ino) -> Result<&Node, FsError> {
        match self.nodes.get(ino as usize) {
            Some(n) if ino != 0 => Ok(n),
            _ => Err(FsError::NotFound),
        }
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr, FsError> {
        let n = self.node(ino)?;
        let (kind, perm, nlink) = match &n.data {
            NodeData::Dir { children } => {
                let subdirs = children
                    .values()
                    .filter(|&&c| matches!(self.nodes[c as usize].data, NodeData::Dir { .. }))
                    .count() as u32;
                (Kind::Dir, 0o555, 2 + subdirs)
            }
            NodeData::File { executable, .. } => {
                (Kind::File, if *executable { 0o555 } else { 0o444 }, 1)
            }
            NodeData::Symlink { .. } => (Kind::Symlink, 0o777, 1),
        };
        Ok(Attr {
            ino,
            kind,
            size: n.size,
            perm,
            nlink,
            mtime: n.mtime,
        })
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        match &self.node(parent)?.data {
            NodeData::Dir { children } => {
                let ino = *children.get(name).ok_or(FsError::NotFound)?;
                self.attr(ino)
            }
            _ => Err(FsError::NotADirectory),
        }
    }

    /// Directory entries after `.` and `..`, in name order, with their inode and kind.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<(Ino, Kind, String)>, FsError> {
        let n = self.node(ino)?;
        let NodeData::Dir { children } = &n.data else {
            return Err(FsError::NotADirectory);
        };
        let mut out = vec![
            (ino, Kind::Dir, ".".to_string()),
            (n.parent, Kind::Dir, "..".to_string()),
        ];
        for (name, &c) in children {
            out.push((c, self.attr(c)?.kind, name.clone()));
        }
        Ok(out)
    }

    pub fn readlink(&self, ino: Ino) -> Result<&str, FsError> {
        match &self.node(ino)?.data {
            NodeData::Symlink { target } => Ok(target),
            _ => Err(FsError::InvalidArgument),
        }
    }

    /// Checks that `ino` can be opened for reading and returns its entry index.
    pub fn open(&self, ino: Ino, write: bool) -> Result<usize, FsError> {
        match &self.node(ino)?.data {
            NodeData::File { .. } if write => Err(FsError::ReadOnly),
            NodeData::File { entry, .. } => Ok(*entry),
            NodeData::Dir { .. } => Err(FsError::IsADirectory),
            NodeData::Symlink { .. } => Err(FsError::InvalidArgument),
        }
    }

    /// The bytes and pieces a read of `size` bytes at `offset` needs (clipped to EOF).
    pub fn read_plan(&self, ino: Ino, offset: u64, size: u32) -> Result<ReadPlan, FsError> {
        let n = self.node(ino)?;
        let NodeData::File { entry, .. } = n.data else {
            return Err(FsError::IsADirectory);
        };
        let offset = offset.min(n.size);
        let len = (size as u64).min(n.size - offset);
        let start = self.offsets[entry] + offset;
        let pieces = if len == 0 {
            0..0
        } else {
            start / self.piece_length..(start + len).div_ceil(self.piece_length)
        };
        Ok(ReadPlan {
            entry,
            offset,
            len,
            pieces,
        })
    }

    /// The pieces holding `len` bytes of a file from `offset` that are not already among
    /// `after` (a read's own pieces): what to ask for ahead of a sequential reader.
    pub fn ahead_pieces(&self, ino: Ino, offset: u64, len: u64, after: &Range<u64>) -> Range<u64> {
        let Ok(n) = self.node(ino) else { return 0..0 };
        let NodeData::File { entry, .. } = n.data else {
            return 0..0;
        };
        let end = (offset + len).min(n.size);
        if len == 0 || offset >= end {
            return 0..0;
        }
        let (a, b) = (self.offsets[entry] + offset, self.offsets[entry] + end);
        (a / self.piece_length).max(after.end)..b.div_ceil(self.piece_length)
    }

    /// The entry and every piece of a regular file (for whole-file decisions).
    pub fn file_pieces(&self, ino: Ino) -> Result<(usize, Range<u64>), FsError> {
        let n = self.node(ino)?;
        let NodeData::File { entry, .. } = n.data else {
            return Err(FsError::IsADirectory);
        };
        let start = self.offsets[entry];
        let pieces = if n.size == 0 {
            0..0
        } else {
            start / self.piece_length..(start + n.size).div_ceil(self.piece_length)
        };
        Ok((entry, pieces))
    }

    /// (total bytes of the release, number of files and symlinks) for `statfs`.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_length, self.file_count)
    }
}

fn child_dir(nodes: &mut Vec<Node>, parent: Ino, name: &str, mtime: SystemTime) -> Ino {
    if let NodeData::Dir { children } = &nodes[parent as usize].data {
        if let Some(&c) = children.get(name) {
            return c;
        }
    }
    let ino = nodes.len() as Ino;
    nodes.push(Node {
        parent,
        size: 0,
        mtime,
        data: NodeData::Dir {
            children: BTreeMap::new(),
        },
    });
    if let NodeData::Dir { children } = &mut nodes[parent as usize].data {
        children.insert(name.to_string(), ino);
    }
    ino
}

/// A deterministic mtime that changes with the content: 2000-01-01 plus up to ten years
/// taken from the file's hash. Web servers derive ETags from (mtime, size), so a changed
/// file of the same size must not keep its mtime across releases.
fn file_mtime(hash: Option<&[u8; 20]>) -> SystemTime {
    let h = hash.map_or(0, |h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64);
    UNIX_EPOCH + Duration::from_secs(EPOCH_2000 + h % (10 * 365 * 86_400))
}

/// A symlink target (relative to the release root) expressed relative to the link's
/// directory, as a symlink on disk would hold it.
fn relative_target(link_dir: &[String], target: &[String]) -> String {
    let common = link_dir
        .iter()
        .zip(target)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; link_dir.len() - common];
    parts.extend(target[common..].iter().map(String::as_str));
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn symlink_targets_are_relative_to_the_link() {
        assert_eq!(
            relative_target(&s(&["config"]), &s(&["config", "app.yaml"])),
            "app.yaml"
        );
        assert_eq!(
            relative_target(&s(&["static", "js"]), &s(&["templates"])),
            "../../templates"
        );
        assert_eq!(relative_target(&s(&[]), &s(&["a", "b"])), "a/b");
        assert_eq!(
            relative_target(&s(&["a", "b"]), &s(&["a", "c", "d"])),
            "../c/d"
        );
    }
}
