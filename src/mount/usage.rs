//! What this process has cost the host: CPU time and peak memory (for `status` and the
//! summary a mount logs when it ends; the fleet benchmark reads them per host). One
//! `getrusage` call; it imports nothing of the crate.

/// CPU seconds (user + system) and peak resident memory of this process so far.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// Of `cpu_seconds`, the kernel's share (system calls, and the network stack's work done
    /// on this process's behalf): where a cost per byte goes.
    #[serde(default)]
    pub system_seconds: f64,
    /// Times a thread of this process went to sleep waiting (voluntary context switches): the
    /// wake-ups a cost per byte is made of.
    #[serde(default)]
    pub waits: u64,
}

pub fn usage() -> Usage {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return Usage::default();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu_seconds: secs(r.ru_utime) + secs(r.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: r.ru_maxrss as u64 * 1024,
        system_seconds: secs(r.ru_stime),
        waits: r.ru_nvcsw as u64,
    }
}

/// CPU seconds per GB (10^9 bytes) received; `None` before a MB has arrived.
pub fn cpu_per_gb(u: &Usage, received: u64) -> Option<f64> {
    (received >= 1_000_000).then(|| u.cpu_seconds / (received as f64 / 1e9))
}
