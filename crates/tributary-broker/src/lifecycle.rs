//! Registration, heartbeats and controlled shutdown: the broker's half of Kafka's KRaft broker
//! lifecycle, against the coordinators' `BrokerLifecycle` service.
//!
//! A broker registers (a new incarnation each process start) and heartbeats every
//! `broker.heartbeat.interval.ms`. Each heartbeat reports the metadata offset the broker has
//! applied *and acted on*: zero until its logs are recovered and reconciled with the image, so
//! the controller unfences it (and may make it a leader) only once it can serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient;
use uuid::Uuid;

use crate::manager::ReplicaManager;

/// The broker's registration and heartbeats.
#[derive(Debug)]
pub struct Lifecycle {
    manager: Arc<ReplicaManager>,
    incarnation: Uuid,
    /// The registration epoch (0: not registered).
    epoch: AtomicU64,
    /// The metadata offset of the registration, once registered.
    registered: watch::Sender<Option<u64>>,
    want_shutdown: AtomicBool,
    shutdown_ready: watch::Sender<bool>,
    /// Whether the last heartbeat found no acknowledgement within the session timeout (the
    /// broker has stopped leading; logged once per episode).
    cut_off: AtomicBool,
}

impl Lifecycle {
    /// A lifecycle for a new process incarnation.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self {
            manager,
            incarnation: Uuid::new_v4(),
            epoch: AtomicU64::new(0),
            registered: watch::channel(None).0,
            want_shutdown: AtomicBool::new(false),
            shutdown_ready: watch::channel(false).0,
            cut_off: AtomicBool::new(false),
        }
    }

    /// The registration epoch (0 before registering).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Waits until registered; returns the registration's metadata offset.
    pub async fn registered(&self) -> u64 {
        let mut rx = self.registered.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(offset) => offset.unwrap_or(0),
            Err(_) => std::future::pending().await,
        }
    }

    /// Registers (retrying until a coordinator accepts), then heartbeats forever.
    pub async fn run(self: Arc<Self>) {
        self.register().await;
        let interval = self.manager.config().heartbeat_interval();
        loop {
            let pause = if self.want_shutdown.load(Ordering::Acquire) {
                Duration::from_millis(200)
            } else {
                interval
            };
            tokio::time::sleep(pause).await;
            self.heartbeat(interval).await;
        }
    }

    async fn register(&self) {
        let config = self.manager.config();
        let request = pb::RegisterBrokerRequest {
            broker_id: config.broker_id,
            incarnation: self.incarnation.as_bytes().to_vec().into(),
            listeners: config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.advertised.clone()))
                .collect(),
            rack: config.rack.clone(),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = self.manager.session().heartbeat_sent();
            let (i, channel) = self.manager.coordinators().pick();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(10));
            match BrokerLifecycleClient::new(channel)
                .register_broker(call)
                .await
            {
                Ok(response) => {
                    let response = response.into_inner();
                    let code = response
                        .error
                        .as_ref()
                        .map_or(ErrorCode::None, |e| e.error_code());
                    if code == ErrorCode::None {
                        self.epoch.store(response.broker_epoch, Ordering::Release);
                        self.manager
                            .session()
                            .set_broker_epoch(response.broker_epoch);
                        self.manager.session().heartbeat_acknowledged(sent);
                        self.take_session_timeout(response.session_timeout_ms);
                        self.registered.send_replace(Some(response.metadata_offset));
                        tracing::info!(epoch = response.broker_epoch, metadata_offset = response.metadata_offset, incarnation = %self.incarnation, "registered with the coordinators");
                        return;
                    }
                    tracing::warn!(error = ?response.error, "registration refused; retrying");
                }
                Err(status) => {
                    tracing::info!(coordinator = self.manager.coordinators().address(i), error = %status.message(), "cannot register yet; retrying");
                    self.manager.coordinators().rotate(i);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn heartbeat(&self, timeout: Duration) {
        let metadata_offset = if self.manager.session().is_ready() {
            self.manager.metadata().offset()
        } else {
            0
        };
        let request = pb::BrokerHeartbeatRequest {
            broker_id: self.manager.broker_id(),
            broker_epoch: self.epoch(),
            metadata_offset,
            want_shutdown: self.want_shutdown.load(Ordering::Acquire),
        };
        let sent = self.manager.session().heartbeat_sent();
        let (i, channel) = self.manager.coordinators().pick();
        let timeout = timeout.max(Duration::from_millis(500));
        let mut call = tonic::Request::new(request);
        call.set_timeout(timeout);
        // Bounded here too (the header only bounds the server): a heartbeat whose answer is
        // lost must not hold up the next ones, or a broker would stay fenced long after its
        // link to the coordinators came back.
        let answer = tokio::time::timeout(
            timeout,
            BrokerLifecycleClient::new(channel).broker_heartbeat(call),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "no answer to the heartbeat",
            ))
        });
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                match response
                    .error
                    .as_ref()
                    .map_or(ErrorCode::None, |e| e.error_code())
                {
                    ErrorCode::None => {
                        self.manager.session().heartbeat_acknowledged(sent);
                        self.take_session_timeout(response.session_timeout_ms);
                        if response.shutdown_ready {
                            self.shutdown_ready.send_replace(true);
                        }
                    }
                    ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered => {
                        tracing::warn!(error = ?response.error, "registration lost; registering again");
                        self.register().await;
                    }
                    _ => tracing::warn!(error = ?response.error, "heartbeat refused"),
                }
            }
            Err(status) => {
                tracing::debug!(coordinator = self.manager.coordinators().address(i), error = %status.message(), "heartbeat failed");
                self.manager.coordinators().rotate(i);
            }
        }
        self.note_cut_off();
    }

    fn take_session_timeout(&self, ms: u64) {
        if self.manager.session().controller_session_timeout(ms) {
            tracing::info!(
                session_timeout_ms = self.manager.session().session_timeout().as_millis() as u64,
                controller_ms = ms,
                configured_ms = self.manager.config().broker_session_timeout_ms,
                "fencing itself after the controller's session timeout (the shorter of it and this broker's)"
            );
        }
    }

    /// Logs when the broker's heartbeats stop being acknowledged for the session timeout (it
    /// stops leading: `ReplicaManager::self_fence`) and when they are again.
    fn note_cut_off(&self) {
        let session = self.manager.session().session_timeout();
        let since = self.manager.session().since_heartbeat();
        let cut_off = since.is_some_and(|s| s > session);
        let was = self.cut_off.swap(cut_off, Ordering::AcqRel);
        if cut_off && !was {
            tracing::warn!(
                since_ms = since.map_or(0, |s| s.as_millis() as u64),
                session_timeout_ms = session.as_millis() as u64,
                "no heartbeat acknowledged by the coordinators within the session timeout: this broker stops leading until they answer (the controller fences it)"
            );
        } else if was && !cut_off {
            tracing::info!(
                "heartbeats acknowledged again: this broker may lead once the controller unfences it"
            );
        }
    }

    /// Controlled shutdown: asks (by heartbeat) for every leadership to move away and waits
    /// until the controller says none is left, for at most `timeout`. Returns whether it did.
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        if self.epoch() == 0 {
            return true; // never registered: leads nothing
        }
        self.want_shutdown.store(true, Ordering::Release);
        let mut ready = self.shutdown_ready.subscribe();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
