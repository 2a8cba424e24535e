//! The client library against 3 coordinators and 3 brokers (real processes): keyed records
//! produced through a broker's kill -9 and restart are all acknowledged, none is lost or
//! duplicated, per-partition order holds, and every key lands on the partition Kafka's default
//! partitioner picks.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tributary_client::partitioner::partition_for_key;
use tributary_client::{Consumer, Offset, Producer, ProducerRecord, Properties, TopicPartition};
use tributary_tests::harness::{Cluster, NodeKind};

const RECORDS: usize = 3000;
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_survive_a_broker_kill_without_loss_duplication_or_reordering() -> Result<()>
{
    let mut cluster = Cluster::builder()
        .coordinators(3)
        .brokers(3)
        .config(NodeKind::Coordinator, "broker_session_timeout_ms = 3000\n")
        .config(
            NodeKind::Broker,
            "broker_session_timeout_ms = 3000\nbroker_heartbeat_interval_ms = 500\n",
        )
        .start()?;
    let addresses: Vec<String> = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| n.addr().to_string())
        .collect();
    let bootstrap = addresses.join(",");
    let created = common::create_topic(
        &addresses[0],
        "orders",
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await?;
    common::sync_brokers(&addresses, created.metadata_offset).await?;

    let props = Properties::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("request.timeout.ms", "10000")
        .set("delivery.timeout.ms", "90000");
    let producer = Producer::new(&props).await?;
    assert!(
        producer.producer_id().is_some(),
        "idempotence is on by default"
    );
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        if i == RECORDS / 3 {
            cluster.broker(2).kill_9()?;
        }
        if i == 9 * RECORDS / 10 {
            cluster.broker(2).restart()?;
        }
        let key = format!("key-{}", i % 37);
        let record = ProducerRecord::new("orders", i.to_string()).key(key.clone());
        deliveries.push((key, i, producer.send(record).await?));
        if i % 5 == 0 {
            // Pace the run (about 6 s) so the kill lands mid-stream and the broker stays down
            // longer than the session timeout: its partitions fail over before it returns.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    producer.flush().await;
    let mut acked: BTreeMap<(i32, i64), (String, usize)> = BTreeMap::new();
    for (key, i, delivery) in deliveries {
        let meta = delivery
            .await
            .with_context(|| format!("record {i} was not acknowledged"))?;
        assert_eq!(
            meta.partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "{key} lands where Kafka's partitioner puts it"
        );
        ensure!(
            acked
                .insert((meta.partition, meta.offset), (key, i))
                .is_none(),
            "two records acknowledged at {}:{}",
            meta.partition,
            meta.offset
        );
    }
    producer.close().await;

    // Read everything back.
    let consumer_props = Properties::new()
        .set("bootstrap.servers", &bootstrap)
        .set("request.timeout.ms", "10000");
    let mut consumer = Consumer::new(&consumer_props).await?;
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("orders", p))
        .collect();
    consumer.assign(partitions.clone());
    for tp in &partitions {
        consumer.seek(tp, Offset::Beginning).await?;
    }
    let mut read: Vec<(i32, i64, String, usize)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read.len() < RECORDS && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await? {
            let key = String::from_utf8(r.key.context("a key")?.to_vec())?;
            let value: usize = std::str::from_utf8(&r.value.context("a value")?)?.parse()?;
            read.push((r.partition, r.offset, key, value));
        }
    }
    assert_eq!(
        read.len(),
        RECORDS,
        "every record, once (read {} of {RECORDS})",
        read.len()
    );
    let mut seen = vec![false; RECORDS];
    let mut last_per_key: HashMap<String, usize> = HashMap::new();
    for (partition, offset, key, value) in &read {
        assert!(
            !std::mem::replace(&mut seen[*value], true),
            "record {value} read twice"
        );
        assert_eq!(
            acked.get(&(*partition, *offset)),
            Some(&(key.clone(), *value)),
            "the acknowledged record at {partition}:{offset}"
        );
        if let Some(previous) = last_per_key.insert(key.clone(), *value) {
            assert!(
                previous < *value,
                "{key}: {value} after {previous}: order broken"
            );
        }
    }
    Ok(())
}

/// An idempotent producer whose batch fails for good (here MESSAGE_TOO_LARGE) keeps producing
/// to that partition: the partition's sequence starts over under a new producer id instead of
/// every later batch being refused as OUT_OF_ORDER_SEQUENCE_NUMBER; nothing is duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_partition_recovers_from_a_failed_batch() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(1).brokers(1).start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let created =
        common::create_topic(&bootstrap, "small", 1, 1, &[("max.message.bytes", "2000")]).await?;
    common::sync_brokers(std::slice::from_ref(&bootstrap), created.metadata_offset).await?;
    let producer = Producer::new(
        &Properties::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "0"),
    )
    .await?;
    let first = producer.producer_id().context("idempotent by default")?;
    producer
        .send(ProducerRecord::new("small", "before").partition(0))
        .await?
        .await?;
    let too_large = producer
        .send(ProducerRecord::new("small", "x".repeat(5000)).partition(0))
        .await?
        .await;
    ensure!(
        too_large.as_ref().err().and_then(|e| e.code())
            == Some(tributary_client::ErrorCode::MessageTooLarge),
        "{too_large:?}"
    );
    let mut offsets = Vec::new();
    for i in 0..5 {
        let meta = producer
            .send(ProducerRecord::new("small", format!("after-{i}")).partition(0))
            .await?
            .await
            .with_context(|| format!("record {i} after the failed batch"))?;
        offsets.push(meta.offset);
    }
    ensure!(offsets == vec![1, 2, 3, 4, 5], "{offsets:?}");
    ensure!(
        producer.producer_id() == Some(first),
        "the producer's own id stays"
    );

    let mut consumer = Consumer::new(
        &Properties::new()
            .set("bootstrap.servers", &bootstrap)
            .set("auto.offset.reset", "earliest"),
    )
    .await?;
    consumer.assign(vec![TopicPartition::new("small", 0)]);
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while values.len() < 6 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "read only {values:?} of 6 records"
        );
        for r in consumer.poll(Duration::from_millis(200)).await? {
            values.push(String::from_utf8(r.value.unwrap_or_default().to_vec())?);
        }
    }
    ensure!(
        values
            == [
                "before", "after-0", "after-1", "after-2", "after-3", "after-4"
            ],
        "{values:?}"
    );
    Ok(())
}
