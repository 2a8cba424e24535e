//! One partition hosted by this broker: its log, its role (leader or follower, at which epoch),
//! and its high watermark.
//!
//! Invariants: only the leader of the current leader epoch appends produced records; the role
//! lock is held (shared) across an append, so a role change waits for appends in flight and no
//! append lands under an epoch the broker has already left; the high watermark never goes
//! backwards while leading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tributary_metadata::{BrokerId, PartitionState};
use tributary_proto::common::v1::ErrorCode;
use tributary_storage::{AppendInfo, Log, LogConfig, StorageError};
use uuid::Uuid;

use crate::api::{FetchedPartition, FoundOffset, Isolation, PartitionError, TopicPartition};

/// The replication role of a partition on this broker, from the metadata image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The leader, if any.
    pub leader: Option<BrokerId>,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch of the state this role came from.
    pub partition_epoch: i32,
    /// All replicas.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
}

impl Role {
    fn unknown() -> Self {
        Role {
            leader: None,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
        }
    }
}

/// A partition hosted here.
#[derive(Debug)]
pub struct Partition {
    /// Topic and index.
    pub tp: TopicPartition,
    /// The topic's id (a re-created topic has another).
    pub topic_id: Uuid,
    me: BrokerId,
    log: Log,
    role: RwLock<Role>,
    high_watermark: AtomicI64,
    /// Log end offsets of followers, by broker (filled by replication).
    follower_leos: Mutex<HashMap<BrokerId, i64>>,
    /// Bumped whenever a high watermark advances, to wake long-polling fetches.
    data_version: Arc<watch::Sender<u64>>,
}

impl Partition {
    /// A partition over an opened `log`, with no role yet.
    pub fn new(
        tp: TopicPartition,
        topic_id: Uuid,
        me: BrokerId,
        log: Log,
        data_version: Arc<watch::Sender<u64>>,
    ) -> Self {
        let start = log.log_start_offset();
        Self {
            tp,
            topic_id,
            me,
            log,
            role: RwLock::new(Role::unknown()),
            high_watermark: AtomicI64::new(start),
            follower_leos: Mutex::new(HashMap::new()),
            data_version,
        }
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The high watermark: offsets below it are committed.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Takes on the role the metadata gives this partition. A stale state (older partition
    /// epoch) is ignored. Becoming leader records the new epoch's start at the log end.
    pub fn apply_state(&self, state: &PartitionState) -> Result<(), StorageError> {
        let mut role = self.role.write().unwrap_or_else(|p| p.into_inner());
        if state.partition_epoch < role.partition_epoch {
            return Ok(());
        }
        let leads = state.leader == Some(self.me);
        let newly_leading =
            leads && (role.leader != Some(self.me) || role.leader_epoch != state.leader_epoch);
        if newly_leading {
            self.log
                .assign_epoch_start_offset(state.leader_epoch, self.log.log_end_offset())?;
            tracing::info!(partition = %self.tp, epoch = state.leader_epoch, log_end_offset = self.log.log_end_offset(), "leading");
        } else if role.leader == Some(self.me) && !leads {
            tracing::info!(partition = %self.tp, new_leader = ?state.leader, epoch = state.leader_epoch, "no longer leading");
        }
        *role = Role {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: state.replicas.clone(),
            isr: state.isr.clone(),
        };
        if leads {
            self.advance_high_watermark(&role);
        }
        Ok(())
    }

    /// Replaces the log's configuration (topic configs altered).
    pub fn set_config(&self, config: LogConfig) -> Result<(), StorageError> {
        if self.log.config() != config {
            self.log.set_config(config)?;
        }
        Ok(())
    }

    /// Moves the high watermark to the smallest log end offset in the ISR, never backwards.
    fn advance_high_watermark(&self, role: &Role) {
        let leo = self.log.log_end_offset();
        let current = self.high_watermark();
        let followers = self.follower_leos.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = role
            .isr
            .iter()
            .map(|&b| {
                if b == self.me {
                    leo
                } else {
                    followers.get(&b).copied().unwrap_or(current)
                }
            })
            .min()
            .unwrap_or(current);
        if candidate > current {
            self.high_watermark.store(candidate, Ordering::Release);
            self.data_version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn check_leader(&self, role: &Role) -> Result<(), PartitionError> {
        if role.leader == Some(self.me) {
            Ok(())
        } else {
            Err(PartitionError::new(
                ErrorCode::NotLeaderOrFollower,
                match role.leader {
                    Some(leader) => format!(
                        "broker {} is not the leader of {}; broker {leader} is (epoch {})",
                        self.me, self.tp, role.leader_epoch
                    ),
                    None => format!("{} has no leader right now", self.tp),
                },
            ))
        }
    }

    fn check_epoch(&self, role: &Role, known: Option<i32>) -> Result<(), PartitionError> {
        match known {
            Some(e) if e < role.leader_epoch => Err(PartitionError::new(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "leader epoch {e} of {} is stale; the current epoch is {}",
                    self.tp, role.leader_epoch
                ),
            )),
            Some(e) if e > role.leader_epoch => Err(PartitionError::new(
                ErrorCode::UnknownLeaderEpoch,
                format!(
                    "leader epoch {e} of {} is newer than this broker's {}; it has not caught up with the metadata yet",
                    self.tp, role.leader_epoch
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Appends produced batches as leader. `min_insync`: for acks=all, the ISR size below which
    /// the write is refused (NOT_ENOUGH_REPLICAS) before anything is appended.
    pub fn append(
        &self,
        records: &[u8],
        min_insync: Option<usize>,
    ) -> Result<(AppendInfo, i32), PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        if let Some(min) = min_insync
            && role.isr.len() < min
        {
            return Err(PartitionError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{} has {} in-sync replicas {:?}, fewer than min.insync.replicas = {min}",
                    self.tp,
                    role.isr.len(),
                    role.isr
                ),
            ));
        }
        let info = self
            .log
            .append_as_leader(records, role.leader_epoch)
            .map_err(|e| storage_error(&self.tp, e))?;
        self.advance_high_watermark(&role);
        Ok((info, role.leader_epoch))
    }

    /// Whether `offset` is below the high watermark while this broker still leads at `epoch`
    /// (`Err` once it does not: an acks=all producer must not be told its write committed).
    pub fn committed(&self, offset: i64, epoch: i32) -> Result<bool, PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        if role.leader_epoch != epoch {
            return Err(PartitionError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "leadership of {} moved (epoch {epoch} -> {}) before the write was replicated",
                    self.tp, role.leader_epoch
                ),
            ));
        }
        Ok(offset < self.high_watermark())
    }

    /// Reads committed batches from `offset` for a consumer.
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        current_leader_epoch: Option<i32>,
        _isolation: Isolation,
    ) -> Result<FetchedPartition, PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        self.check_epoch(&role, current_leader_epoch)?;
        let high_watermark = self.high_watermark();
        let read = self
            .log
            .read(offset, max_bytes, Some(high_watermark), min_one_batch)
            .map_err(|e| storage_error(&self.tp, e))?;
        Ok(FetchedPartition {
            tp: self.tp.clone(),
            error: None,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
            next_offset: read.next_offset,
            records: read.records,
        })
    }

    /// Kafka's ListOffsets for a consumer: earliest, latest (the high watermark), or the first
    /// committed offset whose timestamp is at least `timestamp`.
    pub fn list_offset(
        &self,
        timestamp: i64,
        current_leader_epoch: Option<i32>,
    ) -> Result<FoundOffset, PartitionError> {
        use crate::api::timestamps::{EARLIEST, LATEST};
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        self.check_epoch(&role, current_leader_epoch)?;
        let leader_epoch = role.leader_epoch;
        let high_watermark = self.high_watermark();
        let found = |offset, timestamp| FoundOffset {
            offset,
            timestamp,
            leader_epoch,
        };
        match timestamp {
            EARLIEST => Ok(found(self.log.log_start_offset(), -1)),
            LATEST => Ok(found(high_watermark, -1)),
            t if t < 0 => Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!("timestamp {t} is neither -1 (latest), -2 (earliest) nor a time in ms"),
            )),
            t => match self
                .log
                .offset_for_timestamp(t)
                .map_err(|e| storage_error(&self.tp, e))?
            {
                Some(hit) if hit.offset < high_watermark => Ok(found(hit.offset, hit.timestamp)),
                _ => Ok(found(-1, -1)),
            },
        }
    }
}

/// A storage error as Kafka's code and a message naming the partition.
pub fn storage_error(tp: &TopicPartition, err: StorageError) -> PartitionError {
    let code = match &err {
        StorageError::InvalidBatch { .. } => ErrorCode::CorruptMessage,
        StorageError::EmptyAppend => ErrorCode::InvalidRecord,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::OffsetOutOfRange {
            log_start_offset,
            log_end_offset,
            ..
        } => {
            let mut e = PartitionError::new(ErrorCode::OffsetOutOfRange, format!("{tp}: {err}"));
            e.range = Some((*log_start_offset, *log_end_offset));
            return e;
        }
        StorageError::Closed { .. } => ErrorCode::NotLeaderOrFollower,
        StorageError::Io { .. }
        | StorageError::DiskFull { .. }
        | StorageError::Corrupt { .. }
        | StorageError::UnsupportedFormat { .. } => ErrorCode::KafkaStorageError,
        StorageError::OffsetsOutOfOrder { .. }
        | StorageError::EpochOutOfOrder { .. }
        | StorageError::InvalidConfig { .. } => ErrorCode::UnknownServerError,
    };
    PartitionError::new(code, format!("{tp}: {err}"))
}
