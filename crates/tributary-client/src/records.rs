//! The admin calls on the brokers' own logs: DeleteRecords, sent to each partition's leader,
//! and DescribeLogDirs, sent to each broker asked about (Kafka's `Admin.deleteRecords` and
//! `Admin.describeLogDirs`).

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::task::JoinSet;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::ErrorCode;

use crate::TopicPartition;
use crate::admin::Admin;
use crate::error::{ClientError, Result};

/// Kafka's `RecordsToDelete.beforeOffset(-1)`: delete every committed record (up to the high
/// watermark).
pub const DELETE_UP_TO_HIGH_WATERMARK: i64 = -1;

/// A partition's replica in a data directory, as DescribeLogDirs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The size of its segments.
    pub size_bytes: i64,
    /// 0 on the leader; on a follower, how far it is behind the leader's log end.
    pub offset_lag: i64,
    /// A copy being moved between directories.
    pub is_future: bool,
}

/// A broker's data directory, as DescribeLogDirs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirDescription {
    /// Its absolute path.
    pub path: String,
    /// The size of its volume, if the broker knows it.
    pub total_bytes: Option<u64>,
    /// The space left on its volume, if the broker knows it.
    pub usable_bytes: Option<u64>,
    /// The replicas it holds.
    pub replicas: BTreeMap<TopicPartition, ReplicaInfo>,
}

/// One leader's share of a DeleteRecords call: its address and its partitions' offsets.
type LeaderShare = (String, Vec<(TopicPartition, i64)>);

/// Why a partition's leader is not known.
enum Lookup {
    /// Worth asking again on fresh metadata.
    Retry(ClientError),
    /// The answer for this partition.
    Final(ClientError),
}

impl Admin {
    /// Kafka's `Admin.deleteRecords`: deletes the records below each offset
    /// ([`DELETE_UP_TO_HIGH_WATERMARK`]: every committed record), each partition on its leader,
    /// and gives per partition its low watermark once every live replica has deleted them, or
    /// the partition's error. Retriable errors (a leader moved, replicas slow to follow) are
    /// retried on fresh metadata until `request.timeout.ms`; a topic the metadata does not
    /// know fails at once.
    pub async fn delete_records(
        &self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Result<i64>>> {
        let cluster = self.cluster().clone();
        let config = cluster.config().clone();
        let deadline = Instant::now() + config.request_timeout;
        let mut done: BTreeMap<TopicPartition, Result<i64>> = BTreeMap::new();
        let mut pending = offsets.clone();
        let mut last_error: BTreeMap<TopicPartition, ClientError> = BTreeMap::new();
        let mut refresh = false;
        loop {
            if refresh {
                let mut topics: Vec<String> = pending.keys().map(|tp| tp.topic.clone()).collect();
                topics.dedup();
                if let Err(err) = cluster.refresh(&topics).await {
                    tracing::debug!(error = %err, "metadata refresh for DeleteRecords failed");
                }
            }
            let mut by_leader: BTreeMap<String, Vec<(TopicPartition, i64)>> = BTreeMap::new();
            for (tp, &offset) in &pending {
                match self.leader_of(tp).await {
                    Ok(address) => by_leader
                        .entry(address)
                        .or_default()
                        .push((tp.clone(), offset)),
                    Err(Lookup::Retry(err)) => {
                        last_error.insert(tp.clone(), err);
                    }
                    Err(Lookup::Final(err)) => {
                        done.insert(tp.clone(), Err(err));
                    }
                }
            }
            let timeout_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, u128::from(u32::MAX)) as u32;
            for (tp, result) in delete_on_leaders(&cluster, by_leader, timeout_ms).await? {
                match result {
                    Err(err) if err.is_retriable() => {
                        last_error.insert(tp, err);
                    }
                    result => {
                        done.insert(tp, result);
                    }
                }
            }
            pending.retain(|tp, _| !done.contains_key(tp));
            if pending.is_empty() {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                for tp in pending.into_keys() {
                    let err = last_error.remove(&tp).unwrap_or_else(|| {
                        ClientError::Timeout(format!(
                            "deleting the records of {tp} did not complete within request.timeout.ms"
                        ))
                    });
                    done.insert(tp, Err(err));
                }
                return Ok(done);
            }
            refresh = true;
            tokio::time::sleep(config.retry_backoff).await;
        }
    }

    /// The address of `tp`'s leader from the metadata (refreshed when stale). A topic or a
    /// partition the metadata does not have is UNKNOWN_TOPIC_OR_PARTITION, and final (Kafka's
    /// client retries it until its timeout, which only delays the answer to a typo).
    async fn leader_of(&self, tp: &TopicPartition) -> std::result::Result<String, Lookup> {
        let cluster = self.cluster();
        let topic = cluster
            .topic(&tp.topic)
            .await
            .map_err(|err| match err.code() {
                Some(ErrorCode::UnknownTopicOrPartition) => Lookup::Final(err),
                _ if err.is_retriable() => Lookup::Retry(err),
                _ => Lookup::Final(err),
            })?;
        if tp.partition < 0 || tp.partition as usize >= topic.partitions.len() {
            return Err(Lookup::Final(ClientError::broker(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic `{}` has {} partitions; partition {} does not exist",
                    tp.topic,
                    topic.partitions.len(),
                    tp.partition
                ),
            )));
        }
        match cluster.leader(&tp.topic, tp.partition) {
            Some((_, address, _)) if !address.is_empty() => Ok(address),
            _ => Err(Lookup::Retry(ClientError::broker(
                ErrorCode::LeaderNotAvailable,
                format!("{tp} has no leader right now"),
            ))),
        }
    }

    /// Kafka's `Admin.describeLogDirs`: each broker's data directories and the replicas in
    /// them. A broker the metadata does not list, or one that does not answer, fails the call.
    pub async fn describe_log_dirs(
        &self,
        brokers: &[i32],
    ) -> Result<BTreeMap<i32, Vec<LogDirDescription>>> {
        let metadata = self.cluster().refresh(&[]).await?;
        let mut out = BTreeMap::new();
        for &id in brokers {
            let address = metadata
                .brokers
                .get(&id)
                .map(|b| b.address.clone())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    ClientError::broker(
                        ErrorCode::BrokerNotAvailable,
                        format!("broker {id} is not in the cluster's metadata"),
                    )
                })?;
            let response = self
                .cluster()
                .broker(&address)?
                .describe_log_dirs(pb::DescribeLogDirsRequest::default())
                .await
                .map_err(|s| ClientError::from_status(&address, s))?
                .into_inner();
            let mut dirs = Vec::new();
            for dir in response.dirs {
                if let Some(err) = ClientError::from_wire(&dir.error) {
                    return Err(err);
                }
                let replicas = dir
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let name = t.name;
                        t.partitions.into_iter().map(move |p| {
                            (
                                TopicPartition::new(name.clone(), p.partition),
                                ReplicaInfo {
                                    size_bytes: p.size_bytes,
                                    offset_lag: p.offset_lag,
                                    is_future: p.is_future,
                                },
                            )
                        })
                    })
                    .collect();
                dirs.push(LogDirDescription {
                    path: dir.path,
                    total_bytes: u64::try_from(dir.total_bytes).ok(),
                    usable_bytes: u64::try_from(dir.usable_bytes).ok(),
                    replicas,
                });
            }
            out.insert(id, dirs);
        }
        Ok(out)
    }
}

/// Sends each leader its share of a DeleteRecords call, all at once (each waits for its
/// followers), and gives every partition's outcome; a leader that cannot be reached gives its
/// partitions that (retriable) error.
async fn delete_on_leaders(
    cluster: &std::sync::Arc<crate::cluster::Cluster>,
    by_leader: BTreeMap<String, Vec<(TopicPartition, i64)>>,
    timeout_ms: u32,
) -> Result<Vec<(TopicPartition, Result<i64>)>> {
    let mut calls: JoinSet<(LeaderShare, Result<pb::DeleteRecordsResponse>)> = JoinSet::new();
    for (address, partitions) in by_leader {
        let cluster = cluster.clone();
        calls.spawn(async move {
            let mut topics: Vec<pb::delete_records_request::TopicOffsets> = Vec::new();
            for (tp, offset) in &partitions {
                let partition = pb::delete_records_request::PartitionOffset {
                    partition: tp.partition,
                    offset: *offset,
                };
                match topics.iter_mut().find(|t| t.name == tp.topic) {
                    Some(t) => t.partitions.push(partition),
                    None => topics.push(pb::delete_records_request::TopicOffsets {
                        name: tp.topic.clone(),
                        partitions: vec![partition],
                    }),
                }
            }
            let request = pb::DeleteRecordsRequest { topics, timeout_ms };
            let outcome = match cluster.broker(&address) {
                Ok(mut client) => client
                    .delete_records(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| ClientError::from_status(&address, s)),
                Err(err) => Err(err),
            };
            ((address, partitions), outcome)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let ((address, partitions), outcome) = joined
            .map_err(|e| ClientError::Protocol(format!("a DeleteRecords call failed: {e}")))?;
        let response = match outcome {
            Ok(response) => response,
            Err(err) => {
                out.extend(partitions.into_iter().map(|(tp, _)| (tp, Err(err.clone()))));
                continue;
            }
        };
        let mut answered: BTreeMap<TopicPartition, Result<i64>> = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                let result = match ClientError::from_wire(&p.error) {
                    Some(err) => Err(err),
                    None => Ok(p.low_watermark),
                };
                answered.insert(TopicPartition::new(t.name.clone(), p.partition), result);
            }
        }
        for (tp, _) in partitions {
            let result = answered.remove(&tp).unwrap_or_else(|| {
                Err(ClientError::Protocol(format!(
                    "{address} left {tp} out of its DeleteRecords answer"
                )))
            });
            out.push((tp, result));
        }
    }
    Ok(out)
}
