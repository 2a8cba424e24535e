//! The replica manager: every partition this broker hosts, kept in line with the metadata
//! image, and the one implementation of produce, fetch and offsets beneath every protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::sync::watch;
use tributary_metadata::{BrokerId, BrokerState, MetadataImage, PartitionState, Topic};
use tributary_proto::common::v1::ErrorCode;
use tributary_record::TimestampType;
use tributary_storage::{Log, LogConfig, LogResources};
use uuid::Uuid;

use crate::api::{
    Acks, FetchRequest, FetchedPartition, FoundOffset, LeaderHint, OffsetQuery, PartitionError,
    ProduceRequest, Produced, TopicPartition,
};
use crate::config::BrokerConfig;
use crate::coordinators::Coordinators;
use crate::dirs::{self, DataDir, OnDisk};
use crate::metadata::MetadataCache;
use crate::partition::Partition;

/// An append's answer, the partition, its last offset, the leader epoch it was written at, and
/// the `min.insync.replicas` an acks=all wait must still see.
type AppendOutcome = (Produced, Arc<Partition>, i64, i32, Option<usize>);

/// How long a request waits for the partitions to catch up with the metadata already applied.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The listener name brokers advertise their address under (Kafka's default).
pub const LISTENER: &str = "PLAINTEXT";

/// Every partition hosted here, and the broker's standing with the coordinators.
#[derive(Debug)]
pub struct ReplicaManager {
    config: BrokerConfig,
    me: BrokerId,
    data_dir: DataDir,
    resources: LogResources,
    metadata: Arc<MetadataCache>,
    coordinators: Arc<Coordinators>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Partitions whose log could not be opened, with why (served as KAFKA_STORAGE_ERROR).
    failed: Mutex<HashMap<TopicPartition, String>>,
    /// High watermarks from the last checkpoint (`replication-offset-checkpoint`).
    hw_checkpoint: Mutex<HashMap<TopicPartition, i64>>,
    /// Partition directories found at start, handled by the first reconcile.
    on_disk: Mutex<Option<Vec<OnDisk>>>,
    /// Serialises reconciles.
    reconcile_lock: Mutex<()>,
    data_version: Arc<watch::Sender<u64>>,
    /// The metadata offset the hosted partitions were last reconciled with.
    reconciled: watch::Sender<u64>,
    /// Logs recovered and the metadata applied: requests are served.
    ready: AtomicBool,
    /// When a heartbeat was last acknowledged (ms since `started`), 0 = never.
    last_heartbeat_ms: AtomicU64,
    /// The session timeout this broker fences itself by: its own `broker.session.timeout.ms`,
    /// lowered to the controller's once a coordinator has said it.
    session_timeout_ms: AtomicU64,
    /// This process's registration epoch (0 before registering).
    broker_epoch: AtomicU64,
    /// The block of producer ids this broker hands out: next, end (exclusive).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    started: Instant,
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
        let session_timeout_ms = config.broker_session_timeout_ms;
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
            partitions: RwLock::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            on_disk: Mutex::new(Some(on_disk)),
            reconcile_lock: Mutex::new(()),
            data_version: Arc::new(watch::channel(0).0),
            reconciled: watch::channel(0).0,
            ready: AtomicBool::new(false),
            last_heartbeat_ms: AtomicU64::new(0),
            session_timeout_ms: AtomicU64::new(session_timeout_ms),
            broker_epoch: AtomicU64::new(0),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            started: Instant::now(),
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

    /// Logs recovered and metadata applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// This process's registration epoch (0 before registering).
    pub fn broker_epoch(&self) -> u64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_broker_epoch(&self, epoch: u64) {
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    /// A point in time to pass to [`ReplicaManager::heartbeat_acknowledged`]: taken when a
    /// heartbeat is sent.
    pub fn heartbeat_sent(&self) -> Duration {
        self.started.elapsed()
    }

    /// Notes that the heartbeat sent at `sent` was acknowledged. Counting from the send, not
    /// the answer, keeps the broker's own deadline no later than the controller's (which counts
    /// from when it received the heartbeat): the broker stops leading no later than the
    /// controller may fence it.
    pub fn heartbeat_acknowledged(&self, sent: Duration) {
        let ms = sent.as_millis() as u64;
        self.last_heartbeat_ms
            .fetch_max(ms.max(1), Ordering::AcqRel);
    }

    /// The session timeout after which this broker stops leading (see `self_fence`).
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms.load(Ordering::Acquire))
    }

    /// Takes the controller's `broker.session.timeout.ms` (from a registration or heartbeat
    /// answer): the broker must stop leading no later than the controller may fence it, so a
    /// shorter value than its own wins. Returns whether it changed.
    pub fn controller_session_timeout(&self, ms: u64) -> bool {
        if ms == 0 {
            return false; // not said (an older coordinator)
        }
        let wanted = ms.min(self.config.broker_session_timeout_ms);
        self.session_timeout_ms.swap(wanted, Ordering::AcqRel) != wanted
    }

    /// How long since the last acknowledged heartbeat (`None`: never).
    pub fn since_heartbeat(&self) -> Option<Duration> {
        match self.last_heartbeat_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    /// Whether this broker may act as a leader: it has heard from the coordinators within its
    /// session timeout (otherwise the controller has fenced it, or is about to).
    /// Whether this broker has stopped leading because its heartbeats stopped reaching the
    /// coordinators (see `self_fence`).
    pub fn self_fenced(&self) -> bool {
        self.self_fence().is_err()
    }

    pub(crate) fn self_fence(&self) -> Result<(), PartitionError> {
        match self.since_heartbeat() {
            Some(since) if since <= self.session_timeout() => {}
            since => {
                return Err(PartitionError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "broker {} has had no heartbeat acknowledged by the coordinators for {}; it has stopped leading until it reaches them again (refresh metadata and retry)",
                        self.me,
                        since.map_or("ever".to_owned(), |d| format!("{} ms", d.as_millis()))
                    ),
                ));
            }
        }
        // A broker the metadata shows fenced, or registered by another incarnation, must not
        // lead: its leaderships are (being) moved, and after a crash its log may be short.
        let epoch = self.broker_epoch();
        let standing = self
            .metadata
            .read(|image| image.brokers.get(&self.me).map(|b| (b.epoch, b.state)));
        match standing {
            Some((e, state)) if e == epoch && state != BrokerState::Fenced => Ok(()),
            Some((e, _)) if e != epoch => Err(PartitionError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} is registered at epoch {e}, not this process's {epoch}; it does not lead",
                    self.me
                ),
            )),
            _ => Err(PartitionError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "broker {} is fenced (catching up after a restart, or it missed heartbeats); its leaderships are moving (refresh metadata and retry)",
                    self.me
                ),
            )),
        }
    }

    /// Whether the image says this broker is running (registered and unfenced).
    pub fn is_running_in_image(&self) -> bool {
        self.metadata.read(|image| {
            image
                .brokers
                .get(&self.me)
                .is_some_and(|b| b.state == BrokerState::Running)
        })
    }

    /// Brings the hosted partitions in line with the image: removes logs of deleted topics (or
    /// of a topic deleted and re-created: another id), creates logs for new partitions, opens
    /// (recovering) logs found on disk that the image still assigns here, and applies every
    /// partition's leader, epoch, ISR and configs.
    pub fn reconcile(&self) -> Result<()> {
        let _serial = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (offset, wanted) = self
            .metadata
            .read(|image| (image.offset, self.assigned(image)));

        if let Some(on_disk) = self
            .on_disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            for found in on_disk {
                match (wanted.get(&found.tp), found.topic_id) {
                    (Some(want), Some(id)) if want.topic_id == id => {
                        self.open_partition(&found.tp, id, &want.config)
                    }
                    (_, id) => {
                        tracing::info!(partition = %found.tp, topic_id = ?id, dir = %found.dir.display(), "removing a log the metadata no longer assigns here (topic deleted, re-created, or moved)");
                        dirs::remove_partition_dir(&found.dir)?;
                    }
                }
            }
        }

        let stale: Vec<Arc<Partition>> = {
            let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            partitions
                .values()
                .filter(|p| wanted.get(&p.tp).is_none_or(|w| w.topic_id != p.topic_id))
                .cloned()
                .collect()
        };
        for partition in stale {
            self.partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&partition.tp);
            tracing::info!(partition = %partition.tp, topic_id = %partition.topic_id, "deleting the log of a deleted partition");
            if let Err(err) = partition.log().delete() {
                tracing::error!(partition = %partition.tp, error = %err, "could not delete a log");
            }
        }
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|tp, _| wanted.contains_key(tp));

        for (tp, want) in &wanted {
            let existing = self
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(tp)
                .cloned();
            let partition = match existing {
                Some(p) => p,
                None => {
                    if self
                        .failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(tp)
                    {
                        continue;
                    }
                    let dir = self.data_dir.partition_dir(tp);
                    if let Err(err) = dirs::write_partition_metadata(&dir, want.topic_id) {
                        self.mark_failed(tp, format!("{err:#}"));
                        continue;
                    }
                    self.open_partition(tp, want.topic_id, &want.config);
                    match self
                        .partitions
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(tp)
                    {
                        Some(p) => p.clone(),
                        None => continue,
                    }
                }
            };
            if let Err(err) = partition.set_config(want.config.clone()) {
                tracing::error!(partition = %tp, error = %err, "could not apply topic configs");
            }
            if let Err(err) = partition.apply_state(&want.state) {
                tracing::error!(partition = %tp, error = %err, "could not take on the partition's new role");
            }
        }
        tracing::debug!(offset, partitions = wanted.len(), "reconciled");
        self.reconciled.send_modify(|r| *r = (*r).max(offset));
        // Waiting fetches re-check: leadership may have moved.
        self.data_version.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
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
    async fn settle(&self) {
        let applied = self.metadata.offset();
        if *self.reconciled.borrow() < applied {
            let _ = self.wait_reconciled(applied, SETTLE_WAIT).await;
        }
    }

    fn open_partition(&self, tp: &TopicPartition, topic_id: Uuid, config: &LogConfig) {
        let dir = self.data_dir.partition_dir(tp);
        match Log::open(&dir, config.clone(), self.resources.clone()) {
            Ok(log) => {
                let report = log.open_report();
                if report.segments_recovered > 0 || report.bytes_truncated > 0 {
                    tracing::warn!(partition = %tp, segments = report.segments_recovered, bytes_truncated = report.bytes_truncated, "recovered a log after an unclean shutdown");
                }
                let partition = Arc::new(Partition::new(
                    tp.clone(),
                    topic_id,
                    self.me,
                    log,
                    self.data_version.clone(),
                ));
                if let Some(&hw) = self
                    .hw_checkpoint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(tp)
                {
                    partition.restore_high_watermark(hw);
                }
                self.partitions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tp.clone(), partition);
            }
            Err(err) => self.mark_failed(tp, err.to_string()),
        }
    }

    fn mark_failed(&self, tp: &TopicPartition, why: String) {
        tracing::error!(partition = %tp, error = %why, "cannot open the partition's log; it is served as KAFKA_STORAGE_ERROR");
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), why);
    }

    /// The partitions the image assigns to this broker.
    fn assigned(&self, image: &MetadataImage) -> HashMap<TopicPartition, Assigned> {
        let mut out = HashMap::new();
        for topic in image.topics.values() {
            let config = log_config(topic);
            for (index, state) in topic.partitions.iter().enumerate() {
                if state.replicas.contains(&self.me) {
                    out.insert(
                        TopicPartition::new(topic.name.clone(), index as i32),
                        Assigned {
                            topic_id: topic.id,
                            state: state.clone(),
                            config: config.clone(),
                        },
                    );
                }
            }
        }
        out
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
                address: state
                    .leader
                    .and_then(|l| image.brokers.get(&l))
                    .and_then(|b| b.listeners.get(LISTENER).cloned()),
            })
        })
    }

    /// The partition `tp` if hosted here, else the precise error: unknown topic, unknown
    /// partition, a log that failed to open, or not a replica here (with the leader).
    fn locate(&self, tp: &TopicPartition) -> Result<Arc<Partition>, PartitionError> {
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
        configs: std::collections::HashMap<String, String>,
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
    fn with_hint(&self, tp: &TopicPartition, mut err: PartitionError) -> PartitionError {
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

    /// Appends each partition's batches on its leader; with acks=all waits (up to the request's
    /// timeout) until the high watermark has passed them. Clients cannot write to internal
    /// topics (`__consumer_offsets`): INVALID_TOPIC_EXCEPTION, as in Kafka.
    pub async fn produce(
        &self,
        mut request: ProduceRequest,
    ) -> Vec<(TopicPartition, Result<Produced, PartitionError>)> {
        if !request
            .partitions
            .iter()
            .any(|(tp, _)| is_internal_topic(&tp.topic))
        {
            return self.produce_internal(request).await;
        }
        let (internal, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut request.partitions)
            .into_iter()
            .partition(|(tp, _)| is_internal_topic(&tp.topic));
        request.partitions = rest;
        let mut results = if request.partitions.is_empty() {
            Vec::new()
        } else {
            self.produce_internal(request).await
        };
        for (tp, _) in internal {
            let message = format!(
                "{} is an internal topic: clients cannot write to it",
                tp.topic
            );
            results.push((
                tp,
                Err(PartitionError::new(
                    ErrorCode::InvalidTopicException,
                    message,
                )),
            ));
        }
        results
    }

    /// [`ReplicaManager::produce`] without the internal-topic check: the group coordinator
    /// writes `__consumer_offsets` this way.
    pub async fn produce_internal(
        &self,
        request: ProduceRequest,
    ) -> Vec<(TopicPartition, Result<Produced, PartitionError>)> {
        self.settle().await;
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut waiting = Vec::new();
        for (tp, records) in request.partitions {
            let outcome = self.append_one(&tp, &records, request.acks);
            match outcome {
                Ok((produced, partition, last_offset, epoch, min_insync)) => {
                    if request.acks == Acks::All {
                        waiting.push((results.len(), partition, last_offset, epoch, min_insync));
                    }
                    results.push((tp, Ok(produced)));
                }
                Err(err) => {
                    let err = self.with_hint(&tp, err);
                    results.push((tp, Err(err)));
                }
            }
        }
        if !waiting.is_empty() {
            let deadline = tokio::time::Instant::now() + request.timeout;
            let mut rx = self.data_version.subscribe();
            loop {
                rx.borrow_and_update();
                waiting.retain(|(i, partition, last_offset, epoch, min_insync)| {
                    match partition.committed(*last_offset, *epoch, *min_insync) {
                        Ok(true) => false,
                        Ok(false) => true,
                        Err(err) => {
                            let tp = &results[*i].0;
                            let err = self.with_hint(tp, err);
                            results[*i].1 = Err(err);
                            false
                        }
                    }
                });
                if waiting.is_empty() {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            for (i, partition, last_offset, _, _) in waiting {
                results[i].1 = Err(PartitionError::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "{}: appended up to offset {last_offset} but not replicated to every in-sync replica {:?} within {} ms (high watermark {})",
                        partition.tp,
                        partition.role().isr,
                        request.timeout.as_millis(),
                        partition.high_watermark()
                    ),
                ));
            }
        }
        if request.acks == Acks::None {
            for (_, result) in &mut results {
                if let Ok(produced) = result {
                    produced.base_offset = -1;
                }
            }
        }
        results
    }

    fn append_one(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: Acks,
    ) -> Result<AppendOutcome, PartitionError> {
        let partition = self.locate(tp)?;
        self.self_fence()?;
        let min_insync = if acks == Acks::All {
            let min = self.metadata.read(|image| {
                image
                    .topics
                    .get(&tp.topic)
                    .and_then(|t| t.config("min.insync.replicas"))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(1)
            });
            Some(min)
        } else {
            None
        };
        // The append writes to the page cache (and fsyncs per flush.messages): keep it off the
        // runtime's other tasks (heartbeats among them).
        let (info, epoch) = tokio::task::block_in_place(|| partition.append(records, min_insync))?;
        crate::metrics::METRICS.bytes_in.add(info.bytes as u64);
        Ok((
            Produced {
                base_offset: info.first_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: partition.log().log_start_offset(),
            },
            partition.clone(),
            info.last_offset,
            epoch,
            min_insync,
        ))
    }

    /// Reads committed batches, long-polling until `min_bytes` are there, an error needs
    /// reporting, or `max_wait` has passed.
    pub async fn fetch(&self, request: &FetchRequest) -> Vec<FetchedPartition> {
        self.settle().await;
        let deadline = tokio::time::Instant::now() + request.max_wait;
        let mut rx = self.data_version.subscribe();
        loop {
            rx.borrow_and_update();
            let results = self.fetch_once(request);
            let bytes: usize = results.iter().map(|r| r.records.len()).sum();
            if bytes >= request.min_bytes
                || results.iter().any(|r| r.error.is_some())
                || tokio::time::Instant::now() >= deadline
            {
                return results;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return results },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// One pass over the partitions of a fetch, without waiting.
    pub fn fetch_once(&self, request: &FetchRequest) -> Vec<FetchedPartition> {
        let mut remaining = request.max_bytes;
        let mut first_data = true;
        let fenced = self.self_fence().err();
        request
            .partitions
            .iter()
            .map(|p| {
                let outcome = self.locate(&p.tp).and_then(|partition| {
                    if let Some(err) = &fenced {
                        return Err(err.clone());
                    }
                    partition.fetch(
                        p.offset,
                        p.max_bytes.min(remaining),
                        first_data,
                        p.current_leader_epoch,
                        request.isolation,
                    )
                });
                match outcome {
                    Ok(fetched) => {
                        if !fetched.records.is_empty() {
                            first_data = false;
                            remaining = remaining.saturating_sub(fetched.records.len());
                        }
                        fetched
                    }
                    Err(err) => {
                        let mut failed = FetchedPartition::failed(
                            p.tp.clone(),
                            p.offset,
                            self.with_hint(&p.tp, err.clone()),
                        );
                        if let Some((start, end)) = err.range {
                            failed.log_start_offset = start;
                            failed.log_end_offset = end;
                        }
                        failed
                    }
                }
            })
            .collect()
    }

    /// Continuous consumption: sends a batch of results whenever the partitions have new data,
    /// advancing the positions itself. A partition that fails is reported once and dropped from
    /// the stream; the stream ends when none is left or the receiver is gone.
    pub async fn fetch_continuously(
        &self,
        mut request: FetchRequest,
        tx: tokio::sync::mpsc::Sender<Vec<FetchedPartition>>,
    ) {
        loop {
            let results = tokio::select! {
                results = self.fetch(&request) => results,
                () = tx.closed() => return,
            };
            let mut send = Vec::new();
            for result in results {
                if result.error.is_some() {
                    request.partitions.retain(|p| p.tp != result.tp);
                    send.push(result);
                } else if !result.records.is_empty() {
                    if let Some(p) = request.partitions.iter_mut().find(|p| p.tp == result.tp) {
                        p.offset = result.next_offset;
                    }
                    send.push(result);
                }
            }
            if !send.is_empty() && tx.send(send).await.is_err() {
                return;
            }
            if request.partitions.is_empty() {
                return;
            }
        }
    }

    /// Kafka's ListOffsets.
    pub async fn list_offsets(
        &self,
        queries: &[OffsetQuery],
    ) -> Vec<(TopicPartition, Result<FoundOffset, PartitionError>)> {
        self.settle().await;
        let fenced = self.self_fence().err();
        queries
            .iter()
            .map(|q| {
                let outcome = self.locate(&q.tp).and_then(|partition| {
                    if let Some(err) = &fenced {
                        return Err(err.clone());
                    }
                    partition.list_offset(q.timestamp, q.current_leader_epoch)
                });
                (q.tp.clone(), outcome.map_err(|e| self.with_hint(&q.tp, e)))
            })
            .collect()
    }

    /// Periodic log upkeep: flush by `flush.ms`, and when due, checkpoint recovery points and
    /// Cleans the compacted logs that need it (`min.cleanable.dirty.ratio`, tombstones past
    /// `delete.retention.ms`), dirtiest first, never at or above a partition's high watermark.
    /// Blocking: runs on the cleaner's own thread; appends and reads go on meanwhile.
    pub fn clean_logs(&self, cleaner: &mut tributary_storage::Cleaner) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut dirty: Vec<(f64, Arc<Partition>)> = self
            .partitions()
            .into_iter()
            .filter(|p| p.log().config().is_compacted())
            .filter(|p| p.log().needs_cleaning(p.high_watermark(), now))
            .map(|p| (p.log().dirty_ratio(p.high_watermark(), now), p))
            .collect();
        dirty.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (ratio, partition) in dirty {
            match partition
                .log()
                .clean(partition.high_watermark(), now, cleaner)
            {
                Ok(outcome) => tracing::info!(
                    partition = %partition.tp,
                    dirty_ratio = ratio,
                    bytes_read = outcome.bytes_read,
                    bytes_written = outcome.bytes_written,
                    "cleaned a compacted log"
                ),
                Err(err) => {
                    tracing::error!(partition = %partition.tp, error = %err, "cleaning a log failed")
                }
            }
        }
    }

    /// apply retention (bounded by each partition's high watermark).
    pub fn maintain(&self, checkpoint: bool, retention: bool) {
        if checkpoint && let Err(err) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %format!("{err:#}"), "writing the high-watermark checkpoint failed");
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let expiration_ms = self.config.producer_id_expiration_ms as i64;
        for partition in self.partitions() {
            if checkpoint {
                let expired = partition.expire_producers(now_ms, expiration_ms);
                if expired > 0 {
                    tracing::info!(partition = %partition.tp, expired, "forgot idle producer ids");
                }
            }
            let log = partition.log();
            if let Err(err) = log.flush_if_due() {
                tracing::error!(partition = %partition.tp, error = %err, "flush failed");
            }
            if checkpoint && let Err(err) = log.checkpoint() {
                tracing::error!(partition = %partition.tp, error = %err, "checkpoint failed");
            }
            if retention {
                match log.apply_retention(partition.high_watermark()) {
                    Ok(outcome) if outcome.segments > 0 => {
                        tracing::info!(partition = %partition.tp, segments = outcome.segments, bytes = outcome.bytes, "retention deleted old segments")
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!(partition = %partition.tp, error = %err, "retention failed")
                    }
                }
            }
        }
    }

    /// Writes every partition's high watermark to `replication-offset-checkpoint`.
    pub fn checkpoint_high_watermarks(&self) -> Result<()> {
        let hws: HashMap<TopicPartition, i64> = self
            .partitions()
            .into_iter()
            .map(|p| (p.tp.clone(), p.high_watermark()))
            .collect();
        self.data_dir.write_hw_checkpoint(&hws)
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close_all(&self) -> Result<()> {
        if let Err(err) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %format!("{err:#}"), "writing the high-watermark checkpoint failed");
        }
        let mut first_error = None;
        for partition in self.partitions() {
            if let Err(err) = partition.close() {
                tracing::error!(partition = %partition.tp, error = %err, "closing a log failed");
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err).context("closing logs"),
            None => Ok(()),
        }
    }
}

/// A partition this broker follows: whom, at which epoch.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The partition.
    pub partition: Arc<Partition>,
    /// Its leader.
    pub leader: BrokerId,
    /// The leader epoch followed.
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
}

impl ReplicaManager {
    /// Kafka's InitProducerId (idempotent producers): a new producer id at epoch 0, from the
    /// block the controller allocated to this broker (a new block when it runs out).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), PartitionError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let request = tributary_proto::coordinator::v1::AllocateProducerIdsRequest {
                broker_id: self.me,
                broker_epoch: self.broker_epoch(),
            };
            let response = self
                .coordinators
                .call(|channel| async move {
                    {
                        tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient::new(channel)
                            .allocate_producer_ids(request)
                            .await
                    }
                })
                .await
                .map_err(|status| {
                    PartitionError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!("cannot allocate producer ids: {}", status.message()),
                    )
                })?
                .into_inner();
            if let Some(err) = response.error.filter(|e| e.error_code() != ErrorCode::None) {
                return Err(PartitionError::new(err.error_code(), err.message));
            }
            if response.count <= 0 {
                return Err(PartitionError::new(
                    ErrorCode::UnknownServerError,
                    "the controller allocated no producer ids",
                ));
            }
            *ids = (
                response.first_producer_id,
                response.first_producer_id + response.count,
            );
        }
        let id = ids.0;
        ids.0 += 1;
        Ok((id, 0))
    }

    /// Every partition this broker follows (a replica here, led by another broker).
    pub fn followed(&self) -> Vec<Followed> {
        self.partitions()
            .into_iter()
            .filter_map(|partition| {
                let role = partition.role();
                let leader = role.leader.filter(|&l| l != self.me)?;
                Some(Followed {
                    partition,
                    leader,
                    leader_epoch: role.leader_epoch,
                })
            })
            .collect()
    }

    /// A follower's fetch on this leader: checks the follower's registration, reads each
    /// partition up to the log end, and long-polls like a consumer fetch. ISR expansions that
    /// follow are sent to the controller.
    pub async fn replica_fetch(
        self: &Arc<Self>,
        replica: BrokerId,
        broker_epoch: u64,
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
        partitions: &[ReplicaFetchPartition],
    ) -> Result<Vec<FetchedPartition>, PartitionError> {
        let registered = self.metadata.read(|image| {
            image
                .registered_broker(replica, broker_epoch)
                .map(|_| ())
                .map_err(|e| PartitionError::new(e.code(), e.message))
        });
        registered?;
        let eligible = self.metadata.read(|image| {
            image
                .brokers
                .get(&replica)
                .is_some_and(|b| b.epoch == broker_epoch && b.state == BrokerState::Running)
        });
        self.settle().await;
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut rx = self.data_version.subscribe();
        loop {
            rx.borrow_and_update();
            let now = Instant::now();
            let mut remaining = max_bytes;
            let mut first_data = true;
            let mut results = Vec::with_capacity(partitions.len());
            for p in partitions {
                let outcome = self.locate(&p.tp).and_then(|partition| {
                    self.self_fence()?;
                    // KIP-74: only the first partition with data may exceed the byte budget.
                    partition.replica_fetch(
                        replica,
                        p.offset,
                        p.leader_epoch,
                        p.max_bytes.min(remaining),
                        first_data,
                        eligible,
                        now,
                    )
                });
                results.push(match outcome {
                    Ok((fetched, proposal)) => {
                        if !fetched.records.is_empty() {
                            first_data = false;
                        }
                        remaining = remaining.saturating_sub(fetched.records.len());
                        if let Some(proposal) = proposal {
                            self.propose(proposal);
                        }
                        fetched
                    }
                    Err(err) => {
                        let mut failed = FetchedPartition::failed(
                            p.tp.clone(),
                            p.offset,
                            self.with_hint(&p.tp, err.clone()),
                        );
                        if let Some((start, end)) = err.range {
                            failed.log_start_offset = start;
                            failed.log_end_offset = end;
                        }
                        failed
                    }
                });
            }
            let bytes: usize = results.iter().map(|r| r.records.len()).sum();
            if bytes >= min_bytes
                || results.iter().any(|r| r.error.is_some())
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(results);
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(results) },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// KIP-101/279 on the leader, per partition: where the asked epoch ends.
    pub async fn offsets_for_leader_epoch(
        &self,
        queries: &[(TopicPartition, i32, i32)],
    ) -> Vec<(
        TopicPartition,
        Result<tributary_storage::EpochEndOffset, PartitionError>,
    )> {
        self.settle().await;
        queries
            .iter()
            .map(|(tp, current, epoch)| {
                let outcome = self
                    .locate(tp)
                    .and_then(|p| p.end_offset_for_epoch(*current, *epoch));
                (tp.clone(), outcome.map_err(|e| self.with_hint(tp, e)))
            })
            .collect()
    }

    /// Proposes ISR shrinks for followers not caught up within `lag`.
    pub fn shrink_isrs(self: &Arc<Self>, lag: Duration) {
        let now = Instant::now();
        for partition in self.partitions() {
            if let Some(proposal) = partition.shrink_proposal(now, lag) {
                self.propose(proposal);
            }
        }
    }

    /// Sends an ISR change to the controller (in the background) and applies the answer.
    ///
    /// The proposal stays pending (its new members count for the high watermark) until the
    /// metadata shows a newer partition epoch or the controller refuses it before writing
    /// anything; an answer that may have been lost (transport error, a controller failover) is
    /// sent again, never taken for a refusal.
    fn propose(self: &Arc<Self>, proposal: crate::partition::IsrProposal) {
        let manager = self.clone();
        crate::spawn(async move {
            let request = tributary_proto::coordinator::v1::AlterPartitionRequest {
                broker_id: manager.me,
                broker_epoch: manager.broker_epoch(),
                topic_id: proposal.topic_id.as_bytes().to_vec().into(),
                partition: proposal.tp.partition,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.new_isr.clone(),
            };
            loop {
                let current = manager
                    .partition(&proposal.tp)
                    .filter(|p| p.topic_id == proposal.topic_id && p.is_pending(&proposal));
                let Some(partition) = current else {
                    return; // answered by the metadata meanwhile, or the topic is gone
                };
                let answer = manager
                    .coordinators
                    .call(|channel| {
                        let request = request.clone();
                        async move {
                            tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient::new(channel)
                                .alter_partition(request)
                                .await
                        }
                    })
                    .await;
                let response = match answer {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        tracing::warn!(partition = %proposal.tp, error = %status.message(), "ISR change not confirmed; sending it again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let code = response
                    .error
                    .as_ref()
                    .map_or(ErrorCode::None, |e| e.error_code());
                match (code, response.partition.as_ref()) {
                    (ErrorCode::None, Some(state)) => {
                        tracing::info!(partition = %proposal.tp, isr = ?state.isr, "ISR changed");
                        let metrics = &crate::metrics::METRICS;
                        if state.isr.len() > partition.role().isr.len() {
                            metrics.isr_expands.add(1);
                        } else {
                            metrics.isr_shrinks.add(1);
                        }
                        if let Err(err) = partition.apply_state(&PartitionState::from(state)) {
                            tracing::error!(partition = %proposal.tp, error = %err, "could not apply the new ISR");
                        }
                    }
                    // The partition changed under the proposal (or it was applied and the
                    // answer lost): the metadata brings the newer state, which clears it.
                    (
                        ErrorCode::NotLeaderOrFollower
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::InvalidUpdateVersion,
                        _,
                    ) => {
                        tracing::info!(partition = %proposal.tp, error = ?response.error, "ISR change overtaken; waiting for the metadata");
                    }
                    _ => {
                        tracing::info!(partition = %proposal.tp, proposed = ?proposal.new_isr, error = ?response.error, "ISR change refused");
                        partition.proposal_failed(&proposal);
                    }
                }
                return;
            }
        });
    }
}

#[derive(Debug)]
struct Assigned {
    topic_id: Uuid,
    state: PartitionState,
    config: LogConfig,
}

/// The storage configuration of a topic's logs, from its effective topic configs.
pub fn log_config(topic: &Topic) -> LogConfig {
    let d = LogConfig::default();
    let long = |key: &str| topic.config(key).and_then(|v| v.parse::<i64>().ok());
    let below_max = |v: i64| (v < i64::MAX).then_some(v);
    // Validated by the topic-config table; the filters only guard an image written before.
    let min_lag = long("min.compaction.lag.ms")
        .filter(|v| *v >= 0)
        .unwrap_or(d.min_compaction_lag_ms);
    let max_lag = long("max.compaction.lag.ms")
        .filter(|v| *v >= 1)
        .unwrap_or(d.max_compaction_lag_ms);
    LogConfig {
        segment_bytes: long("segment.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.segment_bytes),
        segment_ms: long("segment.ms").unwrap_or(d.segment_ms),
        max_message_bytes: long("max.message.bytes")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_message_bytes),
        retention_ms: long("retention.ms").unwrap_or(d.retention_ms),
        retention_bytes: long("retention.bytes").unwrap_or(d.retention_bytes),
        flush_messages: long("flush.messages")
            .and_then(below_max)
            .and_then(|v| u64::try_from(v).ok()),
        flush_ms: long("flush.ms").and_then(below_max),
        message_timestamp_type: match topic.config("message.timestamp.type") {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        // Validated lists (`delete`, `compact`, `compact,delete`, `delete,compact`).
        cleanup_policy: topic
            .config("cleanup.policy")
            .and_then(|v| v.parse::<tributary_storage::CleanupPolicy>().ok())
            .unwrap_or(d.cleanup_policy),
        delete_retention_ms: long("delete.retention.ms").unwrap_or(d.delete_retention_ms),
        min_cleanable_dirty_ratio: topic
            .config("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(d.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: min_lag,
        // Never below the minimum: LogConfig::validate refuses that, and the log would not open.
        max_compaction_lag_ms: max_lag.max(min_lag),
        ..d
    }
}

/// Kafka's internal topics: clients cannot produce to them.
pub fn is_internal_topic(topic: &str) -> bool {
    topic == tributary_group::OFFSETS_TOPIC
}
