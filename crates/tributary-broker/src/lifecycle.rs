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
            let sent = self.manager.heartbeat_sent();
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
                        self.manager.set_broker_epoch(response.broker_epoch);
                        self.manager.heartbeat_acknowledged(sent);
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
        let metadata_offset = if self.manager.is_ready() {
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
        let sent = self.manager.heartbeat_sent();
        let (i, channel) = self.manager.coordinators().pick();
        let mut call = tonic::Request::new(request);
        call.set_timeout(timeout.max(Duration::from_millis(500)));
        match BrokerLifecycleClient::new(channel)
            .broker_heartbeat(call)
            .await
        {
            Ok(response) => {
                let response = response.into_inner();
                match response
                    .error
                    .as_ref()
                    .map_or(ErrorCode::None, |e| e.error_code())
                {
                    ErrorCode::None => {
                        self.manager.heartbeat_acknowledged(sent);
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
