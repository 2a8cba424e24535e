//! The coordinator node: its Raft node, the controller's soft state (broker liveness), writes
//! through Raft, and forwarding to the leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tributary_metadata::controller::plan_elections;
use tributary_metadata::{ApiError, BrokerId, MetadataImage, MetadataRecord, RecordResult};
use tributary_raft::RaftNode;

use crate::config::CoordinatorConfig;
use crate::state::{Applied, MetadataState};

/// gRPC metadata key marking a request a follower forwarded to the leader (it is never
/// forwarded twice: a leader that lost leadership meanwhile answers UNAVAILABLE instead).
pub const FORWARDED: &str = "x-tributary-forwarded";

/// One coordinator node.
#[derive(Debug)]
pub struct Coordinator {
    pub(crate) node: RaftNode<MetadataState>,
    pub(crate) config: CoordinatorConfig,
    /// Last heartbeat per broker, kept by the active controller only.
    liveness: Mutex<HashMap<BrokerId, Instant>>,
    /// Channels to other coordinator nodes, by address.
    channels: Mutex<HashMap<String, Channel>>,
    /// Serialises elections so two tasks do not propose the same change twice.
    election: tokio::sync::Mutex<()>,
}

/// Why a write through Raft did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// Applied, and refused by the image (the answer for the client).
    Refused(ApiError),
    /// Not (or no longer) the leader, or Raft is unavailable: retriable.
    Unavailable(String),
}

impl From<WriteError> for Status {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Refused(e) => Status::failed_precondition(e.to_string()),
            WriteError::Unavailable(why) => Status::unavailable(why),
        }
    }
}

impl Coordinator {
    pub(crate) fn new(node: RaftNode<MetadataState>, config: CoordinatorConfig) -> Self {
        Self {
            node,
            config,
            liveness: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            election: tokio::sync::Mutex::new(()),
        }
    }

    /// The Raft node.
    pub fn node(&self) -> &RaftNode<MetadataState> {
        &self.node
    }

    /// Reads the current image.
    pub fn read<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        self.node.read(|state| f(state.image()))
    }

    /// Proposes `record` and waits until it is committed and applied here; returns its offset
    /// and what applying it answered.
    pub async fn write(&self, record: MetadataRecord) -> Result<(u64, RecordResult), WriteError> {
        match self.node.client_write(record).await {
            Ok(written) => match written.response {
                Applied(Ok(result)) => Ok((written.log_index, result)),
                Applied(Err(err)) => Err(WriteError::Refused(err)),
            },
            Err(err) => Err(WriteError::Unavailable(err.to_string())),
        }
    }

    /// `None` when this node should answer `request` itself (it leads); otherwise a channel to
    /// the leader to forward it to.
    pub fn forward_target<T>(&self, request: &Request<T>) -> Result<Option<Channel>, Status> {
        let leader = self.node.leader_info();
        if leader.is_self {
            return Ok(None);
        }
        if request.metadata().contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "this coordinator is no longer the controller; retry",
            ));
        }
        let Some(addr) = leader.leader_addr else {
            return Err(Status::unavailable(
                "no controller is elected yet; retry shortly",
            ));
        };
        self.channel(&addr).map(Some)
    }

    /// A (lazily connecting, cached) channel to another coordinator.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("bad leader address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Notes a heartbeat from `broker`.
    pub fn heard_from(&self, broker: BrokerId) {
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(broker, Instant::now());
    }

    /// Brokers not heard from for the session timeout, among those not fenced yet; brokers never
    /// heard from by this controller get a full session from `since`.
    pub(crate) fn expired_brokers(&self, since: Instant) -> Vec<(BrokerId, u64)> {
        let timeout = self.config.broker_session_timeout();
        let now = Instant::now();
        let mut liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        self.read(|image| {
            image
                .brokers
                .values()
                .filter(|b| b.state != tributary_metadata::BrokerState::Fenced)
                .filter(|b| {
                    let last = *liveness.entry(b.id).or_insert(since);
                    now.duration_since(last) > timeout
                })
                .map(|b| (b.id, b.epoch))
                .collect()
        })
    }

    /// Forgets all liveness (a new controller starts from a clean slate).
    pub(crate) fn reset_liveness(&self) {
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Proposes the leader and ISR changes the image calls for (after a broker changed state).
    pub async fn run_elections(&self) {
        let _serial = self.election.lock().await;
        let changes = self.read(plan_elections);
        for change in changes {
            let partition = change.partition;
            let kind = if change.unclean { "unclean" } else { "clean" };
            let leader_change = self.read(|image| {
                image
                    .topic_name(change.topic_id)
                    .ok()
                    .and_then(|name| image.topics.get(name))
                    .and_then(|t| t.partitions.get(change.partition as usize))
                    .is_some_and(|p| p.leader != change.leader && change.leader.is_some())
            });
            match self.write(MetadataRecord::ChangePartition(change)).await {
                Ok(_) => {
                    if leader_change {
                        crate::metrics::METRICS.elections.add(&[("kind", kind)], 1);
                    }
                }
                // Another change got there first; the next round plans again.
                Err(WriteError::Refused(err)) => {
                    tracing::debug!(partition, error = %err, "election change refused")
                }
                Err(WriteError::Unavailable(why)) => {
                    tracing::debug!(why, "elections interrupted");
                    return;
                }
            }
        }
    }
}
