//! The gRPC serve set-up both servers share: health, TCP_NODELAY, frame size, request spans.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// The health service, reporting NOT_SERVING for service "" until the server says otherwise
/// (probes and `healthcheck` ask service "").
pub async fn health() -> (HealthReporter, HealthServer<impl Health>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    (reporter, service)
}

/// Reports service "" SERVING or NOT_SERVING.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
}

/// A server whose requests run inside the caller's span (so their events name the node) and
/// whose HTTP/2 frames are `max_frame_size` bytes (hyper's 16 KiB default halves large-batch
/// throughput).
pub fn builder(max_frame_size: u32) -> Server {
    let span = tracing::Span::current();
    Server::builder()
        .trace_fn(move |_| span.clone())
        .max_frame_size(Some(max_frame_size))
}

/// Serves `router` on `listener` until `stop` resolves, on a task in the caller's span.
pub fn spawn(
    router: Router,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    // TCP_NODELAY on every accepted connection: without it Nagle's algorithm and delayed ACKs
    // add ~40 ms to small request/response exchanges (acks=all, replica fetches, Raft).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(tracing::Instrument::in_current_span(
        router.serve_with_incoming_shutdown(incoming, stop),
    ))
}
