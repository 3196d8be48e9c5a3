//! A librqbit storage that serves a published directory and can never write to it.
//!
//! librqbit's default storage opens every torrent entry for writing and sets its length:
//! seeding a torrent with a symlink entry over the real directory truncated the link's
//! target to 0 bytes (DESIGN.md, decision 4). This storage opens regular files read-only
//! with `O_NOFOLLOW`, never touches symlink or padding entries, and answers every write,
//! resize or removal with an error or a no-op, so the published directory stays as it was.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use librqbit::storage::{StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ManagedTorrentShared, TorrentMetadata};

use crate::release::{EntryKind, Release};

/// Makes [`ReadOnlyDir`] storages for one release directory.
#[derive(Clone)]
pub(crate) struct ReadOnlyDirFactory {
    pub release: Arc<Release>,
    pub dir: PathBuf,
}

impl StorageFactory for ReadOnlyDirFactory {
    type Storage = ReadOnlyDir;

    fn create(
        &self,
        _shared: &ManagedTorrentShared,
        metadata: &TorrentMetadata,
    ) -> anyhow::Result<ReadOnlyDir> {
        if metadata.file_infos.len() != self.release.entries.len() {
            bail!("librqbit and swarmfs disagree on the torrent's file list");
        }
        let files = self
            .release
            .entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { .. } if e.length > 0 => {
                    let mut p = self.dir.clone();
                    p.extend(&e.path);
                    Some((p, OnceLock::new()))
                }
                _ => None,
            })
            .collect();
        Ok(ReadOnlyDir {
            files: Arc::new(files),
        })
    }

    fn clone_box(&self) -> librqbit::storage::BoxStorageFactory {
        self.clone().boxed()
    }
}

/// Per torrent file index: the path and, once opened, the read-only handle.
type Files = Vec<Option<(PathBuf, OnceLock<File>)>>;

pub(crate) struct ReadOnlyDir {
    files: Arc<Files>,
}

impl ReadOnlyDir {
    fn file(&self, file_id: usize) -> anyhow::Result<&File> {
        let (path, cell) = self
            .files
            .get(file_id)
            .and_then(Option::as_ref)
            .with_context(|| format!("file index {file_id} holds no data"))?;
        if let Some(f) = cell.get() {
            return Ok(f);
        }
        let f = crate::release::open_nofollow(path)?;
        Ok(cell.get_or_init(|| f))
    }
}

impl TorrentStorage for ReadOnlyDir {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() {
            // librqbit reads zero bytes from empty files and symlinks as it walks a piece.
            return Ok(());
        }
        let f = self.file(file_id)?;
        f.read_exact_at(buf, offset)
            .with_context(|| format!("reading file index {file_id} at {offset}"))
    }

    fn pwrite_all(&self, file_id: usize, _offset: u64, _buf: &[u8]) -> anyhow::Result<()> {
        bail!("refusing to write file index {file_id}: the published directory is read-only")
    }

    fn remove_file(&self, _file_id: usize, _filename: &std::path::Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_directory_if_empty(&self, _path: &std::path::Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, _file_id: usize, _length: u64) -> anyhow::Result<()> {
        // Lengths were checked by `release::verify_dir` before seeding started.
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(ReadOnlyDir {
            files: self.files.clone(),
        }))
    }
}
