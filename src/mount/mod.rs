//! A mount: everything that serves one release at a mountpoint on this host.
//!
//! - [`daemon`]: one mount from start to end (runtime, order of start and stop).
//! - [`fuse`]: `SwarmFs`, the thin FUSE adapter (the only importer of `fuser`) and the
//!   one place where a mount's sync code meets its async code.
//! - [`store`]: the release's cache folder on disk and its start-up check.
//! - [`cache`]: the cache directory's releases, their sizes and eviction in a budget.
//! - [`profile`]: boot profiles, read from a file, carried in a release, recorded (every
//!   mount learns its start-up) and chosen.
//! - [`reuse`]: pieces rebuilt from the other releases in the cache (delta deploys).
//! - [`status`]: the read path's counters and the status snapshot.
//! - [`control`]: the per-mount socket that `status` and `prewarm` talk to.
//! - [`metrics`]: the Prometheus exporter.
//! - [`table`]: the kernel's mount table (stale mounts, unmount).
//! - [`trust`]: which signed releases this host accepts (trusted keys, no rollback).
//! - [`usage`]: CPU time and peak memory of this process.
//!
//! It builds on the layers below it (`release`, `fs`, `swarm`) and is used only by `cmd`;
//! nothing below imports it. Inside it, `status` depends on no sibling but `usage`,
//! `reuse` and `profile`, so the adapter, the control socket and the metrics all read it without importing each
//! other. A mount writes only under its cache directory and the run directory of its
//! control socket.

pub mod cache;
pub mod control;
pub mod daemon;
pub mod fuse;
pub mod metrics;
pub mod profile;
pub mod reuse;
pub mod status;
pub mod store;
pub mod table;
pub mod trust;
pub mod usage;
