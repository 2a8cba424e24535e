//! Log compaction on a real broker (1 coordinator, 1 broker, processes): a `cleanup.policy=compact`
//! topic keeps the latest value of every key once its sealed segments are cleaned, offsets stay
//! increasing (with gaps), and nothing at or after the active segment is touched.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tributary_client::{
    Consumer, ErrorCode, Offset, Producer, ProducerRecord, Properties, TopicPartition,
};
use tributary_tests::harness::{Cluster, NodeKind};

const KEYS: usize = 10;
const RECORDS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_of_every_key() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(1)
        .config(NodeKind::Broker, "log_cleaner_backoff_ms = 300\n")
        .start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let created = common::create_topic(
        &bootstrap,
        "compacted",
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2048"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ],
    )
    .await?;
    common::sync_brokers(std::slice::from_ref(&bootstrap), created.metadata_offset).await?;

    let producer = Producer::new(&Properties::new().set("bootstrap.servers", &bootstrap)).await?;
    let mut latest = BTreeMap::new();
    for i in 0..RECORDS {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        latest.insert(key.clone(), value.clone());
        // One batch per record, so the log rolls many small segments.
        producer
            .send(ProducerRecord::new("compacted", value).key(key))
            .await?
            .await?;
    }
    // Kafka refuses a record without a key on a compacted topic with INVALID_RECORD.
    let keyless = producer
        .send(ProducerRecord::new("compacted", "no key"))
        .await?
        .await;
    ensure!(
        keyless.as_ref().err().and_then(|e| e.code()) == Some(ErrorCode::InvalidRecord),
        "a keyless record on a compacted topic: {keyless:?}"
    );

    let tp = TopicPartition::new("compacted", 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut consumer =
            Consumer::new(&Properties::new().set("bootstrap.servers", &bootstrap)).await?;
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, Offset::Beginning).await?;
        let mut read = Vec::new();
        while read
            .last()
            .is_none_or(|(o, _, _): &(i64, String, String)| *o < RECORDS as i64 - 1)
        {
            let records = consumer.poll(Duration::from_secs(2)).await?;
            if records.is_empty() {
                break;
            }
            for r in records {
                let key = String::from_utf8(r.key.context("a key")?.to_vec())?;
                let value = String::from_utf8(r.value.context("a value")?.to_vec())?;
                read.push((r.offset, key, value));
            }
        }
        ensure!(
            read.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets must stay increasing"
        );
        ensure!(
            read.last().map(|r| r.0) == Some(RECORDS as i64 - 1),
            "the last record (offset {}) must survive: {:?}",
            RECORDS - 1,
            read.last()
        );
        let mut seen = BTreeMap::new();
        for (_, k, v) in &read {
            seen.insert(k.clone(), v.clone());
        }
        ensure!(seen == latest, "the latest value of every key survives");
        if read.len() < RECORDS / 2 {
            // Cleaned: most overwritten values are gone.
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the compacted log was not cleaned within 60 s: {} of {RECORDS} records remain",
                read.len()
            );
        }
        drop(consumer);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
