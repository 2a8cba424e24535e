//! What an operator sees of a real cluster (1 coordinator, 3 brokers, processes): consumer-group
//! lag on the group coordinator's `/metrics`, including partitions led by other brokers, and
//! JSON log lines whose spans name the node, the partition and its leader epoch.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tributary_client::{Admin, ErrorCode, Producer, ProducerRecord, Properties, TopicPartition};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::group_client::GroupClient;
use tributary_tests::harness::{Cluster, NodeKind};

const TOPIC: &str = "watched";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lag_is_a_metric_and_logs_carry_spans() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(3)
        .metrics()
        .config(NodeKind::Coordinator, "log_format = \"json\"\n")
        .config(
            NodeKind::Broker,
            "log_format = \"json\"\noffsets_topic_num_partitions = 3\n\
             group_initial_rebalance_delay_ms = 0\n",
        )
        .start()?;
    let brokers: Vec<(u64, String)> = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    let bootstrap = brokers[0].1.clone();
    let created = common::create_topic(&bootstrap, TOPIC, 3, 1, &[]).await?;
    common::sync_brokers(brokers.iter().map(|(_, a)| a), created.metadata_offset).await?;

    // 10 records in each partition; the group has read 2, 5 and all 10 of them.
    let producer = Producer::new(&Properties::new().set("bootstrap.servers", &bootstrap)).await?;
    for p in 0..3 {
        for i in 0..10 {
            producer
                .send(ProducerRecord::new(TOPIC, format!("{p}-{i}")).partition(p))
                .await?;
        }
    }
    producer.flush().await;
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;
    let committed = BTreeMap::from([
        (TopicPartition::new(TOPIC, 0), 2),
        (TopicPartition::new(TOPIC, 1), 5),
        (TopicPartition::new(TOPIC, 2), 10),
    ]);
    common::until(
        "the offsets topic and the group's offsets",
        Duration::from_secs(30),
        || {
            let (admin, committed) = (&admin, &committed);
            async move { Ok(admin.alter_group_offsets("watcher", committed).await?) }
        },
    )
    .await?;

    let coordinator = GroupClient::new(common::channel(&bootstrap)?)
        .find_coordinator(pb::FindCoordinatorRequest {
            key: "watcher".into(),
            key_type: 0,
        })
        .await?
        .into_inner();
    ensure!(common::code(&coordinator.error) == ErrorCode::None);
    let coordinator_id = u64::try_from(coordinator.node_id)?;
    let metrics = cluster
        .broker(coordinator_id)
        .metrics_addr()
        .context("the coordinator's metrics endpoint")?;
    let lags = common::until(
        "the coordinator to report the group's lag",
        Duration::from_secs(30),
        || async move {
            let text = common::scrape(metrics).await?;
            let lag = |p: &str| {
                common::metric(
                    &text,
                    "tributary_consumer_group_lag",
                    &["group=\"watcher\"", "topic=\"watched\"", p],
                )
            };
            let lags = [
                lag("partition=\"0\""),
                lag("partition=\"1\""),
                lag("partition=\"2\""),
            ];
            ensure!(lags == [8.0, 5.0, 0.0], "lag so far {lags:?}\n{text}");
            Ok(lags)
        },
    )
    .await?;
    // The partitions are spread over the three brokers, so at least one lag came from another
    // broker's high watermark.
    let leaders: Vec<i32> = common::topic_metadata(&bootstrap, TOPIC, Duration::from_secs(10))
        .await?
        .partitions
        .iter()
        .map(|p| p.leader_id)
        .collect();
    ensure!(
        leaders.iter().any(|&l| l != coordinator.node_id),
        "every partition is led by the coordinator ({leaders:?}); the remote path went untested"
    );
    // Only the coordinator reports the group.
    for (id, _) in &brokers {
        if *id == coordinator_id {
            continue;
        }
        let addr = cluster.broker(*id).metrics_addr().context("metrics")?;
        let text = common::scrape(addr).await?;
        ensure!(
            !text.contains("group=\"watcher\""),
            "broker {id} is not the coordinator but reports the group's lag (lags {lags:?})"
        );
    }

    // JSON logs: the leader of `watched`-0 logged "leading" inside its broker's span and the
    // partition's span.
    let leader0 = u64::try_from(leaders[0])?;
    let log = cluster.broker(leader0).log_of_this_start();
    let leading = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"] == "leading"
                && v["span"]["topic"] == TOPIC
                && v["span"]["partition"] == 0
        })
        .with_context(|| format!("no JSON `leading` line for {TOPIC}-0 in:\n{log}"))?;
    let spans = leading["spans"].as_array().context("spans")?;
    ensure!(
        spans[0]["name"] == "broker" && spans[0]["id"] == leader0,
        "the outer span names the broker: {leading}"
    );
    ensure!(
        leading["span"]["epoch"].as_i64().is_some(),
        "the partition span carries the leader epoch: {leading}"
    );
    let coordinator_log = cluster.coordinator(101).log_of_this_start();
    ensure!(
        coordinator_log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["spans"][0]["name"] == "coordinator" && v["spans"][0]["id"] == 101),
        "coordinator lines carry its span:\n{coordinator_log}"
    );
    Ok(())
}
