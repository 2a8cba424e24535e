//! The broker's standing with the coordinators: its registration epoch, when a heartbeat was
//! last acknowledged, the session timeout it fences itself by, and whether it serves yet.
//!
//! Invariants: a broker whose heartbeats have not been acknowledged for the session timeout
//! refuses to lead (the controller has fenced it, or is about to); the timeout is never longer
//! than the controller's; a broker registered by another incarnation, or fenced in the image,
//! never leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tributary_metadata::{BrokerId, BrokerState};
use tributary_proto::common::v1::ErrorCode;

use crate::api::PartitionError;
use crate::metadata::MetadataCache;

/// The broker session (Kafka's `BrokerLifecycleManager` state, seen from the request path).
#[derive(Debug)]
pub struct BrokerSession {
    me: BrokerId,
    metadata: Arc<MetadataCache>,
    /// The broker's own `broker.session.timeout.ms`.
    configured_timeout_ms: u64,
    /// Logs recovered and the metadata applied: requests are served.
    ready: AtomicBool,
    /// When a heartbeat was last acknowledged (ms since `started`), 0 = never.
    last_heartbeat_ms: AtomicU64,
    /// The session timeout this broker fences itself by: its own `broker.session.timeout.ms`,
    /// lowered to the controller's once a coordinator has said it.
    session_timeout_ms: AtomicU64,
    /// This process's registration epoch (0 before registering).
    broker_epoch: AtomicU64,
    started: Instant,
}

impl BrokerSession {
    /// A session of broker `me`, not registered yet, fencing itself after `session_timeout_ms`.
    pub fn new(me: BrokerId, metadata: Arc<MetadataCache>, session_timeout_ms: u64) -> Self {
        Self {
            me,
            metadata,
            configured_timeout_ms: session_timeout_ms,
            ready: AtomicBool::new(false),
            last_heartbeat_ms: AtomicU64::new(0),
            session_timeout_ms: AtomicU64::new(session_timeout_ms),
            broker_epoch: AtomicU64::new(0),
            started: Instant::now(),
        }
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

    /// A point in time to pass to [`BrokerSession::heartbeat_acknowledged`]: taken when a
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
        let wanted = ms.min(self.configured_timeout_ms);
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

    /// Whether this broker has stopped leading because its heartbeats stopped reaching the
    /// coordinators (see `self_fence`).
    pub fn self_fenced(&self) -> bool {
        self.self_fence().is_err()
    }

    /// `Ok` while this broker may act as a leader: it has heard from the coordinators within
    /// its session timeout, and the image shows this incarnation registered and unfenced.
    pub fn self_fence(&self) -> Result<(), PartitionError> {
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
}
