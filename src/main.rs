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
    /// Mount a release read-only; reads fetch what they need first, the rest follows.
    Mount(cmd::mount::MountArgs),
    /// Unmount a swarmfs mount (detaching it if busy) and stop its daemon.
    Unmount(cmd::mount::UnmountArgs),
    /// Fetch everything of a mounted release; return 0 once every byte is local.
    ///
    /// Exit codes: 0 done, 1 other error, 3 not a swarmfs mount, 4 the mount's daemon is
    /// not answering, 5 --timeout reached, 6 no peer reachable (--no-peer-timeout).
    Prewarm(cmd::prewarm::PrewarmArgs),
    /// Show how far a mount is (or every swarmfs mount on this host).
    ///
    /// Exit codes: 0 ok, 1 other error, 3 not a swarmfs mount, 4 the daemon is not answering.
    Status(cmd::status::StatusArgs),
    /// Print the infohash (and with --json the files) of a torrent, magnet link or infohash.
    Info(cmd::info::InfoArgs),
    /// List the releases in a cache directory (size, last mount, mounted or not), remove
    /// some, or prune it to a size.
    Cache(cmd::cache::CacheArgs),
    /// Write a new Ed25519 key pair for signing releases (publish --sign, mount --trust).
    Keygen(cmd::keygen::KeygenArgs),
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
        Command::Mount(a) => cmd::mount::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Cache(a) => cmd::cache::run(a),
        Command::Unmount(a) => cmd::mount::unmount(a),
        Command::Prewarm(a) => cmd::prewarm::run(a),
        Command::Status(a) => cmd::status::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmfs: error: {e:#}");
            exit_code(&e)
        }
    }
}

/// Distinct exit codes for the failures scripts act on (documented in `--help`).
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use swarmfs::mount::control::ControlError;
    match e.downcast_ref::<ControlError>() {
        Some(ControlError::NotAMount(_)) => return ExitCode::from(3),
        Some(_) => return ExitCode::from(4),
        None => {}
    }
    if e.downcast_ref::<cmd::prewarm::TimedOut>().is_some() {
        return ExitCode::from(5);
    }
    if e.downcast_ref::<cmd::prewarm::NoPeer>().is_some() {
        return ExitCode::from(6);
    }
    ExitCode::FAILURE
}
