//! The coordinator's own counters (the leader elections this node decided as controller, clean
//! and unclean). The gauges read at scrape time (Raft positions, the image's brokers and
//! partitions) are rendered by `scrape`.

use std::sync::LazyLock;

use tributary_node::metrics::Counter;

/// Process-wide coordinator metrics.
#[derive(Debug, Default)]
pub struct CoordinatorMetrics {
    /// Leader changes written by this node as controller, by kind (`clean`, `unclean`).
    pub elections: Counter,
}

/// The coordinator's metrics.
pub static METRICS: LazyLock<CoordinatorMetrics> = LazyLock::new(CoordinatorMetrics::default);
