//! The consumer with manual assignment: assign partitions, seek, and `poll` records in offset
//! order per partition. Fetches to every leader run concurrently and the next round is sent
//! before `poll` returns (pipelining), so the network works while the application does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::ErrorCode;

use crate::TopicPartition;
use crate::assignor::RebalanceProtocol;
use crate::cluster::Cluster;
use crate::config::{ConsumerConfig, OffsetReset, Properties};
use crate::error::{ClientError, Result};
use crate::group::{Membership, RebalanceListener};

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

/// What a group member subscribes to.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches.
    Pattern(regex::Regex),
}

/// A consumer: of assigned partitions ([`Consumer::assign`]), or as a member of the group
/// `group.id` ([`Consumer::subscribe`]), where each partition goes to one member at a time.
pub struct Consumer {
    config: ConsumerConfig,
    cluster: Arc<Cluster>,
    /// What `subscribe` asked for.
    subscription: Option<Subscription>,
    /// The group membership, once subscribed.
    group: Option<Membership>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// Next offset to commit per partition: after the last record `poll` returned.
    consumed: HashMap<TopicPartition, i64>,
    next_auto_commit: Instant,
    /// When a subscribed consumer next refreshes metadata (`metadata.max.age.ms`): new topics
    /// matching a pattern, partitions added to subscribed topics.
    next_metadata_refresh: Instant,
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
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            next_metadata_refresh: Instant::now(),
            config,
            cluster,
            subscription: None,
            group: None,
            listener: None,
            consumed: HashMap::new(),
            positions: HashMap::new(),
            buffered: VecDeque::new(),
            in_flight: HashMap::new(),
        })
    }

    /// The cluster this consumer talks to (for metadata).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Joins the group `group.id` (required) and consumes the partitions it assigns this
    /// member among `topics`; `poll` runs the rebalances.
    pub fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        self.start_group(Subscription::Topics(topics))
    }

    /// [`Consumer::subscribe`] to every non-internal topic whose whole name matches `pattern`
    /// (checked again as topics appear, every `metadata.max.age.ms`).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| ClientError::Config(format!("bad topic pattern `{pattern}`: {e}")))?;
        self.start_group(Subscription::Pattern(regex))
    }

    fn start_group(&mut self, subscription: Subscription) -> Result<()> {
        let group = self.config.group_id.clone().ok_or_else(|| {
            ClientError::Config("subscribe needs group.id (or use assign)".into())
        })?;
        if self.group.is_none() {
            self.assign(Vec::new());
            self.group = Some(Membership::new(
                group,
                self.cluster.clone(),
                self.config.clone(),
            ));
        }
        self.subscription = Some(subscription);
        Ok(())
    }

    /// Called from `poll` when the group moves partitions.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The member id and generation in the group (empty and -1 before joining).
    pub fn group_member(&self) -> Option<(String, i32)> {
        self.group.as_ref().map(|g| g.member())
    }

    /// Consumes exactly `partitions` from now on (positions of partitions kept are kept).
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.consumed.retain(|tp, _| partitions.contains(tp));
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
        if self.group.is_some() {
            self.maintain_group(timeout).await?;
        }
        loop {
            if !self.buffered.is_empty() {
                let n = self.buffered.len().min(self.config.max_poll_records);
                let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
                // A partition's records come in a run: note the last of each run only.
                for (i, r) in out.iter().enumerate() {
                    let run_ends = out
                        .get(i + 1)
                        .is_none_or(|next| next.partition != r.partition || next.topic != r.topic);
                    if run_ends {
                        self.consumed.insert(
                            TopicPartition::new(r.topic.clone(), r.partition),
                            r.offset + 1,
                        );
                    }
                }
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

    /// The topics the subscription covers now.
    async fn subscribed_topics(&mut self) -> Result<BTreeSet<String>> {
        let refresh = Instant::now() >= self.next_metadata_refresh;
        if refresh {
            self.next_metadata_refresh = Instant::now() + self.config.client.metadata_max_age;
        }
        match &self.subscription {
            None => Ok(BTreeSet::new()),
            Some(Subscription::Topics(t)) => {
                if refresh {
                    // The group's leader compares partition counts with the cache.
                    let _ = self.cluster.refresh(t).await;
                }
                Ok(t.iter().cloned().collect())
            }
            Some(Subscription::Pattern(re)) => {
                let metadata = if refresh {
                    self.cluster.refresh(&[]).await?
                } else {
                    self.cluster.metadata()
                };
                Ok(metadata
                    .topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned()
                    .collect())
            }
        }
    }

    /// Rejoins when needed (running the rebalance callbacks) and auto-commits when due. A
    /// rejoin waits at most `within` (the poll's timeout) and goes on in the background.
    async fn maintain_group(&mut self, within: Duration) -> Result<()> {
        let topics = self.subscribed_topics().await?;
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        group.polled();
        if !group.is_joining() && group.needs_join(&topics) {
            let owned: Vec<TopicPartition> = group.owned.iter().cloned().collect();
            if group.take_lost() {
                if !owned.is_empty() {
                    if let Some(l) = self.listener.as_mut() {
                        l.on_partitions_lost(&owned);
                    }
                    tracing::info!(
                        partitions = owned.len(),
                        "partitions lost (removed from the group)"
                    );
                }
                if let Some(g) = self.group.as_mut() {
                    g.owned.clear();
                }
                self.assign(Vec::new());
            } else if self
                .group
                .as_ref()
                .is_some_and(|g| g.protocol() == RebalanceProtocol::Eager)
                && !owned.is_empty()
            {
                // Eager: everything is given up before rejoining.
                if self.config.enable_auto_commit {
                    self.commit_owned(&owned).await;
                }
                if let Some(l) = self.listener.as_mut() {
                    l.on_partitions_revoked(&owned);
                }
                if let Some(g) = self.group.as_mut() {
                    g.owned.clear();
                }
                self.assign(Vec::new());
            }
            if let Some(group) = self.group.as_mut() {
                group.start_join(&topics);
            }
        }
        let finished = match self.group.as_mut() {
            Some(group) if group.is_joining() => group.finish_join(within).await?,
            _ => None,
        };
        if let Some(assigned) = finished {
            let Some(group) = self.group.as_mut() else {
                return Ok(());
            };
            let assigned: BTreeSet<TopicPartition> = assigned.into_iter().collect();
            let before = group.owned.clone();
            let revoked: Vec<TopicPartition> = before.difference(&assigned).cloned().collect();
            let added: Vec<TopicPartition> = assigned.difference(&before).cloned().collect();
            if !revoked.is_empty() {
                // Cooperative: only what moves is given up, and another round follows.
                if self.config.enable_auto_commit {
                    self.commit_owned(&revoked).await;
                }
                if let Some(l) = self.listener.as_mut() {
                    l.on_partitions_revoked(&revoked);
                }
            }
            let committed = match self.group.as_ref() {
                Some(g) if !added.is_empty() => g.committed(&added).await?,
                _ => HashMap::new(),
            };
            let group = self.group.as_mut().expect("checked above");
            group.owned = assigned.clone();
            if !revoked.is_empty() {
                group.request_rejoin();
            }
            self.assign(assigned.into_iter().collect());
            for tp in &added {
                if let Some(&offset) = committed.get(tp) {
                    self.positions.insert(tp.clone(), Some(offset));
                    self.consumed.insert(tp.clone(), offset);
                }
            }
            if !added.is_empty()
                && let Some(l) = self.listener.as_mut()
            {
                l.on_partitions_assigned(&added);
            }
        }
        let joining = self.group.as_ref().is_some_and(|g| g.is_joining());
        if self.config.enable_auto_commit && !joining && Instant::now() >= self.next_auto_commit {
            self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
            let owned = self.assignment();
            self.commit_owned(&owned).await;
        }
        Ok(())
    }

    /// Auto-commit of `partitions`' consumed positions (failures logged, as Kafka does).
    async fn commit_owned(&mut self, partitions: &[TopicPartition]) {
        let offsets: BTreeMap<TopicPartition, i64> = partitions
            .iter()
            .filter_map(|tp| self.consumed.get(tp).map(|o| (tp.clone(), *o)))
            .collect();
        if let Some(g) = self.group.as_ref()
            && let Err(err) = g.commit(&offsets, true).await
        {
            tracing::warn!(group = %g.group_id, error = %err, "auto-commit failed");
        }
    }

    /// Commits the positions `poll` has returned up to, for every assigned partition
    /// (Kafka's `commitSync()`); acknowledged once replicated.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .assignment()
            .into_iter()
            .filter_map(|tp| self.consumed.get(&tp).map(|o| (tp, *o)))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits these offsets (the next offset to consume per partition). Without a
    /// subscription (manual assignment) the commit is made from outside the group, which the
    /// coordinator accepts only while the group has no members.
    pub async fn commit_offsets(&mut self, offsets: BTreeMap<TopicPartition, i64>) -> Result<()> {
        let subscribed = self.subscription.is_some();
        let group = self.membership()?;
        group.commit(&offsets, subscribed).await
    }

    /// [`Consumer::commit_sync`] in the background; the handle says how it went.
    pub fn commit_async(&mut self) -> Result<JoinHandle<Result<()>>> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .assignment()
            .into_iter()
            .filter_map(|tp| self.consumed.get(&tp).map(|o| (tp, *o)))
            .collect();
        let subscribed = self.subscription.is_some();
        let cluster = self.cluster.clone();
        let group = self.membership()?;
        let group_id = group.group_id.clone();
        let (member_id, generation) = if subscribed {
            group.member()
        } else {
            (String::new(), -1)
        };
        let instance = self.config.group_instance_id.clone().filter(|_| subscribed);
        Ok(tokio::spawn(async move {
            let address = crate::group::find_coordinator(&cluster, &group_id).await?;
            crate::group::commit_offsets(
                &cluster, &address, &group_id, &member_id, generation, instance, &offsets,
            )
            .await
        }))
    }

    /// The group's committed offsets for `partitions` (absent: nothing committed).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        self.membership()?.committed(partitions).await
    }

    fn membership(&mut self) -> Result<&Membership> {
        if self.group.is_none() {
            let group =
                self.config.group_id.clone().ok_or_else(|| {
                    ClientError::Config("committing offsets needs group.id".into())
                })?;
            self.group = Some(Membership::new(
                group,
                self.cluster.clone(),
                self.config.clone(),
            ));
        }
        Ok(self.group.as_ref().expect("just set"))
    }

    /// Commits (with auto-commit) and leaves the group; stops fetching.
    pub async fn close(&mut self) -> Result<()> {
        self.cancel_fetches();
        if self.subscription.is_some() {
            let mut result = Ok(());
            if self.config.enable_auto_commit {
                result = self.commit_sync().await;
            }
            if let Some(g) = self.group.as_mut() {
                g.leave("the consumer is closing").await;
            }
            self.subscription = None;
            return result;
        }
        Ok(())
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
            if self.subscription.is_some() {
                // Committed as the group's position, so a restart does not reset again.
                self.consumed.insert(tp.clone(), offset);
            }
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
                    if let Some(last) = decode(&tp, &p.records, asked_at, &mut self.buffered)? {
                        next = last + 1;
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

/// Decodes whole batches into `out`, keeping the records at `from` or later (a fetch returns
/// whole batches, so the first may start before the position asked for); returns the offset of
/// the last record kept.
fn decode(
    tp: &TopicPartition,
    records: &Bytes,
    from: i64,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<Option<i64>> {
    let mut last = None;
    for item in tributary_record::Batches::new(records) {
        let (header, position, _) =
            item.map_err(|e| ClientError::Protocol(format!("{tp}: corrupt batch: {e}")))?;
        if header.is_control() {
            continue;
        }
        let batch = records.slice(position..position + header.total_len());
        let log_append_time =
            header.timestamp_type() == tributary_record::TimestampType::LogAppendTime;
        for r in tributary_record::decode_verified_records(&batch, &header)
            .map_err(|e| ClientError::Protocol(format!("{tp}: cannot decode a batch: {e}")))?
        {
            if r.offset < from {
                continue;
            }
            last = Some(r.offset);
            out.push_back(ConsumerRecord {
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
    Ok(last)
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
