//! The Kafka wire protocol (KIP-482 framing, Kafka 4's schemas through the `kafka-protocol`
//! crate), so Kafka's own clients and tools (librdkafka, kcat, kafka-python, the Java client)
//! work against a broker unmodified. Served on every listener, on the same port as gRPC
//! (`net` decides by the first byte).
//!
//! Like `grpc`, this module only translates: every request goes to the protocol-neutral
//! `service` layer, so produce, fetch, groups and admin have one implementation.
//!
//! - `connection`: framing, header decoding, one request at a time per connection, answered in
//!   order (Kafka's rule: an idempotent producer's batches must not be reordered).
//! - `versions`: the APIs and versions this broker advertises, ApiVersions and KIP-511.
//! - `produce`, `fetch`, `metadata`, `groups`, `admin`: one file per family of APIs.
//! - `configs`: the config APIs (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs).
//! - `records`: DeleteRecords and DescribeLogDirs.
//!
//! Invariants: a frame over [`MAX_REQUEST_BYTES`], an unknown API key, a version outside the
//! advertised range (other than the documented answers) or an undecodable request closes the
//! connection with a log line, never a panic; a broker that is not ready closes connections
//! rather than answer with data it does not have; record batches pass through as the client's
//! bytes.

mod admin;
mod configs;
mod connection;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod records;
mod splice;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{BrokerId, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::service::Service;

pub use connection::serve;
pub use versions::SUPPORTED;

/// Largest request frame accepted (Kafka's `socket.request.max.bytes`, 100 MiB).
pub const MAX_REQUEST_BYTES: usize = crate::MAX_MESSAGE_BYTES;

/// One Kafka connection's view of the broker: the service and the listener it arrived on
/// (every address it answers with is an address on that listener).
#[derive(Debug, Clone)]
pub struct Session {
    service: Arc<Service>,
    listener: Arc<str>,
    peer: SocketAddr,
}

impl Session {
    /// A session for a client at `peer` on `listener`.
    pub fn new(service: Arc<Service>, listener: Arc<str>, peer: SocketAddr) -> Self {
        Self {
            service,
            listener,
            peer,
        }
    }
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    /// The broker is not ready: clients reconnect and retry.
    #[error(transparent)]
    NotReady(#[from] crate::service::NotReady),
    /// The request cannot be served on this protocol (said in the log line).
    #[error("{0}")]
    Refused(String),
}

/// An answer, with the record batches set aside from it (`splice`).
#[derive(Debug)]
struct Answer {
    response: ResponseKind,
    splices: splice::Splices,
}

impl From<ResponseKind> for Answer {
    fn from(response: ResponseKind) -> Self {
        Self {
            response,
            splices: splice::Splices::default(),
        }
    }
}

/// Has `request` served; `None` when it gets no answer (Produce with acks=0).
async fn dispatch(
    session: &Session,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<Option<Answer>, Close> {
    let version = header.request_api_version;
    let response = match request {
        RequestKind::ApiVersions(_) => versions::api_versions(),
        RequestKind::Metadata(r) => metadata::metadata(session, r, version).await?,
        RequestKind::Produce(r) => {
            return Ok(produce::produce(session, r, version)
                .await?
                .map(Answer::from));
        }
        RequestKind::InitProducerId(r) => produce::init_producer_id(session, r).await?,
        RequestKind::Fetch(r) => return fetch::fetch(session, r, version).await.map(Some),
        RequestKind::ListOffsets(r) => fetch::list_offsets(session, r, version).await?,
        RequestKind::OffsetForLeaderEpoch(r) => fetch::offset_for_leader_epoch(session, r).await?,
        RequestKind::FindCoordinator(r) => groups::find_coordinator(session, r, version)?,
        RequestKind::JoinGroup(r) => groups::join_group(session, header, r).await?,
        RequestKind::SyncGroup(r) => groups::sync_group(session, r, version).await?,
        RequestKind::Heartbeat(r) => groups::heartbeat(session, r).await?,
        RequestKind::LeaveGroup(r) => groups::leave_group(session, r, version)?,
        RequestKind::OffsetCommit(r) => groups::offset_commit(session, r).await?,
        RequestKind::OffsetFetch(r) => groups::offset_fetch(session, r, version)?,
        RequestKind::OffsetDelete(r) => groups::offset_delete(session, r).await?,
        RequestKind::ListGroups(r) => groups::list_groups(session, r, version)?,
        RequestKind::DescribeGroups(r) => groups::describe_groups(session, r, version)?,
        RequestKind::DeleteGroups(r) => groups::delete_groups(session, r).await?,
        RequestKind::CreateTopics(r) => admin::create_topics(session, r, version).await?,
        RequestKind::DeleteTopics(r) => admin::delete_topics(session, r, version).await?,
        RequestKind::CreatePartitions(r) => admin::create_partitions(session, r).await?,
        RequestKind::DescribeCluster(r) => admin::describe_cluster(session, r).await?,
        RequestKind::DescribeConfigs(r) => configs::describe_configs(session, r, version).await?,
        RequestKind::AlterConfigs(r) => configs::alter_configs(session, r).await?,
        RequestKind::IncrementalAlterConfigs(r) => {
            configs::incremental_alter_configs(session, r).await?
        }
        RequestKind::DeleteRecords(r) => records::delete_records(session, r).await?,
        RequestKind::DescribeLogDirs(r) => records::describe_log_dirs(session, r, version).await?,
        other => {
            // `versions::out_of_range` refuses every API not listed, so this is a bug.
            return Err(Close::Refused(format!(
                "{:?} is advertised but has no handler",
                other
            )));
        }
    };
    Ok(Some(response.into()))
}

/// `host:port` (or `[v6]:port`) split for Kafka's broker entries; port 0 if there is none.
pub(crate) fn host_port(address: &str) -> (StrBytes, i32) {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (
                StrBytes::from_string(host.to_owned()),
                port.parse().unwrap_or(0),
            )
        }
        None => (StrBytes::from_string(address.to_owned()), 0),
    }
}

/// The brokers a Kafka client may use (not fenced, with an address on the request's listener)
/// and the one named as controller: this broker if it is among them, else the first (KRaft's
/// rule: the real controllers are not reachable by clients). Metadata and DescribeCluster.
pub(crate) fn live_brokers(
    brokers: &[crate::api::BrokerEndpoint],
    me: tributary_metadata::BrokerId,
) -> (
    Vec<&crate::api::BrokerEndpoint>,
    Option<tributary_metadata::BrokerId>,
) {
    let alive: Vec<_> = brokers
        .iter()
        .filter(|b| b.state != "FENCED" && b.address.is_some())
        .collect();
    let controller = alive
        .iter()
        .find(|b| b.id == me)
        .or_else(|| alive.first())
        .map(|b| b.id);
    (alive, controller)
}

/// A Kafka string from ours.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A broker id on the wire (-1 for none).
pub(crate) fn broker_id(id: Option<tributary_metadata::BrokerId>) -> BrokerId {
    BrokerId(id.unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_addresses() {
        assert_eq!(host_port("localhost:9092"), ("localhost".into(), 9092));
        assert_eq!(host_port("[::1]:9093"), ("::1".into(), 9093));
        assert_eq!(host_port("noport"), ("noport".into(), 0));
    }
}
