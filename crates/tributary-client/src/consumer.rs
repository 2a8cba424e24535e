//! The consumer with manual assignment: assign partitions, seek, and `poll` records in offset
//! order per partition. Fetches to every leader run concurrently and the next round is sent
//! before `poll` returns (pipelining), so the network works while the application does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::ErrorCode;

use crate::TopicPartition;
use crate::cluster::Cluster;
use crate::config::{ConsumerConfig, OffsetReset, Properties};
use crate::error::{ClientError, Result};

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start.
    Beginning,
    /// The high watermark (only new records).
    End,
    /// This offset.
    At(i64),
    /// The first record at or after this timestamp (ms), or the end if none is.
    Timestamp(i64),
}

/// A record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Whether the timestamp is the broker's (LogAppendTime) rather than the producer's.
    pub log_append_time: bool,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

type FetchTask = JoinHandle<Result<pb::FetchResponse>>;

/// A consumer of assigned partitions.
pub struct Consumer {
    config: ConsumerConfig,
    cluster: Arc<Cluster>,
    /// Positions of the assigned partitions (`None`: to be reset by `auto.offset.reset`).
    positions: HashMap<TopicPartition, Option<i64>>,
    /// Records fetched and not yet returned.
    buffered: VecDeque<ConsumerRecord>,
    /// Fetches in flight: per leader address, the task and the positions it asked for.
    in_flight: HashMap<String, (FetchTask, Vec<(TopicPartition, i64)>)>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for (task, _) in self.in_flight.values() {
            task.abort();
        }
    }
}

impl Consumer {
    /// A consumer from Kafka properties (`bootstrap.servers` required).
    pub async fn new(props: &Properties) -> Result<Self> {
        let config = ConsumerConfig::from_properties(props)?;
        let cluster = Arc::new(Cluster::new(config.client.clone()));
        Ok(Self {
            config,
            cluster,
            positions: HashMap::new(),
            buffered: VecDeque::new(),
            in_flight: HashMap::new(),
        })
    }

    /// The cluster this consumer talks to (for metadata).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Consumes exactly `partitions` from now on (positions of partitions kept are kept).
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let mut positions = HashMap::new();
        for tp in partitions {
            let kept = self.positions.get(&tp).copied().flatten();
            positions.insert(tp, kept);
        }
        self.positions = positions;
        self.buffered.retain(|r| {
            self.positions
                .contains_key(&TopicPartition::new(r.topic.clone(), r.partition))
        });
        self.cancel_fetches();
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        out.sort();
        out
    }

    /// The next offset `poll` returns for `tp` (`None`: not resolved yet).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied().flatten()
    }

    /// Moves `tp` (which must be assigned) to `offset`.
    pub async fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        if !self.positions.contains_key(tp) {
            return Err(ClientError::Config(format!("{tp} is not assigned")));
        }
        let resolved = match offset {
            Offset::At(o) => o,
            Offset::Beginning => self.list_offset(tp, -2).await?,
            Offset::End => self.list_offset(tp, -1).await?,
            Offset::Timestamp(t) => match self.list_offset(tp, t).await? {
                -1 => self.list_offset(tp, -1).await?,
                o => o,
            },
        };
        self.positions.insert(tp.clone(), Some(resolved));
        self.buffered
            .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        self.cancel_fetches();
        Ok(())
    }

    fn cancel_fetches(&mut self) {
        for (_, (task, _)) in self.in_flight.drain() {
            task.abort();
        }
    }

    /// Kafka's ListOffsets for one partition: -2 earliest, -1 latest, or a timestamp (-1 when
    /// no record is that recent).
    pub async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<i64> {
        list_offset(&self.cluster, tp, timestamp).await
    }

    /// Records from the assigned partitions, in offset order per partition: what is buffered,
    /// else what arrives within `timeout` (empty if nothing does).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let n = self.buffered.len().min(self.config.max_poll_records);
                let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
                self.start_fetches(deadline);
                return Ok(out);
            }
            self.reset_positions().await?;
            self.start_fetches(deadline);
            if self.in_flight.is_empty() {
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep(
                    self.config
                        .client
                        .retry_backoff
                        .min(deadline - Instant::now()),
                )
                .await;
                continue;
            }
            self.collect(deadline).await?;
            if self.buffered.is_empty() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn reset_positions(&mut self) -> Result<()> {
        let unresolved: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in unresolved {
            let spec = match self.config.auto_offset_reset {
                OffsetReset::Earliest => -2,
                OffsetReset::Latest => -1,
                OffsetReset::None => {
                    return Err(ClientError::Config(format!(
                        "{tp} has no position and auto.offset.reset is none: seek first"
                    )));
                }
            };
            let offset = self.list_offset(&tp, spec).await?;
            self.positions.insert(tp, Some(offset));
        }
        Ok(())
    }

    /// Sends a fetch to every leader that has none in flight.
    fn start_fetches(&mut self, deadline: Instant) {
        let mut by_leader: HashMap<String, Vec<(TopicPartition, i64)>> = HashMap::new();
        let mut missing = Vec::new();
        for (tp, position) in &self.positions {
            let Some(position) = *position else { continue };
            match self.cluster.leader(&tp.topic, tp.partition) {
                Some((_, address, _)) => by_leader
                    .entry(address)
                    .or_default()
                    .push((tp.clone(), position)),
                None => missing.push(tp.topic.clone()),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                let _ = cluster.refresh(&missing).await;
            });
        }
        let wait = self
            .config
            .fetch_max_wait
            .min(deadline.saturating_duration_since(Instant::now()));
        for (address, partitions) in by_leader {
            if self.in_flight.contains_key(&address) {
                continue;
            }
            let mut topics: Vec<pb::fetch_request::TopicFetch> = Vec::new();
            for (tp, offset) in &partitions {
                let p = pb::fetch_request::PartitionFetch {
                    partition: tp.partition,
                    fetch_offset: *offset,
                    partition_max_bytes: self.config.max_partition_fetch_bytes,
                    current_leader_epoch: -1,
                };
                match topics.iter_mut().find(|t| t.name == tp.topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(pb::fetch_request::TopicFetch {
                        name: tp.topic.clone(),
                        partitions: vec![p],
                    }),
                }
            }
            let request = pb::FetchRequest {
                max_wait_ms: wait.as_millis() as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                isolation_level: self.config.isolation_level,
                topics,
            };
            let cluster = self.cluster.clone();
            let addr = address.clone();
            let task = tokio::spawn(async move {
                let mut client = cluster.broker(&addr)?;
                client
                    .fetch(request)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|status| ClientError::from_status(&addr, status))
            });
            self.in_flight.insert(address, (task, partitions));
        }
    }

    /// Waits for the fetches in flight (until `deadline`), buffering their records.
    async fn collect(&mut self, deadline: Instant) -> Result<()> {
        let addresses: Vec<String> = self.in_flight.keys().cloned().collect();
        let mut refresh = false;
        for address in addresses {
            let Some((task, asked)) = self.in_flight.get_mut(&address) else {
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result =
                match tokio::time::timeout(remaining + Duration::from_millis(50), &mut *task).await
                {
                    Err(_) => continue, // still in flight: collected by a later poll
                    Ok(joined) => joined,
                };
            let asked = asked.clone();
            self.in_flight.remove(&address);
            let response = match result {
                Ok(Ok(response)) => response,
                Ok(Err(err)) if err.is_retriable() => {
                    tracing::debug!(broker = %address, error = %err, "fetch failed; retrying");
                    refresh = true;
                    continue;
                }
                Ok(Err(err)) => return Err(err),
                Err(_) => continue, // aborted
            };
            for t in response.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.clone(), p.partition);
                    let Some(&(_, asked_at)) = asked.iter().find(|(x, _)| *x == tp) else {
                        continue;
                    };
                    if self.position(&tp) != Some(asked_at) {
                        continue; // moved by a seek meanwhile
                    }
                    if let Some(err) = ClientError::from_wire(&p.error) {
                        match err.code() {
                            Some(ErrorCode::OffsetOutOfRange) => {
                                if self.config.auto_offset_reset == OffsetReset::None {
                                    return Err(err);
                                }
                                tracing::info!(partition = %tp, position = asked_at, log_start = p.log_start_offset, log_end = p.log_end_offset, "position out of range; resetting");
                                self.positions.insert(tp, None);
                            }
                            _ if err.is_retriable() => refresh = true,
                            _ => return Err(err),
                        }
                        continue;
                    }
                    let mut next = asked_at;
                    for record in decode(&tp, &p.records)? {
                        if record.offset >= asked_at {
                            next = record.offset + 1;
                            self.buffered.push_back(record);
                        }
                    }
                    if !p.records.is_empty() {
                        next = next.max(p.next_fetch_offset);
                    }
                    self.positions.insert(tp, Some(next));
                }
            }
        }
        if refresh {
            let topics: Vec<String> = {
                let mut t: Vec<String> = self.positions.keys().map(|tp| tp.topic.clone()).collect();
                t.sort();
                t.dedup();
                t
            };
            let _ = self.cluster.refresh(&topics).await;
        }
        Ok(())
    }
}

/// Decodes whole batches into records.
fn decode(tp: &TopicPartition, records: &Bytes) -> Result<Vec<ConsumerRecord>> {
    let mut out = Vec::new();
    for item in tributary_record::Batches::new(records) {
        let (header, position, _) =
            item.map_err(|e| ClientError::Protocol(format!("{tp}: corrupt batch: {e}")))?;
        if header.is_control() {
            continue;
        }
        let batch = records.slice(position..position + header.total_len());
        let log_append_time =
            header.timestamp_type() == tributary_record::TimestampType::LogAppendTime;
        for r in tributary_record::decode_records(&batch)
            .map_err(|e| ClientError::Protocol(format!("{tp}: cannot decode a batch: {e}")))?
        {
            out.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: r.offset,
                timestamp: if log_append_time {
                    header.max_timestamp
                } else {
                    r.timestamp
                },
                log_append_time,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            });
        }
    }
    Ok(out)
}

/// ListOffsets for one partition on its leader (refreshing metadata and retrying on
/// leadership errors, bounded by the request timeout).
pub(crate) async fn list_offset(
    cluster: &Arc<Cluster>,
    tp: &TopicPartition,
    timestamp: i64,
) -> Result<i64> {
    let deadline = Instant::now() + cluster.config().request_timeout;
    loop {
        let leader = match cluster.leader(&tp.topic, tp.partition) {
            Some(l) => Some(l),
            None => {
                let topic = cluster.topic(&tp.topic).await?;
                if tp.partition < 0 || tp.partition as usize >= topic.partitions.len() {
                    return Err(ClientError::broker(
                        ErrorCode::UnknownTopicOrPartition,
                        format!(
                            "topic `{}` has {} partitions; {} does not exist",
                            tp.topic,
                            topic.partitions.len(),
                            tp.partition
                        ),
                    ));
                }
                cluster.leader(&tp.topic, tp.partition)
            }
        };
        let outcome = match leader {
            None => Err(ClientError::broker(
                ErrorCode::LeaderNotAvailable,
                format!("{tp} has no leader right now"),
            )),
            Some((_, address, _)) => {
                let request = pb::ListOffsetsRequest {
                    isolation_level: 0,
                    topics: vec![pb::list_offsets_request::TopicQuery {
                        name: tp.topic.clone(),
                        partitions: vec![pb::list_offsets_request::PartitionQuery {
                            partition: tp.partition,
                            timestamp,
                            current_leader_epoch: -1,
                        }],
                    }],
                };
                match cluster.broker(&address)?.list_offsets(request).await {
                    Err(status) => Err(ClientError::from_status(&address, status)),
                    Ok(r) => {
                        let r = r.into_inner();
                        let p = r
                            .topics
                            .into_iter()
                            .next()
                            .and_then(|t| t.partitions.into_iter().next())
                            .ok_or_else(|| {
                                ClientError::Protocol("empty ListOffsets answer".into())
                            })?;
                        match ClientError::from_wire(&p.error) {
                            Some(err) => Err(err),
                            None => Ok(p.offset),
                        }
                    }
                }
            }
        };
        match outcome {
            Err(err) if err.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(cluster.config().retry_backoff).await;
                let _ = cluster.refresh(std::slice::from_ref(&tp.topic)).await;
            }
            other => return other,
        }
    }
}
