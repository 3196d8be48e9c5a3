//! The `swarmfs` command line: parse, set up logging, run a subcommand, map errors to
//! exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use swarmfs::cmd;
use tracing_subscriber::EnvFilter;

/// Deploy a software release to a fleet over BitTorrent.
///
/// `publish` makes a deterministic torrent of a release directory (BitTorrent v1 with
/// BEP 47 padding, attributes and symlinks) and prints its infohash; `seed` serves it
/// to peers. Any BitTorrent client (Transmission, aria2, libtorrent) can join the swarm.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// More log output (-v: swarmfs debug, -vv: everything debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a torrent of a release directory and print its infohash and magnet link.
    Publish(cmd::publish::PublishArgs),
    /// Serve a published release to peers until SIGINT or SIGTERM.
    Seed(cmd::seed::SeedArgs),
    /// Write a generated sample release (for demos and tests) into a new directory.
    Sample(cmd::sample::SampleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "swarmfs=info,librqbit=warn,librqbit_core=warn",
        1 => "swarmfs=debug,librqbit=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Publish(a) => cmd::publish::run(a),
        Command::Seed(a) => cmd::seed::run(a),
        Command::Sample(a) => cmd::sample::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmfs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
