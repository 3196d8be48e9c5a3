//! swarmfs: deploy a software release to a fleet over BitTorrent, and mount it lazily as
//! a read-only filesystem that fetches what is read first.
//!
//! The layers, from the bottom up (ARCHITECTURE.md has the map); a module imports only
//! the layers listed before it:
//! - [`release`]: pure release logic: torrents made from, parsed into and checked against
//!   release directories. No network, never writes outside `publish`'s output.
//! - [`fs`]: the filesystem logic without a kernel: inodes, read plans, the map of
//!   verified pieces, read-ahead, the one errno mapping. No I/O.
//! - [`swarm`]: the only user of librqbit: sessions, peers, trackers, seeding, fetching,
//!   our piece picker.
//! - [`mount`]: one mounted release: the FUSE adapter, the cache store, boot profiles,
//!   the control socket, metrics, the mount table.
//! - [`cmd`]: one file per subcommand, wiring the command line to the layers.
//!
//! Beside them, [`sample`] generates a sample release for the demo, the tests and the
//! benchmarks; it depends on nothing of the crate.

pub mod cmd;
pub mod fs;
pub mod mount;
pub mod release;
pub mod sample;
pub mod swarm;
