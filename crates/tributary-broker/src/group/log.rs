//! [`ReplicaLog`]: the group coordinator's [`OffsetsLog`] over this broker's replica manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tributary_group::{GroupError, OFFSETS_TOPIC, OffsetsLog, StoredRecord, Write};
use tributary_record::BatchBuilder;

use super::kafka_code;
use crate::api::{Acks, ProduceRequest, TopicPartition};
use crate::manager::ReplicaManager;

/// `__consumer_offsets` on this broker.
#[derive(Debug, Clone)]
pub struct ReplicaLog {
    manager: Arc<ReplicaManager>,
}

impl ReplicaLog {
    /// The offsets partitions of `manager`.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self { manager }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new(OFFSETS_TOPIC, partition)
    }
}

/// The topic configs `__consumer_offsets` is created with (Kafka's).
fn offsets_topic_configs(replication_factor: i32) -> HashMap<String, String> {
    [
        ("cleanup.policy", "compact".to_owned()),
        ("min.insync.replicas", replication_factor.min(2).to_string()),
        ("segment.bytes", "104857600".to_owned()),
        ("compression.type", "producer".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl OffsetsLog for ReplicaLog {
    fn broker_id(&self) -> i32 {
        self.manager.broker_id()
    }

    fn is_ready(&self) -> bool {
        self.manager.session().is_ready()
    }

    fn self_fenced(&self) -> bool {
        self.manager.session().self_fenced()
    }

    fn partition_count(&self) -> Option<i32> {
        self.manager.metadata().read(|image| {
            image
                .topics
                .get(OFFSETS_TOPIC)
                .map(|t| t.partitions.len() as i32)
        })
    }

    fn leader(&self, partition: i32) -> Option<i32> {
        self.manager.metadata().read(|image| {
            image
                .topics
                .get(OFFSETS_TOPIC)
                .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
                .and_then(|p| p.leader)
        })
    }

    fn led_epoch(&self, partition: i32) -> Option<i32> {
        let me = self.manager.broker_id();
        self.manager
            .partition(&Self::tp(partition))
            .map(|p| p.role())
            .filter(|r| r.leader == Some(me))
            .map(|r| r.leader_epoch)
    }

    fn led_partitions(&self) -> HashMap<i32, i32> {
        let me = self.manager.broker_id();
        self.manager
            .partitions()
            .into_iter()
            .filter(|p| p.tp.topic == OFFSETS_TOPIC)
            .filter_map(|p| {
                let role = p.role();
                (role.leader == Some(me)).then_some((p.tp.partition, role.leader_epoch))
            })
            .collect()
    }

    fn running_brokers(&self) -> usize {
        self.manager
            .metadata()
            .read(|image| image.brokers.values().filter(|b| b.is_eligible()).count())
    }

    fn create_offsets_topic(&self, partitions: i32, replication_factor: i32) {
        self.manager.create_topic(
            OFFSETS_TOPIC,
            partitions,
            replication_factor,
            offsets_topic_configs(replication_factor),
        );
    }

    async fn append(
        &self,
        partition: i32,
        records: Vec<Write>,
        timestamp_ms: i64,
        timeout: Duration,
    ) -> Result<i64, GroupError> {
        let mut builder = BatchBuilder::new(timestamp_ms);
        for (key, value) in &records {
            builder.push(timestamp_ms, Some(key), value.as_deref(), &[]);
        }
        let batch = builder.try_build().map_err(|e| {
            GroupError::new(
                tributary_group::ErrorCode::UnknownServerError,
                format!("building a batch: {e}"),
            )
        })?;
        let tp = Self::tp(partition);
        let mut results = self
            .manager
            .append_records(ProduceRequest {
                acks: Acks::All,
                timeout,
                partitions: vec![(tp.clone(), batch)],
            })
            .await;
        match results.pop().map(|(_, r)| r) {
            Some(Ok(produced)) => Ok(produced.base_offset),
            Some(Err(e)) => Err(GroupError::new(kafka_code(e.code), e.message)),
            None => Err(GroupError::new(
                tributary_group::ErrorCode::UnknownServerError,
                format!("no result writing to {tp}"),
            )),
        }
    }

    fn read(&self, partition: i32, visit: &mut dyn FnMut(StoredRecord)) -> Result<(), String> {
        let tp = Self::tp(partition);
        let p = self
            .manager
            .partition(&tp)
            .ok_or_else(|| format!("{tp} is not hosted here"))?;
        let log = p.log();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = log
                .read(offset, 1 << 20, None, true)
                .map_err(|e| e.to_string())?;
            if read.records.is_empty() {
                break;
            }
            for batch in tributary_record::Batches::new(&read.records) {
                let (header, at, bytes) = batch.map_err(|e| e.to_string())?;
                if header.is_control() {
                    continue;
                }
                let batch = read.records.slice(at..at + bytes.len());
                for record in tributary_record::decode_records(&batch).map_err(|e| e.to_string())? {
                    visit(StoredRecord {
                        offset: record.offset,
                        key: record.key,
                        value: record.value,
                    });
                }
            }
            offset = read.next_offset.max(offset + 1);
        }
        Ok(())
    }
}
