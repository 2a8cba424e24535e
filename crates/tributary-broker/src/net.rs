//! One port, two protocols: every listener accepts connections, sets TCP_NODELAY, and reads
//! (without consuming) the first byte a client sends. An HTTP/2 client preface starts with `P`:
//! the connection goes to tonic (gRPC). A Kafka request starts with the high byte of its 4-byte
//! size, 0x00..=0x06 given the 100 MiB frame limit: the connection goes to `kafka`. Anything
//! else, or silence past [`FIRST_BYTE_WAIT`], is closed.
//!
//! Invariant: one connection's wait for its first byte never holds up another (each is its own
//! task), and peeking consumes nothing, so either protocol sees the stream from its start.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Router;

use crate::kafka;
use crate::service::Service;

/// How long a new connection may stay silent before its first byte decides its protocol.
pub const FIRST_BYTE_WAIT: Duration = Duration::from_secs(10);
/// gRPC connections accepted but not yet taken by tonic.
const GRPC_BACKLOG: usize = 64;

/// The protocol a connection speaks, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 (its preface, `PRI * HTTP/2.0`).
    Grpc,
    /// Kafka (the high byte of a request's size).
    Kafka,
}

impl Protocol {
    /// The protocol whose connections start with `byte`, if any.
    pub fn from_first_byte(byte: u8) -> Option<Self> {
        match byte {
            b'P' => Some(Protocol::Grpc),
            0x00..=0x06 => Some(Protocol::Kafka),
            _ => None,
        }
    }
}

/// Serves listener `name` on `socket` until `stop` turns true: gRPC through `router`, Kafka
/// through `kafka::serve`.
pub fn spawn(
    router: Router,
    socket: TcpListener,
    name: Arc<str>,
    service: Arc<Service>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let (grpc_tx, grpc_rx) = mpsc::channel::<std::io::Result<TcpStream>>(GRPC_BACKLOG);
    let mut grpc_stop = stop.clone();
    let grpc = crate::spawn(
        router.serve_with_incoming_shutdown(ReceiverStream::new(grpc_rx), async move {
            stopped(&mut grpc_stop).await
        }),
    );
    crate::spawn(accept(socket, name, service, grpc_tx, stop));
    grpc
}

async fn accept(
    socket: TcpListener,
    name: Arc<str>,
    service: Arc<Service>,
    grpc: mpsc::Sender<std::io::Result<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to small
        // request/response exchanges.
        let _ = stream.set_nodelay(true);
        let (grpc, service, name, mut stop) =
            (grpc.clone(), service.clone(), name.clone(), stop.clone());
        crate::spawn(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(FIRST_BYTE_WAIT, stream.peek(&mut first)).await;
            let protocol = match peeked {
                Ok(Ok(1)) => Protocol::from_first_byte(first[0]),
                Ok(Ok(_)) => return, // closed before a byte
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "connection failed before its first byte");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, wait = ?FIRST_BYTE_WAIT, "closing a connection that sent nothing");
                    return;
                }
            };
            match protocol {
                Some(Protocol::Grpc) => {
                    let _ = grpc.send(Ok(stream)).await;
                }
                Some(Protocol::Kafka) => {
                    let session = kafka::Session::new(service, name, peer);
                    kafka::serve(stream, session, stopped(&mut stop)).await;
                }
                None => tracing::info!(
                    %peer,
                    first_byte = first[0],
                    "closing a connection that speaks neither gRPC nor Kafka"
                ),
            }
        });
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_decides() {
        assert_eq!(Protocol::from_first_byte(b'P'), Some(Protocol::Grpc));
        for byte in 0..=6 {
            assert_eq!(Protocol::from_first_byte(byte), Some(Protocol::Kafka));
        }
        // 0x07 would announce a frame over 100 MiB; 0x16 is a TLS handshake (not yet served).
        assert_eq!(Protocol::from_first_byte(0x07), None);
        assert_eq!(Protocol::from_first_byte(0x16), None);
        assert_eq!(Protocol::from_first_byte(b'G'), None);
    }
}
