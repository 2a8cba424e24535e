//! DeleteRecords and DescribeLogDirs through real processes (3 coordinators, 3 brokers): records
//! deleted through the client are gone from every replica (the answer's low watermark, each
//! replica's segments and log start offset, the earliest offset after leadership moves), a
//! consumer from the beginning starts after them, and `tributary delete-records` prints
//! Kafka's lines.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tributary_client::{
    Admin, Consumer, ErrorCode, Offset, Producer, ProducerRecord, Properties, TopicPartition,
};
use tributary_storage::{Log, LogConfig, LogResources};
use tributary_tests::harness::{Cluster, NodeKind, bin_dir};

const TOPIC: &str = "deleted";
const RECORDS: i64 = 100;
const DELETED_BELOW: i64 = 40;
const WAIT: Duration = Duration::from_secs(30);

/// Each replica's size of `tp`, from DescribeLogDirs on brokers 1, 2 and 3.
async fn replica_sizes(admin: &Admin, tp: &TopicPartition) -> Result<BTreeMap<i32, i64>> {
    let dirs = admin.describe_log_dirs(&[1, 2, 3]).await?;
    let mut sizes = BTreeMap::new();
    for (broker, dirs) in dirs {
        ensure!(
            dirs.len() == 1,
            "broker {broker} has one data directory: {dirs:?}"
        );
        let dir = &dirs[0];
        ensure!(
            dir.total_bytes.is_some_and(|t| t > 0) && dir.usable_bytes <= dir.total_bytes,
            "broker {broker} reports its volume's size: {dir:?}"
        );
        let replica = dir
            .replicas
            .get(tp)
            .with_context(|| format!("broker {broker} holds a replica of {tp}: {dir:?}"))?;
        ensure!(
            !replica.is_future,
            "no replica is moving between directories"
        );
        sizes.insert(broker, replica.size_bytes);
    }
    Ok(sizes)
}

/// The offset and value of the first record a new consumer reads from the beginning of `tp`.
async fn first_record(bootstrap: &str, tp: &TopicPartition) -> Result<(i64, String)> {
    let mut consumer =
        Consumer::new(&Properties::new().set("bootstrap.servers", bootstrap)).await?;
    consumer.assign(vec![tp.clone()]);
    consumer.seek(tp, Offset::Beginning).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = consumer
            .poll(Duration::from_secs(1))
            .await?
            .into_iter()
            .next()
        {
            let value = String::from_utf8(r.value.context("a value")?.to_vec())?;
            return Ok((r.offset, value));
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no record of {tp} read from the beginning within {WAIT:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_records_are_gone_from_every_replica() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(3)
        .brokers(3)
        .config(NodeKind::Coordinator, "broker_session_timeout_ms = 6000\n")
        .config(
            NodeKind::Broker,
            "broker_session_timeout_ms = 6000\nbroker_heartbeat_interval_ms = 500\n\
             replica_fetch_wait_max_ms = 200\n",
        )
        .start()?;
    let brokers: BTreeMap<i32, String> = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| (n.id() as i32, n.addr().to_string()))
        .collect();
    let bootstrap = brokers.values().cloned().collect::<Vec<_>>().join(",");
    // Small segments: the records span many, so deleting some deletes whole segments.
    let created =
        common::create_topic(&brokers[&1], TOPIC, 2, 3, &[("segment.bytes", "1024")]).await?;
    common::sync_brokers(brokers.values(), created.metadata_offset).await?;

    let props = Properties::new().set("bootstrap.servers", &bootstrap);
    let producer = Producer::new(&props).await?;
    for i in 0..RECORDS {
        // One batch each (awaited), acks=all: every replica has them when acknowledged.
        let value = format!("record-{i:03}-{}", "x".repeat(80));
        let sent = producer
            .send(ProducerRecord::new(TOPIC, value).partition(0))
            .await?
            .await?;
        ensure!(
            sent.offset == i,
            "record {i} landed at offset {}",
            sent.offset
        );
    }
    for i in 0..10 {
        producer
            .send(ProducerRecord::new(TOPIC, format!("p1-{i}")).partition(1))
            .await?
            .await?;
    }
    producer.close().await;

    let tp = TopicPartition::new(TOPIC, 0);
    let admin = Admin::new(&props)?;
    let before = common::until(
        "every replica of deleted-0 to hold the same bytes",
        WAIT,
        || async {
            let sizes = replica_sizes(&admin, &tp).await?;
            let first = sizes[&1];
            ensure!(
                first > 0 && sizes.values().all(|&s| s == first),
                "sizes {sizes:?}"
            );
            Ok(sizes)
        },
    )
    .await?;

    // Through the client: each partition to its leader, which answers once every live
    // replica's log start offset has reached the offset.
    let answer = admin
        .delete_records(&BTreeMap::from([(tp.clone(), DELETED_BELOW)]))
        .await?;
    let low_watermark = answer
        .get(&tp)
        .context("an answer for deleted-0")?
        .as_ref()
        .map_err(Clone::clone)?;
    ensure!(
        *low_watermark == DELETED_BELOW,
        "low watermark {low_watermark}"
    );

    // Once answered, every replica has deleted its segments below the offset: no wait here.
    let after = replica_sizes(&admin, &tp).await?;
    for (broker, size) in &after {
        ensure!(
            *size < before[broker],
            "broker {broker}'s replica of {tp} kept its deleted segments: {before:?} -> {after:?}"
        );
    }
    ensure!(
        admin.list_offset(&tp, -2).await? == DELETED_BELOW,
        "the earliest offset is the new log start"
    );
    let first = first_record(&bootstrap, &tp).await?;
    ensure!(
        first.0 == DELETED_BELOW && first.1.starts_with("record-040-"),
        "a consumer from the beginning starts at {DELETED_BELOW}: {first:?}"
    );

    // Errors come per partition: past the high watermark, an unknown topic.
    let refused = admin
        .delete_records(&BTreeMap::from([
            (tp.clone(), RECORDS + 1),
            (TopicPartition::new("no-such-topic", 0), 1),
        ]))
        .await?;
    let codes: Vec<_> = refused
        .values()
        .map(|r| r.as_ref().err().and_then(|e| e.code()))
        .collect();
    ensure!(
        codes
            == [
                Some(ErrorCode::OffsetOutOfRange),
                Some(ErrorCode::UnknownTopicOrPartition)
            ],
        "{refused:?}"
    );

    // Kafka's kafka-delete-records: its JSON file and its lines.
    let json = cluster.root().join("offsets.json");
    std::fs::write(
        &json,
        r#"{"partitions": [{"topic": "deleted", "partition": 1, "offset": 5},
                           {"topic": "deleted", "partition": 0, "offset": 1000}], "version": 1}"#,
    )?;
    let out = Command::new(bin_dir()?.join("tributary"))
        .args([
            "delete-records",
            "--bootstrap-server",
            &bootstrap,
            "--offset-json-file",
        ])
        .arg(&json)
        .output()
        .context("running tributary delete-records")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(
        lines.len() == 4
            && lines[0] == "Executing records delete operation"
            && lines[1] == "Records delete operation completed:"
            && lines[2].starts_with("partition: deleted-0\terror: OFFSET_OUT_OF_RANGE: ")
            && lines[3] == "partition: deleted-1\tlow_watermark: 5",
        "output:\n{stdout}"
    );
    let out = Command::new(bin_dir()?.join("tributary"))
        .args([
            "delete-records",
            "--bootstrap-server",
            &bootstrap,
            "--offset-json-file",
        ])
        .arg(cluster.root().join("missing.json"))
        .output()?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.json"),
        "a missing file is an error naming it: {out:?}"
    );

    // Leadership moves (the leader stops cleanly): the new leader starts at the same offset.
    let old_leader = admin.metadata().await?.topics[TOPIC].partitions[0]
        .leader
        .context("deleted-0 has a leader")?;
    cluster
        .broker(old_leader as u64)
        .stop(Duration::from_secs(40))?;
    let earliest = common::until(
        "a new leader of deleted-0 to answer ListOffsets",
        WAIT,
        || async {
            let metadata = admin.cluster().refresh(&[TOPIC.to_owned()]).await?;
            let leader = metadata.topics[TOPIC].partitions[0].leader;
            ensure!(
                leader.is_some_and(|l| l != old_leader),
                "leader still {leader:?}"
            );
            Ok(admin.list_offset(&tp, -2).await?)
        },
    )
    .await?;
    ensure!(
        earliest == DELETED_BELOW,
        "the new leader's log starts at {earliest}"
    );
    let first = first_record(&bootstrap, &tp).await?;
    ensure!(first.0 == DELETED_BELOW, "from the new leader: {first:?}");

    // Every replica's own log, read offline after a clean stop.
    for id in 1..=3u64 {
        cluster.broker(id).stop(Duration::from_secs(40))?;
    }
    for id in 1..=3u64 {
        for (partition, start) in [(0, DELETED_BELOW), (1, 5)] {
            let dir = cluster
                .broker(id)
                .data_dir()
                .join(format!("{TOPIC}-{partition}"));
            let log = Log::open(&dir, LogConfig::default(), LogResources::new(8))
                .with_context(|| format!("opening {}", dir.display()))?;
            ensure!(
                log.log_start_offset() == start,
                "broker {id}'s replica of {TOPIC}-{partition} starts at {}, not {start}",
                log.log_start_offset()
            );
            log.close()?;
        }
    }
    Ok(())
}
