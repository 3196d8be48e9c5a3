//! Prometheus metrics of a mount (`swarmfs mount --metrics ADDR:PORT`), through the
//! `metrics` facade and its Prometheus exporter (which serves `GET /metrics`).
//!
//! Read latencies are recorded where reads are answered; everything else is copied from
//! the mount's [`Status`] once a second. It owns the metric names and buckets, and
//! imports only the status snapshot.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::status::Status;

/// Read latency buckets, seconds: cache hits are microseconds, swarm reads milliseconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Starts the HTTP listener. Must run inside the tokio runtime.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
}

/// Records how long a read took, by where its bytes came from ("cache" or "swarm").
pub fn read_latency(source: &'static str, d: Duration) {
    histogram!("swarmfs_read_seconds", "source" => source).record(d.as_secs_f64());
}

/// Copies a status snapshot into the exported metrics.
pub fn update(s: &Status) {
    gauge!("swarmfs_pieces_present").set(s.pieces_present as f64);
    gauge!("swarmfs_pieces_total").set(s.pieces_total as f64);
    gauge!("swarmfs_bytes_present").set(s.present_bytes as f64);
    gauge!("swarmfs_bytes_total").set(s.total_bytes as f64);
    gauge!("swarmfs_peers").set(s.peers as f64);
    gauge!("swarmfs_complete").set(if s.complete { 1.0 } else { 0.0 });
    if let (Some(here), Some(total)) = (s.boot_pieces_present, s.boot_pieces_total) {
        gauge!("swarmfs_boot_profile_pieces_present").set(here as f64);
        gauge!("swarmfs_boot_profile_pieces_total").set(total as f64);
    }
    counter!("swarmfs_peers_refused_total", "direction" => "incoming")
        .absolute(s.peers_refused_incoming);
    counter!("swarmfs_peers_refused_total", "direction" => "outgoing")
        .absolute(s.peers_refused_outgoing);
    counter!("swarmfs_peers_refused_total", "direction" => "over_max_peers")
        .absolute(s.peers_over_limit);
    counter!("swarmfs_bytes_on_demand_total").absolute(s.swarm_read_bytes);
    counter!("swarmfs_bytes_downloaded_total").absolute(s.downloaded_bytes);
    counter!("swarmfs_bytes_downloaded_from_neighbours_total").absolute(s.downloaded_near_bytes);
    counter!("swarmfs_bytes_prefetched_total")
        .absolute(s.downloaded_bytes.saturating_sub(s.swarm_read_bytes));
    counter!("swarmfs_bytes_uploaded_total").absolute(s.uploaded_bytes);
    counter!("swarmfs_bytes_reused_total").absolute(s.reused_bytes);
    counter!("swarmfs_read_timeouts_total").absolute(s.read_timeouts);
    counter!("swarmfs_read_errors_total").absolute(s.read_errors);
    counter!("swarmfs_passthrough_opens_total").absolute(s.passthrough_opens);
    counter!("swarmfs_backing_files_total").absolute(s.backing_files);
    counter!("swarmfs_hash_failures_total").absolute(s.hash_failures);
    gauge!("swarmfs_cpu_seconds").set(s.cpu_seconds);
    gauge!("swarmfs_peak_rss_bytes").set(s.peak_rss_bytes as f64);
}
