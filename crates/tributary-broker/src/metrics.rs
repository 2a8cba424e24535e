//! The broker's Prometheus metrics: requests, errors and latency per API, bytes in and out,
//! ISR changes, truncated records, and per-partition offsets rendered at scrape time.

use std::sync::LazyLock;
use std::time::Instant;

use tributary_node::metrics::{Counter, Exposition, FastCounter, Histogram, process_metrics};
use tributary_proto::common::v1::ErrorCode;

use crate::api::TopicPartition;

/// Process-wide broker metrics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
    /// Produced record bytes appended as leader.
    pub bytes_in: FastCounter,
    /// Record bytes returned to consumers and followers.
    pub bytes_out: FastCounter,
    /// ISR shrinks this broker's proposals committed.
    pub isr_shrinks: FastCounter,
    /// ISR expansions this broker's proposals committed.
    pub isr_expands: FastCounter,
    /// Records removed by follower truncation (divergence after a failover; after an unclean
    /// election, the records the new leader lacked).
    pub truncated_records: FastCounter,
}

/// The broker's metrics.
pub static METRICS: LazyLock<BrokerMetrics> = LazyLock::new(BrokerMetrics::default);

impl BrokerMetrics {
    /// Counts one request of `api` that took since `start`, with the per-partition error
    /// codes it answered.
    pub fn request(&self, api: &str, start: Instant, errors: impl IntoIterator<Item = ErrorCode>) {
        self.requests.add(&[("api", api)], 1);
        self.latency.observe(&[("api", api)], start.elapsed());
        for code in errors {
            if code != ErrorCode::None {
                self.errors
                    .add(&[("api", api), ("error", code.as_str_name())], 1);
            }
        }
    }
}

/// Every metric family [`render`] writes but the histograms (`--print-metric-names`, which
/// `cargo xtask deploy-check` compares the Grafana dashboard with).
pub const FAMILIES: [&str; 15] = [
    "tributary_broker_running",
    "tributary_bytes_in_total",
    "tributary_bytes_out_total",
    "tributary_consumer_group_lag",
    "tributary_isr_expands_total",
    "tributary_isr_shrinks_total",
    "tributary_leader_partitions",
    "tributary_metadata_offset",
    "tributary_offline_partitions",
    "tributary_partition_high_watermark",
    "tributary_partition_log_end_offset",
    "tributary_request_errors_total",
    "tributary_requests_total",
    "tributary_truncated_records_total",
    "tributary_under_replicated_partitions",
];

/// The histogram families [`render`] writes (series `_bucket`, `_sum`, `_count`).
pub const HISTOGRAMS: [&str; 1] = ["tributary_request_duration_seconds"];

/// Every series name [`render`] writes, the process ones aside.
pub fn names() -> Vec<String> {
    tributary_node::metrics::series_names(&FAMILIES, &HISTOGRAMS)
}

/// One hosted partition at scrape time.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    /// Which partition.
    pub tp: TopicPartition,
    /// Its log end offset.
    pub log_end_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
    /// Whether this broker leads it.
    pub led_here: bool,
    /// Led here with an ISR smaller than its replica set.
    pub under_replicated: bool,
}

/// What a scrape reads of the broker's state (gathered by the caller, so this module depends
/// on no other part of the broker).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The hosted partitions, sorted.
    pub partitions: Vec<PartitionSample>,
    /// Partitions in the cluster without a leader.
    pub offline_partitions: usize,
    /// The metadata offset applied.
    pub metadata_offset: u64,
    /// Whether the image shows this broker registered and unfenced.
    pub running: bool,
    /// Consumer-group lag: group, partition, records behind.
    pub group_lag: Vec<(String, TopicPartition, i64)>,
}

/// The text of `GET /metrics`.
pub fn render(scrape: &Scrape) -> String {
    let m = &*METRICS;
    let mut out = Exposition::default();
    m.requests.render(
        &mut out,
        "tributary_requests_total",
        "Requests served, by API.",
    );
    m.errors.render(
        &mut out,
        "tributary_request_errors_total",
        "Per-partition (or per-request) errors answered, by API and Kafka error code.",
    );
    m.latency.render(
        &mut out,
        "tributary_request_duration_seconds",
        "Time from receiving a request to answering it, by API.",
    );
    out.header(
        "tributary_bytes_in_total",
        "Record bytes appended as leader.",
        "counter",
    );
    out.sample("tributary_bytes_in_total", &[], m.bytes_in.get() as f64);
    out.header(
        "tributary_bytes_out_total",
        "Record bytes sent to consumers and followers.",
        "counter",
    );
    out.sample("tributary_bytes_out_total", &[], m.bytes_out.get() as f64);
    out.header(
        "tributary_isr_shrinks_total",
        "ISR shrinks committed for partitions led here.",
        "counter",
    );
    out.sample(
        "tributary_isr_shrinks_total",
        &[],
        m.isr_shrinks.get() as f64,
    );
    out.header(
        "tributary_isr_expands_total",
        "ISR expansions committed for partitions led here.",
        "counter",
    );
    out.sample(
        "tributary_isr_expands_total",
        &[],
        m.isr_expands.get() as f64,
    );
    out.header(
        "tributary_truncated_records_total",
        "Records a follower removed to match its leader (after an unclean election: records lost).",
        "counter",
    );
    out.sample(
        "tributary_truncated_records_total",
        &[],
        m.truncated_records.get() as f64,
    );

    let partitions = &scrape.partitions;
    out.header(
        "tributary_partition_log_end_offset",
        "Log end offset of each hosted partition.",
        "gauge",
    );
    for p in partitions {
        let part = p.tp.partition.to_string();
        out.sample(
            "tributary_partition_log_end_offset",
            &[("topic", &p.tp.topic), ("partition", &part)],
            p.log_end_offset as f64,
        );
    }
    out.header(
        "tributary_partition_high_watermark",
        "High watermark of each hosted partition.",
        "gauge",
    );
    for p in partitions {
        let part = p.tp.partition.to_string();
        out.sample(
            "tributary_partition_high_watermark",
            &[("topic", &p.tp.topic), ("partition", &part)],
            p.high_watermark as f64,
        );
    }
    out.gauge(
        "tributary_under_replicated_partitions",
        "Partitions led here whose ISR is smaller than their replica set.",
        &[],
        partitions.iter().filter(|p| p.under_replicated).count() as f64,
    );
    out.gauge(
        "tributary_leader_partitions",
        "Partitions led here.",
        &[],
        partitions.iter().filter(|p| p.led_here).count() as f64,
    );
    out.gauge(
        "tributary_offline_partitions",
        "Partitions in the cluster without a leader (as this broker's metadata shows).",
        &[],
        scrape.offline_partitions as f64,
    );
    out.gauge(
        "tributary_metadata_offset",
        "Metadata offset applied.",
        &[],
        scrape.metadata_offset as f64,
    );
    out.gauge(
        "tributary_broker_running",
        "1 when the metadata shows this broker registered and unfenced.",
        &[],
        if scrape.running { 1.0 } else { 0.0 },
    );
    out.header(
        "tributary_consumer_group_lag",
        "Records between a group's committed offset and the partition's high watermark, for \
         the groups this broker coordinates (refreshed every 5 s).",
        "gauge",
    );
    for (group, tp, lag) in &scrape.group_lag {
        let part = tp.partition.to_string();
        out.sample(
            "tributary_consumer_group_lag",
            &[("group", group), ("topic", &tp.topic), ("partition", &part)],
            *lag as f64,
        );
    }
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
            include_str!("metrics.rs"),
            &FAMILIES,
            &HISTOGRAMS,
        );
    }
}
