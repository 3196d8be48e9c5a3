//! `swarmfs sample DIR`: write a generated release to try swarmfs on.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::sample::{write_sample, SampleSpec};

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Directory to create (must not exist).
    pub dir: PathBuf,
    /// Total size of the release's files.
    #[arg(long, value_parser = super::parse_size, default_value = "64M")]
    pub size: u64,
    /// Number of small files.
    #[arg(long, default_value_t = 400)]
    pub small_files: usize,
    /// Seed of the content: the same size, file count and seed give the same release.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let spec = SampleSpec {
        size: args.size,
        small_files: args.small_files,
        seed: args.seed,
    };
    let files = write_sample(&args.dir, &spec)
        .with_context(|| format!("cannot write the sample release to {}", args.dir.display()))?;
    eprintln!(
        "wrote a sample release of {} files to {}",
        files.len(),
        args.dir.display()
    );
    Ok(())
}
