//! Tributary's broker: hosts partition logs and serves producers and consumers.
//!
//! A broker process opens its data directory, registers with the coordinators, follows their
//! metadata log into its own copy of the image ([`metadata`]), and keeps the partitions the
//! image assigns to it in line with it ([`manager::ReplicaManager`]): creating, recovering and
//! deleting logs, leading where the image says so. Clients call the gRPC API
//! (`tributary.broker.v1.Broker`, [`grpc`]) or Kafka's wire protocol ([`kafka`]) on the same
//! port ([`net`]); both translate to the protocol-neutral [`service`] layer; admin calls are
//! forwarded to the coordinators.
//!
//! Architecture invariants:
//! - Only the leader of a partition's current leader epoch appends produced records, and only
//!   while its heartbeats reach the coordinators (it fences itself after the session timeout).
//! - Consumers never see records at or past the high watermark.
//! - No request is served before the logs are recovered and reconciled with the metadata; a
//!   log whose topic id the metadata does not know is deleted, never served.
//! - Produce, fetch and offsets have one implementation ([`manager`]) beneath every protocol.

pub mod alloc;
pub mod api;
pub mod config;
pub mod coordinators;
pub mod dirs;
pub mod group;
pub mod grpc;
pub mod isr;
pub mod kafka;
pub mod lifecycle;
pub mod listeners;
pub mod manager;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod producers;
pub mod replication;
pub mod service;
pub mod session;
pub mod topic_config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tributary_proto::broker::v1::broker_server::BrokerServer;
use tributary_proto::broker::v1::group_server::GroupServer;
use tributary_proto::broker::v1::replication_server::ReplicationServer;
use tributary_proto::coordinator::v1::admin_server::AdminServer;

pub use config::{BrokerConfig, ConfigFlags};

use crate::dirs::DataDir;
use crate::lifecycle::Lifecycle;
use crate::manager::ReplicaManager;
use crate::metadata::MetadataCache;

/// Huge reservations made by decoders of untrusted counts cost nothing (see `alloc`).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

/// Largest gRPC message a broker accepts or sends (Kafka's `socket.request.max.bytes`).
pub const MAX_MESSAGE_BYTES: usize = 100 << 20;
/// HTTP/2 frame size of the server (hyper's 16 KiB default halves large-batch throughput).
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// How often the upkeep loop checks `flush.ms`.
const FLUSH_CHECK: Duration = Duration::from_millis(200);

/// Runs a broker until `shutdown` resolves (SIGTERM in the binary), then shuts down in a
/// controlled way: leaderships move away (bounded), logs are flushed and closed.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Every task and request of this broker runs inside this span, so its events name the
    // broker (`broker{id=1}` in text logs, `"spans":[{"name":"broker","id":1},...]` in JSON).
    let span = tracing::info_span!("broker", id = config.broker_id);
    tracing::Instrument::instrument(serve(config, shutdown), span).await
}

async fn serve(
    config: BrokerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (data_dir, meta) = DataDir::open(&config.data_dir, config.broker_id)?;
    let coordinators = Arc::new(coordinators::Coordinators::new(&config.coordinators)?);
    let metadata = Arc::new(MetadataCache::default());
    let manager = Arc::new(ReplicaManager::new(
        config.clone(),
        data_dir,
        metadata.clone(),
        coordinators.clone(),
    )?);
    let groups = group::GroupCoordinator::new(manager.clone(), config.group_config());
    let service = Arc::new(service::Service::new(
        manager.clone(),
        groups.coordinator().clone(),
    ));
    // Every listener is bound first, so a taken port fails the start at once.
    let mut sockets = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("binding listener {} on {}", l.name, l.bind))?;
        sockets.push((l.name.clone(), socket));
    }

    let (health, health_service) = tributary_node::serve::health().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One server per listener, each with every service; the services that name addresses
    // know which listener they serve (Kafka's rule, see `listeners`).
    let mut servers = Vec::new();
    for (name, socket) in sockets {
        let listener: Arc<str> = name.into();
        let broker_service =
            BrokerServer::new(grpc::BrokerService::new(service.clone(), listener.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin_service = AdminServer::new(grpc::AdminService(service.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let replication_service = ReplicationServer::new(grpc::ReplicationService(service.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let group_service =
            GroupServer::new(grpc::GroupService::new(service.clone(), listener.clone()));
        let router = tributary_node::serve::builder(MAX_FRAME_SIZE)
            .add_service(health_service.clone())
            .add_service(broker_service)
            .add_service(admin_service)
            .add_service(replication_service)
            .add_service(group_service);
        // gRPC and the Kafka protocol share the port (`net`).
        servers.push(net::spawn(
            router,
            socket,
            listener,
            service.clone(),
            stop_rx.clone(),
        ));
    }
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| format!("{}://{} (advertised {})", l.name, l.bind, l.advertised))
        .collect();
    tracing::info!(broker_id = config.broker_id, listeners = ?listeners, inter_broker_listener = %config.inter_broker_listener_name, coordinators = ?config.coordinators, "broker starting");

    let (scraped, scraped_groups) = (manager.clone(), groups.clone());
    let metrics_server = tributary_node::metrics::spawn(config.metrics_listen, move || {
        metrics::render(&scrape(&scraped, &scraped_groups))
    })
    .await?;
    let follower = crate::spawn(metadata::follow(metadata.clone(), coordinators.clone()));
    let lifecycle = Arc::new(Lifecycle::new(manager.clone()));
    let heartbeats = crate::spawn(lifecycle.clone().run());

    let mut shutdown = Box::pin(shutdown);
    let started = tokio::select! {
        started = start_serving(&manager, &lifecycle, meta) => Some(started),
        () = &mut shutdown => None,
    };
    let mut tasks = vec![follower, heartbeats];
    tasks.extend(metrics_server);
    let fetchers = Arc::new(replication::Fetchers::new(
        manager.clone(),
        Arc::new(replication::GrpcTransport),
    ));
    match started {
        Some(Ok(())) => {
            fetchers.update(manager.followed());
            tasks.push(crate::spawn(reconcile_on_change(
                manager.clone(),
                fetchers.clone(),
            )));
            tasks.push(crate::spawn(shrink_isrs(manager.clone())));
            tasks.push(crate::spawn(upkeep(manager.clone())));
            tasks.push(crate::spawn(groups.clone().run()));
            tasks.push(crate::spawn(groups.clone().report_lag()));
            tasks.push(crate::spawn(clean_logs(manager.clone())));
            tasks.push(crate::spawn(report_health(manager.clone(), health)));
            shutdown.await;
            tracing::info!("shutting down: moving leaderships away");
            let timeout = Duration::from_millis(config.controlled_shutdown_timeout_ms);
            if !lifecycle.controlled_shutdown(timeout).await {
                tracing::warn!(
                    timeout_ms = config.controlled_shutdown_timeout_ms,
                    "controlled shutdown timed out; stopping anyway"
                );
            }
        }
        Some(Err(err)) => {
            for task in &tasks {
                task.abort();
            }
            stop_tx.send_replace(true);
            return Err(err);
        }
        None => tracing::info!("shutting down during start-up"),
    }
    for task in &tasks {
        task.abort();
    }
    fetchers.stop();
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for server in servers {
            let _ = server.await;
        }
    })
    .await;
    let closer = manager.clone();
    crate::spawn_blocking(move || closer.close_all())
        .await
        .context("closing logs")??;
    tracing::info!("broker stopped");
    Ok(())
}

/// What `GET /metrics` reports of the broker's state right now.
fn scrape(manager: &ReplicaManager, groups: &group::GroupCoordinator) -> metrics::Scrape {
    let me = manager.broker_id();
    let mut partitions: Vec<metrics::PartitionSample> = manager
        .partitions()
        .iter()
        .map(|p| {
            let role = p.role();
            let led_here = role.leader == Some(me);
            metrics::PartitionSample {
                tp: p.tp.clone(),
                log_end_offset: p.log().log_end_offset(),
                high_watermark: p.high_watermark(),
                led_here,
                under_replicated: led_here && role.isr.len() < role.replicas.len(),
            }
        })
        .collect();
    partitions.sort_by(|a, b| a.tp.cmp(&b.tp));
    let (offline_partitions, metadata_offset, running) = manager.metadata().read(|image| {
        let offline = image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader.is_none())
            .count();
        let running = image
            .brokers
            .get(&me)
            .is_some_and(|b| b.state == tributary_metadata::BrokerState::Running);
        (offline, image.offset, running)
    });
    metrics::Scrape {
        partitions,
        offline_partitions,
        metadata_offset,
        running,
        group_lag: groups
            .lag()
            .into_iter()
            .map(|s| (s.group, s.tp, s.lag))
            .collect(),
    }
}

/// `tokio::spawn` keeping the caller's tracing span (the broker's id, a fetcher's leader, ...)
/// on the task: a bare `tokio::spawn` starts its task outside every span.
pub(crate) fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(future))
}

/// `tokio::task::spawn_blocking` keeping the caller's tracing span, as [`spawn`].
pub(crate) fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// Registers, catches up with the metadata up to the registration, checks the cluster id,
/// recovers and reconciles the logs, and opens for requests.
async fn start_serving(
    manager: &Arc<ReplicaManager>,
    lifecycle: &Lifecycle,
    mut meta: dirs::Meta,
) -> Result<()> {
    let registered_at = lifecycle.registered().await;
    loop {
        match manager
            .metadata()
            .wait_for(registered_at, Duration::from_secs(10))
            .await
        {
            Ok(()) => break,
            Err(reached) => tracing::info!(
                registered_at,
                reached,
                "still catching up with the metadata"
            ),
        }
    }
    let cluster = manager.metadata().read(|image| image.cluster_id.clone());
    match (&meta.cluster_id, &cluster) {
        (Some(ours), Some(theirs)) if ours != theirs => bail!(
            "data directory {} belongs to cluster {ours}, but the coordinators run cluster {theirs}; refusing to mix their data",
            manager.data_dir().path().display()
        ),
        (None, Some(theirs)) => {
            meta.cluster_id = Some(theirs.clone());
            manager.data_dir().write_meta(&meta)?;
        }
        _ => {}
    }
    let reconciler = manager.clone();
    crate::spawn_blocking(move || reconciler.reconcile())
        .await
        .context("reconciling logs")??;
    manager.session().set_ready();
    tracing::info!(
        partitions = manager.partitions().len(),
        metadata_offset = manager.metadata().offset(),
        "logs recovered; serving"
    );
    Ok(())
}

/// Reconciles the hosted partitions after every metadata change (changes arriving meanwhile
/// are coalesced into the next pass).
async fn reconcile_on_change(manager: Arc<ReplicaManager>, fetchers: Arc<replication::Fetchers>) {
    let mut changes = manager.metadata().subscribe();
    // Whatever arrived between the start-up reconcile and this subscription.
    changes.mark_changed();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        changes.borrow_and_update();
        let reconciler = manager.clone();
        match crate::spawn_blocking(move || reconciler.reconcile()).await {
            Ok(Ok(())) => fetchers.update(manager.followed()),
            Ok(Err(err)) => {
                tracing::error!(error = %format!("{err:#}"), "reconciling partitions failed")
            }
            Err(err) => tracing::error!(error = %err, "reconcile task failed"),
        }
    }
}

/// Leaders drop followers not caught up within `replica.lag.time.max.ms` from their ISRs.
async fn shrink_isrs(manager: Arc<ReplicaManager>) {
    let lag = manager.config().replica_lag();
    let mut ticker = tokio::time::interval((lag / 2).max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        isr::shrink_isrs(&manager, lag);
    }
}

/// Flush by `flush.ms`, checkpoint recovery points, apply retention.
async fn upkeep(manager: Arc<ReplicaManager>) {
    let config = manager.config().clone();
    let checkpoint_every = Duration::from_millis(config.log_flush_offset_checkpoint_interval_ms);
    let retention_every = Duration::from_millis(config.log_retention_check_interval_ms);
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut last_retention = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(FLUSH_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        let checkpoint = now.duration_since(last_checkpoint) >= checkpoint_every;
        let retention = now.duration_since(last_retention) >= retention_every;
        if checkpoint {
            last_checkpoint = now;
        }
        if retention {
            last_retention = now;
        }
        let worker = manager.clone();
        let _ = crate::spawn_blocking(move || worker.maintain(checkpoint, retention)).await;
    }
}

/// The log cleaner: every `log.cleaner.backoff.ms`, compacts the logs of `cleanup.policy=compact`
/// topics that need it, on a blocking thread with one reused key map.
async fn clean_logs(manager: Arc<ReplicaManager>) {
    let config = manager.config().clone();
    let cleaner_config = tributary_storage::CleanerConfig {
        dedupe_buffer_bytes: usize::try_from(config.log_cleaner_dedupe_buffer_size)
            .unwrap_or(usize::MAX),
        producer_id_expiration_ms: i64::try_from(config.producer_id_expiration_ms)
            .unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut cleaner = match tributary_storage::Cleaner::new(cleaner_config) {
        Ok(c) => Some(c),
        Err(err) => {
            tracing::error!(error = %err, "the log cleaner cannot start");
            return;
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(
        config.log_cleaner_backoff_ms.max(100),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(mut c) = cleaner.take() else { return };
        let worker = manager.clone();
        match crate::spawn_blocking(move || {
            worker.clean_logs(&mut c);
            c
        })
        .await
        {
            Ok(c) => cleaner = Some(c),
            Err(err) => {
                tracing::error!(error = %err, "the log cleaner failed");
                return;
            }
        }
    }
}

/// SERVING while the broker is ready, unfenced in the image, and in touch with the
/// coordinators.
async fn report_health(
    manager: Arc<ReplicaManager>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut serving = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticker.tick().await;
        let session = manager.session();
        let now = session.is_ready()
            && session.is_running_in_image()
            && session
                .since_heartbeat()
                .is_some_and(|d| d <= session.session_timeout());
        if now != serving {
            serving = now;
            tracing::info!(serving, "health");
            tributary_node::serve::set_serving(&reporter, now).await;
        }
    }
}
