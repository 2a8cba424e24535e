//! The broker's request and response types beneath every protocol: plain Rust types with
//! Kafka's error codes. The gRPC services translate to and from these, and a Kafka-wire-protocol
//! listener will too, so every request has one implementation (the `service` layer).
//!
//! Invariant: this module depends on no other module of the crate.

use std::time::Duration;

use bytes::Bytes;
use tributary_metadata::BrokerId;
use tributary_proto::common::v1::ErrorCode;

pub use tributary_kafka::TopicPartition;

/// Where a partition's leader is (sent with NOT_LEADER_OR_FOLLOWER and epoch errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader, if any.
    pub leader: Option<BrokerId>,
    /// Its leader epoch.
    pub leader_epoch: i32,
}

/// A per-partition error: Kafka's code, a message naming the problem, and where to go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    /// Kafka's error code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
    /// The current leader, for NOT_LEADER_OR_FOLLOWER and epoch errors.
    pub leader: Option<LeaderHint>,
    /// For OFFSET_OUT_OF_RANGE: the valid range `[log start, log end]`.
    pub range: Option<(i64, i64)>,
}

impl PartitionError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
            range: None,
        }
    }

    /// Adds the leader hint.
    pub fn with_leader(mut self, hint: LeaderHint) -> Self {
        self.leader = Some(hint);
        self
    }
}

/// How many replicas must have a produced batch before the producer hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no acknowledgement.
    None,
    /// acks=1: the leader appended it.
    Leader,
    /// acks=all (-1): every in-sync replica has it (the high watermark passed it).
    All,
}

impl Acks {
    /// Kafka's number (0, 1, -1), or `None` for anything else (INVALID_REQUIRED_ACKS).
    pub fn from_kafka(acks: i32) -> Option<Self> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// A produce request.
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    /// Required acknowledgements.
    pub acks: Acks,
    /// How long acks=all may wait.
    pub timeout: Duration,
    /// Record batches per partition.
    pub partitions: Vec<(TopicPartition, Bytes)>,
}

/// A produced partition's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the first record appended (-1 with acks=0).
    pub base_offset: i64,
    /// The broker's clock for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
}

/// Isolation level of a fetch or offsets lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset (the high watermark until transactions exist).
    ReadCommitted,
}

/// One partition of a fetch.
#[derive(Debug, Clone)]
pub struct FetchPartition {
    /// Which partition.
    pub tp: TopicPartition,
    /// First offset wanted.
    pub offset: i64,
    /// Byte bound for this partition.
    pub max_bytes: usize,
    /// The leader epoch the client knows (None: do not check).
    pub current_leader_epoch: Option<i32>,
}

/// A fetch request.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Longest wait for `min_bytes`.
    pub max_wait: Duration,
    /// Answer as soon as this much data is there.
    pub min_bytes: usize,
    /// Bound on the whole response.
    pub max_bytes: usize,
    /// Isolation level.
    pub isolation: Isolation,
    /// Partitions and positions.
    pub partitions: Vec<FetchPartition>,
}

/// One partition's fetch result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Which partition.
    pub tp: TopicPartition,
    /// Why nothing was read, if so.
    pub error: Option<PartitionError>,
    /// High watermark (-1 if unknown).
    pub high_watermark: i64,
    /// Last stable offset (the high watermark until transactions exist).
    pub last_stable_offset: i64,
    /// Log start offset (-1 if unknown).
    pub log_start_offset: i64,
    /// Log end offset (-1 if unknown).
    pub log_end_offset: i64,
    /// Whole record batches.
    pub records: Bytes,
    /// Where the next fetch continues.
    pub next_offset: i64,
}

impl FetchedPartition {
    pub(crate) fn failed(tp: TopicPartition, offset: i64, error: PartitionError) -> Self {
        Self {
            tp,
            error: Some(error),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            records: Bytes::new(),
            next_offset: offset,
        }
    }
}

/// Kafka's special ListOffsets timestamps.
pub mod timestamps {
    /// The log end (high watermark for consumers).
    pub const LATEST: i64 = -1;
    /// The log start.
    pub const EARLIEST: i64 = -2;
    /// The record with the largest timestamp (KIP-734).
    pub const MAX: i64 = -3;
    /// The first offset on local disk (KIP-1005; the log start until tiered storage exists).
    pub const EARLIEST_LOCAL: i64 = -4;
    /// The last offset in tiered storage (KIP-1005; none until tiered storage exists).
    pub const LATEST_TIERED: i64 = -5;
}

/// One partition of a ListOffsets request.
#[derive(Debug, Clone)]
pub struct OffsetQuery {
    /// Which partition.
    pub tp: TopicPartition,
    /// [`timestamps::EARLIEST`], [`timestamps::LATEST`], or a timestamp in ms.
    pub timestamp: i64,
    /// The leader epoch the client knows (None: do not check).
    pub current_leader_epoch: Option<i32>,
}

/// An offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundOffset {
    /// The offset (-1: no record at or after the timestamp).
    pub offset: i64,
    /// Its record's timestamp (-1 for earliest/latest).
    pub timestamp: i64,
    /// The leader epoch of the answering leader.
    pub leader_epoch: i32,
}

/// One partition of a follower's fetch.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPartition {
    /// Which partition.
    pub tp: TopicPartition,
    /// The follower's log end offset.
    pub offset: i64,
    /// The leader epoch it follows.
    pub leader_epoch: i32,
    /// Byte bound for this partition.
    pub max_bytes: usize,
    /// The follower's log start offset (-1: unknown), for the leader's low watermark.
    pub log_start_offset: i64,
}

/// A follower's fetch (Kafka's Fetch with a replica id).
#[derive(Debug, Clone)]
pub struct ReplicaFetchRequest {
    /// The fetching follower.
    pub replica: BrokerId,
    /// Its registration epoch (a fetch from an older incarnation is refused).
    pub broker_epoch: u64,
    /// Longest wait for `min_bytes`.
    pub max_wait: Duration,
    /// Answer as soon as this much data is there.
    pub min_bytes: usize,
    /// Bound on the whole response.
    pub max_bytes: usize,
    /// Partitions and the follower's positions.
    pub partitions: Vec<ReplicaFetchPartition>,
}

/// Kafka's DeleteRecords offset meaning "the high watermark" (everything committed).
pub const DELETE_TO_HIGH_WATERMARK: i64 = -1;

/// A DeleteRecords request (Kafka's): records below each offset go, on every replica.
#[derive(Debug, Clone)]
pub struct DeleteRecordsRequest {
    /// How long to wait for every live replica's log start offset to reach the offsets.
    pub timeout: Duration,
    /// Per partition, the offset records are deleted below (or [`DELETE_TO_HIGH_WATERMARK`]).
    pub partitions: Vec<(TopicPartition, i64)>,
}

/// One partition of a data directory, as DescribeLogDirs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirPartition {
    /// Which partition.
    pub tp: TopicPartition,
    /// The size of its segments' data.
    pub size_bytes: u64,
    /// 0 on the leader; on a follower, how far its log end is behind the leader's as of its
    /// last fetch (0 until it knows).
    pub offset_lag: i64,
}

/// A data directory, as DescribeLogDirs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    /// Its absolute path.
    pub path: String,
    /// The size of the volume it is on (-1: unknown).
    pub total_bytes: i64,
    /// The space left on that volume for the broker (-1: unknown).
    pub usable_bytes: i64,
    /// The partitions asked for that it holds.
    pub partitions: Vec<LogDirPartition>,
}

/// One partition of an OffsetsForLeaderEpoch request (KIP-101/279).
#[derive(Debug, Clone)]
pub struct EpochQuery {
    /// Which partition.
    pub tp: TopicPartition,
    /// The leader epoch the asker knows (-1: do not check).
    pub current_leader_epoch: i32,
    /// The epoch whose end offset is asked.
    pub leader_epoch: i32,
}

/// A Metadata request.
#[derive(Debug, Clone, Default)]
pub struct MetadataRequest {
    /// The topics wanted (`None`: every topic).
    pub topics: Option<Vec<String>>,
    /// Whether a missing topic may be created (if the broker allows it).
    pub allow_auto_topic_creation: bool,
    /// Answer only once this broker's partitions reflect this metadata offset (bounded wait).
    pub min_metadata_offset: u64,
}

/// A broker as a Metadata answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// Its id.
    pub id: BrokerId,
    /// Its address on the listener the request came in on (`None`: it has no such listener).
    pub address: Option<String>,
    /// Its rack.
    pub rack: Option<String>,
    /// `RUNNING`, `FENCED` or `CONTROLLED_SHUTDOWN`.
    pub state: &'static str,
}

/// A partition as a Metadata answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Its index.
    pub partition: i32,
    /// LEADER_NOT_AVAILABLE when it has no leader.
    pub error: Option<PartitionError>,
    /// The leader, if any.
    pub leader: Option<BrokerId>,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// Every replica.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Replicas on fenced brokers.
    pub offline_replicas: Vec<BrokerId>,
}

/// A topic as a Metadata answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Its name.
    pub name: String,
    /// Why it is not described (unknown, being created), if so.
    pub error: Option<PartitionError>,
    /// Its id (`None` with an error).
    pub topic_id: Option<uuid::Uuid>,
    /// Its partitions, by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// The answer to a Metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Every registered broker.
    pub brokers: Vec<BrokerEndpoint>,
    /// The cluster id, once known.
    pub cluster_id: Option<String>,
    /// The active controller's node id, if any.
    pub controller_id: Option<i64>,
    /// The topics asked for.
    pub topics: Vec<TopicMetadata>,
    /// The metadata offset the answer reflects.
    pub metadata_offset: u64,
}

/// Groups per-partition results by topic, keeping the order topics first appear in (every
/// protocol answers per topic, then per partition).
pub fn by_topic<T>(
    items: impl IntoIterator<Item = (TopicPartition, T)>,
) -> Vec<(String, Vec<(i32, T)>)> {
    let mut out: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for (tp, item) in items {
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, list)) => list.push((tp.partition, item)),
            None => out.push((tp.topic, vec![(tp.partition, item)])),
        }
    }
    out
}
