//! One partition hosted by this broker: its log, its role (leader or follower, at which epoch),
//! and its high watermark.
//!
//! Invariants: only the leader of the current leader epoch appends produced records; the role
//! lock is held (shared) across an append, so a role change waits for appends in flight and no
//! append lands under an epoch the broker has already left; the high watermark never goes
//! backwards while leading.
//!
//! The log start offset (`records`): a leader moves it for DeleteRecords; followers report
//! theirs in each fetch and take the leader's; the low watermark is the smallest among the
//! live replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tributary_metadata::{BrokerId, PartitionState};
use tributary_proto::common::v1::ErrorCode;
use tributary_storage::{AppendInfo, EpochEndOffset, Log, StorageError};
use uuid::Uuid;

use crate::api::{FetchedPartition, FoundOffset, Isolation, PartitionError, TopicPartition};
use crate::producers::{BATCHES_KEPT, ProducerState, Verdict};
use crate::topic_config::TopicConfig;

mod records;

/// How many of the log's last batches a broker taking over as leader checks against its
/// producer state.
const TAIL_BATCHES_CHECKED: usize = 16;

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
    /// While leading: what each follower's fetches said (its log end offset, when it was last
    /// caught up).
    followers: Mutex<HashMap<BrokerId, FollowerState>>,
    /// While leading: an ISR change sent to the controller and not yet answered.
    pending_isr: Mutex<Option<IsrProposal>>,
    /// While leading: the log end offset when this leader epoch began.
    epoch_start_offset: AtomicI64,
    /// While following: the leader's log end offset as of the last fetch (-1: not known).
    leader_log_end: AtomicI64,
    /// Idempotent producers' recent batches (leader and followers alike).
    producers: Mutex<ProducerState>,
    /// The topic's `min.insync.replicas` (see [`TopicConfig`]).
    min_insync_replicas: AtomicUsize,
    /// Bumped whenever a high watermark advances or a leader appends, to wake long-polling
    /// fetches (consumers and followers) and acks=all producers.
    data_version: Arc<watch::Sender<u64>>,
}

/// What a leader knows of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct FollowerState {
    /// The follower's log end offset (its last fetch offset); -1 until it fetches from this
    /// leader epoch.
    leo: i64,
    /// The follower's log start offset, as its last fetch said; -1 until then.
    log_start: i64,
    /// When the follower was last known to have everything the leader had.
    last_caught_up: Instant,
    /// The leader's log end offset at the follower's previous fetch, and when that was.
    last_fetch_leader_leo: i64,
    last_fetch_time: Instant,
}

/// An ISR change a leader proposes to the controller (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// Topic id.
    pub topic_id: Uuid,
    /// The partition.
    pub tp: TopicPartition,
    /// The proposing leader's epoch.
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on.
    pub partition_epoch: i32,
    /// The ISR proposed.
    pub new_isr: Vec<BrokerId>,
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
        let producers = Mutex::new(ProducerState::load(log.dir(), &log));
        Self {
            producers,
            tp,
            topic_id,
            me,
            log,
            role: RwLock::new(Role::unknown()),
            high_watermark: AtomicI64::new(start),
            followers: Mutex::new(HashMap::new()),
            pending_isr: Mutex::new(None),
            epoch_start_offset: AtomicI64::new(0),
            leader_log_end: AtomicI64::new(-1),
            min_insync_replicas: AtomicUsize::new(1),
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

    /// The tracing span of this partition at leader epoch `epoch`: events logged inside it
    /// carry the topic, the partition and the epoch (and the broker, from the enclosing span).
    pub fn span(&self, epoch: i32) -> tracing::Span {
        tracing::info_span!("partition", topic = %self.tp.topic, partition = self.tp.partition, epoch)
    }

    /// The high watermark: offsets below it are committed.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Takes on the role the metadata gives this partition. A stale state (older partition
    /// epoch) is ignored. Becoming leader records the new epoch's start at the log end.
    pub fn apply_state(&self, state: &PartitionState) -> Result<(), StorageError> {
        self.apply_state_at(state, Instant::now())
    }

    /// [`Partition::apply_state`] at time `now` (a new leader counts its followers' lag from
    /// `now`); the replication simulation passes its simulated clock.
    pub fn apply_state_at(&self, state: &PartitionState, now: Instant) -> Result<(), StorageError> {
        let mut role = self.role.write().unwrap_or_else(|p| p.into_inner());
        if state.partition_epoch < role.partition_epoch {
            return Ok(());
        }
        let leads = state.leader == Some(self.me);
        let newly_leading =
            leads && (role.leader != Some(self.me) || role.leader_epoch != state.leader_epoch);
        if newly_leading {
            let leo = self.log.log_end_offset();
            self.log
                .assign_epoch_start_offset(state.leader_epoch, leo)?;
            self.epoch_start_offset.store(leo, Ordering::Release);
            *self.followers.lock().unwrap_or_else(|p| p.into_inner()) = state
                .replicas
                .iter()
                .filter(|&&b| b != self.me)
                .map(|&b| {
                    (
                        b,
                        FollowerState {
                            leo: -1,
                            log_start: -1,
                            last_caught_up: now,
                            last_fetch_leader_leo: -1,
                            last_fetch_time: now,
                        },
                    )
                })
                .collect();
            *self.pending_isr.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let _span = self.span(state.leader_epoch).entered();
            self.check_producer_state();
            let (producers, last_batch_offset) = {
                let p = self.producers.lock().unwrap_or_else(|p| p.into_inner());
                (p.producer_count(), p.last_batch_offset())
            };
            tracing::info!(
                log_end_offset = self.log.log_end_offset(),
                producers,
                last_batch_offset,
                "leading"
            );
        } else if role.leader == Some(self.me) && !leads {
            let _span = self.span(state.leader_epoch).entered();
            tracing::info!(new_leader = ?state.leader, "no longer leading");
        }
        {
            let mut pending = self.pending_isr.lock().unwrap_or_else(|p| p.into_inner());
            if pending
                .as_ref()
                .is_some_and(|p| state.partition_epoch > p.partition_epoch || !leads)
            {
                *pending = None;
            }
        }
        if !leads {
            // A follower's high watermark never passes its own log end.
            let leo = self.log.log_end_offset();
            if self.high_watermark() > leo {
                self.high_watermark.store(leo, Ordering::Release);
            }
        }
        if role.leader != state.leader || role.leader_epoch != state.leader_epoch {
            self.leader_log_end.store(-1, Ordering::Release);
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
        self.bump();
        Ok(())
    }

    /// Before taking producers' retries as leader: the batches at the log's end must be in the
    /// producer state, or a retry of one would be appended a second time. Every append keeps
    /// the two in step, so a miss means a bug (or a producer expired by
    /// `producer.id.expiration.ms`, whose batches are that old): it is logged and the state
    /// rebuilt from the log (its newest snapshot and the batches after it; the whole log if
    /// that still misses it). Checks the last
    /// [`TAIL_BATCHES_CHECKED`] batches, each producer id's newest [`BATCHES_KEPT`] of its
    /// newest epoch: a read of one batch each.
    fn check_producer_state(&self) {
        let start = self.log.log_start_offset();
        let mut before = self.log.log_end_offset();
        let mut tail = Vec::new();
        while tail.len() < TAIL_BATCHES_CHECKED && before > start {
            let Ok(read) = self.log.read(before - 1, 1, None, true) else {
                break;
            };
            let Some(Ok((batch, _, _))) = tributary_record::Batches::new(&read.records).next()
            else {
                break;
            };
            if batch.base_offset >= before {
                break; // a gap left by compaction
            }
            before = batch.base_offset;
            tail.push(batch);
        }
        let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        // Newest first: per producer id, the epoch of its newest batch and how many were seen.
        let mut seen: HashMap<i64, (i16, usize)> = HashMap::new();
        let missing = tail.iter().find(|batch| {
            let (epoch, count) = seen
                .entry(batch.producer_id)
                .or_insert((batch.producer_epoch, 0));
            if *epoch != batch.producer_epoch {
                return false;
            }
            *count += 1;
            *count <= BATCHES_KEPT && !producers.holds(batch)
        });
        let Some(missing) = missing.copied() else {
            return;
        };
        tracing::warn!(
            log_end_offset = self.log.log_end_offset(),
            producer_id = missing.producer_id,
            base_sequence = missing.base_sequence,
            base_offset = missing.base_offset,
            max_timestamp = missing.max_timestamp,
            "the producer state misses one of the log's last batches (lost, or expired); rebuilding it from the log"
        );
        producers.reload(&self.log);
        if !producers.holds(&missing) {
            // The snapshot itself lacks it: rebuild from the whole log instead.
            tracing::error!(
                base_offset = missing.base_offset,
                "the producer state rebuilt from its snapshot still misses it; replaying the whole log"
            );
            producers.remove_snapshots();
            producers.reload(&self.log);
            if !producers.holds(&missing) {
                tracing::error!(
                    base_offset = missing.base_offset,
                    "the producer state replayed from the whole log still misses it"
                );
            }
        }
    }

    fn bump(&self) {
        self.data_version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Starts from a checkpointed high watermark (bounded by the log end), after a restart.
    pub fn restore_high_watermark(&self, checkpointed: i64) {
        let hw = checkpointed
            .min(self.log.log_end_offset())
            .max(self.log.log_start_offset());
        self.high_watermark.store(hw, Ordering::Release);
    }

    /// Takes the topic's configs (at creation and whenever they are altered).
    pub fn set_config(&self, config: TopicConfig) -> Result<(), StorageError> {
        self.min_insync_replicas
            .store(config.min_insync_replicas, Ordering::Release);
        if self.log.config() != config.log {
            self.log.set_config(config.log)?;
        }
        Ok(())
    }

    /// The topic's `min.insync.replicas`.
    pub fn min_insync_replicas(&self) -> usize {
        self.min_insync_replicas.load(Ordering::Acquire)
    }

    /// Moves the high watermark to the smallest log end offset in the ISR, never backwards.
    ///
    /// The ISR counted is the maximal one: the committed ISR plus the members of a pending
    /// expansion (so the high watermark never passes what a future member lacks); a pending
    /// shrink counts only once committed.
    fn advance_high_watermark(&self, role: &Role) {
        let leo = self.log.log_end_offset();
        let current = self.high_watermark();
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let pending = self.pending_isr.lock().unwrap_or_else(|p| p.into_inner());
        let extra = pending
            .iter()
            .flat_map(|p| p.new_isr.iter())
            .filter(|b| !role.isr.contains(b));
        let candidate = role
            .isr
            .iter()
            .chain(extra)
            .map(|&b| {
                if b == self.me {
                    leo
                } else {
                    followers
                        .get(&b)
                        .map(|f| f.leo)
                        .filter(|&l| l >= 0)
                        .unwrap_or(current)
                }
            })
            .min()
            .unwrap_or(current);
        drop(pending);
        drop(followers);
        if candidate > current
            && self.high_watermark.fetch_max(candidate, Ordering::AcqRel) < candidate
        {
            self.bump();
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
        records: &bytes::Bytes,
        min_insync: Option<usize>,
    ) -> Result<(AppendInfo, i32), PartitionError> {
        // Control batches (transaction markers) are written by brokers, never by clients.
        if tributary_record::Batches::new(records)
            .flatten()
            .any(|(header, _, _)| header.is_control())
        {
            return Err(PartitionError::new(
                ErrorCode::InvalidRecord,
                format!("{}: clients may not write control batches", self.tp),
            ));
        }
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
        let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        if let Verdict::Duplicate(range) = producers.check(records)? {
            // A retry of a batch already in the log: its original offsets, nothing appended.
            return Ok((
                AppendInfo::already_appended(range.first_offset, range.last_offset),
                role.leader_epoch,
            ));
        }
        let info = self
            .append_observed(&mut producers, |log| {
                log.append_as_leader(records, role.leader_epoch)
            })
            .map_err(|e| storage_error(&self.tp, e))?;
        drop(producers);
        self.advance_high_watermark(&role);
        // Followers long-polling for new data wake up.
        self.bump();
        Ok((info, role.leader_epoch))
    }

    /// Whether `offset` is below the high watermark while this broker still leads at `epoch`
    /// (`Err` once it does not: an acks=all producer must not be told its write committed).
    ///
    /// With `min_insync`, a write whose high watermark passed only after the ISR shrank below
    /// it is NOT_ENOUGH_REPLICAS_AFTER_APPEND (it may exist on too few replicas).
    pub fn committed(
        &self,
        offset: i64,
        epoch: i32,
        min_insync: Option<usize>,
    ) -> Result<bool, PartitionError> {
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
        let committed = offset < self.high_watermark();
        if committed
            && let Some(min) = min_insync
            && role.isr.len() < min
        {
            return Err(PartitionError::new(
                ErrorCode::NotEnoughReplicasAfterAppend,
                format!(
                    "{}: written, but the ISR {:?} shrank below min.insync.replicas = {min} before it was replicated",
                    self.tp, role.isr
                ),
            ));
        }
        Ok(committed)
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
        use crate::api::timestamps::{EARLIEST, EARLIEST_LOCAL, LATEST, LATEST_TIERED, MAX};
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
            // Every segment is local until tiered storage exists.
            EARLIEST_LOCAL => Ok(found(self.log.log_start_offset(), -1)),
            LATEST => Ok(found(high_watermark, -1)),
            // Nothing is tiered: Kafka answers "no offset" when remote storage is off.
            LATEST_TIERED => Ok(found(-1, -1)),
            MAX => match self
                .log
                .max_timestamp_offset()
                .map_err(|e| storage_error(&self.tp, e))?
            {
                Some(hit) if hit.offset < high_watermark => Ok(found(hit.offset, hit.timestamp)),
                _ => Ok(found(-1, -1)),
            },
            t if t < 0 => Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "timestamp {t} is none of -1 (latest), -2 (earliest), -3 (max timestamp), -4 (earliest local), -5 (latest tiered) or a time in ms"
                ),
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

impl Partition {
    /// A follower's fetch, on the leader: reads from `offset` up to the log end, notes the
    /// follower's log end offset, its log start offset (`log_start_offset`, -1 if unknown) and
    /// whether it is caught up, moves the high watermark, and returns an ISR expansion to
    /// propose when the follower has caught up.
    // Each argument is one of Kafka's fetch fields or a fact the caller checked; a struct
    // would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn replica_fetch(
        &self,
        replica: BrokerId,
        offset: i64,
        log_start_offset: i64,
        leader_epoch: i32,
        max_bytes: usize,
        min_one_batch: bool,
        eligible: bool,
        now: Instant,
    ) -> Result<(FetchedPartition, Option<IsrProposal>), PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        self.check_epoch(&role, Some(leader_epoch))?;
        if !role.replicas.contains(&replica) || replica == self.me {
            return Err(PartitionError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {replica} is not a follower of {} (replicas {:?})",
                    self.tp, role.replicas
                ),
            ));
        }
        let read = self
            .log
            .read(offset, max_bytes, None, min_one_batch)
            .map_err(|e| storage_error(&self.tp, e))?;
        let leader_leo = read.log_end_offset;
        let low_watermark_moved;
        {
            let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
            let state = followers.entry(replica).or_insert(FollowerState {
                leo: -1,
                log_start: -1,
                last_caught_up: now,
                last_fetch_leader_leo: -1,
                last_fetch_time: now,
            });
            if offset >= leader_leo {
                state.last_caught_up = now;
            } else if offset >= state.last_fetch_leader_leo && state.last_fetch_leader_leo >= 0 {
                state.last_caught_up = state.last_caught_up.max(state.last_fetch_time);
            }
            state.last_fetch_leader_leo = leader_leo;
            state.last_fetch_time = now;
            state.leo = offset;
            // A DeleteRecords waiting for the low watermark re-checks when it may have moved.
            low_watermark_moved = log_start_offset != state.log_start;
            state.log_start = log_start_offset;
        }
        if low_watermark_moved {
            self.bump();
        }
        self.advance_high_watermark(&role);
        let high_watermark = self.high_watermark();
        // Only a replica the controller would accept (registered, unfenced) is proposed.
        let proposal = eligible
            .then(|| self.expansion(&role, replica, offset, high_watermark))
            .flatten();
        Ok((
            FetchedPartition {
                tp: self.tp.clone(),
                error: None,
                high_watermark,
                last_stable_offset: high_watermark,
                log_start_offset: read.log_start_offset,
                log_end_offset: leader_leo,
                next_offset: read.next_offset,
                records: read.records,
            },
            proposal,
        ))
    }

    /// Kafka's rule: a follower outside the ISR joins once its log end offset is at or past the
    /// high watermark and at or past the start of the current leader epoch.
    fn expansion(
        &self,
        role: &Role,
        replica: BrokerId,
        leo: i64,
        high_watermark: i64,
    ) -> Option<IsrProposal> {
        if role.isr.contains(&replica)
            || leo < high_watermark
            || leo < self.epoch_start_offset.load(Ordering::Acquire)
        {
            return None;
        }
        let mut pending = self.pending_isr.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_some() {
            return None;
        }
        let mut new_isr = role.isr.clone();
        new_isr.push(replica);
        new_isr.sort_unstable();
        let proposal = self.proposal(role, new_isr);
        *pending = Some(proposal.clone());
        Some(proposal)
    }

    fn proposal(&self, role: &Role, new_isr: Vec<BrokerId>) -> IsrProposal {
        IsrProposal {
            topic_id: self.topic_id,
            tp: self.tp.clone(),
            leader_epoch: role.leader_epoch,
            partition_epoch: role.partition_epoch,
            new_isr,
        }
    }

    /// While leading: the ISR without the followers not caught up for `lag` (Kafka's
    /// `replica.lag.time.max.ms`), if any, as a proposal (pending until answered).
    pub fn shrink_proposal(&self, now: Instant, lag: Duration) -> Option<IsrProposal> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        if role.leader != Some(self.me) {
            return None;
        }
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        let lagging: Vec<BrokerId> = role
            .isr
            .iter()
            .copied()
            .filter(|&b| b != self.me)
            .filter(|b| {
                followers
                    .get(b)
                    .is_none_or(|f| now.saturating_duration_since(f.last_caught_up) > lag)
            })
            .collect();
        drop(followers);
        if lagging.is_empty() {
            return None;
        }
        let mut pending = self.pending_isr.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_some() {
            return None;
        }
        let new_isr: Vec<BrokerId> = role
            .isr
            .iter()
            .copied()
            .filter(|b| !lagging.contains(b))
            .collect();
        let _span = self.span(role.leader_epoch).entered();
        tracing::info!(isr = ?role.isr, lagging = ?lagging, "shrinking the ISR");
        let proposal = self.proposal(&role, new_isr);
        *pending = Some(proposal.clone());
        Some(proposal)
    }

    /// Whether `proposal` is still the one pending.
    pub fn is_pending(&self, proposal: &IsrProposal) -> bool {
        self.pending_isr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            == Some(proposal)
    }

    /// The controller refused `proposal` definitively (it was never written): forget it, so a
    /// later one can be made on fresh state.
    pub fn proposal_failed(&self, proposal: &IsrProposal) {
        let mut pending = self.pending_isr.lock().unwrap_or_else(|p| p.into_inner());
        if pending.as_ref() == Some(proposal) {
            *pending = None;
        }
    }

    /// KIP-101/279 on the leader: where `epoch` ends in this log.
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> Result<EpochEndOffset, PartitionError> {
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        self.check_leader(&role)?;
        self.check_epoch(&role, Some(current_leader_epoch))?;
        Ok(self.log.end_offset_for_epoch(epoch))
    }

    /// A follower appends the leader's batches unchanged and learns the leader's high
    /// watermark (bounded by its own log end).
    pub fn follower_append(
        &self,
        leader: BrokerId,
        epoch: i32,
        records: bytes::Bytes,
        leader_high_watermark: i64,
    ) -> Result<(), PartitionError> {
        // The role lock (shared) keeps a role change from interleaving with the append.
        let role = self.role.read().unwrap_or_else(|p| p.into_inner());
        if role.leader != Some(leader) || role.leader_epoch != epoch {
            return Err(PartitionError::new(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{}: no longer following broker {leader} at epoch {epoch}",
                    self.tp
                ),
            ));
        }
        if !records.is_empty() {
            let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
            self.append_observed(&mut producers, |log| log.append_as_follower(records))
                .map_err(|e| storage_error(&self.tp, e))?;
        }
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        if hw > self.high_watermark() {
            self.high_watermark.store(hw, Ordering::Release);
        }
        Ok(())
    }

    /// Runs `append` and keeps the producer state in step with what the log then holds, also
    /// when the append fails after writing some of its batches (a later segment group or the
    /// flush failing on a full disk): those batches are in the log, and a producer's retry of
    /// one must be answered with its offsets, not appended a second time.
    fn append_observed(
        &self,
        producers: &mut ProducerState,
        append: impl FnOnce(&Log) -> Result<AppendInfo, StorageError>,
    ) -> Result<AppendInfo, StorageError> {
        let before = self.log.log_end_offset();
        let result = append(&self.log);
        match &result {
            Ok(info) => producers.observe_headers(info.headers()),
            Err(_) => producers.catch_up(&self.log, before),
        }
        producers.maybe_snapshot(&self.log, false);
        result
    }

    fn check_follows(
        &self,
        role: &Role,
        leader: BrokerId,
        epoch: i32,
    ) -> Result<(), PartitionError> {
        if role.leader != Some(leader) || role.leader_epoch != epoch || leader == self.me {
            return Err(PartitionError::new(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{}: no longer following broker {leader} at epoch {epoch}",
                    self.tp
                ),
            ));
        }
        Ok(())
    }

    /// A follower of `leader` at `epoch` truncates to `offset` (what the leader has of its
    /// latest epoch); refused if the role moved on meanwhile.
    pub fn truncate_to(
        &self,
        leader: BrokerId,
        epoch: i32,
        offset: i64,
    ) -> Result<i64, PartitionError> {
        let role = self.role.write().unwrap_or_else(|p| p.into_inner());
        self.check_follows(&role, leader, epoch)?;
        let before = self.log.log_end_offset();
        // At the log end no record goes, but the epochs starting there do.
        let leo = if offset <= before {
            self.log
                .truncate_to(offset)
                .map_err(|e| storage_error(&self.tp, e))?
        } else {
            before
        };
        if leo < before {
            let _span = self.span(epoch).entered();
            tracing::warn!(
                from = before,
                to = leo,
                "truncated records the leader does not have"
            );
            crate::metrics::METRICS
                .truncated_records
                .add((before - leo) as u64);
            self.producers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reload(&self.log);
        }
        if self.high_watermark() > leo {
            self.high_watermark.store(leo, Ordering::Release);
        }
        Ok(leo)
    }

    /// A follower far behind a leader whose log starts at `offset` restarts its log there.
    pub fn restart_at(
        &self,
        leader: BrokerId,
        epoch: i32,
        offset: i64,
    ) -> Result<(), PartitionError> {
        let role = self.role.write().unwrap_or_else(|p| p.into_inner());
        self.check_follows(&role, leader, epoch)?;
        self.log
            .truncate_fully_and_start_at(offset)
            .map_err(|e| storage_error(&self.tp, e))?;
        let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        producers.remove_snapshots();
        producers.reload(&self.log);
        self.high_watermark.store(offset, Ordering::Release);
        Ok(())
    }

    /// Forgets idle producers (`producer.id.expiration.ms`); returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(now_ms, expiration_ms)
    }

    /// Snapshots the producer state and closes the log (clean shutdown).
    pub fn close(&self) -> Result<(), StorageError> {
        let _role = self.role.write().unwrap_or_else(|p| p.into_inner());
        self.producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .maybe_snapshot(&self.log, true);
        self.log.close()
    }
}

/// A storage error as Kafka's code and a message naming the partition.
pub fn storage_error(tp: &TopicPartition, err: StorageError) -> PartitionError {
    let code = match &err {
        StorageError::InvalidBatch { .. } => ErrorCode::CorruptMessage,
        StorageError::EmptyAppend | StorageError::KeylessRecord { .. } => ErrorCode::InvalidRecord,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_storage::{LogConfig, LogResources};

    fn batch(values: &[&str]) -> bytes::Bytes {
        let mut builder = tributary_record::BatchBuilder::new(1_000);
        for v in values {
            builder.push(1_000, None, Some(v.as_bytes()), &[]);
        }
        builder.build()
    }

    fn partition(me: BrokerId, dir: &std::path::Path) -> Partition {
        let log = Log::open(dir, LogConfig::default(), LogResources::new(16)).unwrap();
        Partition::new(
            TopicPartition::new("t", 0),
            Uuid::nil(),
            me,
            log,
            Arc::new(watch::channel(0).0),
        )
    }

    fn state(
        leader: BrokerId,
        epoch: i32,
        isr: &[BrokerId],
        partition_epoch: i32,
    ) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader: Some(leader),
            leader_epoch: epoch,
            partition_epoch,
        }
    }

    /// An idempotent batch as a producer sends it: `pid`'s `n` records from `seq`.
    fn produced_batch(pid: i64, seq: i32, n: usize, timestamp: i64) -> bytes::Bytes {
        let mut builder = tributary_record::BatchBuilder::new(timestamp).producer(pid, 0, seq);
        for i in 0..n {
            let value = format!("{pid}-{seq}-{i}");
            builder.push(timestamp, None, Some(value.as_bytes()), &[]);
        }
        builder.build()
    }

    /// The same batch as a leader stored it, at `offset` in leader epoch `epoch`.
    fn stored_batch(pid: i64, seq: i32, offset: i64, epoch: i32, n: usize) -> bytes::Bytes {
        stored_at(produced_batch(pid, seq, n, 1_000), offset, epoch)
    }

    fn stored_at(batch: bytes::Bytes, offset: i64, epoch: i32) -> bytes::Bytes {
        let mut bytes = batch.to_vec();
        tributary_record::set_base_offset(&mut bytes, offset);
        tributary_record::set_partition_leader_epoch(&mut bytes, epoch);
        bytes.into()
    }

    /// Sends `retry` to leader `p`: it must be answered with `offset`, and the log end stay
    /// at `log_end`.
    fn assert_deduplicated(p: &Partition, retry: bytes::Bytes, offset: i64, log_end: i64) {
        let (info, _) = p.append(&retry, None).unwrap();
        assert_eq!(
            (info.first_offset, info.record_count),
            (offset, 0),
            "the retry is answered with its offset, not appended again"
        );
        assert_eq!(p.log().log_end_offset(), log_end);
    }

    #[test]
    fn a_follower_append_that_fails_part_way_still_deduplicates_the_batches_it_wrote() {
        // A tmpfs of its own, filled to the last byte: the first batch of the append fits in
        // the active segment's last page, the roll the second one needs cannot create a file.
        let tmp = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(tmp.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return;
        }
        struct Unmount<'a>(&'a std::path::Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(tmp.path());
        let mut resources = LogResources::new(16);
        resources.preallocate_bytes = 0;
        let log = Log::open(tmp.path().join("t-0"), LogConfig::default(), resources).unwrap();
        let p = Partition::new(
            TopicPartition::new("t", 0),
            Uuid::nil(),
            2,
            log,
            Arc::new(watch::channel(0).0),
        );
        p.apply_state(&state(1, 1, &[1, 2], 1)).unwrap();
        p.follower_append(1, 1, stored_batch(7, 0, 0, 1, 3), 0)
            .unwrap();

        let filler = tmp.path().join("filler");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&filler).unwrap();
            while file.write_all(&[0u8; 4096]).is_ok() {}
            while file.write_all(&[0u8; 1]).is_ok() {}
        }
        // Batch A continues producer 7's sequence; batch B sits past what the active segment's
        // 32-bit relative offsets reach (a gap compaction can leave), so it needs a new segment.
        let mut records = stored_batch(7, 3, 3, 1, 1).to_vec();
        records.extend_from_slice(&stored_batch(8, 0, 4 + i64::from(i32::MAX), 1, 1));
        let err = p
            .follower_append(1, 1, records.into(), 0)
            .expect_err("the roll cannot create a segment on a full disk");
        assert_eq!(err.code, ErrorCode::KafkaStorageError, "{err:?}");
        assert_eq!(p.log().log_end_offset(), 4, "batch A stayed in the log");

        std::fs::remove_file(&filler).unwrap();
        p.apply_state(&state(2, 2, &[1, 2], 2)).unwrap();
        assert_deduplicated(&p, produced_batch(7, 3, 1, 1_000), 3, 4);
    }

    #[test]
    fn a_new_leader_whose_producer_state_lost_a_recent_batch_rebuilds_it_from_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let p = partition(2, tmp.path());
        p.apply_state(&state(1, 1, &[1, 2], 1)).unwrap();
        let mut records = stored_batch(7, 0, 0, 1, 3).to_vec();
        records.extend_from_slice(&stored_batch(7, 3, 3, 1, 2));
        // The log's last batch is another producer's, written later.
        records.extend_from_slice(&stored_at(produced_batch(9, 0, 1, 9_000), 5, 1));
        p.follower_append(1, 1, records.into(), 0).unwrap();
        // Whatever the cause, a state that lost what the log holds (here: producer 7, whose
        // batches are not the log's last).
        let forgotten = p.producers.lock().unwrap().expire(9_500, 1_000);
        assert_eq!(forgotten, 1);

        p.apply_state(&state(2, 2, &[1, 2], 2)).unwrap();
        assert_deduplicated(&p, produced_batch(7, 3, 2, 1_000), 3, 6);
    }

    #[test]
    fn the_high_watermark_is_the_smallest_log_end_in_the_isr() {
        let tmp = tempfile::tempdir().unwrap();
        let p = partition(1, tmp.path());
        p.apply_state(&state(1, 0, &[1, 2], 0)).unwrap();
        p.append(&batch(&["a", "b", "c"]), None).unwrap();
        assert_eq!(p.high_watermark(), 0, "follower 2 has not fetched yet");
        let now = Instant::now();
        let (_, proposal) = p
            .replica_fetch(2, 0, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(proposal, None, "already in the ISR");
        assert_eq!(p.high_watermark(), 0);
        p.replica_fetch(2, 2, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(p.high_watermark(), 2);
        p.replica_fetch(2, 3, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(p.high_watermark(), 3);
        // A replica outside the ISR does not hold the high watermark back.
        p.append(&batch(&["d"]), None).unwrap();
        p.replica_fetch(2, 4, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(p.high_watermark(), 4);
        assert!(p.committed(3, 0, None).unwrap());
        assert!(!p.committed(4, 0, None).unwrap());
    }

    #[test]
    fn a_pending_expansion_already_holds_the_high_watermark_back() {
        let tmp = tempfile::tempdir().unwrap();
        let p = partition(1, tmp.path());
        p.apply_state(&state(1, 0, &[1], 0)).unwrap();
        p.append(&batch(&["a", "b"]), None).unwrap();
        assert_eq!(p.high_watermark(), 2, "the leader alone is the ISR");
        let now = Instant::now();
        let (_, proposal) = p
            .replica_fetch(3, 1, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(proposal, None, "not caught up: below the high watermark");
        let (_, proposal) = p
            .replica_fetch(3, 2, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        let proposal = proposal.expect("caught up: expand");
        assert_eq!(proposal.new_isr, [1, 3]);
        assert_eq!(proposal.partition_epoch, 0);
        p.append(&batch(&["c"]), None).unwrap();
        assert_eq!(
            p.high_watermark(),
            2,
            "replica 3 lacks offset 2, and may be in the ISR"
        );
        let (_, again) = p
            .replica_fetch(3, 2, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(again, None, "one change at a time");
        // The controller commits it.
        p.apply_state(&state(1, 0, &[1, 3], 1)).unwrap();
        p.replica_fetch(3, 3, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(p.high_watermark(), 3);
    }

    #[test]
    fn a_lagging_follower_is_shrunk_out_and_counts_until_the_shrink_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let p = partition(1, tmp.path());
        p.apply_state(&state(1, 0, &[1, 2, 3], 0)).unwrap();
        let start = Instant::now();
        p.append(&batch(&["a"]), None).unwrap();
        p.replica_fetch(2, 1, 0, 0, 1 << 20, true, true, start)
            .unwrap();
        p.replica_fetch(3, 0, 0, 0, 1 << 20, true, true, start)
            .unwrap();
        assert_eq!(p.high_watermark(), 0);
        let lag = Duration::from_secs(30);
        assert_eq!(
            p.shrink_proposal(start + Duration::from_secs(10), lag),
            None
        );
        // Replica 2 keeps up; replica 3 never fetches again.
        p.replica_fetch(
            2,
            1,
            0,
            0,
            1 << 20,
            true,
            true,
            start + Duration::from_secs(29),
        )
        .unwrap();
        let shrink = p
            .shrink_proposal(start + Duration::from_secs(31), lag)
            .expect("replica 3 lags");
        assert_eq!(shrink.new_isr, [1, 2]);
        assert_eq!(p.high_watermark(), 0, "a pending shrink does not count yet");
        p.apply_state(&state(1, 0, &[1, 2], 1)).unwrap();
        assert_eq!(p.high_watermark(), 1);
    }

    #[test]
    fn a_refused_proposal_can_be_made_again_and_a_new_epoch_fences_the_old_leader() {
        let tmp = tempfile::tempdir().unwrap();
        let p = partition(1, tmp.path());
        p.apply_state(&state(1, 0, &[1], 0)).unwrap();
        let now = Instant::now();
        let (_, proposal) = p
            .replica_fetch(2, 0, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        let proposal = proposal.unwrap();
        p.proposal_failed(&proposal);
        let (_, again) = p
            .replica_fetch(2, 0, 0, 0, 1 << 20, true, true, now)
            .unwrap();
        assert_eq!(again, Some(proposal));
        // A stale fetch epoch is refused; then leadership moves to broker 2.
        let err = p
            .replica_fetch(2, 0, 0, 7, 1 << 20, true, true, now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownLeaderEpoch);
        p.apply_state(&state(2, 1, &[1, 2], 1)).unwrap();
        let err = p.append(&batch(&["x"]), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotLeaderOrFollower);
        let err = p
            .replica_fetch(3, 0, 0, 1, 1 << 20, true, true, now)
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::NotLeaderOrFollower,
            "a follower fetching from a non-leader"
        );
        // A stale state (older partition epoch) is ignored.
        p.apply_state(&state(1, 0, &[1], 0)).unwrap();
        assert_eq!(p.role().leader, Some(2));
    }
}
