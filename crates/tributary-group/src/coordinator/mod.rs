//! The coordinator of one broker: the groups of the `__consumer_offsets` partitions it leads,
//! the requests' entry points (one file per concern) and the maintenance loop. This is the
//! shell around [`crate::group`]: it reads the clock, locks, spawns and talks to the log.

mod admin;
mod expiry;
mod heartbeat;
mod join;
mod leave;
mod load;
mod offsets;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tributary_kafka::offsets::partition_for;
use tributary_kafka::{ErrorCode, OFFSETS_TOPIC};

use crate::api::{FindCoordinatorRequest, GroupError};
use crate::config::GroupConfig;
use crate::group::Group;
use crate::log::{OffsetsLog, Write};

/// How often the coordinator checks sessions, rebalance deadlines and partition leadership.
pub const TICK: Duration = Duration::from_millis(100);
/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// A second request to create the offsets topic within this long is not sent.
const CREATE_TOPIC_BACKOFF: Duration = Duration::from_secs(2);

/// One `__consumer_offsets` partition this broker leads.
struct Shard {
    leader_epoch: i32,
    loaded: bool,
    groups: HashMap<String, Arc<Mutex<Group>>>,
}

/// Where a group's requests go.
struct Located {
    partition: i32,
    leader_epoch: i32,
    group: Option<Arc<Mutex<Group>>>,
}

/// The group coordinator of one broker, over its `__consumer_offsets` partitions.
pub struct GroupCoordinator<L> {
    log: Arc<L>,
    config: GroupConfig,
    shards: Mutex<HashMap<i32, Shard>>,
    /// When this broker last asked for the offsets topic to be created.
    creating: Mutex<Option<Instant>>,
}

impl<L> std::fmt::Debug for GroupCoordinator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `tokio::spawn` keeping the caller's tracing span.
fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(future))
}

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// A coordinator over `log`.
    pub fn new(log: Arc<L>, config: GroupConfig) -> Arc<Self> {
        Arc::new(Self {
            log,
            config,
            shards: Mutex::new(HashMap::new()),
            creating: Mutex::new(None),
        })
    }

    /// The log this coordinator writes to.
    pub fn log(&self) -> &Arc<L> {
        &self.log
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn now_ms(&self) -> i64 {
        self.log.wall_clock_ms()
    }

    /// The `__consumer_offsets` partition of `group` (from the topic's actual partition count,
    /// else the configured one).
    pub fn partition_for(&self, group: &str) -> i32 {
        let partitions = self
            .log
            .partition_count()
            .unwrap_or(self.config.offsets_topic_num_partitions);
        partition_for(group, partitions)
    }

    // ---- FindCoordinator --------------------------------------------------------------------

    /// The broker coordinating the group (its id), or why there is none yet. Creates the
    /// offsets topic on first use once enough brokers are running for its replication factor.
    pub fn find_coordinator(&self, req: &FindCoordinatorRequest) -> Result<i32, GroupError> {
        if req.key_type != 0 {
            return Err(GroupError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "key type {} is not supported (0: group; transactions come later)",
                    req.key_type
                ),
            ));
        }
        if req.key.is_empty() {
            return Err(GroupError::new(
                ErrorCode::InvalidGroupId,
                "the group id is empty",
            ));
        }
        let group = &req.key;
        let Some(partitions) = self.log.partition_count() else {
            self.create_offsets_topic()?;
            return Err(GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("the offsets topic {OFFSETS_TOPIC} is being created"),
            ));
        };
        let partition = partition_for(group, partitions);
        match self.log.leader(partition) {
            Some(id) => Ok(id),
            None => Err(GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "{OFFSETS_TOPIC}-{partition}, which coordinates group `{group}`, has no leader right now"
                ),
            )),
        }
    }

    fn create_offsets_topic(&self) -> Result<(), GroupError> {
        let rf = self.config.offsets_topic_replication_factor;
        let running = self.log.running_brokers();
        if (running as i32) < rf {
            return Err(GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "the offsets topic {OFFSETS_TOPIC} needs {rf} running brokers (offsets.topic.replication.factor) and {running} are running"
                ),
            ));
        }
        {
            let mut creating = lock(&self.creating);
            if creating.is_some_and(|at| at.elapsed() < CREATE_TOPIC_BACKOFF) {
                return Ok(());
            }
            *creating = Some(Instant::now());
        }
        self.log
            .create_offsets_topic(self.config.offsets_topic_num_partitions, rf);
        Ok(())
    }

    // ---- Locating a group -----------------------------------------------------------------

    /// Finds the shard of `group`: NOT_COORDINATOR unless this broker leads its partition,
    /// COORDINATOR_LOAD_IN_PROGRESS until the partition is loaded at the current epoch.
    fn locate(&self, group: &str) -> Result<Located, GroupError> {
        let Some(partitions) = self.log.partition_count() else {
            return Err(GroupError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("the offsets topic {OFFSETS_TOPIC} does not exist yet"),
            ));
        };
        let partition = partition_for(group, partitions);
        let me = self.log.broker_id();
        let Some(leader_epoch) = self.log.led_epoch(partition) else {
            return Err(GroupError::new(
                ErrorCode::NotCoordinator,
                format!(
                    "broker {me} does not coordinate group `{group}` (it does not lead {OFFSETS_TOPIC}-{partition})"
                ),
            ));
        };
        if self.log.self_fenced() {
            return Err(GroupError::new(
                ErrorCode::NotCoordinator,
                format!("broker {me} has lost touch with the coordinators"),
            ));
        }
        let shards = lock(&self.shards);
        match shards.get(&partition) {
            Some(shard) if shard.loaded && shard.leader_epoch == leader_epoch => Ok(Located {
                partition,
                leader_epoch,
                group: shard.groups.get(group).cloned(),
            }),
            _ => Err(GroupError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "broker {me} is loading {OFFSETS_TOPIC}-{partition}, which holds group `{group}`"
                ),
            )),
        }
    }

    /// The group, created empty if it does not exist.
    fn locate_or_create(&self, group: &str) -> Result<(Located, Arc<Mutex<Group>>), GroupError> {
        let located = self.locate(group)?;
        if let Some(g) = &located.group {
            let g = g.clone();
            return Ok((located, g));
        }
        let mut shards = lock(&self.shards);
        let shard = shards
            .get_mut(&located.partition)
            .filter(|s| s.leader_epoch == located.leader_epoch)
            .ok_or_else(|| {
                GroupError::new(
                    ErrorCode::NotCoordinator,
                    "the group's partition moved meanwhile",
                )
            })?;
        let now_ms = self.now_ms();
        let g = shard
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group, now_ms))))
            .clone();
        Ok((located, g))
    }

    /// The groups of every loaded partition.
    fn loaded_groups(&self) -> Vec<Arc<Mutex<Group>>> {
        lock(&self.shards)
            .values()
            .filter(|s| s.loaded)
            .flat_map(|s| s.groups.values().cloned())
            .collect()
    }

    // ---- Writes ---------------------------------------------------------------------------

    /// Appends `writes` to `__consumer_offsets`-`partition` with acks=all; the offset of the
    /// first record, or Kafka's coordinator error for the failure.
    async fn append(&self, partition: i32, writes: Vec<Write>) -> Result<i64, GroupError> {
        let result = self
            .log
            .append(
                partition,
                writes,
                self.now_ms(),
                self.config.offsets_commit_timeout,
            )
            .await;
        result.map_err(|e| {
            let code = match e.code {
                ErrorCode::NotLeaderOrFollower
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
                ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => {
                    ErrorCode::InvalidCommitOffsetSize
                }
                ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::RequestTimedOut => ErrorCode::CoordinatorNotAvailable,
                other => other,
            };
            GroupError::new(
                code,
                format!("writing to {OFFSETS_TOPIC}-{partition}: {}", e.message),
            )
        })
    }

    /// Persists the group in the background (best effort: a failure is logged; the next
    /// rebalance writes it again).
    fn persist_in_background(self: &Arc<Self>, partition: i32, write: Write) {
        let this = self.clone();
        spawn(async move {
            if let Err(e) = this.append(partition, vec![write]).await {
                tracing::warn!(partition, error = %e.message, "could not persist a group");
            }
        });
    }

    // ---- Reading for metrics --------------------------------------------------------------

    /// (group, topic, partition, committed offset) of every loaded group, sorted.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let mut out: Vec<_> = self
            .loaded_groups()
            .iter()
            .flat_map(|g| {
                let g = lock(g);
                g.offsets
                    .iter()
                    .map(|((topic, partition), c)| {
                        (g.id.clone(), topic.clone(), *partition, c.value.offset)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }
}
