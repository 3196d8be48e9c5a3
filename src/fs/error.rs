//! Filesystem errors and their one mapping to errno.

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("invalid argument")]
    InvalidArgument,
    #[error("the release is read-only")]
    ReadOnly,
    #[error("{path}: piece {piece} could not be fetched within {secs} s; is any peer reachable?")]
    Timeout { path: String, piece: u64, secs: u64 },
    #[error("{path}: the cache cannot be read: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the swarm failed: {message}")]
    Swarm { path: String, message: String },
}

impl FsError {
    /// The errno the kernel passes to the reader. The only such mapping in swarmfs.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::InvalidArgument => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::Timeout { .. } | FsError::Cache { .. } | FsError::Swarm { .. } => libc::EIO,
        }
    }
}
