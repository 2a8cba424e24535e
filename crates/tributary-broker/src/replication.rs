//! The follower side of replication: one fetcher per leader broker, carrying every partition
//! this broker follows from that leader over one stream, behind a transport trait (gRPC today).
//! The follower's reaction to each answer is a plain function ([`on_epoch_end`],
//! [`on_fetched`]) that the deterministic replication simulation (`tests/replication_sim/`)
//! drives directly.
//!
//! A partition that starts following a leader epoch first asks the leader where its own latest
//! epoch ends (KIP-101/279) and truncates what the leader does not have; only then does it
//! fetch, appending the leader's bytes unchanged and learning the high watermark.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};
use tributary_metadata::BrokerId;
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::replication_client::ReplicationClient;
use tributary_proto::common::v1::ErrorCode;

use crate::api::TopicPartition;
use crate::manager::{Followed, ReplicaManager};
use crate::partition::Partition;

/// A boxed future (the transport traits are object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection from this follower to one leader.
pub trait LeaderLink: Send {
    /// One fetch round.
    fn fetch(
        &mut self,
        request: pb::ReplicaFetchRequest,
    ) -> BoxFuture<'_, Result<pb::ReplicaFetchResponse, Status>>;
    /// Where the leader's epochs end.
    fn offsets_for_leader_epoch(
        &mut self,
        request: pb::OffsetsForLeaderEpochRequest,
    ) -> BoxFuture<'_, Result<pb::OffsetsForLeaderEpochResponse, Status>>;
}

/// Makes links to leaders.
pub trait ReplicaTransport: Send + Sync {
    /// A link to `leader` at `address` (connecting lazily).
    fn link(&self, leader: BrokerId, address: &str) -> Result<Box<dyn LeaderLink>, Status>;
}

/// Replication over gRPC: one bidirectional `ReplicaFetch` stream per leader.
#[derive(Debug, Default)]
pub struct GrpcTransport;

impl ReplicaTransport for GrpcTransport {
    fn link(&self, _leader: BrokerId, address: &str) -> Result<Box<dyn LeaderLink>, Status> {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("leader address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .max_frame_size(crate::MAX_FRAME_SIZE)
            .connect_lazy();
        let client = ReplicationClient::new(channel)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        Ok(Box::new(GrpcLink {
            client,
            stream: None,
        }))
    }
}

struct GrpcLink {
    client: ReplicationClient<Channel>,
    stream: Option<(
        mpsc::Sender<pb::ReplicaFetchRequest>,
        Streaming<pb::ReplicaFetchResponse>,
    )>,
}

impl LeaderLink for GrpcLink {
    fn fetch(
        &mut self,
        request: pb::ReplicaFetchRequest,
    ) -> BoxFuture<'_, Result<pb::ReplicaFetchResponse, Status>> {
        Box::pin(async move {
            if self.stream.is_none() {
                let (tx, rx) = mpsc::channel(1);
                let responses = self
                    .client
                    .replica_fetch(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                self.stream = Some((tx, responses));
            }
            let (tx, responses) = self.stream.as_mut().expect("opened above");
            let sent = tx.send(request).await;
            let answer = match sent {
                Ok(()) => responses.message().await,
                Err(_) => Ok(None),
            };
            match answer {
                Ok(Some(response)) => Ok(response),
                Ok(None) => {
                    self.stream = None;
                    Err(Status::unavailable(
                        "the leader closed the replication stream",
                    ))
                }
                Err(status) => {
                    self.stream = None;
                    Err(status)
                }
            }
        })
    }

    fn offsets_for_leader_epoch(
        &mut self,
        request: pb::OffsetsForLeaderEpochRequest,
    ) -> BoxFuture<'_, Result<pb::OffsetsForLeaderEpochResponse, Status>> {
        Box::pin(async move {
            Ok(self
                .client
                .offsets_for_leader_epoch(request)
                .await?
                .into_inner())
        })
    }
}

#[derive(Debug)]
struct Follow {
    partition: Arc<Partition>,
    epoch: i32,
    /// Truncated against the leader for `epoch`: ready to fetch.
    truncated: bool,
    /// Not before this instant (after a retriable error).
    retry_at: Option<Instant>,
}

/// The partitions followed from one leader, and the task fetching them.
#[derive(Debug)]
struct Fetcher {
    leader: BrokerId,
    follows: Mutex<HashMap<TopicPartition, Follow>>,
    wake: Notify,
}

/// A fetcher and its task.
type FetcherTask = (Arc<Fetcher>, tokio::task::JoinHandle<()>);

/// One followed partition as a fetch round sees it: partition, handle, epoch, truncated, retry
/// time.
type Snapshot = (TopicPartition, Arc<Partition>, i32, bool, Option<Instant>);

/// Every fetcher of this broker, one per leader.
pub struct Fetchers {
    manager: Arc<ReplicaManager>,
    transport: Arc<dyn ReplicaTransport>,
    by_leader: Mutex<HashMap<BrokerId, FetcherTask>>,
}

impl std::fmt::Debug for Fetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetchers").finish_non_exhaustive()
    }
}

impl Fetchers {
    /// No fetchers yet.
    pub fn new(manager: Arc<ReplicaManager>, transport: Arc<dyn ReplicaTransport>) -> Self {
        Self {
            manager,
            transport,
            by_leader: Mutex::new(HashMap::new()),
        }
    }

    /// Follows exactly `followed`: partitions move between fetchers as leaders change, and a
    /// new leader epoch means truncating against the leader again before fetching.
    pub fn update(&self, followed: Vec<Followed>) {
        let mut wanted: HashMap<BrokerId, Vec<Followed>> = HashMap::new();
        for f in followed {
            wanted.entry(f.leader).or_default().push(f);
        }
        let mut by_leader = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        by_leader.retain(|leader, (_, task)| {
            let keep = wanted.contains_key(leader);
            if !keep {
                task.abort();
            }
            keep
        });
        for (leader, partitions) in wanted {
            let (fetcher, _) = by_leader.entry(leader).or_insert_with(|| {
                let fetcher = Arc::new(Fetcher {
                    leader,
                    follows: Mutex::new(HashMap::new()),
                    wake: Notify::new(),
                });
                let span = tracing::info_span!("fetcher", leader);
                let task = crate::spawn(tracing::Instrument::instrument(
                    run(
                        fetcher.clone(),
                        self.manager.clone(),
                        self.transport.clone(),
                    ),
                    span,
                ));
                (fetcher, task)
            });
            let mut follows = fetcher.follows.lock().unwrap_or_else(|p| p.into_inner());
            let keep: std::collections::HashSet<TopicPartition> =
                partitions.iter().map(|f| f.partition.tp.clone()).collect();
            follows.retain(|tp, _| keep.contains(tp));
            for f in partitions {
                let tp = f.partition.tp.clone();
                match follows.get_mut(&tp) {
                    Some(existing)
                        if existing.epoch == f.leader_epoch
                            && Arc::ptr_eq(&existing.partition, &f.partition) => {}
                    _ => {
                        follows.insert(
                            tp,
                            Follow {
                                partition: f.partition,
                                epoch: f.leader_epoch,
                                truncated: false,
                                retry_at: None,
                            },
                        );
                    }
                }
            }
            drop(follows);
            fetcher.wake.notify_one();
        }
    }

    /// Stops every fetcher.
    pub fn stop(&self) {
        for (_, (_, task)) in self
            .by_leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            task.abort();
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a partition waits after a retriable error (the metadata usually catches up).
const PARTITION_RETRY: Duration = Duration::from_millis(200);

async fn run(
    fetcher: Arc<Fetcher>,
    manager: Arc<ReplicaManager>,
    transport: Arc<dyn ReplicaTransport>,
) {
    let config = manager.config().clone();
    let mut link: Option<(String, Box<dyn LeaderLink>)> = None;
    let mut backoff = MIN_BACKOFF;
    let mut no_address_warned: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let snapshot: Vec<Snapshot> = fetcher
            .follows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tp, f)| {
                (
                    tp.clone(),
                    f.partition.clone(),
                    f.epoch,
                    f.truncated,
                    f.retry_at,
                )
            })
            .collect();
        if snapshot.is_empty() {
            fetcher.wake.notified().await;
            continue;
        }
        // Over the inter-broker listener (`inter_broker_listener_name`).
        let listener = &manager.config().inter_broker_listener_name;
        let Some(address) = manager
            .metadata()
            .read(|image| crate::listeners::advertised_address(image, fetcher.leader, listener))
        else {
            // Unknown leader (the image lags), or one registered without this listener: a
            // misconfiguration that would otherwise stall replication silently.
            if manager
                .metadata()
                .read(|image| image.brokers.contains_key(&fetcher.leader))
                && no_address_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                no_address_warned = Some(Instant::now());
                tracing::warn!(leader = fetcher.leader, listener = %listener, "the leader advertises no address on the inter-broker listener; every broker needs the same listener names");
            }
            tokio::time::sleep(PARTITION_RETRY).await;
            continue;
        };
        if link.as_ref().is_none_or(|(a, _)| *a != address) {
            match transport.link(fetcher.leader, &address) {
                Ok(l) => link = Some((address.clone(), l)),
                Err(status) => {
                    tracing::warn!(leader = fetcher.leader, error = %status.message(), "cannot reach the leader");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            }
        }
        let (_, leader_link) = link.as_mut().expect("set above");
        let ready = |retry_at: &Option<Instant>| retry_at.is_none_or(|t| t <= now);

        // Truncate first, for partitions that start following an epoch.
        let to_truncate: Vec<_> = snapshot
            .iter()
            .filter(|(_, _, _, truncated, retry_at)| !truncated && ready(retry_at))
            .collect();
        if !to_truncate.is_empty() {
            let mut queries = Vec::new();
            for (tp, partition, epoch, _, _) in &to_truncate {
                match partition.log().latest_epoch() {
                    None => mark(&fetcher, tp, *epoch, FollowStep::Fetch),
                    Some(latest) => {
                        queries.push(pb::offsets_for_leader_epoch_request::EpochQuery {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            current_leader_epoch: *epoch,
                            leader_epoch: latest,
                        })
                    }
                }
            }
            if !queries.is_empty() {
                let request = pb::OffsetsForLeaderEpochRequest {
                    replica_id: manager.broker_id(),
                    partitions: queries,
                };
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    leader_link.offsets_for_leader_epoch(request),
                )
                .await;
                match answer {
                    Ok(Ok(response)) => {
                        backoff = MIN_BACKOFF;
                        let truncating: HashMap<TopicPartition, (Arc<Partition>, i32)> =
                            to_truncate
                                .iter()
                                .map(|(tp, p, e, _, _)| (tp.clone(), (p.clone(), *e)))
                                .collect();
                        for end in response.partitions {
                            let tp = TopicPartition::new(end.topic, end.partition);
                            let Some((partition, epoch)) = truncating.get(&tp) else {
                                continue;
                            };
                            let code = end
                                .error
                                .as_ref()
                                .map_or(ErrorCode::None, |e| e.error_code());
                            if code != ErrorCode::None {
                                tracing::debug!(partition = %tp, error = ?end.error, "epoch lookup refused");
                            }
                            let step = on_epoch_end(
                                partition,
                                fetcher.leader,
                                *epoch,
                                code,
                                end.leader_epoch,
                                end.end_offset,
                            );
                            mark(&fetcher, &tp, *epoch, step);
                        }
                    }
                    Ok(Err(status)) => {
                        tracing::debug!(leader = fetcher.leader, error = %status.message(), "epoch lookup failed");
                        link = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(_) => {
                        link = None;
                    }
                }
                continue;
            }
        }

        // Fetch.
        let fetchable: Vec<_> = snapshot
            .iter()
            .filter(|(_, _, _, truncated, retry_at)| *truncated && ready(retry_at))
            .collect();
        if fetchable.is_empty() {
            let next_retry = snapshot.iter().filter_map(|s| s.4).min();
            let sleep = next_retry.map_or(PARTITION_RETRY, |t| t.saturating_duration_since(now));
            tokio::select! {
                () = fetcher.wake.notified() => {}
                () = tokio::time::sleep(sleep.max(Duration::from_millis(10))) => {}
            }
            continue;
        }
        let request = pb::ReplicaFetchRequest {
            replica_id: manager.broker_id(),
            broker_epoch: manager.session().broker_epoch(),
            max_wait_ms: config.replica_fetch_wait_max_ms as u32,
            min_bytes: 1,
            max_bytes: config.replica_fetch_response_max_bytes,
            partitions: fetchable
                .iter()
                .map(
                    |(tp, partition, epoch, _, _)| pb::replica_fetch_request::ReplicaPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        fetch_offset: partition.log().log_end_offset(),
                        current_leader_epoch: *epoch,
                        partition_max_bytes: config.replica_fetch_max_bytes,
                        log_start_offset: Some(partition.log().log_start_offset()),
                    },
                )
                .collect(),
        };
        let wait =
            Duration::from_millis(config.replica_fetch_wait_max_ms) + Duration::from_secs(10);
        let response = match tokio::time::timeout(wait, leader_link.fetch(request)).await {
            Ok(Ok(response)) => {
                backoff = MIN_BACKOFF;
                response
            }
            Ok(Err(status)) => {
                tracing::debug!(leader = fetcher.leader, error = %status.message(), "replica fetch failed");
                link = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    leader = fetcher.leader,
                    "replica fetch timed out; reconnecting"
                );
                link = None;
                continue;
            }
        };
        if let Some(error) = response
            .error
            .as_ref()
            .filter(|e| e.error_code() != ErrorCode::None)
        {
            tracing::info!(leader = fetcher.leader, error = %error.message, "replica fetch refused");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        let by_tp: HashMap<TopicPartition, (Arc<Partition>, i32)> = fetchable
            .iter()
            .map(|(tp, p, e, _, _)| (tp.clone(), (p.clone(), *e)))
            .collect();
        for data in response.partitions {
            let tp = TopicPartition::new(data.topic, data.partition);
            let Some((partition, epoch)) = by_tp.get(&tp) else {
                continue;
            };
            let code = data
                .error
                .as_ref()
                .map_or(ErrorCode::None, |e| e.error_code());
            if !matches!(code, ErrorCode::None | ErrorCode::OffsetOutOfRange) {
                tracing::debug!(partition = %tp, error = ?data.error, "replica fetch of a partition refused");
            }
            let step = on_fetched(
                partition,
                fetcher.leader,
                *epoch,
                Fetched {
                    code,
                    records: data.records,
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                    log_end_offset: data.log_end_offset,
                },
            );
            mark(&fetcher, &tp, *epoch, step);
        }
    }
}

/// Applies `step` to the follow state of `tp` if it still follows the same epoch.
fn mark(fetcher: &Fetcher, tp: &TopicPartition, epoch: i32, step: FollowStep) {
    if let Some(f) = fetcher
        .follows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(tp)
        .filter(|f| f.epoch == epoch)
    {
        match step {
            FollowStep::Fetch => f.truncated = true,
            FollowStep::AskAgain | FollowStep::Unchanged => {}
            FollowStep::RetryAfter(wait) => f.retry_at = Some(Instant::now() + wait),
            FollowStep::Retruncate(wait) => {
                f.truncated = false;
                f.retry_at = (!wait.is_zero()).then(|| Instant::now() + wait);
            }
        }
    }
}

/// What a follower does next with one partition, after the leader answered about it. The
/// fetcher task (over gRPC) and the replication simulation (tests/replication_sim/) both
/// drive followers through [`on_epoch_end`] and [`on_fetched`], so the simulation tests the
/// follower's real decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowStep {
    /// The log agrees with the leader's: fetch (from the log end offset).
    Fetch,
    /// The log was cut to the end of an older epoch: ask the leader about its new latest
    /// epoch (Kafka's KIP-279 loop).
    AskAgain,
    /// The partition's role moved on meanwhile; the next metadata update re-targets it.
    Unchanged,
    /// Try the same step again after this long.
    RetryAfter(Duration),
    /// Truncate against the leader again (after this long; zero: at once).
    Retruncate(Duration),
}

/// A follower learns where the leader's log holds epoch `leader_epoch` (up to `end_offset`),
/// answering the question about its own latest epoch, or the leader's refusal `code`.
pub fn on_epoch_end(
    partition: &Partition,
    leader: BrokerId,
    following_epoch: i32,
    code: ErrorCode,
    leader_epoch: i32,
    end_offset: i64,
) -> FollowStep {
    if code != ErrorCode::None {
        return FollowStep::RetryAfter(PARTITION_RETRY);
    }
    match truncate(partition, leader, following_epoch, leader_epoch, end_offset) {
        Ok(true) => FollowStep::Fetch,
        Ok(false) => FollowStep::AskAgain,
        Err(err) if err.code == ErrorCode::FencedLeaderEpoch => FollowStep::Unchanged,
        Err(err) => {
            tracing::error!(partition = %partition.tp, error = %err.message, "truncation failed");
            FollowStep::RetryAfter(MAX_BACKOFF)
        }
    }
}

/// One partition of a leader's answer to a replica fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The leader's error code for this partition (`None`: data follows).
    pub code: ErrorCode,
    /// Whole batches from the fetch offset, as the leader stores them.
    pub records: bytes::Bytes,
    /// The leader's high watermark.
    pub high_watermark: i64,
    /// The leader's log start offset.
    pub log_start_offset: i64,
    /// The leader's log end offset.
    pub log_end_offset: i64,
}

/// A follower takes the leader's answer to its fetch of one partition: appends the batches
/// unchanged and learns the high watermark and the leader's log start offset (records deleted
/// on the leader go here too), restarts its log at the leader's log start if it fell behind
/// it, or decides to truncate again.
pub fn on_fetched(
    partition: &Partition,
    leader: BrokerId,
    following_epoch: i32,
    fetched: Fetched,
) -> FollowStep {
    let tp = &partition.tp;
    match fetched.code {
        ErrorCode::None => match partition.follower_append(
            leader,
            following_epoch,
            fetched.records,
            fetched.high_watermark,
        ) {
            Ok(()) => match partition.follow_leader_log(
                leader,
                following_epoch,
                fetched.log_start_offset,
                fetched.log_end_offset,
            ) {
                Ok(()) => FollowStep::Fetch,
                Err(err) if err.code == ErrorCode::FencedLeaderEpoch => FollowStep::Unchanged,
                // The records are in; the next answer carries the log start again.
                Err(err) => {
                    tracing::warn!(partition = %tp, error = %err.message, "taking the leader's log start offset failed");
                    FollowStep::Fetch
                }
            },
            // The role moved on meanwhile: the next update re-targets it.
            Err(err) if err.code == ErrorCode::FencedLeaderEpoch => FollowStep::Unchanged,
            Err(err) => {
                tracing::warn!(partition = %tp, error = %err.message, "follower append failed; truncating again");
                FollowStep::Retruncate(PARTITION_RETRY)
            }
        },
        ErrorCode::OffsetOutOfRange => {
            let leo = partition.log().log_end_offset();
            if leo < fetched.log_start_offset {
                tracing::info!(partition = %tp, leo, leader_log_start = fetched.log_start_offset, "behind the leader's log start; restarting the log there");
                match partition.restart_at(leader, following_epoch, fetched.log_start_offset) {
                    Ok(()) => FollowStep::Fetch,
                    Err(err) if err.code == ErrorCode::FencedLeaderEpoch => FollowStep::Unchanged,
                    Err(err) => {
                        tracing::error!(partition = %tp, error = %err.message, "restarting the log failed");
                        FollowStep::RetryAfter(MAX_BACKOFF)
                    }
                }
            } else {
                FollowStep::Retruncate(Duration::ZERO)
            }
        }
        _ => FollowStep::RetryAfter(PARTITION_RETRY),
    }
}

/// KIP-101/279: the leader's log holds epoch `leader_epoch` up to `leader_end`; cut this log
/// where it stops agreeing. Returns whether the log now agrees with the leader's; `false`
/// when it was cut to the end of an older epoch of ours (the leader never had our epoch), so
/// the leader must be asked again about our new latest epoch (Kafka's loop). Each such round
/// drops at least our latest epoch, even one that holds no record (an epoch this broker began
/// as leader at its log end and wrote nothing in), so the loop ends; keeping that empty epoch
/// would make the follower ask about it forever, or take its log for agreeing with the
/// leader's when records of an older epoch below it do not.
fn truncate(
    partition: &Partition,
    leader: BrokerId,
    following_epoch: i32,
    leader_epoch: i32,
    leader_end: i64,
) -> Result<bool, crate::api::PartitionError> {
    let log = partition.log();
    let leo = log.log_end_offset();
    let (target, done) = if leader_epoch < 0 || leader_end < 0 {
        // The leader has no epoch at or below ours: keep only what is committed.
        (partition.high_watermark().min(leo), true)
    } else {
        // Our largest epoch at or below the leader's, and where it ends here: past that point
        // our records carry epochs the leader never had.
        let ours = log.end_offset_for_epoch(leader_epoch);
        if ours.leader_epoch == leader_epoch {
            (leader_end.min(ours.end_offset).min(leo), true)
        } else if ours.end_offset >= 0 {
            (ours.end_offset.min(leo), false)
        } else {
            (log.log_start_offset(), true)
        }
    };
    if target < leo || !done {
        partition.truncate_to(leader, following_epoch, target)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_metadata::PartitionState;
    use tributary_storage::{Log, LogConfig, LogResources};

    fn batch(values: &[&str]) -> bytes::Bytes {
        let mut builder = tributary_record::BatchBuilder::new(1_000);
        for v in values {
            builder.push(1_000, None, Some(v.as_bytes()), &[]);
        }
        builder.build()
    }

    fn state(leader: BrokerId, epoch: i32, partition_epoch: i32) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader: Some(leader),
            leader_epoch: epoch,
            partition_epoch,
        }
    }

    /// An empty partition `t-0` on broker 1, with no role yet.
    fn new_partition(dir: &std::path::Path) -> Partition {
        let log = Log::open(dir, LogConfig::default(), LogResources::new(16)).unwrap();
        Partition::new(
            TopicPartition::new("t", 0),
            uuid::Uuid::nil(),
            1,
            log,
            Arc::new(tokio::sync::watch::channel(0).0),
        )
    }

    /// A broker that led epochs 0 and 1 (offsets 0..3 and 3..5), then follows.
    fn diverged(dir: &std::path::Path) -> Partition {
        let p = new_partition(dir);
        p.apply_state(&state(1, 0, 0)).unwrap();
        p.append(&batch(&["a", "b", "c"]), None).unwrap();
        p.apply_state(&state(1, 1, 1)).unwrap();
        p.append(&batch(&["d", "e"]), None).unwrap();
        p.apply_state(&state(2, 2, 2)).unwrap();
        p
    }

    #[test]
    fn kip_101_the_leader_has_our_latest_epoch_but_less_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = diverged(tmp.path());
        // The leader had epoch 1 up to offset 4 only.
        assert!(truncate(&p, 2, 2, 1, 4).unwrap());
        assert_eq!(
            p.log().log_end_offset(),
            3,
            "whole batches: the one straddling 4 goes"
        );
    }

    #[test]
    fn kip_279_the_leader_never_had_our_latest_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        let p = diverged(tmp.path());
        // The leader's largest epoch at or below 1 is 0, ending at offset 5 on the leader
        // (it wrote offsets 3 and 4 in epoch 0 as well): we keep only our epoch-0 records.
        assert!(truncate(&p, 2, 2, 0, 5).unwrap());
        assert_eq!(p.log().log_end_offset(), 3);
        assert_eq!(p.log().latest_epoch(), Some(0));
    }

    #[test]
    fn kip_279_needs_several_rounds_when_epochs_interleave() {
        // We hold epoch 0 (offsets 0..5) and epoch 3 (5..7); the leader holds epoch 0 (0..3),
        // epoch 2 (3..10) and epoch 4. Asked about our epoch 3 it answers epoch 2 ending at
        // 10, which we never had: cut to the end of our epoch 0 (5) and ask again.
        let tmp = tempfile::tempdir().unwrap();
        let p = new_partition(tmp.path());
        p.apply_state(&state(1, 0, 0)).unwrap();
        p.append(&batch(&["a", "b", "c", "d", "e"]), None).unwrap();
        p.apply_state(&state(1, 3, 1)).unwrap();
        p.append(&batch(&["f", "g"]), None).unwrap();
        p.apply_state(&state(2, 5, 2)).unwrap();
        assert!(!truncate(&p, 2, 5, 2, 10).unwrap(), "ask again");
        assert_eq!(p.log().log_end_offset(), 5);
        assert_eq!(p.log().latest_epoch(), Some(0));
        // A truncation for a leader we no longer follow is refused.
        let err = truncate(&p, 3, 9, 0, 3).unwrap_err();
        assert_eq!(err.code, ErrorCode::FencedLeaderEpoch);
        assert_eq!(p.log().log_end_offset(), 5);
        // Asked about epoch 0, the leader says it ends at 3.
        assert!(truncate(&p, 2, 5, 0, 3).unwrap());
        assert_eq!(
            p.log().log_end_offset(),
            0,
            "whole batches: the 5-record batch goes"
        );
    }

    /// A fresh partition on broker 1 holding `["a", "b", "c"]` in epoch 0, which then led
    /// epoch `empty` from offset 3 without writing, and now follows broker 2 at `following`.
    fn with_an_empty_latest_epoch(dir: &std::path::Path, empty: i32, following: i32) -> Partition {
        let p = new_partition(dir);
        p.apply_state(&state(1, 0, 0)).unwrap();
        p.append(&batch(&["a", "b", "c"]), None).unwrap();
        p.apply_state(&state(1, empty, 1)).unwrap();
        p.apply_state(&state(2, following, 2)).unwrap();
        assert_eq!(p.log().epoch_entries(), vec![(0, 0), (empty, 3)]);
        p
    }

    #[test]
    fn an_empty_latest_epoch_does_not_hide_a_divergence_below_it() {
        // Found by the replication simulation (seed 344): we hold epochs 0 (0..3) and 1
        // (3..5) and then led epoch 3 from offset 5 without writing. The leader never had our
        // epoch-1 records: it holds epoch 0 (0..3), then epoch 2 from 3.
        let tmp = tempfile::tempdir().unwrap();
        let p = diverged(tmp.path());
        p.apply_state(&state(1, 3, 3)).unwrap();
        p.apply_state(&state(2, 4, 4)).unwrap();
        assert_eq!(p.log().epoch_entries(), vec![(0, 0), (1, 3), (3, 5)]);
        // Asked about our epoch 3, the leader answers with its epoch 2 (ending at 9, say). We
        // never had epoch 2: cut to the end of our epoch 1, which is our log end (5). Nothing
        // is cut, but our empty epoch 3 must go and the leader must be asked again; before the
        // fix the log was taken to agree, and offsets 3..5 stayed different from the leader's.
        assert!(!truncate(&p, 2, 4, 2, 9).unwrap(), "ask again");
        assert_eq!(p.log().log_end_offset(), 5);
        assert_eq!(p.log().latest_epoch(), Some(1), "the empty epoch 3 is gone");
        // Asked about epoch 1, the leader answers epoch 0 ending at 3: cut there, done.
        assert!(truncate(&p, 2, 4, 0, 3).unwrap());
        assert_eq!(p.log().log_end_offset(), 3);
        assert_eq!(p.log().latest_epoch(), Some(0));
    }

    #[test]
    fn an_empty_epoch_the_leader_never_had_is_dropped_and_asked_about_again() {
        // We hold epoch 0 (0..3) and an empty epoch 2 at 3. The leader's largest epoch at or
        // below 2 is 1 (ending at 9): we never had it, so we cut to the end of our epoch 0 (our
        // log end, nothing cut), drop the empty epoch, and ask about epoch 0.
        let tmp = tempfile::tempdir().unwrap();
        let p = with_an_empty_latest_epoch(tmp.path(), 2, 5);
        assert!(!truncate(&p, 2, 5, 1, 9).unwrap(), "ask again");
        assert_eq!(p.log().epoch_entries(), vec![(0, 0)]);
        // The leader's epoch 0 ends at 2: the 3-record batch straddles it and goes.
        assert!(truncate(&p, 2, 5, 0, 2).unwrap());
        assert_eq!(p.log().log_end_offset(), 0);
    }

    #[test]
    fn nothing_is_cut_when_the_leader_has_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let p = diverged(tmp.path());
        assert!(truncate(&p, 2, 2, 1, 9).unwrap());
        assert_eq!(p.log().log_end_offset(), 5);
    }

    #[test]
    fn a_leader_without_any_of_our_epochs_leaves_only_what_was_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let p = diverged(tmp.path());
        assert_eq!(
            p.high_watermark(),
            0,
            "its follower never fetched: nothing committed"
        );
        assert!(truncate(&p, 2, 2, -1, -1).unwrap());
        assert_eq!(p.log().log_end_offset(), 0);
    }
}
