//! swarmfs: deploy a software release to a fleet over BitTorrent, and (soon) mount it
//! lazily as a read-only filesystem.
//!
//! Layers, each behind its own module (see ARCHITECTURE.md):
//! - [`release`]: torrents made from, parsed into and checked against release directories.
//! - [`swarm`]: the only user of librqbit: sessions, peers, trackers, seeding.
//! - [`sample`]: a generated sample release for the demo, tests and benchmarks.
//! - [`cmd`]: one file per subcommand, wiring only.

pub mod cmd;
pub mod control;
pub mod fs;
pub mod fuse;
pub mod metrics;
pub mod mountpoint;
pub mod release;
pub mod sample;
pub mod store;
pub mod swarm;
