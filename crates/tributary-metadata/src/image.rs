//! The metadata image and the records that change it.
//!
//! The coordinator's Raft state machine is a [`MetadataImage`]; every Raft entry is one
//! [`MetadataRecord`], applied by [`MetadataImage::apply`] at its metadata offset. Brokers follow
//! the same records and apply them to their own copy, so every view is a consistent prefix of
//! one history. `apply` validates every record again against the current image (partition epochs,
//! broker states): a decision made on a stale view can never take effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tributary_proto::common::v1::ErrorCode;
use uuid::Uuid;

use crate::config::{effective, validate_configs};
use crate::error::ApiError;

/// A broker's id (Kafka's `broker.id`).
pub type BrokerId = i32;

/// Format version of serialized images (snapshots). Bump on any incompatible change.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

/// Where a broker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerState {
    /// Registered and heartbeating: may lead and be in ISRs.
    Running,
    /// Missed heartbeats (or not caught up yet): may not lead or join an ISR.
    Fenced,
    /// Giving up its leaderships before it stops.
    ControlledShutdown,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    /// Its id.
    pub id: BrokerId,
    /// Changes every time the broker process starts.
    pub incarnation: Uuid,
    /// The metadata offset of its current registration: heartbeats and requests carrying an
    /// older epoch come from a previous incarnation and are refused.
    pub epoch: u64,
    /// Advertised listeners by name (e.g. `INTERNAL` -> `broker-1:9092`).
    pub listeners: BTreeMap<String, String>,
    /// Rack, for rack-aware replica placement.
    pub rack: Option<String>,
    /// Life-cycle state.
    pub state: BrokerState,
}

impl Broker {
    /// May lead partitions and be added to ISRs.
    pub fn is_eligible(&self) -> bool {
        self.state == BrokerState::Running
    }
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replicas in preference order; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
    /// The leader, if any replica can lead.
    pub leader: Option<BrokerId>,
    /// Rises with every leader change.
    pub leader_epoch: i32,
    /// Rises with every change of this partition's state (Kafka's partition epoch).
    pub partition_epoch: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Its id: a topic deleted and re-created under the same name gets a new one.
    pub id: Uuid,
    /// Config overrides (validated, canonical); absent keys take the table's default.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<PartitionState>,
}

impl Topic {
    /// The effective value of a config key.
    pub fn config(&self, name: &str) -> Option<&str> {
        effective(&self.configs, name)
    }

    /// Whether an out-of-sync replica may be elected.
    pub fn unclean_election_enabled(&self) -> bool {
        self.config("unclean.leader.election.enable") == Some("true")
    }
}

/// The active controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    /// Coordinator node id.
    pub node_id: u64,
    /// Controller epoch (the Raft term in which it became leader).
    pub epoch: u64,
}

/// The whole cluster metadata at one metadata offset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Set once, by the first record.
    pub cluster_id: Option<String>,
    /// Offset of the last record applied.
    pub offset: u64,
    /// The active controller.
    pub controller: Option<Controller>,
    /// Registered brokers.
    pub brokers: BTreeMap<BrokerId, Broker>,
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// The next producer id not yet handed out.
    pub next_producer_id: i64,
}

/// A change to the image: one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Names the cluster (first record only).
    Bootstrap {
        /// The cluster id.
        cluster_id: String,
    },
    /// A coordinator became the active controller (its epoch is this record's offset).
    BecomeController {
        /// Coordinator node id.
        node_id: u64,
        /// The Raft term it leads in (informational).
        term: u64,
    },
    /// A broker process registers (again); it starts fenced.
    RegisterBroker {
        /// Broker id.
        id: BrokerId,
        /// The process's incarnation.
        incarnation: Uuid,
        /// Advertised listeners.
        listeners: BTreeMap<String, String>,
        /// Rack.
        rack: Option<String>,
    },
    /// A broker's state changes (fenced, unfenced, controlled shutdown).
    SetBrokerState {
        /// Broker id.
        id: BrokerId,
        /// The registration this applies to.
        epoch: u64,
        /// The new state.
        state: BrokerState,
    },
    /// A topic is created with its replica assignment.
    CreateTopic {
        /// The topic as it starts.
        topic: Topic,
    },
    /// A topic is deleted.
    DeleteTopic {
        /// Its id.
        id: Uuid,
    },
    /// Partitions are added to a topic.
    CreatePartitions {
        /// Topic id.
        id: Uuid,
        /// The new partitions, in order.
        partitions: Vec<PartitionState>,
    },
    /// A topic's config overrides are replaced.
    AlterConfigs {
        /// Topic id.
        id: Uuid,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// A partition's leader and/or ISR change (an election or a leader's AlterPartition).
    ChangePartition(PartitionChange),
    /// A block of producer ids is handed to a broker.
    AllocateProducerIds {
        /// The broker asking.
        broker_id: BrokerId,
        /// Its registration epoch.
        broker_epoch: u64,
        /// How many ids.
        count: i64,
    },
}

/// A change of one partition's leader and ISR, valid only against `partition_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The partition epoch the change was decided on.
    pub partition_epoch: i32,
    /// The new leader (`None`: leaderless).
    pub leader: Option<BrokerId>,
    /// The new ISR.
    pub isr: Vec<BrokerId>,
    /// The leader may be outside the previous ISR (unclean election).
    pub unclean: bool,
}

/// What applying a record produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordResult {
    /// Applied; nothing to report.
    Done,
    /// A broker registered with this epoch.
    BrokerRegistered {
        /// Its registration epoch.
        epoch: u64,
    },
    /// The first id of an allocated producer-id block.
    ProducerIds {
        /// First id of the block.
        first: i64,
        /// Ids in the block.
        count: i64,
    },
    /// The partition's state after the change.
    Partition(PartitionState),
}

impl MetadataImage {
    /// Applies `record`, which Raft committed at `offset`. On error the image is unchanged but
    /// for its offset (the entry was consumed), and the error is the answer to the proposer.
    pub fn apply(
        &mut self,
        offset: u64,
        record: &MetadataRecord,
    ) -> Result<RecordResult, ApiError> {
        debug_assert!(
            offset > self.offset || offset == 0,
            "offsets rise: {offset} after {}",
            self.offset
        );
        self.offset = self.offset.max(offset);
        match record {
            MetadataRecord::Bootstrap { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                Ok(RecordResult::Done)
            }
            MetadataRecord::BecomeController { node_id, term: _ } => {
                // The controller epoch is the offset of the record that made it controller: it
                // rises with every takeover, even when Raft re-elects a node in the same term.
                self.controller = Some(Controller {
                    node_id: *node_id,
                    epoch: offset,
                });
                Ok(RecordResult::Done)
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                listeners,
                rack,
            } => {
                if *id < 0 {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("broker id {id} is negative"),
                    ));
                }
                if let Some(existing) = self.brokers.get(id)
                    && existing.incarnation == *incarnation
                {
                    // The same process registering twice (a retried request): idempotent.
                    return Ok(RecordResult::BrokerRegistered {
                        epoch: existing.epoch,
                    });
                }
                self.brokers.insert(
                    *id,
                    Broker {
                        id: *id,
                        incarnation: *incarnation,
                        epoch: offset,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        state: BrokerState::Fenced,
                    },
                );
                Ok(RecordResult::BrokerRegistered { epoch: offset })
            }
            MetadataRecord::SetBrokerState { id, epoch, state } => {
                let broker = self.broker_with_epoch(*id, *epoch)?;
                broker.state = *state;
                Ok(RecordResult::Done)
            }
            MetadataRecord::CreateTopic { topic } => {
                validate_topic_name(&topic.name)?;
                if self.topics.contains_key(&topic.name) {
                    return Err(ApiError::new(
                        ErrorCode::TopicAlreadyExists,
                        format!("topic `{}` already exists", topic.name),
                    ));
                }
                if self.topics.values().any(|t| t.id == topic.id) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("topic id {} is taken", topic.id),
                    ));
                }
                if topic.partitions.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidPartitions,
                        "a topic needs at least one partition",
                    ));
                }
                let configs = validate_configs(&topic.configs)?;
                for partition in &topic.partitions {
                    self.check_new_partition(partition)?;
                }
                let mut topic = topic.clone();
                topic.configs = configs;
                self.topics.insert(topic.name.clone(), topic);
                Ok(RecordResult::Done)
            }
            MetadataRecord::DeleteTopic { id } => {
                let name = self.topic_name(*id)?.to_owned();
                self.topics.remove(&name);
                Ok(RecordResult::Done)
            }
            MetadataRecord::CreatePartitions { id, partitions } => {
                let name = self.topic_name(*id)?.to_owned();
                for partition in partitions {
                    self.check_new_partition(partition)?;
                }
                let topic = self.topics.get_mut(&name).expect("named above");
                topic.partitions.extend(partitions.iter().cloned());
                Ok(RecordResult::Done)
            }
            MetadataRecord::AlterConfigs { id, configs } => {
                let name = self.topic_name(*id)?.to_owned();
                let configs = validate_configs(configs)?;
                self.topics.get_mut(&name).expect("named above").configs = configs;
                Ok(RecordResult::Done)
            }
            MetadataRecord::ChangePartition(change) => self.apply_partition_change(change),
            MetadataRecord::AllocateProducerIds {
                broker_id,
                broker_epoch,
                count,
            } => {
                self.broker_with_epoch(*broker_id, *broker_epoch)?;
                if *count < 1 || *count > 1_000_000 {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("cannot allocate {count} producer ids"),
                    ));
                }
                let first = self.next_producer_id;
                self.next_producer_id = first.checked_add(*count).ok_or_else(|| {
                    ApiError::new(ErrorCode::UnknownServerError, "producer ids exhausted")
                })?;
                Ok(RecordResult::ProducerIds {
                    first,
                    count: *count,
                })
            }
        }
    }

    fn apply_partition_change(
        &mut self,
        change: &PartitionChange,
    ) -> Result<RecordResult, ApiError> {
        let name = self.topic_name(change.topic_id)?.to_owned();
        let brokers = &self.brokers;
        let topic = self.topics.get_mut(&name).expect("named above");
        let partition = usize::try_from(change.partition)
            .ok()
            .and_then(|p| topic.partitions.get_mut(p))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic `{name}` has no partition {}", change.partition),
                )
            })?;
        if change.partition_epoch != partition.partition_epoch {
            return Err(ApiError::new(
                ErrorCode::InvalidUpdateVersion,
                format!(
                    "partition {name}-{} is at partition epoch {}, the change was decided at {}",
                    change.partition, partition.partition_epoch, change.partition_epoch
                ),
            ));
        }
        if let Some(bad) = change.isr.iter().find(|b| !partition.replicas.contains(b)) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "broker {bad} is not a replica of {name}-{}",
                    change.partition
                ),
            ));
        }
        let mut sorted = change.isr.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != change.isr.len() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "ISR lists a broker twice",
            ));
        }
        // Brokers joining the ISR must be eligible (not fenced, not shutting down).
        for joining in change.isr.iter().filter(|b| !partition.isr.contains(b)) {
            if !brokers.get(joining).is_some_and(Broker::is_eligible) {
                return Err(ApiError::new(
                    ErrorCode::IneligibleReplica,
                    format!(
                        "broker {joining} is fenced or shutting down and cannot join the ISR of {name}-{}",
                        change.partition
                    ),
                ));
            }
        }
        if let Some(leader) = change.leader {
            if !brokers.get(&leader).is_some_and(Broker::is_eligible) {
                return Err(ApiError::new(
                    ErrorCode::IneligibleReplica,
                    format!(
                        "broker {leader} is fenced or shutting down and cannot lead {name}-{}",
                        change.partition
                    ),
                ));
            }
            if !change.isr.contains(&leader) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("leader {leader} is not in the new ISR"),
                ));
            }
            if !change.unclean
                && !partition.isr.contains(&leader)
                && partition.leader != Some(leader)
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "broker {leader} was not in sync and unclean election was not asked for"
                    ),
                ));
            }
        }
        if change.unclean && !topic_unclean_enabled(&topic.configs) {
            return Err(ApiError::new(
                ErrorCode::PolicyViolation,
                format!("unclean.leader.election.enable is false for topic `{name}`"),
            ));
        }
        if change.leader != partition.leader {
            partition.leader_epoch += 1;
        }
        partition.leader = change.leader;
        partition.isr = change.isr.clone();
        partition.partition_epoch += 1;
        Ok(RecordResult::Partition(partition.clone()))
    }

    fn check_new_partition(&self, partition: &PartitionState) -> Result<(), ApiError> {
        if partition.replicas.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                "a partition needs at least one replica",
            ));
        }
        let mut seen = partition.replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != partition.replicas.len() {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                "a replica is listed twice",
            ));
        }
        if let Some(unknown) = partition
            .replicas
            .iter()
            .find(|b| !self.brokers.contains_key(b))
        {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!("broker {unknown} is not registered"),
            ));
        }
        if partition
            .isr
            .iter()
            .any(|b| !partition.replicas.contains(b))
            || partition
                .leader
                .is_some_and(|l| !partition.isr.contains(&l))
        {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                "leader and ISR must be among the replicas",
            ));
        }
        Ok(())
    }

    /// The broker `id` if it is registered at `epoch` (a request from an older incarnation of it
    /// is refused with STALE_BROKER_EPOCH).
    pub fn registered_broker(&self, id: BrokerId, epoch: u64) -> Result<&Broker, ApiError> {
        let broker = self.brokers.get(&id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BrokerIdNotRegistered,
                format!("broker {id} is not registered"),
            )
        })?;
        if broker.epoch != epoch {
            return Err(ApiError::new(
                ErrorCode::StaleBrokerEpoch,
                format!(
                    "broker {id} is registered at epoch {}, not {epoch}",
                    broker.epoch
                ),
            ));
        }
        Ok(broker)
    }

    fn broker_with_epoch(&mut self, id: BrokerId, epoch: u64) -> Result<&mut Broker, ApiError> {
        self.registered_broker(id, epoch)?;
        Ok(self.brokers.get_mut(&id).expect("checked above"))
    }

    /// The name of the topic with `id`.
    pub fn topic_name(&self, id: Uuid) -> Result<&str, ApiError> {
        self.topics
            .values()
            .find(|t| t.id == id)
            .map(|t| t.name.as_str())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownTopicId, format!("no topic has id {id}"))
            })
    }

    /// Brokers that may lead and join ISRs, in id order.
    pub fn eligible_brokers(&self) -> Vec<&Broker> {
        self.brokers.values().filter(|b| b.is_eligible()).collect()
    }

    /// Serializes the image for a snapshot (format version inside).
    pub fn to_snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&Snapshot {
            version: IMAGE_FORMAT_VERSION,
            image: self.clone(),
        })
        .expect("the image serializes")
    }

    /// Restores an image from a snapshot, refusing unknown format versions.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::UnknownServerError,
                format!("unreadable metadata snapshot: {e}"),
            )
        })?;
        if version.version != IMAGE_FORMAT_VERSION {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "metadata snapshot format {} (this build reads {IMAGE_FORMAT_VERSION})",
                    version.version
                ),
            ));
        }
        let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::UnknownServerError,
                format!("unreadable metadata snapshot: {e}"),
            )
        })?;
        Ok(snapshot.image)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    image: MetadataImage,
}

fn topic_unclean_enabled(configs: &BTreeMap<String, String>) -> bool {
    effective(configs, "unclean.leader.election.enable") == Some("true")
}

/// Kafka's topic name rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidTopicException,
            format!("invalid topic name `{name}`: {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("`.` and `..` are not allowed"));
    }
    if name.len() > 249 {
        return Err(invalid("longer than 249 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "character {c:?} is not one of [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}
