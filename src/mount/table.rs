//! The kernel's mount table: is a path mounted, by whom, and how to unmount it.
//!
//! It owns reading `/proc/self/mountinfo`, telling a stale swarmfs mount (its daemon
//! killed) from a live one, and unmounting (with detach when busy). It knows nothing of
//! a mount's release or daemon.

use std::io;
use std::path::{Path, PathBuf};

/// The filesystem type swarmfs mounts show in /proc/mounts (with libfuse's helper).
pub const FSTYPE: &str = "fuse.swarmfs";
/// The source ("fsname") every swarmfs mount has, followed by the release name.
pub const FSNAME_PREFIX: &str = "swarmfs:";

/// A line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// All current mounts.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mountpoint = unescape(left.split(' ').nth(4)?);
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = unescape(r.next()?);
    Some(MountEntry {
        mountpoint: PathBuf::from(mountpoint),
        fstype,
        source,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl MountEntry {
    /// Whether this is a swarmfs mount.
    pub fn is_swarmfs(&self) -> bool {
        self.fstype == FSTYPE
            || (self.fstype.starts_with("fuse") && self.source.starts_with(FSNAME_PREFIX))
    }
}

/// The mount at exactly `path`, if any (the last one wins, as in the kernel).
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mountpoint == path))
}

/// What is at a would-be mountpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum MountpointState {
    /// An existing directory with nothing mounted on it.
    Free,
    /// A FUSE mount whose daemon is gone (ENOTCONN).
    Stale,
    /// Something is mounted and answering.
    Mounted(String),
}

/// Checks `path` (absolute) before mounting on it.
pub fn inspect(path: &Path) -> Result<MountpointState, String> {
    // Opening the directory reaches the daemon; `stat` may be answered from the kernel's
    // attribute cache even when the daemon is gone.
    if let Err(e) = std::fs::read_dir(path) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            return Ok(MountpointState::Stale);
        }
    }
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(MountpointState::Stale),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{}: no such directory; create it first (mkdir -p)",
                path.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(md) if !md.is_dir() => {
            return Err(format!(
                "{}: not a directory; a mountpoint must be a directory",
                path.display()
            ))
        }
        Ok(_) => {}
    }
    match mount_at(path) {
        Ok(Some(m)) => Ok(MountpointState::Mounted(m.fstype)),
        Ok(None) => Ok(MountpointState::Free),
        Err(e) => Err(format!("cannot read the mount table: {e}")),
    }
}

/// Unmounts `path`; if it is busy, detaches it (it goes away when the last user closes it).
/// Returns whether it had to detach.
pub fn unmount(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(false);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(true);
        }
        return Err(io::Error::last_os_error());
    }
    Err(e)
}

/// Clears a stale mount left by a killed daemon.
pub fn clear_stale(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let l = "36 35 0:32 / /srv/my\\040code rw,nosuid - fuse.swarmfs swarmfs rw,user_id=0";
        let m = parse_line(l).unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/srv/my code"));
        assert_eq!(m.fstype, "fuse.swarmfs");
    }
}
