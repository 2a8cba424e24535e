//! Consumer-group membership on the client: Kafka's ConsumerCoordinator.
//!
//! Finds the group's coordinator, joins (JoinGroup, then SyncGroup; the leader runs the
//! assignor), heartbeats from a background task, commits and fetches offsets, and leaves. The
//! [`crate::Consumer`] drives it from `poll`: a rebalance happens inside `poll`, with the
//! rebalance callbacks ([`RebalanceListener`]) called there, as in Kafka.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::group_client::GroupClient;
use tributary_proto::common::v1::ErrorCode;

use crate::TopicPartition;
use crate::assignor::{self, MemberSubscription, RebalanceProtocol};
use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::consumer_protocol::{Assignment, Subscription};
use crate::error::{ClientError, Result};

/// Called from `poll` when the consumer's partitions change in a group.
pub trait RebalanceListener: Send + Sync {
    /// Before partitions are taken away (their offsets are committed first with auto-commit).
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// After partitions are given (positions come from the committed offsets).
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// When the member was removed from the group (session expired, fenced): the partitions
    /// may already belong to another member, so nothing is committed.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// What the background heartbeat shares with the consumer.
#[derive(Debug)]
struct Shared {
    coordinator: Option<String>,
    member_id: String,
    generation: i32,
    rejoin_needed: bool,
    /// The member was removed: its partitions are lost, not revoked.
    lost: bool,
    /// A join is in flight (heartbeats pause; the coordinator keeps joining members alive).
    joining: bool,
    last_poll: Instant,
}

/// A consumer's membership of one group.
pub(crate) struct Membership {
    pub(crate) group_id: String,
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    shared: Arc<Mutex<Shared>>,
    heartbeat: Option<JoinHandle<()>>,
    /// A join in flight.
    pending: Option<JoinHandle<Result<JoinResult>>>,
    /// The partitions this member owns now.
    pub(crate) owned: BTreeSet<TopicPartition>,
    /// The leader's view when it assigned: partitions per subscribed topic.
    assigned_counts: Option<BTreeMap<String, i32>>,
    /// Topics subscribed at the last join.
    joined_topics: BTreeSet<String>,
    protocol: RebalanceProtocol,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(h) = self.pending.take() {
            h.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn client(cluster: &Cluster, address: &str) -> Result<GroupClient<Channel>> {
    Ok(GroupClient::new(cluster.channel(address)?))
}

fn wire(error: &Option<tributary_proto::common::v1::Error>) -> Option<ClientError> {
    ClientError::from_wire(error)
}

fn coordinator_moved(err: &ClientError) -> bool {
    matches!(
        err.code(),
        Some(
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
        )
    ) || matches!(
        err,
        ClientError::Unreachable { .. } | ClientError::Timeout(_)
    )
}

/// The coordinator remembered in `shared`, else found (and remembered).
async fn cached_coordinator(
    shared: &Mutex<Shared>,
    cluster: &Arc<Cluster>,
    group: &str,
) -> Result<String> {
    if let Some(c) = lock(shared).coordinator.clone() {
        return Ok(c);
    }
    let found = find_coordinator(cluster, group).await?;
    lock(shared).coordinator = Some(found.clone());
    Ok(found)
}

/// Finds the coordinator of `group` (retrying while it is being elected or loaded).
pub(crate) async fn find_coordinator(cluster: &Arc<Cluster>, group: &str) -> Result<String> {
    let deadline = Instant::now() + cluster.config().request_timeout;
    loop {
        let found = cluster
            .any(|address| {
                let cluster = cluster.clone();
                let request = pb::FindCoordinatorRequest {
                    key: group.to_owned(),
                    key_type: 0,
                };
                async move {
                    let mut c = client(&cluster, &address)
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    c.find_coordinator(request).await.map(|r| r.into_inner())
                }
            })
            .await?;
        match wire(&found.error) {
            None => return Ok(found.address),
            Some(err) if err.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(group, error = %err, "no coordinator yet");
                tokio::time::sleep(
                    cluster
                        .config()
                        .retry_backoff
                        .max(Duration::from_millis(200)),
                )
                .await;
            }
            Some(err) => return Err(err),
        }
    }
}

impl Membership {
    pub(crate) fn new(group_id: String, cluster: Arc<Cluster>, config: ConsumerConfig) -> Self {
        let protocol = if config
            .partition_assignment_strategy
            .iter()
            .filter_map(|n| assignor::by_name(n))
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        };
        Self {
            group_id,
            cluster,
            config,
            shared: Arc::new(Mutex::new(Shared {
                coordinator: None,
                member_id: String::new(),
                generation: -1,
                rejoin_needed: true,
                lost: false,
                joining: false,
                last_poll: Instant::now(),
            })),
            heartbeat: None,
            pending: None,
            owned: BTreeSet::new(),
            assigned_counts: None,
            joined_topics: BTreeSet::new(),
            protocol,
        }
    }

    /// Eager or cooperative rebalancing (cooperative only if every configured assignor is).
    pub(crate) fn protocol(&self) -> RebalanceProtocol {
        self.protocol
    }

    /// The member id and generation (for `consumer-groups` and tests).
    pub(crate) fn member(&self) -> (String, i32) {
        let s = lock(&self.shared);
        (s.member_id.clone(), s.generation)
    }

    pub(crate) fn polled(&self) {
        lock(&self.shared).last_poll = Instant::now();
    }

    /// Whether a (re)join is due: asked for by the coordinator, never joined, the subscription
    /// changed, or (leader) a subscribed topic's partition count changed.
    pub(crate) fn needs_join(&self, topics: &BTreeSet<String>) -> bool {
        if lock(&self.shared).rejoin_needed || *topics != self.joined_topics {
            return true;
        }
        if let Some(counts) = &self.assigned_counts {
            let metadata = self.cluster.metadata();
            for (topic, count) in counts {
                if let Some(t) = metadata.topics.get(topic)
                    && t.partitions.len() as i32 != *count
                {
                    tracing::info!(group = %self.group_id, topic, "partition count changed; rebalancing");
                    return true;
                }
            }
        }
        false
    }

    /// Asks for another join (cooperative: after giving up partitions).
    pub(crate) fn request_rejoin(&self) {
        lock(&self.shared).rejoin_needed = true;
    }

    /// Takes the "lost" flag: the member was removed since the last join.
    pub(crate) fn take_lost(&self) -> bool {
        std::mem::take(&mut lock(&self.shared).lost)
    }

    async fn coordinator(&self) -> Result<String> {
        cached_coordinator(&self.shared, &self.cluster, &self.group_id).await
    }

    fn forget_coordinator(&self) {
        lock(&self.shared).coordinator = None;
    }

    /// Starts a (re)join in the background: JoinGroup, then SyncGroup (the leader runs the
    /// assignor). [`Membership::finish_join`] collects it, so `poll` keeps its timeout while a
    /// rebalance waits for other members.
    pub(crate) fn start_join(&mut self, topics: &BTreeSet<String>) {
        if self.pending.is_some() {
            return;
        }
        lock(&self.shared).joining = true;
        let joiner = Joiner {
            group_id: self.group_id.clone(),
            cluster: self.cluster.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            owned: self.owned.clone(),
            topics: topics.clone(),
        };
        self.pending = Some(tokio::spawn(joiner.run()));
    }

    /// Whether a join is in flight.
    pub(crate) fn is_joining(&self) -> bool {
        self.pending.is_some()
    }

    /// Waits up to `within` for the join in flight: the new assignment once it completes,
    /// `None` while it is still waiting for the group.
    pub(crate) async fn finish_join(
        &mut self,
        within: Duration,
    ) -> Result<Option<Vec<TopicPartition>>> {
        let Some(handle) = self.pending.as_mut() else {
            return Ok(None);
        };
        let joined = match tokio::time::timeout(within, handle).await {
            Err(_) => return Ok(None),
            Ok(joined) => joined,
        };
        self.pending = None;
        lock(&self.shared).joining = false;
        let result =
            joined.map_err(|e| ClientError::Protocol(format!("the join task failed: {e}")))??;
        self.joined_topics = result.topics;
        self.protocol = result.protocol;
        self.assigned_counts = result.counts;
        lock(&self.shared).rejoin_needed = false;
        self.ensure_heartbeat();
        Ok(Some(result.assigned))
    }

    fn ensure_heartbeat(&mut self) {
        if self.heartbeat.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let shared = self.shared.clone();
        let cluster = self.cluster.clone();
        let group = self.group_id.clone();
        let config = self.config.clone();
        self.heartbeat = Some(tokio::spawn(heartbeat_loop(shared, cluster, group, config)));
    }

    /// Commits `offsets` (next offsets to consume, with metadata) as this member, or from
    /// outside the group when `as_member` is false.
    pub(crate) async fn commit(
        &self,
        offsets: &BTreeMap<TopicPartition, i64>,
        as_member: bool,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.client.request_timeout;
        loop {
            let (member_id, generation) = if as_member {
                self.member()
            } else {
                (String::new(), -1)
            };
            let result = commit_offsets(
                &self.cluster,
                &self.coordinator().await?,
                &self.group_id,
                &member_id,
                generation,
                self.config.group_instance_id.clone().filter(|_| as_member),
                offsets,
            )
            .await;
            match result {
                Err(err) if coordinator_moved(&err) && Instant::now() < deadline => {
                    self.forget_coordinator();
                    tokio::time::sleep(self.config.client.retry_backoff).await;
                }
                Err(err) => {
                    if matches!(
                        err.code(),
                        Some(
                            ErrorCode::UnknownMemberId
                                | ErrorCode::IllegalGeneration
                                | ErrorCode::RebalanceInProgress
                        )
                    ) {
                        lock(&self.shared).rejoin_needed = true;
                    }
                    return Err(err);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// The group's committed offsets for `partitions` (absent: nothing committed).
    pub(crate) async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let deadline = Instant::now() + self.config.client.request_timeout;
        loop {
            let address = self.coordinator().await?;
            match fetch_offsets(&self.cluster, &address, &self.group_id, partitions).await {
                Err(err) if coordinator_moved(&err) && Instant::now() < deadline => {
                    self.forget_coordinator();
                    tokio::time::sleep(self.config.client.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Leaves the group (static members stay until their session expires, as in Kafka).
    pub(crate) async fn leave(&mut self, reason: &str) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(h) = self.pending.take() {
            h.abort();
            lock(&self.shared).joining = false;
        }
        let (member_id, _) = self.member();
        if member_id.is_empty() || self.config.group_instance_id.is_some() {
            return;
        }
        if let Ok(address) = self.coordinator().await {
            let _ = leave_group(&self.cluster, &address, &self.group_id, &member_id, reason).await;
        }
        let mut s = lock(&self.shared);
        s.member_id.clear();
        s.generation = -1;
        s.rejoin_needed = true;
    }
}

/// What a completed join gives the consumer.
struct JoinResult {
    assigned: Vec<TopicPartition>,
    protocol: RebalanceProtocol,
    /// The leader's partition counts per topic when it assigned.
    counts: Option<BTreeMap<String, i32>>,
    topics: BTreeSet<String>,
}

/// A join in flight (a task of its own, so `poll` can return meanwhile).
struct Joiner {
    group_id: String,
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    shared: Arc<Mutex<Shared>>,
    owned: BTreeSet<TopicPartition>,
    topics: BTreeSet<String>,
}

impl Joiner {
    async fn coordinator(&self) -> Result<String> {
        cached_coordinator(&self.shared, &self.cluster, &self.group_id).await
    }

    fn forget_coordinator(&self) {
        lock(&self.shared).coordinator = None;
    }

    /// Joins and syncs until it succeeds or a fatal error; bounded by `max.poll.interval.ms`.
    async fn run(mut self) -> Result<JoinResult> {
        let deadline = Instant::now() + self.config.max_poll_interval;
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(format!(
                    "could not join group `{}` within max.poll.interval.ms",
                    self.group_id
                )));
            }
            match self.join_once().await {
                Ok(result) => return Ok(result),
                Err(err) => {
                    let code = err.code();
                    match code {
                        Some(ErrorCode::MemberIdRequired) => continue,
                        Some(ErrorCode::UnknownMemberId) => {
                            let mut s = lock(&self.shared);
                            s.member_id.clear();
                            s.generation = -1;
                            continue;
                        }
                        Some(ErrorCode::IllegalGeneration | ErrorCode::RebalanceInProgress) => {
                            continue;
                        }
                        _ if coordinator_moved(&err) => {
                            tracing::debug!(group = %self.group_id, error = %err, "coordinator moved; finding it again");
                            self.forget_coordinator();
                            tokio::time::sleep(
                                self.config
                                    .client
                                    .retry_backoff
                                    .max(Duration::from_millis(100)),
                            )
                            .await;
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }

    async fn join_once(&mut self) -> Result<JoinResult> {
        let address = self.coordinator().await?;
        let (member_id, generation) = {
            let s = lock(&self.shared);
            (s.member_id.clone(), s.generation)
        };
        let mut subscription = Subscription::new(self.topics.iter().cloned());
        subscription.owned_partitions = self.owned.iter().cloned().collect();
        subscription.generation_id = generation;
        let metadata = subscription.encode()?;
        let request = pb::JoinGroupRequest {
            group_id: self.group_id.clone(),
            session_timeout_ms: self.config.session_timeout.as_millis() as i32,
            rebalance_timeout_ms: self.config.max_poll_interval.as_millis() as i32,
            member_id,
            group_instance_id: self.config.group_instance_id.clone(),
            protocol_type: "consumer".into(),
            protocols: self
                .config
                .partition_assignment_strategy
                .iter()
                .map(|name| pb::join_group_request::Protocol {
                    name: name.clone(),
                    metadata: metadata.clone(),
                })
                .collect(),
            client_id: self.config.client.client_id.clone(),
            reason: String::new(),
        };
        let mut c = client(&self.cluster, &address)?;
        let joined = c
            .join_group(request)
            .await
            .map_err(|s| ClientError::from_status(&address, s))?
            .into_inner();
        if let Some(err) = wire(&joined.error) {
            if err.code() == Some(ErrorCode::MemberIdRequired) {
                lock(&self.shared).member_id = joined.member_id.clone();
            }
            return Err(err);
        }
        {
            let mut s = lock(&self.shared);
            s.member_id = joined.member_id.clone();
            s.generation = joined.generation_id;
        }
        let protocol = assignor::by_name(&joined.protocol_name)
            .map_or(RebalanceProtocol::Eager, |a| a.protocol());
        let leader = joined.leader == joined.member_id;
        let mut assignments = Vec::new();
        let mut assigned_counts = None;
        if leader && !joined.skip_assignment {
            let (computed, counts) = self.assign(&joined).await?;
            assignments = computed;
            assigned_counts = Some(counts);
        }
        let sync = pb::SyncGroupRequest {
            group_id: self.group_id.clone(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
            protocol_type: joined.protocol_type.clone(),
            protocol_name: joined.protocol_name.clone(),
            assignments,
        };
        let synced = c
            .sync_group(sync)
            .await
            .map_err(|s| ClientError::from_status(&address, s))?
            .into_inner();
        if let Some(err) = wire(&synced.error) {
            return Err(err);
        }
        let assignment = if synced.assignment.is_empty() {
            Assignment::new(Vec::new())
        } else {
            Assignment::decode(&synced.assignment)?
        };
        tracing::info!(group = %self.group_id, generation = joined.generation_id, member = %joined.member_id, leader, partitions = assignment.partitions.len(), "joined the group");
        Ok(JoinResult {
            assigned: assignment.partitions,
            protocol,
            counts: assigned_counts,
            topics: self.topics.clone(),
        })
    }

    /// The leader's job: run the chosen assignor over every member's subscription.
    async fn assign(
        &self,
        joined: &pb::JoinGroupResponse,
    ) -> Result<(
        Vec<pb::sync_group_request::Assignment>,
        BTreeMap<String, i32>,
    )> {
        let assignor = assignor::by_name(&joined.protocol_name).ok_or_else(|| {
            ClientError::Protocol(format!(
                "the group chose assignor `{}`, which this client does not know",
                joined.protocol_name
            ))
        })?;
        let mut members = BTreeMap::new();
        let mut topics = BTreeSet::new();
        for m in &joined.members {
            let subscription = Subscription::decode(&m.metadata)?;
            topics.extend(subscription.topics.iter().cloned());
            members.insert(
                m.member_id.clone(),
                MemberSubscription {
                    group_instance_id: m.group_instance_id.clone(),
                    subscription,
                },
            );
        }
        let topics: Vec<String> = topics.into_iter().collect();
        let metadata = self.cluster.refresh(&topics).await?;
        let counts: BTreeMap<String, i32> = topics
            .iter()
            .filter_map(|t| {
                metadata
                    .topics
                    .get(t)
                    .map(|info| (t.clone(), info.partitions.len() as i32))
            })
            .collect();
        let assigned = assignor.assign(&counts, &members);
        let mut out = Vec::new();
        for (member_id, partitions) in assigned {
            out.push(pb::sync_group_request::Assignment {
                member_id,
                assignment: Assignment::new(partitions).encode()?,
            });
        }
        Ok((out, counts))
    }
}

async fn leave_group(
    cluster: &Cluster,
    address: &str,
    group: &str,
    member_id: &str,
    reason: &str,
) -> Result<()> {
    let response = client(cluster, address)?
        .leave_group(pb::LeaveGroupRequest {
            group_id: group.to_owned(),
            members: vec![pb::leave_group_request::Member {
                member_id: member_id.to_owned(),
                group_instance_id: None,
                reason: reason.to_owned(),
            }],
        })
        .await
        .map_err(|s| ClientError::from_status(address, s))?
        .into_inner();
    match wire(&response.error) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// OffsetCommit on `address`; the first per-partition error, if any.
pub(crate) async fn commit_offsets(
    cluster: &Cluster,
    address: &str,
    group: &str,
    member_id: &str,
    generation: i32,
    group_instance_id: Option<String>,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let mut topics: Vec<pb::offset_commit_request::Topic> = Vec::new();
    for (tp, offset) in offsets {
        let p = pb::offset_commit_request::Partition {
            partition: tp.partition,
            committed_offset: *offset,
            committed_leader_epoch: -1,
            committed_metadata: String::new(),
        };
        match topics.iter_mut().find(|t| t.name == tp.topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(pb::offset_commit_request::Topic {
                name: tp.topic.clone(),
                partitions: vec![p],
            }),
        }
    }
    let response = client(cluster, address)?
        .offset_commit(pb::OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id: generation,
            member_id: member_id.to_owned(),
            group_instance_id,
            topics,
        })
        .await
        .map_err(|s| ClientError::from_status(address, s))?
        .into_inner();
    for t in &response.topics {
        for p in &t.partitions {
            if let Some(err) = wire(&p.error) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// OffsetFetch on `address` (empty `partitions`: every committed partition).
pub(crate) async fn fetch_offsets(
    cluster: &Cluster,
    address: &str,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, i64>> {
    let mut topics: Vec<pb::offset_fetch_request::Topic> = Vec::new();
    for tp in partitions {
        match topics.iter_mut().find(|t| t.name == tp.topic) {
            Some(t) => t.partitions.push(tp.partition),
            None => topics.push(pb::offset_fetch_request::Topic {
                name: tp.topic.clone(),
                partitions: vec![tp.partition],
            }),
        }
    }
    let response = client(cluster, address)?
        .offset_fetch(pb::OffsetFetchRequest {
            group_id: group.to_owned(),
            topics,
        })
        .await
        .map_err(|s| ClientError::from_status(address, s))?
        .into_inner();
    if let Some(err) = wire(&response.error) {
        return Err(err);
    }
    let mut out = HashMap::new();
    for t in response.topics {
        for p in t.partitions {
            if let Some(err) = wire(&p.error) {
                return Err(err);
            }
            if p.committed_offset >= 0 {
                out.insert(
                    TopicPartition::new(t.name.clone(), p.partition),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Heartbeats every `heartbeat.interval.ms`; flags a rejoin when the coordinator asks for one,
/// and leaves the group when the application stops polling for `max.poll.interval.ms`.
async fn heartbeat_loop(
    shared: Arc<Mutex<Shared>>,
    cluster: Arc<Cluster>,
    group: String,
    config: ConsumerConfig,
) {
    // While joining (or before the first join) the loop checks often, so the first heartbeat
    // of a new generation goes out at once and is held: a rebalance starting right after a
    // join is then noticed in a round trip too.
    const IDLE_CHECK: Duration = Duration::from_millis(50);
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        next = Instant::now() + IDLE_CHECK;
        let (coordinator, member_id, generation, last_poll, joining) = {
            let s = lock(&shared);
            (
                s.coordinator.clone(),
                s.member_id.clone(),
                s.generation,
                s.last_poll,
                s.joining,
            )
        };
        // Heartbeats go on while a rejoin is pending (the session must not expire before the
        // application polls again), but pause during the join itself.
        if member_id.is_empty() || generation < 0 || joining {
            continue;
        }
        // Held heartbeats return early when a rebalance starts; otherwise at least the
        // interval passes between the starts of two heartbeats.
        next = Instant::now() + config.heartbeat_interval;
        let address = match coordinator {
            Some(a) => a,
            None => match cached_coordinator(&shared, &cluster, &group).await {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        if last_poll.elapsed() > config.max_poll_interval {
            tracing::warn!(group, member = %member_id, "poll not called within max.poll.interval.ms; leaving the group");
            if config.group_instance_id.is_none() {
                let _ = leave_group(
                    &cluster,
                    &address,
                    &group,
                    &member_id,
                    "consumer poll timeout has expired",
                )
                .await;
            }
            let mut s = lock(&shared);
            s.member_id.clear();
            s.generation = -1;
            s.rejoin_needed = true;
            s.lost = true;
            continue;
        }
        let request = pb::HeartbeatRequest {
            group_id: group.clone(),
            generation_id: generation,
            member_id: member_id.clone(),
            group_instance_id: config.group_instance_id.clone(),
            max_wait_ms: config.heartbeat_interval.as_millis().min(30_000) as u32,
        };
        let result = match client(&cluster, &address) {
            Ok(mut c) => c
                .heartbeat(request)
                .await
                .map_err(|s| ClientError::from_status(&address, s))
                .map(|r| wire(&r.into_inner().error)),
            Err(e) => Err(e),
        };
        let err = match result {
            Ok(None) => continue,
            Ok(Some(err)) | Err(err) => err,
        };
        let mut s = lock(&shared);
        if s.generation != generation {
            continue; // a rejoin happened meanwhile
        }
        match err.code() {
            Some(ErrorCode::RebalanceInProgress) => s.rejoin_needed = true,
            Some(ErrorCode::UnknownMemberId | ErrorCode::FencedInstanceId) => {
                tracing::info!(group, error = %err, "removed from the group; rejoining");
                s.member_id.clear();
                s.generation = -1;
                s.rejoin_needed = true;
                s.lost = true;
            }
            Some(ErrorCode::IllegalGeneration) => {
                s.rejoin_needed = true;
                s.lost = true;
            }
            _ if coordinator_moved(&err) => s.coordinator = None,
            _ => tracing::debug!(group, error = %err, "heartbeat failed"),
        }
    }
}
