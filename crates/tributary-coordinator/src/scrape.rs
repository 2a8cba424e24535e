//! The text of `GET /metrics`: the counters of `metrics` and, read at scrape time, the Raft
//! term, log and apply positions, leadership, and the metadata image's brokers and partitions.

use tributary_metadata::BrokerState;
use tributary_node::metrics::{Exposition, process_metrics};

use crate::coordinator::Coordinator;
use crate::metrics::METRICS;

/// Every metric family [`render`] writes but the histograms (`--print-metric-names`, which
/// `cargo xtask deploy-check` compares the Grafana dashboard with).
pub const FAMILIES: [&str; 11] = [
    "tributary_brokers",
    "tributary_controller_epoch",
    "tributary_leader_elections_total",
    "tributary_offline_partitions",
    "tributary_partitions",
    "tributary_raft_applied_index",
    "tributary_raft_apply_lag",
    "tributary_raft_is_leader",
    "tributary_raft_last_log_index",
    "tributary_raft_term",
    "tributary_topics",
];

/// The histogram families [`render`] writes (series `_bucket`, `_sum`, `_count`).
pub const HISTOGRAMS: [&str; 0] = [];

/// Every series name [`render`] writes, the process ones aside.
pub fn names() -> Vec<String> {
    tributary_node::metrics::series_names(&FAMILIES, &HISTOGRAMS)
}

/// The text of `GET /metrics`.
pub fn render(coordinator: &Coordinator) -> String {
    let mut out = Exposition::default();
    METRICS.elections.render(
        &mut out,
        "tributary_leader_elections_total",
        "Partition leader changes this node wrote as controller, by kind (unclean: an out-of-sync replica was elected).",
    );
    let raft = coordinator.node().metrics().borrow().clone();
    out.gauge(
        "tributary_raft_term",
        "Current Raft term.",
        &[],
        raft.current_term as f64,
    );
    out.gauge(
        "tributary_raft_last_log_index",
        "Index of the last Raft log entry.",
        &[],
        raft.last_log_index.unwrap_or(0) as f64,
    );
    let applied = coordinator.node().applied_index();
    out.gauge(
        "tributary_raft_applied_index",
        "Index of the last entry applied.",
        &[],
        applied as f64,
    );
    out.gauge(
        "tributary_raft_apply_lag",
        "Log entries not applied yet.",
        &[],
        raft.last_log_index.unwrap_or(0).saturating_sub(applied) as f64,
    );
    out.gauge(
        "tributary_raft_is_leader",
        "1 on the Raft leader (the controller).",
        &[],
        if raft.current_leader == Some(raft.id) {
            1.0
        } else {
            0.0
        },
    );
    let (running, fenced, shutting, topics, partitions, offline, epoch) =
        coordinator.read(|image| {
            let count = |s: BrokerState| image.brokers.values().filter(|b| b.state == s).count();
            let all = image.topics.values().flat_map(|t| t.partitions.iter());
            (
                count(BrokerState::Running),
                count(BrokerState::Fenced),
                count(BrokerState::ControlledShutdown),
                image.topics.len(),
                all.clone().count(),
                all.filter(|p| p.leader.is_none()).count(),
                image.controller.map_or(0, |c| c.epoch),
            )
        });
    out.header("tributary_brokers", "Registered brokers by state.", "gauge");
    out.sample("tributary_brokers", &[("state", "running")], running as f64);
    out.sample("tributary_brokers", &[("state", "fenced")], fenced as f64);
    out.sample(
        "tributary_brokers",
        &[("state", "controlled_shutdown")],
        shutting as f64,
    );
    out.gauge("tributary_topics", "Topics.", &[], topics as f64);
    out.gauge(
        "tributary_partitions",
        "Partitions.",
        &[],
        partitions as f64,
    );
    out.gauge(
        "tributary_offline_partitions",
        "Partitions without a leader.",
        &[],
        offline as f64,
    );
    out.gauge(
        "tributary_controller_epoch",
        "The controller epoch.",
        &[],
        epoch as f64,
    );
    process_metrics(&mut out);
    out.finish()
}

#[cfg(test)]
mod name_tests {
    use super::*;

    /// Every metric name written in this file is listed, so `--print-metric-names` is whole.
    #[test]
    fn every_rendered_family_is_listed() {
        tributary_node::metrics::assert_every_family_listed(
            include_str!("scrape.rs"),
            &FAMILIES,
            &HISTOGRAMS,
        );
    }
}
