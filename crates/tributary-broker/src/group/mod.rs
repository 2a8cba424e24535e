//! The group coordinator: Kafka's classic consumer-group protocol on the brokers.
//!
//! A group lives on the leader of its `__consumer_offsets` partition
//! (`abs(javaHashCode(group)) % partitions`, [`records::partition_for`]). That leader keeps the
//! group's membership and committed offsets in memory and writes every change to the partition
//! with acks=all before acknowledging it, so the partition is the group's durable state: a broker
//! that becomes its leader replays it ([`GroupCoordinator::maintain`] starts the load;
//! requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS), and one that stops leading it drops its
//! groups at once (requests get NOT_COORDINATOR; waiting joins and syncs are answered with it).
//!
//! Membership follows Kafka's state machine: Empty → PreparingRebalance (members (re)join) →
//! CompletingRebalance (the leader computes the assignment and sends it with SyncGroup) → Stable,
//! with generations that fence members of an older one, session timeouts, rebalance timeouts,
//! Kafka's initial rebalance delay, MEMBER_ID_REQUIRED for new dynamic members, and static
//! membership (`group.instance.id`: a restarted member takes its old place without a rebalance).
//! Assignment is the clients' business (the leader runs the assignor); the coordinator keeps
//! member metadata and assignments as opaque bytes.
//!
//! The API takes and returns the gRPC messages of `tributary.broker.v1.Group`, whose fields are
//! Kafka's one for one; a Kafka-wire listener translates its messages to these.
//!
//! Architecture invariants:
//! - Nothing is acknowledged (offset commit, completed sync) before its record is replicated to
//!   every in-sync replica of the `__consumer_offsets` partition.
//! - Only the current leader of a group's partition, with the partition loaded at that leader
//!   epoch, answers for the group.
//! - A member of an old generation can neither commit nor sync.

pub mod grpc;
pub mod lag;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::{Error as PbError, ErrorCode};
use tributary_record::BatchBuilder;

use crate::api::{Acks, ProduceRequest, TopicPartition};
use crate::manager::ReplicaManager;
use records::{GroupValue, Key, OffsetValue, StoredMember, Value};

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often the coordinator checks sessions, rebalance deadlines and partition leadership.
const TICK: Duration = Duration::from_millis(100);
/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// The group coordinator's settings (Kafka's broker keys, see [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i32,
    /// `offsets.commit.timeout.ms`: how long a commit waits for replication.
    pub offsets_commit_timeout: Duration,
    /// `offsets.retention.minutes`: how long an empty group's offsets are kept.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval: Duration,
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this
    /// long (again after each new join, up to the rebalance timeout) for more members.
    pub group_initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub group_max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_commit_timeout: Duration::from_secs(5),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            group_initial_rebalance_delay: Duration::from_millis(500),
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: usize::MAX,
        }
    }
}

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Members are (re)joining.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
    /// Deleted or moved away.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<oneshot::Sender<pb::JoinGroupResponse>>,
    awaiting_sync: Option<oneshot::Sender<pb::SyncGroupResponse>>,
    session_deadline: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Committed {
    value: OffsetValue,
    /// Where the record is in `__consumer_offsets` (a later write wins).
    log_offset: i64,
}

struct Group {
    id: String,
    state: GroupState,
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: HashMap<String, String>,
    pending_members: HashMap<String, Instant>,
    offsets: BTreeMap<(String, i32), Committed>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    /// Bumped when a rebalance starts (or the group goes away): wakes held heartbeats.
    rebalances: tokio::sync::watch::Sender<u64>,
}

/// One `__consumer_offsets` partition this broker leads.
struct Shard {
    leader_epoch: i32,
    loaded: bool,
    groups: HashMap<String, Arc<Mutex<Group>>>,
}

/// A record to write to `__consumer_offsets`: key and value (`None`: tombstone).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// The group coordinator of one broker.
pub struct GroupCoordinator {
    manager: Arc<ReplicaManager>,
    config: GroupConfig,
    shards: Mutex<HashMap<i32, Shard>>,
    /// When this broker last asked for the offsets topic to be created.
    creating: Mutex<Option<Instant>>,
    /// The consumer-group lag last measured ([`lag`]).
    lag: Mutex<Vec<lag::LagSample>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Option<PbError> {
    Some(PbError::new(code, message))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a group's requests go.
struct Located {
    partition: i32,
    leader_epoch: i32,
    group: Option<Arc<Mutex<Group>>>,
}

impl GroupCoordinator {
    /// A coordinator over `manager`'s partitions.
    pub fn new(manager: Arc<ReplicaManager>, config: GroupConfig) -> Arc<Self> {
        Arc::new(Self {
            manager,
            config,
            shards: Mutex::new(HashMap::new()),
            creating: Mutex::new(None),
            lag: Mutex::new(Vec::new()),
        })
    }

    /// The broker this coordinator runs on.
    pub fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    fn offsets_partitions(&self) -> Option<i32> {
        self.manager.metadata().read(|image| {
            image
                .topics
                .get(OFFSETS_TOPIC)
                .map(|t| t.partitions.len() as i32)
        })
    }

    /// The `__consumer_offsets` partition of `group` (from the topic's actual partition count,
    /// else the configured one).
    pub fn partition_for(&self, group: &str) -> i32 {
        let partitions = self
            .offsets_partitions()
            .unwrap_or(self.config.offsets_topic_num_partitions);
        records::partition_for(group, partitions)
    }

    // ---- FindCoordinator --------------------------------------------------------------------

    /// The broker coordinating `group` (its id), or why there is none yet. Creates the offsets
    /// topic on first use once enough brokers are running for its replication factor.
    pub fn find_coordinator(&self, group: &str) -> Result<i32, PbError> {
        let Some(partitions) = self.offsets_partitions() else {
            self.create_offsets_topic()?;
            return Err(PbError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("the offsets topic {OFFSETS_TOPIC} is being created"),
            ));
        };
        let partition = records::partition_for(group, partitions);
        let leader = self.manager.metadata().read(|image| {
            image
                .topics
                .get(OFFSETS_TOPIC)
                .and_then(|t| t.partitions.get(partition as usize))
                .and_then(|p| p.leader)
        });
        match leader {
            Some(id) => Ok(id),
            None => Err(PbError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "{OFFSETS_TOPIC}-{partition}, which coordinates group `{group}`, has no leader right now"
                ),
            )),
        }
    }

    fn create_offsets_topic(&self) -> Result<(), PbError> {
        let rf = self.config.offsets_topic_replication_factor;
        let running = self
            .manager
            .metadata()
            .read(|image| image.brokers.values().filter(|b| b.is_eligible()).count());
        if (running as i32) < rf {
            return Err(PbError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "the offsets topic {OFFSETS_TOPIC} needs {rf} running brokers (offsets.topic.replication.factor) and {running} are running"
                ),
            ));
        }
        {
            let mut creating = lock(&self.creating);
            if creating.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                return Ok(());
            }
            *creating = Some(Instant::now());
        }
        let configs: HashMap<String, String> = [
            ("cleanup.policy", "compact".to_owned()),
            ("min.insync.replicas", rf.min(2).to_string()),
            ("segment.bytes", "104857600".to_owned()),
            ("compression.type", "producer".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let request = tributary_proto::coordinator::v1::CreateTopicsRequest {
            topics: vec![
                tributary_proto::coordinator::v1::create_topics_request::NewTopic {
                    name: OFFSETS_TOPIC.to_owned(),
                    partitions: self.config.offsets_topic_num_partitions,
                    replication_factor: rf,
                    configs,
                },
            ],
            validate_only: false,
        };
        let coordinators = self.manager.coordinators().clone();
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
                Ok(_) => tracing::info!(topic = OFFSETS_TOPIC, "created the offsets topic"),
                Err(status) => {
                    tracing::warn!(error = %status.message(), "creating the offsets topic failed")
                }
            }
        });
        Ok(())
    }

    // ---- Locating a group -----------------------------------------------------------------

    /// Finds the shard of `group`: NOT_COORDINATOR unless this broker leads its partition,
    /// COORDINATOR_LOAD_IN_PROGRESS until the partition is loaded at the current epoch.
    fn locate(&self, group: &str) -> Result<Located, PbError> {
        let Some(partitions) = self.offsets_partitions() else {
            return Err(PbError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("the offsets topic {OFFSETS_TOPIC} does not exist yet"),
            ));
        };
        let partition = records::partition_for(group, partitions);
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let role = self.manager.partition(&tp).map(|p| p.role());
        let me = self.manager.broker_id();
        let Some(role) = role.filter(|r| r.leader == Some(me)) else {
            return Err(PbError::new(
                ErrorCode::NotCoordinator,
                format!("broker {me} does not coordinate group `{group}` (it does not lead {tp})"),
            ));
        };
        if self.manager.session().self_fenced() {
            return Err(PbError::new(
                ErrorCode::NotCoordinator,
                format!("broker {me} has lost touch with the coordinators"),
            ));
        }
        let shards = lock(&self.shards);
        match shards.get(&partition) {
            Some(shard) if shard.loaded && shard.leader_epoch == role.leader_epoch => Ok(Located {
                partition,
                leader_epoch: role.leader_epoch,
                group: shard.groups.get(group).cloned(),
            }),
            _ => Err(PbError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!("broker {me} is loading {tp}, which holds group `{group}`"),
            )),
        }
    }

    /// The group, created empty if it does not exist.
    fn locate_or_create(&self, group: &str) -> Result<(Located, Arc<Mutex<Group>>), PbError> {
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
                PbError::new(
                    ErrorCode::NotCoordinator,
                    "the group's partition moved meanwhile",
                )
            })?;
        let g = shard
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group))))
            .clone();
        Ok((located, g))
    }

    // ---- Writes ---------------------------------------------------------------------------

    /// Appends `writes` to `__consumer_offsets`-`partition` with acks=all; the offset of the
    /// first record, or Kafka's coordinator error for the failure.
    async fn append(&self, partition: i32, writes: Vec<Write>) -> Result<i64, PbError> {
        let mut builder = BatchBuilder::new(now_ms());
        let ts = now_ms();
        for (key, value) in &writes {
            builder.push(ts, Some(key), value.as_deref(), &[]);
        }
        let batch = builder.try_build().map_err(|e| {
            PbError::new(
                ErrorCode::UnknownServerError,
                format!("building a batch: {e}"),
            )
        })?;
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let mut results = self
            .manager
            .append_records(ProduceRequest {
                acks: Acks::All,
                timeout: self.config.offsets_commit_timeout,
                partitions: vec![(tp.clone(), batch)],
            })
            .await;
        match results.pop().map(|(_, r)| r) {
            Some(Ok(produced)) => Ok(produced.base_offset),
            Some(Err(e)) => {
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
                Err(PbError::new(
                    code,
                    format!("writing to {tp}: {}", e.message),
                ))
            }
            None => Err(PbError::new(
                ErrorCode::UnknownServerError,
                format!("no result writing to {tp}"),
            )),
        }
    }

    /// Writes the group's membership (after a rebalance, a static member's replacement, or
    /// the group becoming empty).
    fn group_write(g: &Group) -> Write {
        let value = GroupValue {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation,
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            current_state_timestamp: g.state_since_ms,
            members: g
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout.as_millis() as i32,
                    session_timeout: m.session_timeout.as_millis() as i32,
                    subscription: g
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        (
            records::encode_key(&Key::Group {
                group: g.id.clone(),
            }),
            Some(records::encode_group(&value)),
        )
    }

    /// Persists the group in the background (best effort: a failure is logged; the next
    /// rebalance writes it again).
    fn persist_in_background(self: &Arc<Self>, partition: i32, write: Write) {
        let this = self.clone();
        crate::spawn(async move {
            if let Err(e) = this.append(partition, vec![write]).await {
                tracing::warn!(partition, error = %e.message, "could not persist a group");
            }
        });
    }

    // ---- JoinGroup ------------------------------------------------------------------------

    /// Kafka's JoinGroup; answered when the rebalance completes.
    pub async fn join_group(
        self: &Arc<Self>,
        req: pb::JoinGroupRequest,
        client_host: String,
    ) -> pb::JoinGroupResponse {
        let fail = |code, message: String| pb::JoinGroupResponse {
            error: err(code, message),
            member_id: req.member_id.clone(),
            generation_id: -1,
            ..Default::default()
        };
        if req.group_id.is_empty() {
            return fail(ErrorCode::InvalidGroupId, "the group id is empty".into());
        }
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return fail(
                ErrorCode::InvalidSessionTimeout,
                format!(
                    "session.timeout.ms {} is outside the broker's [{}, {}] (group.min.session.timeout.ms, group.max.session.timeout.ms)",
                    req.session_timeout_ms,
                    self.config.group_min_session_timeout_ms,
                    self.config.group_max_session_timeout_ms
                ),
            );
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(
                ErrorCode::InconsistentGroupProtocol,
                "a join needs a protocol type and at least one protocol".into(),
            );
        }
        let (located, group) = match self.locate_or_create(&req.group_id) {
            Ok(found) => found,
            Err(e) => {
                return pb::JoinGroupResponse {
                    error: Some(e),
                    member_id: req.member_id.clone(),
                    generation_id: -1,
                    ..Default::default()
                };
            }
        };
        let rebalance_timeout = Duration::from_millis(
            req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64,
        );
        let rx = {
            let mut g = lock(&group);
            match self.join_locked(&mut g, &req, client_host, located.partition) {
                Ok(JoinOutcome::Now(response)) => return response,
                Ok(JoinOutcome::Wait(rx)) => {
                    self.try_complete_join(&mut g);
                    rx
                }
                Err(e) => {
                    return pb::JoinGroupResponse {
                        error: Some(e),
                        member_id: req.member_id.clone(),
                        generation_id: -1,
                        ..Default::default()
                    };
                }
            }
        };
        match tokio::time::timeout(rebalance_timeout + Duration::from_secs(5), rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => fail(
                ErrorCode::NotCoordinator,
                "the coordinator stopped coordinating the group during the join".into(),
            ),
            Err(_) => fail(
                ErrorCode::RebalanceInProgress,
                "the rebalance did not complete within the rebalance timeout".into(),
            ),
        }
    }

    fn join_locked(
        self: &Arc<Self>,
        g: &mut Group,
        req: &pb::JoinGroupRequest,
        client_host: String,
        partition: i32,
    ) -> Result<JoinOutcome, PbError> {
        if g.state == GroupState::Dead {
            return Err(PbError::new(
                ErrorCode::CoordinatorNotAvailable,
                "the group is being deleted",
            ));
        }
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
        } else {
            if g.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return Err(PbError::new(
                    ErrorCode::InconsistentGroupProtocol,
                    format!(
                        "the group's protocol type is {:?}, not {:?}",
                        g.protocol_type, req.protocol_type
                    ),
                ));
            }
            let common = req.protocols.iter().any(|p| {
                g.members
                    .values()
                    .filter(|m| m.id != req.member_id)
                    .all(|m| m.protocols.iter().any(|(n, _)| *n == p.name))
            });
            if !common {
                return Err(PbError::new(
                    ErrorCode::InconsistentGroupProtocol,
                    "none of the member's assignors is supported by every other member",
                ));
            }
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let now = Instant::now();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        let new_member = |id: String| Member {
            id,
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: client_host.clone(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            session_deadline: now + session,
        };

        if req.member_id.is_empty() {
            let new_id = format!(
                "{}-{}",
                if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                },
                uuid::Uuid::new_v4()
            );
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = g.static_members.get(instance).cloned() {
                    // A static member restarted: it takes the old member's place.
                    let mut old = g.members.remove(&old_id).ok_or_else(|| {
                        PbError::new(ErrorCode::UnknownServerError, "static member map broken")
                    })?;
                    fence_waiting(&mut old);
                    // Kafka's rule: no rebalance while the group's chosen assignor stays the
                    // same (the restarted member's metadata, e.g. its owned partitions, may
                    // differ; the group keeps the assignment it has).
                    let unchanged = g
                        .protocol
                        .as_ref()
                        .is_some_and(|p| protocols.iter().any(|(n, _)| n == p));
                    let mut member = new_member(new_id.clone());
                    member.assignment = std::mem::take(&mut old.assignment);
                    g.members.insert(new_id.clone(), member);
                    g.static_members.insert(instance.clone(), new_id.clone());
                    let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                    if was_leader {
                        g.leader = Some(new_id.clone());
                    }
                    if g.state == GroupState::Stable && unchanged {
                        tracing::info!(group = %g.id, instance, old = %old_id, new = %new_id, "static member rejoined; no rebalance");
                        self.persist_in_background(partition, Self::group_write(g));
                        return Ok(JoinOutcome::Now(self.join_response(g, &new_id, was_leader)));
                    }
                    self.prepare_rebalance(g, "a static member rejoined with new metadata");
                    return Ok(JoinOutcome::Wait(self.await_join(g, &new_id)));
                }
                if g.members.len() >= self.config.group_max_size {
                    return Err(group_full(g));
                }
                g.members.insert(new_id.clone(), new_member(new_id.clone()));
                g.static_members.insert(instance.clone(), new_id.clone());
                self.prepare_rebalance(g, "a new static member joined");
                return Ok(JoinOutcome::Wait(self.await_join(g, &new_id)));
            }
            // KIP-394: a new dynamic member first learns its id, then joins with it.
            g.pending_members.insert(new_id.clone(), now + session);
            return Ok(JoinOutcome::Now(pb::JoinGroupResponse {
                error: err(
                    ErrorCode::MemberIdRequired,
                    "rejoin with the member id given",
                ),
                member_id: new_id,
                generation_id: -1,
                ..Default::default()
            }));
        }

        let id = req.member_id.clone();
        if g.pending_members.remove(&id).is_some() {
            if g.members.len() >= self.config.group_max_size {
                return Err(group_full(g));
            }
            g.members.insert(id.clone(), new_member(id.clone()));
            self.prepare_rebalance(g, "a new member joined");
            return Ok(JoinOutcome::Wait(self.await_join(g, &id)));
        }
        check_instance(g, &id, req.group_instance_id.as_deref())?;
        let Some(member) = g.members.get_mut(&id) else {
            return Err(PbError::new(
                ErrorCode::UnknownMemberId,
                format!("member `{id}` is not in group `{}`", g.id),
            ));
        };
        let unchanged = member.protocols == protocols;
        member.protocols = protocols;
        member.session_timeout = session;
        member.rebalance_timeout = rebalance;
        member.session_deadline = now + session;
        match g.state {
            GroupState::PreparingRebalance => Ok(JoinOutcome::Wait(self.await_join(g, &id))),
            GroupState::CompletingRebalance if unchanged => {
                let is_leader = g.leader.as_deref() == Some(id.as_str());
                Ok(JoinOutcome::Now(self.join_response(g, &id, is_leader)))
            }
            GroupState::Stable if unchanged && g.leader.as_deref() != Some(id.as_str()) => {
                Ok(JoinOutcome::Now(self.join_response(g, &id, false)))
            }
            _ => {
                self.prepare_rebalance(g, "a member rejoined");
                Ok(JoinOutcome::Wait(self.await_join(g, &id)))
            }
        }
    }

    fn await_join(&self, g: &mut Group, id: &str) -> oneshot::Receiver<pb::JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.members.get_mut(id) {
            m.awaiting_join = Some(tx);
            // A member that joined during an initial delay extends it (Kafka's
            // InitialDelayedJoin), bounded by the rebalance deadline.
            if let Some(until) = g.initial_delay_until {
                let extended = Instant::now() + self.config.group_initial_rebalance_delay;
                let bound = g.rebalance_deadline.unwrap_or(extended);
                g.initial_delay_until = Some(until.max(extended.min(bound)));
            }
        }
        rx
    }

    /// The join answer for the current generation (for the leader: every member).
    fn join_response(&self, g: &Group, member_id: &str, leader: bool) -> pb::JoinGroupResponse {
        let protocol = g.protocol.clone().unwrap_or_default();
        pb::JoinGroupResponse {
            error: None,
            generation_id: g.generation,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            leader: g.leader.clone().unwrap_or_default(),
            skip_assignment: leader && g.state == GroupState::Stable,
            member_id: member_id.to_owned(),
            members: if leader {
                g.members
                    .values()
                    .map(|m| pb::join_group_response::Member {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn prepare_rebalance(&self, g: &mut Group, reason: &str) {
        if g.state == GroupState::CompletingRebalance {
            for m in g.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(pb::SyncGroupResponse {
                        error: err(
                            ErrorCode::RebalanceInProgress,
                            "the group is rebalancing again; rejoin",
                        ),
                        ..Default::default()
                    });
                }
            }
        }
        if g.state == GroupState::PreparingRebalance {
            return;
        }
        let timeout = g
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        let now = Instant::now();
        g.rebalance_deadline = Some(now + timeout);
        g.initial_delay_until = (g.state == GroupState::Empty
            && !self.config.group_initial_rebalance_delay.is_zero())
        .then(|| now + self.config.group_initial_rebalance_delay.min(timeout));
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), reason, "preparing to rebalance");
        g.set_state(GroupState::PreparingRebalance);
        g.rebalances.send_modify(|n| *n += 1);
    }

    /// Completes the join phase once every member has rejoined (and any initial delay is
    /// over), or, from the ticker, once the rebalance deadline has passed.
    fn try_complete_join(self: &Arc<Self>, g: &mut Group) {
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        let now = Instant::now();
        let all_joined =
            g.members.values().all(|m| m.awaiting_join.is_some()) && g.pending_members.is_empty();
        let delayed = g.initial_delay_until.is_some_and(|t| now < t);
        let overdue = g.rebalance_deadline.is_some_and(|t| now >= t);
        if !(overdue || (all_joined && !delayed)) {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %g.id, member = %id, "member did not rejoin in time; removed");
            g.remove_member(&id);
        }
        g.initial_delay_until = None;
        g.rebalance_deadline = None;
        g.generation += 1;
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(GroupState::Empty);
            tracing::info!(group = %g.id, generation = g.generation, "group is empty");
            return;
        }
        g.protocol_type = g.members.values().next().map(|m| m.protocol_type.clone());
        g.protocol = Some(select_protocol(g));
        if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.set_state(GroupState::CompletingRebalance);
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = ?g.protocol, leader = ?g.leader, "rebalance: members joined");
        let leader = g.leader.clone().unwrap_or_default();
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let mut response = self.join_response(g, &id, id == leader);
            response.skip_assignment = false;
            if let Some(m) = g.members.get_mut(&id) {
                m.session_deadline = now + m.session_timeout;
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(response);
                }
            }
        }
    }

    // ---- SyncGroup ------------------------------------------------------------------------

    /// Kafka's SyncGroup: the leader's assignment is written, then every member gets its part.
    pub async fn sync_group(self: &Arc<Self>, req: pb::SyncGroupRequest) -> pb::SyncGroupResponse {
        let fail = |e: PbError| pb::SyncGroupResponse {
            error: Some(e),
            ..Default::default()
        };
        let (located, group) = match self.locate(&req.group_id) {
            Ok(Located {
                group: Some(g),
                partition,
                leader_epoch,
            }) => (
                Located {
                    group: None,
                    partition,
                    leader_epoch,
                },
                g,
            ),
            Ok(_) => {
                return fail(PbError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group `{}` has no members", req.group_id),
                ));
            }
            Err(e) => return fail(e),
        };
        let rx = {
            let mut g = lock(&group);
            if let Err(e) = check_member(&g, &req.member_id, req.group_instance_id.as_deref())
                .and_then(|()| check_generation(&g, req.generation_id))
            {
                return fail(e);
            }
            match g.state {
                GroupState::PreparingRebalance => {
                    return fail(PbError::new(
                        ErrorCode::RebalanceInProgress,
                        "the group is rebalancing; rejoin",
                    ));
                }
                GroupState::Stable => {
                    let m = &g.members[&req.member_id];
                    return pb::SyncGroupResponse {
                        error: None,
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        protocol_name: g.protocol.clone().unwrap_or_default(),
                        assignment: m.assignment.clone(),
                    };
                }
                GroupState::Empty | GroupState::Dead => {
                    return fail(PbError::new(
                        ErrorCode::UnknownMemberId,
                        format!("group `{}` has no members", req.group_id),
                    ));
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = g.members.get_mut(&req.member_id) {
                m.awaiting_sync = Some(tx);
            }
            if g.leader.as_deref() == Some(req.member_id.as_str()) {
                let mut assignments: HashMap<String, Bytes> = req
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.clone(), a.assignment.clone()))
                    .collect();
                for m in g.members.values_mut() {
                    m.assignment = assignments.remove(&m.id).unwrap_or_default();
                }
                let write = Self::group_write(&g);
                let generation = g.generation;
                let this = self.clone();
                let group = group.clone();
                let partition = located.partition;
                // Independent of the leader's request: the group must not stay stuck if the
                // leader goes away mid-write.
                crate::spawn(async move {
                    let result = this.append(partition, vec![write]).await;
                    let mut g = lock(&group);
                    if g.generation != generation || g.state != GroupState::CompletingRebalance {
                        return;
                    }
                    match result {
                        Ok(_) => {
                            g.set_state(GroupState::Stable);
                            tracing::info!(group = %g.id, generation, "rebalance complete: group stable");
                            let protocol_type = g.protocol_type.clone().unwrap_or_default();
                            let protocol_name = g.protocol.clone().unwrap_or_default();
                            for m in g.members.values_mut() {
                                if let Some(tx) = m.awaiting_sync.take() {
                                    let _ = tx.send(pb::SyncGroupResponse {
                                        error: None,
                                        protocol_type: protocol_type.clone(),
                                        protocol_name: protocol_name.clone(),
                                        assignment: m.assignment.clone(),
                                    });
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(group = %g.id, error = %e.message, "could not write the group's assignment");
                            for m in g.members.values_mut() {
                                m.assignment = Bytes::new();
                                if let Some(tx) = m.awaiting_sync.take() {
                                    let _ = tx.send(pb::SyncGroupResponse {
                                        error: Some(e.clone()),
                                        ..Default::default()
                                    });
                                }
                            }
                            this.prepare_rebalance(&mut g, "writing the assignment failed");
                        }
                    }
                });
            }
            rx
        };
        let timeout = self.config.offsets_commit_timeout + Duration::from_secs(60);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => fail(PbError::new(
                ErrorCode::NotCoordinator,
                "the coordinator stopped coordinating the group during the sync",
            )),
            Err(_) => fail(PbError::new(
                ErrorCode::RebalanceInProgress,
                "the leader's assignment did not arrive in time; rejoin",
            )),
        }
    }

    // ---- Heartbeat, LeaveGroup ------------------------------------------------------------

    /// Kafka's Heartbeat; with `max_wait_ms` (our extension) held while the group is stable,
    /// answered at once when a rebalance starts.
    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> pb::HeartbeatResponse {
        let wait = Duration::from_millis(u64::from(req.max_wait_ms).min(30_000));
        if !wait.is_zero()
            && let Ok(Located {
                group: Some(group), ..
            }) = self.locate(&req.group_id)
        {
            let mut rx = {
                let g = lock(&group);
                (g.state == GroupState::Stable && g.generation == req.generation_id)
                    .then(|| g.rebalances.subscribe())
            };
            if let Some(rx) = rx.as_mut() {
                // Refresh the session now too: the wait may be as long as the interval.
                let _ = self.heartbeat_now(&req);
                let _ = tokio::time::timeout(wait, rx.changed()).await;
            }
        }
        self.heartbeat_now(&req)
    }

    fn heartbeat_now(&self, req: &pb::HeartbeatRequest) -> pb::HeartbeatResponse {
        let result = (|| {
            let group = self.locate(&req.group_id)?.group.ok_or_else(|| {
                PbError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group `{}` has no members", req.group_id),
                )
            })?;
            let mut g = lock(&group);
            check_member(&g, &req.member_id, req.group_instance_id.as_deref())?;
            if g.state == GroupState::Empty || g.state == GroupState::Dead {
                return Err(PbError::new(
                    ErrorCode::UnknownMemberId,
                    "the group is empty",
                ));
            }
            if let Some(m) = g.members.get_mut(&req.member_id) {
                m.session_deadline = Instant::now() + m.session_timeout;
            }
            if g.state == GroupState::PreparingRebalance {
                return Err(PbError::new(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing; rejoin",
                ));
            }
            check_generation(&g, req.generation_id)
        })();
        pb::HeartbeatResponse {
            error: result.err(),
        }
    }

    /// Kafka's LeaveGroup.
    pub fn leave_group(self: &Arc<Self>, req: pb::LeaveGroupRequest) -> pb::LeaveGroupResponse {
        let group = match self.locate(&req.group_id) {
            Ok(Located { group: Some(g), .. }) => g,
            Ok(_) => {
                return pb::LeaveGroupResponse {
                    error: err(
                        ErrorCode::UnknownMemberId,
                        format!("group `{}` has no members", req.group_id),
                    ),
                    members: Vec::new(),
                };
            }
            Err(e) => {
                return pb::LeaveGroupResponse {
                    error: Some(e),
                    members: Vec::new(),
                };
            }
        };
        let mut g = lock(&group);
        let mut results = Vec::new();
        let mut left = 0;
        for leaving in &req.members {
            let id = if leaving.member_id.is_empty() {
                leaving
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| g.static_members.get(i).cloned())
                    .unwrap_or_default()
            } else {
                leaving.member_id.clone()
            };
            let error = if !g.members.contains_key(&id) {
                err(
                    ErrorCode::UnknownMemberId,
                    format!("member `{id}` is not in the group"),
                )
            } else if let Err(e) = check_instance(&g, &id, leaving.group_instance_id.as_deref()) {
                Some(e)
            } else {
                tracing::info!(group = %g.id, member = %id, reason = %leaving.reason, "member left");
                g.remove_member(&id);
                left += 1;
                None
            };
            results.push(pb::leave_group_response::Member {
                member_id: id,
                group_instance_id: leaving.group_instance_id.clone(),
                error,
            });
        }
        if left > 0 {
            self.after_members_removed(&mut g, "members left");
        }
        pb::LeaveGroupResponse {
            error: None,
            members: results,
        }
    }

    fn after_members_removed(self: &Arc<Self>, g: &mut Group, reason: &str) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(g, reason);
                self.try_complete_join(g);
            }
            GroupState::PreparingRebalance => self.try_complete_join(g),
            GroupState::Empty | GroupState::Dead => {}
        }
        if g.state == GroupState::Empty {
            let partition = self.partition_for(&g.id);
            self.persist_in_background(partition, Self::group_write(g));
        }
    }

    // ---- Offsets --------------------------------------------------------------------------

    /// Kafka's OffsetCommit: acknowledged once replicated.
    pub async fn offset_commit(&self, req: pb::OffsetCommitRequest) -> pb::OffsetCommitResponse {
        let respond = |error: &dyn Fn(&str, i32) -> Option<PbError>| pb::OffsetCommitResponse {
            topics: req
                .topics
                .iter()
                .map(|t| pb::offset_commit_response::Topic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| pb::offset_commit_response::Partition {
                            partition: p.partition,
                            error: error(&t.name, p.partition),
                        })
                        .collect(),
                })
                .collect(),
        };
        if req.group_id.is_empty() {
            let e = PbError::new(ErrorCode::InvalidGroupId, "the group id is empty");
            return respond(&|_, _| Some(e.clone()));
        }
        let checked = self.locate_or_create(&req.group_id).and_then(|(located, group)| {
            let mut g = lock(&group);
            if req.generation_id < 0 && req.member_id.is_empty() {
                if !g.members.is_empty() {
                    return Err(PbError::new(
                        ErrorCode::UnknownMemberId,
                        format!(
                            "group `{}` has active members; only they may commit (stop them first)",
                            g.id
                        ),
                    ));
                }
            } else {
                check_member(&g, &req.member_id, req.group_instance_id.as_deref())?;
                check_generation(&g, req.generation_id)?;
                if g.state == GroupState::CompletingRebalance {
                    return Err(PbError::new(
                        ErrorCode::RebalanceInProgress,
                        "the group is rebalancing; rejoin before committing",
                    ));
                }
                if let Some(m) = g.members.get_mut(&req.member_id) {
                    m.session_deadline = Instant::now() + m.session_timeout;
                }
            }
            if g.state == GroupState::Dead {
                g.set_state(GroupState::Empty);
            }
            Ok((located, group.clone()))
        });
        let (located, group) = match checked {
            Ok(found) => found,
            Err(e) => return respond(&|_, _| Some(e.clone())),
        };
        let ts = now_ms();
        let mut writes = Vec::new();
        let mut entries = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                if p.committed_metadata.len() > OFFSET_METADATA_MAX_BYTES {
                    continue;
                }
                let value = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.clone(),
                    commit_timestamp: ts,
                };
                writes.push((
                    records::encode_key(&Key::Offset {
                        group: req.group_id.clone(),
                        topic: t.name.clone(),
                        partition: p.partition,
                    }),
                    Some(records::encode_offset(&value)),
                ));
                entries.push(((t.name.clone(), p.partition), value));
            }
        }
        let written = if writes.is_empty() {
            Ok(0)
        } else {
            self.append(located.partition, writes).await
        };
        match written {
            Ok(base) => {
                let mut g = lock(&group);
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    g.put_offset(key, value, base + i as i64);
                }
                respond(&|topic, partition| {
                    let too_large = req
                        .topics
                        .iter()
                        .filter(|t| t.name == topic)
                        .flat_map(|t| &t.partitions)
                        .any(|p| {
                            p.partition == partition
                                && p.committed_metadata.len() > OFFSET_METADATA_MAX_BYTES
                        });
                    too_large.then(|| {
                        PbError::new(
                            ErrorCode::OffsetMetadataTooLarge,
                            format!(
                                "offset metadata is longer than {OFFSET_METADATA_MAX_BYTES} bytes"
                            ),
                        )
                    })
                })
            }
            Err(e) => respond(&|_, _| Some(e.clone())),
        }
    }

    /// Kafka's OffsetFetch.
    pub fn offset_fetch(&self, req: pb::OffsetFetchRequest) -> pb::OffsetFetchResponse {
        let located = match self.locate(&req.group_id) {
            Ok(l) => l,
            Err(e) => {
                return pb::OffsetFetchResponse {
                    error: Some(e),
                    topics: Vec::new(),
                };
            }
        };
        let offsets: BTreeMap<(String, i32), OffsetValue> = located
            .group
            .map(|g| {
                lock(&g)
                    .offsets
                    .iter()
                    .map(|(k, c)| (k.clone(), c.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let partition = |topic: &str, p: i32| {
            let found = offsets.get(&(topic.to_owned(), p));
            pb::offset_fetch_response::Partition {
                partition: p,
                committed_offset: found.map_or(-1, |v| v.offset),
                committed_leader_epoch: found.map_or(-1, |v| v.leader_epoch),
                metadata: found.map(|v| v.metadata.clone()).unwrap_or_default(),
                error: None,
            }
        };
        let topics = if req.topics.is_empty() {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, p) in offsets.keys() {
                by_topic.entry(topic.clone()).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(name, ps)| pb::offset_fetch_response::Topic {
                    partitions: ps.into_iter().map(|p| partition(&name, p)).collect(),
                    name,
                })
                .collect()
        } else {
            req.topics
                .iter()
                .map(|t| pb::offset_fetch_response::Topic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|&p| partition(&t.name, p))
                        .collect(),
                })
                .collect()
        };
        pb::OffsetFetchResponse {
            error: None,
            topics,
        }
    }

    // ---- Admin ----------------------------------------------------------------------------

    /// The groups this broker coordinates.
    pub fn list_groups(&self, req: pb::ListGroupsRequest) -> pb::ListGroupsResponse {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.shards)
            .values()
            .filter(|s| s.loaded)
            .flat_map(|s| s.groups.values().cloned())
            .collect();
        let mut out: Vec<pb::list_groups_response::Group> = groups
            .iter()
            .filter_map(|g| {
                let g = lock(g);
                let state = g.state.name();
                (g.state != GroupState::Dead
                    && (req.states_filter.is_empty()
                        || req
                            .states_filter
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(state))))
                .then(|| pb::list_groups_response::Group {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    group_state: state.to_owned(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        pb::ListGroupsResponse {
            error: None,
            groups: out,
        }
    }

    /// Kafka's DescribeGroups.
    pub fn describe_groups(&self, req: pb::DescribeGroupsRequest) -> pb::DescribeGroupsResponse {
        let me = self.manager.broker_id();
        let groups = req
            .groups
            .iter()
            .map(|id| {
                let dead = |error| pb::describe_groups_response::DescribedGroup {
                    error,
                    group_id: id.clone(),
                    group_state: GroupState::Dead.name().to_owned(),
                    coordinator_id: me,
                    ..Default::default()
                };
                match self.locate(id) {
                    Err(e) => dead(Some(e)),
                    Ok(Located { group: None, .. }) => dead(None),
                    Ok(Located { group: Some(g), .. }) => {
                        let g = lock(&g);
                        let protocol = g.protocol.clone().unwrap_or_default();
                        pb::describe_groups_response::DescribedGroup {
                            error: None,
                            group_id: id.clone(),
                            group_state: g.state.name().to_owned(),
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            protocol_data: protocol.clone(),
                            coordinator_id: me,
                            members: g
                                .members
                                .values()
                                .map(|m| pb::describe_groups_response::Member {
                                    member_id: m.id.clone(),
                                    group_instance_id: m.instance_id.clone(),
                                    client_id: m.client_id.clone(),
                                    client_host: m.client_host.clone(),
                                    member_metadata: m.metadata_for(&protocol),
                                    member_assignment: m.assignment.clone(),
                                })
                                .collect(),
                        }
                    }
                }
            })
            .collect();
        pb::DescribeGroupsResponse { groups }
    }

    /// Kafka's DeleteGroups: only empty groups; their offsets go too.
    pub async fn delete_groups(&self, req: pb::DeleteGroupsRequest) -> pb::DeleteGroupsResponse {
        let mut results = Vec::new();
        for id in &req.groups {
            let error = self.delete_group(id).await.err();
            results.push(pb::delete_groups_response::Result {
                group_id: id.clone(),
                error,
            });
        }
        pb::DeleteGroupsResponse { results }
    }

    async fn delete_group(&self, id: &str) -> Result<(), PbError> {
        let located = self.locate(id)?;
        let Some(group) = located.group else {
            return Err(PbError::new(
                ErrorCode::GroupIdNotFound,
                format!("group `{id}` does not exist"),
            ));
        };
        let writes = {
            let mut g = lock(&group);
            if g.state == GroupState::Dead {
                return Err(PbError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("group `{id}` does not exist"),
                ));
            }
            if !g.members.is_empty() {
                return Err(PbError::new(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "group `{id}` has {} active members; stop them first",
                        g.members.len()
                    ),
                ));
            }
            g.set_state(GroupState::Dead);
            tombstones(&g)
        };
        match self.append(located.partition, writes).await {
            Ok(_) => {
                let mut shards = lock(&self.shards);
                if let Some(shard) = shards.get_mut(&located.partition) {
                    shard.groups.remove(id);
                }
                tracing::info!(group = id, "group deleted");
                Ok(())
            }
            Err(e) => {
                lock(&group).set_state(GroupState::Empty);
                Err(e)
            }
        }
    }

    // ---- Maintenance: loading, sessions, deadlines, offset expiry --------------------------

    /// Runs until aborted: every tick, loads newly led `__consumer_offsets` partitions and
    /// unloads lost ones, expires sessions, completes rebalances past their deadline; now and
    /// then expires the offsets of long-empty groups.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        loop {
            ticker.tick().await;
            self.maintain();
            if last_expiry.elapsed() >= self.config.offsets_retention_check_interval {
                last_expiry = Instant::now();
                self.expire_offsets().await;
            }
        }
    }

    /// One maintenance pass (see [`GroupCoordinator::run`]).
    pub fn maintain(self: &Arc<Self>) {
        if !self.manager.session().is_ready() {
            return;
        }
        let me = self.manager.broker_id();
        let led: HashMap<i32, i32> = self
            .manager
            .partitions()
            .into_iter()
            .filter(|p| p.tp.topic == OFFSETS_TOPIC)
            .filter_map(|p| {
                let role = p.role();
                (role.leader == Some(me)).then_some((p.tp.partition, role.leader_epoch))
            })
            .collect();
        let mut to_load = Vec::new();
        {
            let mut shards = lock(&self.shards);
            shards.retain(|partition, shard| {
                let keep = led.get(partition) == Some(&shard.leader_epoch);
                if !keep {
                    tracing::info!(
                        partition,
                        epoch = shard.leader_epoch,
                        groups = shard.groups.len(),
                        "no longer leading this offsets partition: its groups are unloaded"
                    );
                    for g in shard.groups.values() {
                        let mut g = lock(g);
                        for m in g.members.values_mut() {
                            fence_waiting(m);
                        }
                        g.set_state(GroupState::Dead);
                    }
                }
                keep
            });
            for (&partition, &epoch) in &led {
                if let std::collections::hash_map::Entry::Vacant(slot) = shards.entry(partition) {
                    slot.insert(Shard {
                        leader_epoch: epoch,
                        loaded: false,
                        groups: HashMap::new(),
                    });
                    to_load.push((partition, epoch));
                }
            }
        }
        for (partition, epoch) in to_load {
            let this = self.clone();
            crate::spawn(async move {
                let loader = this.clone();
                let loaded = crate::spawn_blocking(move || loader.load(partition)).await;
                match loaded {
                    Ok(Ok(groups)) => {
                        let mut shards = lock(&this.shards);
                        if let Some(shard) = shards
                            .get_mut(&partition)
                            .filter(|s| s.leader_epoch == epoch && !s.loaded)
                        {
                            tracing::info!(
                                partition,
                                epoch,
                                groups = groups.len(),
                                "offsets partition loaded"
                            );
                            shard.groups = groups;
                            shard.loaded = true;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(partition, error = %e, "loading an offsets partition failed; retrying");
                        lock(&this.shards).remove(&partition);
                    }
                    Err(e) => {
                        tracing::error!(partition, error = %e, "offsets loader failed");
                        lock(&this.shards).remove(&partition);
                    }
                }
            });
        }

        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.shards)
            .values()
            .filter(|s| s.loaded)
            .flat_map(|s| s.groups.values().cloned())
            .collect();
        let now = Instant::now();
        for group in groups {
            let mut g = lock(&group);
            g.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.session_deadline <= now
                        && m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                })
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %g.id, member = %id, "member's session expired");
                g.remove_member(id);
            }
            if !expired.is_empty() {
                self.after_members_removed(&mut g, "sessions expired");
            }
            self.try_complete_join(&mut g);
        }
    }

    /// Replays `__consumer_offsets`-`partition` into groups.
    fn load(&self, partition: i32) -> anyhow::Result<HashMap<String, Arc<Mutex<Group>>>> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let p = self
            .manager
            .partition(&tp)
            .ok_or_else(|| anyhow::anyhow!("{tp} is not hosted here"))?;
        let log = p.log();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        let mut groups: HashMap<String, Group> = HashMap::new();
        while offset < end {
            let read = log.read(offset, 1 << 20, None, true)?;
            if read.records.is_empty() {
                break;
            }
            for batch in tributary_record::Batches::new(&read.records) {
                let (header, at, bytes) = batch?;
                if header.is_control() {
                    continue;
                }
                let batch = read.records.slice(at..at + bytes.len());
                for record in tributary_record::decode_records(&batch)? {
                    let Some(key) = record.key.as_deref() else {
                        continue;
                    };
                    let key = match records::decode_key(key) {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::warn!(partition = %tp, offset = record.offset, error = %e, "skipping a record");
                            continue;
                        }
                    };
                    let g = groups
                        .entry(key.group().to_owned())
                        .or_insert_with(|| Group::new(key.group()));
                    let value = match record.value.as_deref() {
                        None => None,
                        Some(v) => match records::decode_value(&key, v) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::warn!(partition = %tp, offset = record.offset, error = %e, "skipping a record");
                                continue;
                            }
                        },
                    };
                    g.replay(&key, value, record.offset);
                }
            }
            offset = read.next_offset.max(offset + 1);
        }
        let now = Instant::now();
        Ok(groups
            .into_iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .map(|(id, mut g)| {
                for m in g.members.values_mut() {
                    m.session_deadline = now + m.session_timeout;
                }
                (id, Arc::new(Mutex::new(g)))
            })
            .collect())
    }

    /// Tombstones the offsets of groups empty for longer than `offsets.retention.minutes`, and
    /// then the groups themselves.
    async fn expire_offsets(&self) {
        let retention = self.config.offsets_retention.as_millis() as i64;
        let now = now_ms();
        let shards: Vec<(i32, Vec<Arc<Mutex<Group>>>)> = lock(&self.shards)
            .iter()
            .filter(|(_, s)| s.loaded)
            .map(|(p, s)| (*p, s.groups.values().cloned().collect()))
            .collect();
        for (partition, groups) in shards {
            for group in groups {
                let (writes, id) = {
                    let mut g = lock(&group);
                    if g.state != GroupState::Empty {
                        continue;
                    }
                    let since = g.state_since_ms;
                    let expired: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, c)| now - since.max(c.value.commit_timestamp) > retention)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if expired.is_empty() && !g.offsets.is_empty() {
                        continue;
                    }
                    let mut writes: Vec<Write> = expired
                        .iter()
                        .map(|(topic, p)| {
                            (
                                records::encode_key(&Key::Offset {
                                    group: g.id.clone(),
                                    topic: topic.clone(),
                                    partition: *p,
                                }),
                                None,
                            )
                        })
                        .collect();
                    for k in &expired {
                        g.offsets.remove(k);
                    }
                    if g.offsets.is_empty() {
                        writes.push((
                            records::encode_key(&Key::Group {
                                group: g.id.clone(),
                            }),
                            None,
                        ));
                        g.set_state(GroupState::Dead);
                    }
                    (writes, g.id.clone())
                };
                if let Err(e) = self.append(partition, writes).await {
                    tracing::warn!(group = %id, error = %e.message, "could not expire offsets");
                    continue;
                }
                tracing::info!(group = %id, "expired the offsets of an empty group");
                if lock(&group).state == GroupState::Dead
                    && let Some(shard) = lock(&self.shards).get_mut(&partition)
                {
                    shard.groups.remove(&id);
                }
            }
        }
    }
}

enum JoinOutcome {
    Now(pb::JoinGroupResponse),
    Wait(oneshot::Receiver<pb::JoinGroupResponse>),
}

fn group_full(g: &Group) -> PbError {
    PbError::new(
        ErrorCode::GroupMaxSizeReached,
        format!("group `{}` has reached group.max.size", g.id),
    )
}

/// Answers a replaced or unloaded member's waiting requests.
fn fence_waiting(m: &mut Member) {
    if let Some(tx) = m.awaiting_join.take() {
        let _ = tx.send(pb::JoinGroupResponse {
            error: err(
                ErrorCode::FencedInstanceId,
                "another member took this member's place",
            ),
            generation_id: -1,
            member_id: m.id.clone(),
            ..Default::default()
        });
    }
    m.awaiting_sync.take();
}

fn check_instance(g: &Group, member_id: &str, instance: Option<&str>) -> Result<(), PbError> {
    if let Some(instance) = instance
        && let Some(current) = g.static_members.get(instance)
        && current != member_id
    {
        return Err(PbError::new(
            ErrorCode::FencedInstanceId,
            format!(
                "group.instance.id `{instance}` now belongs to member `{current}`, not `{member_id}`"
            ),
        ));
    }
    Ok(())
}

fn check_member(g: &Group, member_id: &str, instance: Option<&str>) -> Result<(), PbError> {
    check_instance(g, member_id, instance)?;
    if !g.members.contains_key(member_id) {
        return Err(PbError::new(
            ErrorCode::UnknownMemberId,
            format!("member `{member_id}` is not in group `{}`", g.id),
        ));
    }
    Ok(())
}

fn check_generation(g: &Group, generation: i32) -> Result<(), PbError> {
    if generation != g.generation {
        return Err(PbError::new(
            ErrorCode::IllegalGeneration,
            format!(
                "generation {generation} is not the group's current generation {}",
                g.generation
            ),
        ));
    }
    Ok(())
}

/// Kafka's vote: every member votes for its most preferred protocol among those all members
/// support; the most votes wins (ties: the first candidate in the first member's order).
fn select_protocol(g: &Group) -> String {
    let candidates: Vec<&String> = g
        .members
        .values()
        .next()
        .map(|first| {
            first
                .protocols
                .iter()
                .map(|(n, _)| n)
                .filter(|n| {
                    g.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut votes: HashMap<&String, usize> = HashMap::new();
    for m in g.members.values() {
        if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
            *votes.entry(n).or_default() += 1;
        }
    }
    candidates
        .iter()
        .max_by_key(|c| {
            (
                votes.get(*c).copied().unwrap_or(0),
                std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
            )
        })
        .map(|c| (*c).clone())
        .unwrap_or_default()
}

fn tombstones(g: &Group) -> Vec<Write> {
    let mut writes: Vec<Write> = g
        .offsets
        .keys()
        .map(|(topic, p)| {
            (
                records::encode_key(&Key::Offset {
                    group: g.id.clone(),
                    topic: topic.clone(),
                    partition: *p,
                }),
                None,
            )
        })
        .collect();
    writes.push((
        records::encode_key(&Key::Group {
            group: g.id.clone(),
        }),
        None,
    ));
    writes
}

impl Group {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            state: GroupState::Empty,
            state_since_ms: now_ms(),
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            rebalances: tokio::sync::watch::channel(0).0,
        }
    }

    fn set_state(&mut self, state: GroupState) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms();
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(instance) = &m.instance_id
                && self.static_members.get(instance).map(String::as_str) == Some(id)
            {
                self.static_members.remove(instance);
            }
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(pb::JoinGroupResponse {
                    error: err(ErrorCode::UnknownMemberId, "the member was removed"),
                    generation_id: -1,
                    member_id: id.to_owned(),
                    ..Default::default()
                });
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(pb::SyncGroupResponse {
                    error: err(ErrorCode::UnknownMemberId, "the member was removed"),
                    ..Default::default()
                });
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn put_offset(&mut self, key: (String, i32), value: OffsetValue, log_offset: i64) {
        match self.offsets.get(&key) {
            Some(existing) if existing.log_offset > log_offset => {}
            _ => {
                self.offsets.insert(key, Committed { value, log_offset });
            }
        }
    }

    /// Applies one record of `__consumer_offsets` while loading.
    fn replay(&mut self, key: &Key, value: Option<Value>, log_offset: i64) {
        match (key, value) {
            (
                Key::Offset {
                    topic, partition, ..
                },
                Some(Value::Offset(v)),
            ) => {
                self.put_offset((topic.clone(), *partition), v, log_offset);
                if self.state == GroupState::Dead {
                    self.set_state(GroupState::Empty);
                }
            }
            (
                Key::Offset {
                    topic, partition, ..
                },
                None,
            ) => {
                self.offsets.remove(&(topic.clone(), *partition));
            }
            (Key::Group { .. }, Some(Value::Group(v))) => {
                self.generation = v.generation;
                self.protocol_type = Some(v.protocol_type.clone()).filter(|s| !s.is_empty());
                self.protocol = v.protocol.clone();
                self.leader = v.leader.clone();
                self.state_since_ms = v.current_state_timestamp;
                self.members.clear();
                self.static_members.clear();
                let now = Instant::now();
                for m in v.members {
                    if let Some(instance) = &m.group_instance_id {
                        self.static_members
                            .insert(instance.clone(), m.member_id.clone());
                    }
                    let protocol = v.protocol.clone().unwrap_or_default();
                    self.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout: Duration::from_millis(m.session_timeout.max(0) as u64),
                            rebalance_timeout: Duration::from_millis(
                                m.rebalance_timeout.max(0) as u64
                            ),
                            protocol_type: v.protocol_type.clone(),
                            protocols: vec![(protocol, m.subscription)],
                            assignment: m.assignment,
                            awaiting_join: None,
                            awaiting_sync: None,
                            session_deadline: now,
                        },
                    );
                }
                self.state = if self.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
            (Key::Group { .. }, None) => {
                self.members.clear();
                self.static_members.clear();
                if self.offsets.is_empty() {
                    self.state = GroupState::Dead;
                } else {
                    self.state = GroupState::Empty;
                }
            }
            _ => {}
        }
    }
}
