//! The per-mount control socket that `status` and `prewarm` talk to: its server (in the
//! mount's daemon) and its client (in the commands).
//!
//! It owns the socket's path, the wire protocol and the `ControlError`s a client sees. It
//! reads a mount through [`MountInfo`] and never touches FUSE.
//!
//! Each mount listens on `/run/swarmfs/<id>.sock` (mode 0600: root or the mount's owner),
//! `<id>` being derived from the mountpoint's path, and records itself in
//! `/run/swarmfs/<id>.json`. The protocol is one JSON request line, then JSON lines back:
//! `{"cmd":"status"}` gets one status object; `{"cmd":"prewarm"}` gets a status object
//! every second until every piece is local, then one with `"complete": true`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tracing::{debug, warn};

pub use super::status::{MountInfo, Status};
use crate::release::{EntryKind, Release};

/// Where control sockets live; `SWARMFS_RUN_DIR` overrides (tests).
pub fn run_dir() -> PathBuf {
    std::env::var_os("SWARMFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/swarmfs"))
}

/// A short stable id for a mountpoint (its absolute path).
pub fn mount_id(mnt: &Path) -> String {
    use sha1::Digest;
    hex::encode(&sha1::Sha1::digest(mnt.as_os_str().as_encoded_bytes())[..8])
}

pub fn socket_path(mnt: &Path) -> PathBuf {
    run_dir().join(format!("{}.sock", mount_id(mnt)))
}

pub fn record_path(mnt: &Path) -> PathBuf {
    run_dir().join(format!("{}.json", mount_id(mnt)))
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cmd: String,
    /// For prewarm: only files matching these globs (`bin/**`, `lib/*.so`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
}

/// Binds the socket (replacing a stale one) and serves it until the runtime stops.
pub fn serve(info: Arc<MountInfo>) -> std::io::Result<PathBuf> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = socket_path(&info.mountpoint);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(
        record_path(&info.mountpoint),
        serde_json::json!({
            "mountpoint": info.mountpoint, "infohash": info.infohash, "name": info.name,
            "pid": std::process::id(), "socket": path,
        })
        .to_string(),
    )?;
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                break;
            };
            let info = info.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(conn, info).await {
                    debug!("control connection: {e}");
                }
            });
        }
    });
    Ok(path)
}

/// Removes the socket and the record.
pub fn remove(mnt: &Path) {
    let _ = std::fs::remove_file(socket_path(mnt));
    let _ = std::fs::remove_file(record_path(mnt));
}

async fn handle(conn: tokio::net::UnixStream, info: Arc<MountInfo>) -> anyhow::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(r).read_line(&mut line).await?;
    let req: Request = serde_json::from_str(&line)?;
    let send = |s: &Status| serde_json::to_string(s).map(|j| j + "\n");
    match req.cmd.as_str() {
        "status" => w.write_all(send(&info.status())?.as_bytes()).await?,
        "prewarm" => {
            let wanted = wanted_pieces(&info.release, &req.paths)?;
            let wanted_bytes = |f: &dyn Fn(u64) -> bool| -> u64 {
                wanted
                    .iter()
                    .filter(|&&p| f(p))
                    .map(|&p| piece_len(&info.release, p))
                    .sum()
            };
            let total = wanted_bytes(&|_| true);
            let files: Vec<usize> = matching_entries(&info.release, &req.paths)?;
            if let Err(e) = info.fetcher.fetch_files(&files).await {
                warn!("prewarm: cannot select the files: {e}");
            }
            let pieces = info.fetcher.pieces().clone();
            let mut changed = pieces.subscribe();
            loop {
                let mut s = info.status();
                let present = wanted_bytes(&|p| pieces.has(p));
                s.prewarm_total_bytes = Some(total);
                s.prewarm_present_bytes = Some(present);
                w.write_all(send(&s)?.as_bytes()).await?;
                if present == total {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    // Report at most every second, at once when the last piece lands.
                    while changed.changed().await.is_ok() {
                        if wanted.iter().all(|&p| pieces.has(p)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        other => anyhow::bail!("unknown command {other:?}"),
    }
    Ok(())
}

fn piece_len(r: &Release, p: u64) -> u64 {
    r.piece_length.min(r.total_length - p * r.piece_length)
}

/// Indices of the regular files matching `globs` (all files when there are none).
fn matching_entries(r: &Release, globs: &[String]) -> anyhow::Result<Vec<usize>> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        b.add(
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()?,
        );
    }
    let set = b.build()?;
    Ok(r.entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }) && e.length > 0)
        .filter(|(_, e)| globs.is_empty() || set.is_match(e.display_path()))
        .map(|(i, _)| i)
        .collect())
}

/// The pieces holding the files matching `globs`, sorted, without repeats.
fn wanted_pieces(r: &Release, globs: &[String]) -> anyhow::Result<Vec<u64>> {
    let mut v: Vec<u64> = matching_entries(r, globs)?
        .into_iter()
        .flat_map(|i| {
            let e = &r.entries[i];
            e.offset / r.piece_length..(e.offset + e.length).div_ceil(r.piece_length)
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Why a control request failed; each maps to its own exit code (see `swarmfs --help`).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}: not a swarmfs mount")]
    NotAMount(PathBuf),
    #[error("{0}: the swarmfs daemon of this mount is not answering (killed?); unmount it with `swarmfs unmount`")]
    NotAnswering(PathBuf),
    #[error("{0}: bad answer from the mount: {1}")]
    Protocol(PathBuf, String),
}

/// Sends `cmd` to the mount at `mnt` and calls `each` with every status line received.
pub fn request(
    mnt: &Path,
    cmd: &str,
    paths: &[String],
    timeout: Option<Duration>,
    mut each: impl FnMut(&Status) -> bool,
) -> Result<(), ControlError> {
    let sock = socket_path(mnt);
    if !sock.exists() {
        return Err(ControlError::NotAMount(mnt.to_path_buf()));
    }
    let mut conn = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(|_| ControlError::NotAnswering(mnt.to_path_buf()))?;
    conn.set_read_timeout(Some(
        timeout
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5)),
    ))
    .ok();
    let req = serde_json::to_string(&Request {
        cmd: cmd.into(),
        paths: paths.to_vec(),
    })
    .expect("serialisable")
        + "\n";
    conn.write_all(req.as_bytes())
        .map_err(|_| ControlError::NotAnswering(mnt.to_path_buf()))?;
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|_| ControlError::NotAnswering(mnt.to_path_buf()))?;
        let s: Status = serde_json::from_str(&line)
            .map_err(|e| ControlError::Protocol(mnt.to_path_buf(), e.to_string()))?;
        if !each(&s) {
            break;
        }
    }
    Ok(())
}
