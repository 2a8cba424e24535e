//! A cluster of 1 coordinator and 3 brokers for the Kafka-client tests, checked to answer the
//! Kafka protocol on every broker's listener, with helpers over gRPC (topics, leaders,
//! producing with Tributary's own client). Included by `kafka_clients.rs` with `#[path]`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tributary_client::{Producer, ProducerRecord, Properties};
use tributary_tests::harness::{Cluster, NodeKind};
use tributary_tests::kafka_wire;

use crate::common;

/// How long one step (a script, a rebalance, a read) may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// First rebalances without Kafka's 3 s wait for more members, and a small offsets topic.
pub const BROKER_CONFIG: &str =
    "group_initial_rebalance_delay_ms = 100\noffsets_topic_num_partitions = 3\n";

/// A running cluster and its brokers' listener addresses (also their Kafka bootstrap addresses).
pub struct Kafka {
    /// The processes.
    pub cluster: Cluster,
    /// Broker id to listener address.
    pub brokers: BTreeMap<i32, String>,
}

impl Kafka {
    /// Starts 1 coordinator and 3 brokers (`coordinator` and `broker` add TOML lines), then
    /// checks that every broker answers the Kafka protocol.
    pub fn start(coordinator: &str, broker: &str) -> Result<Kafka> {
        let mut builder = Cluster::builder()
            .coordinators(1)
            .brokers(3)
            .config(NodeKind::Broker, format!("{BROKER_CONFIG}{broker}"));
        if !coordinator.is_empty() {
            builder = builder.config(NodeKind::Coordinator, coordinator);
        }
        let mut cluster = builder.start()?;
        let brokers: BTreeMap<i32, String> = cluster
            .of_kind(NodeKind::Broker)
            .map(|n| (n.id() as i32, n.addr().to_string()))
            .collect();
        for (id, addr) in &brokers {
            let versions =
                kafka_wire::api_versions(addr, Duration::from_secs(10)).with_context(|| {
                    format!(
                        "broker {id} does not answer Kafka's ApiVersions on its listener {addr} \
                         (is the Kafka protocol served on the brokers' port?)"
                    )
                })?;
            ensure!(
                versions.error_code == 0,
                "broker {id}: ApiVersions v0 answered error {}",
                versions.error_code
            );
        }
        Ok(Kafka { cluster, brokers })
    }

    /// Every broker's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers.values().cloned().collect::<Vec<_>>().join(",")
    }

    /// One broker's address.
    pub fn any_broker(&self) -> &str {
        self.brokers.values().next().map_or("", String::as_str)
    }

    /// Creates `name` over gRPC (replication factor 3) and waits until every broker knows it
    /// and every partition has a leader.
    pub async fn topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<()> {
        let created = common::create_topic(self.any_broker(), name, partitions, 3, configs).await?;
        common::sync_brokers(self.brokers.values(), created.metadata_offset).await?;
        common::topic_metadata(self.any_broker(), name, WAIT).await?;
        Ok(())
    }

    /// The address of the leader of `topic`'s `partition`.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(i32, String)> {
        let metadata = common::topic_metadata(self.any_broker(), topic, WAIT).await?;
        let leader = metadata
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .with_context(|| format!("{topic} has no partition {partition}"))?
            .leader_id;
        let addr = self
            .brokers
            .get(&leader)
            .with_context(|| format!("the leader {leader} of {topic}-{partition} is unknown"))?;
        Ok((leader, addr.clone()))
    }

    /// Produces `values` (keyed) with Tributary's own client, over gRPC.
    pub async fn produce_grpc(&self, topic: &str, values: &[String]) -> Result<()> {
        let producer = Producer::new(
            &Properties::new()
                .set("bootstrap.servers", self.bootstrap())
                .set("linger.ms", "2"),
        )
        .await?;
        let mut deliveries = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let record = ProducerRecord::new(topic, value.clone()).key(format!("key-{i}"));
            deliveries.push(producer.send(record).await?);
        }
        producer.flush().await;
        for (i, delivery) in deliveries.into_iter().enumerate() {
            delivery
                .await
                .with_context(|| format!("{topic}: record {i} not acknowledged"))?;
        }
        producer.close().await;
        Ok(())
    }
}

/// Polls `probe` (about every 50 ms) until it returns `Some`, at most `timeout`; the error
/// names what was awaited and the last state `describe` gives.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}; last: {}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
