//! The subcommands: argument types and wiring, no logic of their own.
//!
//! Each file turns its clap arguments into calls of the layers (`release`, `swarm`,
//! `mount`) and their errors into `anyhow` errors that name the input and what to do.
//! Nothing imports `cmd` but `main.rs`.

pub mod cache;
pub mod info;
pub mod keygen;
pub mod mount;
pub mod prewarm;
mod progress;
pub mod publish;
pub mod sample;
pub mod seed;
pub mod status;

pub use progress::ByteProgress;

/// Parses a byte size such as `262144`, `256K`, `256KiB`, `4M` or `1G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 262144, 256K, 4M)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?} has an unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration such as `30s`, `500ms`, `2m` or `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Parses a rate limit in bytes per second, like a size (`10M` is 10 MiB/s).
pub fn parse_rate(s: &str) -> Result<std::num::NonZeroU32, String> {
    let n = parse_size(s)?;
    u32::try_from(n)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .ok_or_else(|| format!("{s:?} must be between 1 byte/s and 4 GiB/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("262144"), Ok(262144));
        assert_eq!(parse_size("256K"), Ok(262144));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("K").is_err());
    }
}
