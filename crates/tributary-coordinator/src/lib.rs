//! Tributary's coordinator: the cluster's source of truth and the home of the controller.
//!
//! A coordinator node runs a Raft node ([`tributary_raft`]) whose state machine is the metadata
//! image ([`tributary_metadata`]); the Raft leader is the controller. It serves, on one gRPC
//! port, the Raft transport, the broker-facing `BrokerLifecycle` service, the `Admin` service and
//! `grpc.health.v1`. Writes that reach a follower are forwarded to the leader.
//!
//! Architecture invariants: the coordinator never touches partition data; every change to the
//! metadata is a Raft entry, validated again when applied; liveness (heartbeats) is the active
//! controller's soft state, and only its decisions (fencing) go through Raft.

pub mod config;
pub mod controller;
pub mod coordinator;
pub mod metrics;
pub mod scrape;
pub mod service;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tributary_proto::coordinator::v1::admin_server::AdminServer;
use tributary_proto::coordinator::v1::broker_lifecycle_server::BrokerLifecycleServer;
use tributary_raft::{MAX_FRAME_SIZE, RaftConfig, RaftNode};

pub use config::{ConfigFlags, CoordinatorConfig};
pub use coordinator::Coordinator;

/// Largest gRPC message the coordinator accepts or sends.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Runs a coordinator node until `shutdown` resolves (SIGTERM in the binary).
pub async fn run(
    config: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // This node's tasks and requests run inside this span, so their events name the node.
    let span = tracing::info_span!("coordinator", id = config.node_id);
    tracing::Instrument::instrument(serve(config, shutdown), span).await
}

async fn serve(
    config: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let node = RaftNode::start(
        config.node_id,
        &config.data_dir,
        RaftConfig::default(),
        state::MetadataState::default(),
    )
    .await
    .context("starting the Raft node")?;
    let coordinator = Arc::new(Coordinator::new(node, config.clone()));
    let (health, health_service) = tributary_node::serve::health().await;

    let raft_service = coordinator.node().grpc_service();
    let lifecycle =
        BrokerLifecycleServer::new(service::BrokerLifecycleService(coordinator.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(service::AdminService(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = tributary_node::serve::builder(MAX_FRAME_SIZE)
        .add_service(health_service)
        .add_service(raft_service)
        .add_service(lifecycle)
        .add_service(admin);
    let server = tributary_node::serve::spawn(router, listener, async {
        let _ = stop_rx.await;
    });
    tracing::info!(node_id = config.node_id, listen = %config.listen, advertised = %config.advertised_address, "coordinator serving");

    // A new cluster bootstraps from its configured voters; a node that already holds cluster
    // state refuses, which is what a restart looks like.
    if config.join {
        tracing::info!("waiting to be added to a cluster (AddCoordinator)");
    } else {
        match coordinator
            .node()
            .initialize(config.bootstrap_members())
            .await
        {
            Ok(()) => {
                tracing::info!(members = ?config.bootstrap_members(), "bootstrapped a new cluster")
            }
            Err(err) if err.is_already_initialized() => {}
            Err(err) => {
                tracing::warn!(error = %err, "could not bootstrap (another member may have)")
            }
        }
    }

    let scraped = coordinator.clone();
    let metrics_server =
        tributary_node::metrics::spawn(config.metrics_listen, move || scrape::render(&scraped))
            .await?;
    let controller = tokio::spawn(tracing::Instrument::in_current_span(controller::run(
        coordinator.clone(),
    )));
    let health_task = tokio::spawn(tracing::Instrument::in_current_span(report_health(
        coordinator.clone(),
        health,
    )));
    shutdown.await;
    tracing::info!("shutting down");
    controller.abort();
    health_task.abort();
    if let Some(task) = metrics_server {
        task.abort();
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    coordinator
        .node()
        .shutdown()
        .await
        .context("stopping the Raft node")?;
    Ok(())
}

/// SERVING while a Raft leader is known (this node can answer or forward).
async fn report_health(
    coordinator: Arc<Coordinator>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut serving = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticker.tick().await;
        let now = coordinator.node().leader().is_some() && coordinator.node().applied_index() > 0;
        if now != serving {
            serving = now;
            tributary_node::serve::set_serving(&reporter, now).await;
        }
    }
}
