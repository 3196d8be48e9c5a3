//! swarmfs: deploy a software release to a fleet over BitTorrent, and mount it lazily as
//! a read-only filesystem that fetches what is read first.
//!
//! Layers, each behind its own module (see ARCHITECTURE.md):
//! - [`release`]: torrents made from, parsed into and checked against release directories.
//! - [`fs`]: the filesystem logic without a kernel; [`fuse`]: the thin fuser adapter.
//! - [`store`]: a mount's cache and its map of verified pieces.
//! - [`swarm`]: the only user of librqbit: sessions, peers, trackers, seeding, fetching.
//! - [`control`]: the per-mount socket `status` and `prewarm` talk to; [`metrics`].
//! - [`mountpoint`]: the kernel's mount table.
//! - [`profile`]: boot profiles, recorded on one host and fetched first on the others.
//! - [`sample`]: a generated sample release for the demo, tests and benchmarks.
//! - [`usage`]: CPU time and peak memory of this process.
//! - [`cmd`]: one file per subcommand, wiring only.

pub mod cmd;
pub mod control;
pub mod fs;
pub mod fuse;
pub mod metrics;
pub mod mountpoint;
pub mod profile;
pub mod release;
pub mod sample;
pub mod store;
pub mod swarm;
pub mod usage;
