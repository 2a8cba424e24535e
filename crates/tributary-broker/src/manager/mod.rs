//! The replica manager (Kafka's `ReplicaManager`): every partition this broker hosts, kept in
//! line with the metadata image, and the one implementation of appending and reading records
//! beneath every protocol.
//!
//! - `reconcile`: the logs' lifecycle (create, recover, delete) and each partition's role.
//! - `append`: leader appends, acks=all waits.
//! - `read`: consumer and follower fetches, ListOffsets, OffsetsForLeaderEpoch.
//! - `maintenance`: flush, checkpoints, retention, compaction, close.
//! - `records`: DeleteRecords (and its wait for the low watermark), DescribeLogDirs.
//! - `poll`: the one long-poll loop every waiting request uses.
//!
//! Invariants: no request sees a topic in the image whose log is not open yet (`settle`); a
//! log whose topic id the image does not assign here is deleted, never served; only the leader
//! of the current leader epoch appends, and only while the broker session is alive.

mod append;
mod maintenance;
mod poll;
mod read;
mod reconcile;
mod records;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tributary_metadata::BrokerId;
use tributary_proto::common::v1::ErrorCode;
use tributary_storage::LogResources;

use crate::api::{LeaderHint, PartitionError, TopicPartition};
use crate::config::BrokerConfig;
use crate::coordinators::Coordinators;
use crate::dirs::{self, DataDir, OnDisk};
use crate::metadata::MetadataCache;
use crate::partition::Partition;
use crate::session::BrokerSession;

pub use read::Followed;
pub use records::DeleteRecordsResults;

/// How long a request waits for the partitions to catch up with the metadata already applied.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// Every partition hosted here.
#[derive(Debug)]
pub struct ReplicaManager {
    config: BrokerConfig,
    me: BrokerId,
    data_dir: DataDir,
    resources: LogResources,
    metadata: Arc<MetadataCache>,
    coordinators: Arc<Coordinators>,
    session: BrokerSession,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Partitions whose log could not be opened, with why (served as KAFKA_STORAGE_ERROR).
    failed: Mutex<HashMap<TopicPartition, String>>,
    /// High watermarks from the last checkpoint (`replication-offset-checkpoint`).
    hw_checkpoint: Mutex<HashMap<TopicPartition, i64>>,
    /// Partition directories found at start, handled by the first reconcile.
    on_disk: Mutex<Option<Vec<OnDisk>>>,
    /// Serialises reconciles.
    reconcile_lock: Mutex<()>,
    /// Bumped whenever a high watermark advances, a leader appends or roles change: wakes
    /// every long-polling request (see `poll`).
    data_version: Arc<watch::Sender<u64>>,
    /// The metadata offset the hosted partitions were last reconciled with.
    reconciled: watch::Sender<u64>,
}

impl ReplicaManager {
    /// A manager over `data_dir`, with the partitions found there pending the first reconcile.
    pub fn new(
        config: BrokerConfig,
        data_dir: DataDir,
        metadata: Arc<MetadataCache>,
        coordinators: Arc<Coordinators>,
    ) -> Result<Self> {
        dirs::remove_deleted_leftovers(data_dir.path())?;
        let on_disk = data_dir.scan()?;
        let hw_checkpoint = data_dir.read_hw_checkpoint()?;
        let session = BrokerSession::new(
            config.broker_id,
            metadata.clone(),
            config.broker_session_timeout_ms,
        );
        Ok(Self {
            hw_checkpoint: Mutex::new(hw_checkpoint),
            me: config.broker_id,
            resources: LogResources {
                preallocate_bytes: config.log_preallocate_bytes,
                ..LogResources::new(config.max_open_segments)
            },
            config,
            data_dir,
            metadata,
            coordinators,
            session,
            partitions: RwLock::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            on_disk: Mutex::new(Some(on_disk)),
            reconcile_lock: Mutex::new(()),
            data_version: Arc::new(watch::channel(0).0),
            reconciled: watch::channel(0).0,
        })
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.me
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The metadata image.
    pub fn metadata(&self) -> &Arc<MetadataCache> {
        &self.metadata
    }

    /// The coordinators.
    pub fn coordinators(&self) -> &Arc<Coordinators> {
        &self.coordinators
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The broker's standing with the coordinators (registration, heartbeats, self-fencing).
    pub fn session(&self) -> &BrokerSession {
        &self.session
    }

    /// Waits until the hosted partitions reflect metadata offset `offset`, for at most
    /// `timeout`; returns the offset reached on timeout.
    pub async fn wait_reconciled(&self, offset: u64, timeout: Duration) -> Result<(), u64> {
        let mut rx = self.reconciled.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|r| *r >= offset)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(*self.reconciled.borrow()),
        }
    }

    /// Waits (briefly) until the partitions reflect every metadata record applied so far, so
    /// a request never sees a topic in the image whose log is not open yet.
    pub(crate) async fn settle(&self) {
        let applied = self.metadata.offset();
        if *self.reconciled.borrow() < applied {
            let _ = self.wait_reconciled(applied, SETTLE_WAIT).await;
        }
    }

    /// A hosted partition.
    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tp)
            .cloned()
    }

    /// Every hosted partition.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Where the leader of `tp` is, from the image.
    pub fn leader_hint(&self, tp: &TopicPartition) -> Option<LeaderHint> {
        self.metadata.read(|image| {
            let state = image
                .topics
                .get(&tp.topic)?
                .partitions
                .get(usize::try_from(tp.partition).ok()?)?;
            Some(LeaderHint {
                leader: state.leader,
                leader_epoch: state.leader_epoch,
            })
        })
    }

    /// The partition `tp` if hosted here, else the precise error: unknown topic, unknown
    /// partition, a log that failed to open, or not a replica here (with the leader).
    pub(crate) fn locate(&self, tp: &TopicPartition) -> Result<Arc<Partition>, PartitionError> {
        if let Some(partition) = self.partition(tp) {
            return Ok(partition);
        }
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tp)
        {
            return Err(PartitionError::new(
                ErrorCode::KafkaStorageError,
                format!(
                    "{tp}: the log cannot be opened on broker {}: {why}",
                    self.me
                ),
            ));
        }
        let count = self
            .metadata
            .read(|image| image.topics.get(&tp.topic).map(|t| t.partitions.len()));
        match count {
            None => Err(self.unknown_topic(&tp.topic)),
            Some(n) if tp.partition < 0 || tp.partition as usize >= n => Err(PartitionError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic `{}` has {n} partitions (0..{}); partition {} does not exist",
                    tp.topic,
                    n.saturating_sub(1),
                    tp.partition
                ),
            )),
            Some(_) => {
                let hint = self.leader_hint(tp);
                let leader = hint.as_ref().and_then(|h| h.leader);
                let mut err = PartitionError::new(
                    ErrorCode::NotLeaderOrFollower,
                    match leader {
                        Some(l) => format!(
                            "broker {} holds no replica of {tp}; its leader is broker {l}",
                            self.me
                        ),
                        None => format!(
                            "broker {} holds no replica of {tp}, which has no leader right now",
                            self.me
                        ),
                    },
                );
                err.leader = hint;
                Err(err)
            }
        }
    }

    fn unknown_topic(&self, topic: &str) -> PartitionError {
        if self.config.auto_create_topics_enable {
            self.auto_create(topic);
            return PartitionError::new(
                ErrorCode::LeaderNotAvailable,
                format!(
                    "topic `{topic}` did not exist and is being created (auto.create.topics.enable); retry shortly"
                ),
            );
        }
        PartitionError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic `{topic}` does not exist; create it first (e.g. `tributary topics --create --topic {topic}`), this broker does not create topics on use (auto.create.topics.enable=false)"
            ),
        )
    }

    /// Asks the controller to create `topic` with the broker's defaults (in the background).
    pub fn auto_create(&self, topic: &str) {
        if tributary_metadata::validate_topic_name(topic).is_err() {
            return;
        }
        self.create_topic(
            topic,
            self.config.num_partitions,
            self.config.default_replication_factor,
            Default::default(),
        );
    }

    /// Asks the controller to create `topic` (in the background; the outcome is logged). The
    /// one place the broker creates topics: auto-creation and `__consumer_offsets`.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i32,
        configs: HashMap<String, String>,
    ) {
        let coordinators = self.coordinators.clone();
        let request = tributary_proto::coordinator::v1::CreateTopicsRequest {
            topics: vec![
                tributary_proto::coordinator::v1::create_topics_request::NewTopic {
                    name: topic.to_owned(),
                    partitions,
                    replication_factor,
                    configs,
                },
            ],
            validate_only: false,
        };
        let topic = topic.to_owned();
        crate::spawn(async move {
            let result = coordinators
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        tributary_proto::coordinator::v1::admin_client::AdminClient::new(channel)
                            .create_topics(request)
                            .await
                    }
                })
                .await;
            match result {
                Ok(_) => tracing::info!(%topic, "asked the controller to create a topic"),
                Err(status) => {
                    tracing::warn!(%topic, error = %status.message(), "creating a topic failed")
                }
            }
        });
    }

    /// Adds the leader hint to errors that send the client elsewhere.
    pub(crate) fn with_hint(&self, tp: &TopicPartition, mut err: PartitionError) -> PartitionError {
        if err.leader.is_none()
            && matches!(
                err.code,
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
            )
        {
            err.leader = self.leader_hint(tp);
        }
        err
    }
}
