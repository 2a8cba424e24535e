//! The gRPC front end: translates `tributary.broker.v1.Broker` and the forwarded
//! `tributary.coordinator.v1.Admin` calls to the replica manager and the coordinators. No
//! produce, fetch or offsets logic lives here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tributary_metadata::BrokerState;
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::broker_server::Broker;
use tributary_proto::broker::v1::replication_server::Replication;
use tributary_proto::common::v1::{Error as WireError, ErrorCode};
use tributary_proto::coordinator::v1 as cpb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use tributary_proto::coordinator::v1::admin_server::Admin;

use crate::api::{
    Acks, FetchPartition, FetchRequest, FetchedPartition, Isolation, LeaderHint, OffsetQuery,
    PartitionError, ProduceRequest, TopicPartition,
};
use crate::listeners;
use crate::manager::{ReplicaFetchPartition, ReplicaManager};
use crate::metrics::METRICS;

/// Longest long-poll a fetch may ask for.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
/// How long an admin call waits for this broker's metadata to reach the change it made.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

fn starting(manager: &ReplicaManager) -> Status {
    Status::unavailable(format!(
        "broker {} is starting (recovering its logs and catching up with the metadata); retry shortly",
        manager.broker_id()
    ))
}

fn ready(manager: &ReplicaManager) -> Result<(), Status> {
    if manager.is_ready() {
        Ok(())
    } else {
        Err(starting(manager))
    }
}

fn ok() -> Option<WireError> {
    Some(WireError::none())
}

fn wire_error(err: &PartitionError) -> Option<WireError> {
    Some(WireError::new(err.code, err.message.clone()))
}

/// A leader hint for a client on `listener`: the leader's address on that listener.
fn wire_hint(
    manager: &ReplicaManager,
    listener: &str,
    hint: &Option<LeaderHint>,
) -> Option<pb::LeaderHint> {
    hint.as_ref().map(|h| pb::LeaderHint {
        leader_id: h.leader.unwrap_or(-1),
        leader_epoch: h.leader_epoch,
        address: h
            .leader
            .and_then(|leader| {
                manager
                    .metadata()
                    .read(|image| listeners::advertised_address(image, leader, listener))
            })
            .unwrap_or_default(),
    })
}

fn known_epoch(epoch: i32) -> Option<i32> {
    (epoch >= 0).then_some(epoch)
}

fn isolation(level: i32) -> Result<Isolation, Status> {
    match level {
        0 => Ok(Isolation::ReadUncommitted),
        1 => Ok(Isolation::ReadCommitted),
        other => Err(Status::invalid_argument(format!(
            "isolation_level {other} is neither 0 (READ_UNCOMMITTED) nor 1 (READ_COMMITTED)"
        ))),
    }
}

/// Groups per-partition results by topic, keeping the order topics first appear in.
fn by_topic<T>(
    items: impl IntoIterator<Item = (TopicPartition, T)>,
) -> Vec<(String, Vec<(i32, T)>)> {
    let mut out: Vec<(String, Vec<(i32, T)>)> = Vec::new();
    for (tp, item) in items {
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, list)) => list.push((tp.partition, item)),
            None => out.push((tp.topic, vec![(tp.partition, item)])),
        }
    }
    out
}

fn fetch_request(req: pb::FetchRequest) -> Result<FetchRequest, Status> {
    Ok(FetchRequest {
        max_wait: Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT_CAP),
        min_bytes: req.min_bytes as usize,
        max_bytes: if req.max_bytes == 0 {
            52_428_800 // Kafka's fetch.max.bytes default
        } else {
            req.max_bytes as usize
        },
        isolation: isolation(req.isolation_level)?,
        partitions: req
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions.into_iter().map(move |p| FetchPartition {
                    tp: TopicPartition::new(name.clone(), p.partition),
                    offset: p.fetch_offset,
                    max_bytes: if p.partition_max_bytes == 0 {
                        1_048_576 // Kafka's max.partition.fetch.bytes default
                    } else {
                        p.partition_max_bytes as usize
                    },
                    current_leader_epoch: known_epoch(p.current_leader_epoch),
                })
            })
            .collect(),
    })
}

fn fetch_response(
    manager: &ReplicaManager,
    listener: &str,
    results: Vec<FetchedPartition>,
) -> pb::FetchResponse {
    let topics = by_topic(results.into_iter().map(|r| (r.tp.clone(), r)))
        .into_iter()
        .map(|(name, partitions)| pb::fetch_response::TopicData {
            name,
            partitions: partitions
                .into_iter()
                .map(|(partition, r)| pb::fetch_response::PartitionData {
                    partition,
                    error: r.error.as_ref().map_or_else(ok, wire_error),
                    current_leader: r
                        .error
                        .as_ref()
                        .and_then(|e| wire_hint(manager, listener, &e.leader)),
                    high_watermark: r.high_watermark,
                    last_stable_offset: r.last_stable_offset,
                    log_start_offset: r.log_start_offset,
                    log_end_offset: r.log_end_offset,
                    records: r.records,
                    next_fetch_offset: r.next_offset,
                })
                .collect(),
        })
        .collect();
    pb::FetchResponse { topics }
}

/// The client-facing broker service, one per listener.
#[derive(Debug, Clone)]
pub struct BrokerService(
    pub Arc<ReplicaManager>,
    /// The name of the listener this instance serves: every broker address it answers with
    /// is that broker's address on this listener ([`listeners::advertised_address`]).
    pub Arc<str>,
);

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let start = std::time::Instant::now();
        let req = request.into_inner();
        if req.min_metadata_offset > 0 {
            let _ = manager
                .wait_reconciled(req.min_metadata_offset, CATCH_UP_WAIT)
                .await;
        }
        let auto_create =
            req.allow_auto_topic_creation && manager.config().auto_create_topics_enable;
        let response = manager.metadata().read(|image| {
            let brokers = image
                .brokers
                .values()
                .map(|b| pb::metadata_response::BrokerEndpoint {
                    broker_id: b.id,
                    address: listeners::broker_address(b, &self.1).unwrap_or_default(),
                    rack: b.rack.clone(),
                    state: match b.state {
                        BrokerState::Running => "RUNNING",
                        BrokerState::Fenced => "FENCED",
                        BrokerState::ControlledShutdown => "CONTROLLED_SHUTDOWN",
                    }
                    .to_owned(),
                })
                .collect();
            let running = |b: &i32| {
                image
                    .brokers
                    .get(b)
                    .is_some_and(|x| x.state != BrokerState::Fenced)
            };
            let describe = |topic: &tributary_metadata::Topic| pb::metadata_response::TopicMetadata {
                error: ok(),
                name: topic.name.clone(),
                topic_id: topic.id.as_bytes().to_vec().into(),
                partitions: topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| pb::metadata_response::PartitionMetadata {
                        error: Some(match p.leader {
                            Some(_) => WireError::none(),
                            None => WireError::new(
                                ErrorCode::LeaderNotAvailable,
                                format!("{}-{i} has no leader right now", topic.name),
                            ),
                        }),
                        partition: i as i32,
                        leader_id: p.leader.unwrap_or(-1),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        offline_replicas: p.replicas.iter().copied().filter(|b| !running(b)).collect(),
                    })
                    .collect(),
            };
            let mut missing = Vec::new();
            let topics = if req.topics.is_empty() {
                image.topics.values().map(describe).collect()
            } else {
                req.topics
                    .iter()
                    .map(|name| match image.topics.get(name) {
                        Some(topic) => describe(topic),
                        None => {
                            missing.push(name.clone());
                            pb::metadata_response::TopicMetadata {
                                error: Some(if auto_create {
                                    WireError::new(
                                        ErrorCode::LeaderNotAvailable,
                                        format!("topic `{name}` is being created (auto.create.topics.enable); retry shortly"),
                                    )
                                } else {
                                    WireError::new(
                                        ErrorCode::UnknownTopicOrPartition,
                                        format!("topic `{name}` does not exist; create it first"),
                                    )
                                }),
                                name: name.clone(),
                                ..Default::default()
                            }
                        }
                    })
                    .collect()
            };
            let response = pb::MetadataResponse {
                brokers,
                cluster_id: image.cluster_id.clone().unwrap_or_default(),
                controller_id: image.controller.map_or(-1, |c| c.node_id as i64),
                topics,
                metadata_offset: image.offset,
            };
            (response, missing)
        });
        let (response, missing) = response;
        if auto_create {
            for name in missing {
                manager.auto_create(&name);
            }
        }
        METRICS.request("metadata", start, []);
        Ok(Response::new(response))
    }

    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let start = std::time::Instant::now();
        let req = request.into_inner();
        let partitions: Vec<(TopicPartition, bytes::Bytes)> = req
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| (TopicPartition::new(name.clone(), p.partition), p.records))
            })
            .collect();
        let results = match Acks::from_kafka(req.acks) {
            Some(acks) => {
                manager
                    .produce(ProduceRequest {
                        acks,
                        timeout: Duration::from_millis(u64::from(req.timeout_ms)),
                        partitions,
                    })
                    .await
            }
            None => {
                let err = PartitionError::new(
                    ErrorCode::InvalidRequiredAcks,
                    format!("acks must be 0, 1 or -1 (all), got {}", req.acks),
                );
                partitions
                    .into_iter()
                    .map(|(tp, _)| (tp, Err(err.clone())))
                    .collect()
            }
        };
        METRICS.request(
            "produce",
            start,
            results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|e| e.code))
                .collect::<Vec<_>>(),
        );
        let topics = by_topic(results)
            .into_iter()
            .map(|(name, partitions)| pb::produce_response::TopicResponse {
                name,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, result)| match result {
                        Ok(p) => pb::produce_response::PartitionResponse {
                            partition,
                            error: ok(),
                            base_offset: p.base_offset,
                            log_append_time_ms: p.log_append_time_ms,
                            log_start_offset: p.log_start_offset,
                            current_leader: None,
                        },
                        Err(e) => pb::produce_response::PartitionResponse {
                            partition,
                            error: wire_error(&e),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: -1,
                            current_leader: wire_hint(manager, &self.1, &e.leader),
                        },
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ProduceResponse { topics }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let start = std::time::Instant::now();
        let req = fetch_request(request.into_inner())?;
        let results = manager.fetch(&req).await;
        METRICS
            .bytes_out
            .add(results.iter().map(|r| r.records.len() as u64).sum());
        METRICS.request(
            "fetch",
            start,
            results
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| e.code))
                .collect::<Vec<_>>(),
        );
        Ok(Response::new(fetch_response(manager, &self.1, results)))
    }

    type FetchStreamStream = ReceiverStream<Result<pb::FetchResponse, Status>>;

    async fn fetch_stream(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
        let manager = self.0.clone();
        let listener = self.1.clone();
        ready(&manager)?;
        let mut req = fetch_request(request.into_inner())?;
        if req.max_wait.is_zero() {
            req.max_wait = Duration::from_millis(500);
        }
        let (tx, rx) = mpsc::channel(2);
        crate::spawn(async move {
            let (core_tx, mut core_rx) = mpsc::channel(1);
            let producer = {
                let manager = manager.clone();
                crate::spawn(async move { manager.fetch_continuously(req, core_tx).await })
            };
            while let Some(results) = core_rx.recv().await {
                METRICS
                    .bytes_out
                    .add(results.iter().map(|r| r.records.len() as u64).sum());
                let response = fetch_response(&manager, &listener, results);
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
            producer.abort();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let req = request.into_inner();
        if !req.transactional_id.is_empty() {
            return Ok(Response::new(pb::InitProducerIdResponse {
                error: Some(WireError::new(
                    ErrorCode::InvalidRequest,
                    "transactions are not supported yet: leave transactional_id empty",
                )),
                producer_id: -1,
                producer_epoch: -1,
            }));
        }
        let response = match manager.init_producer_id().await {
            Ok((producer_id, epoch)) => pb::InitProducerIdResponse {
                error: ok(),
                producer_id,
                producer_epoch: i32::from(epoch),
            },
            Err(err) => pb::InitProducerIdResponse {
                error: wire_error(&err),
                producer_id: -1,
                producer_epoch: -1,
            },
        };
        Ok(Response::new(response))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let req = request.into_inner();
        isolation(req.isolation_level)?;
        let queries: Vec<OffsetQuery> = req
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions.into_iter().map(move |p| OffsetQuery {
                    tp: TopicPartition::new(name.clone(), p.partition),
                    timestamp: p.timestamp,
                    current_leader_epoch: known_epoch(p.current_leader_epoch),
                })
            })
            .collect();
        let topics = by_topic(manager.list_offsets(&queries).await)
            .into_iter()
            .map(
                |(name, partitions)| pb::list_offsets_response::TopicResult {
                    name,
                    partitions: partitions
                        .into_iter()
                        .map(|(partition, result)| match result {
                            Ok(found) => pb::list_offsets_response::PartitionResult {
                                partition,
                                error: ok(),
                                offset: found.offset,
                                timestamp: found.timestamp,
                                leader_epoch: found.leader_epoch,
                                current_leader: None,
                            },
                            Err(e) => pb::list_offsets_response::PartitionResult {
                                partition,
                                error: wire_error(&e),
                                offset: -1,
                                timestamp: -1,
                                leader_epoch: -1,
                                current_leader: wire_hint(manager, &self.1, &e.leader),
                            },
                        })
                        .collect(),
                },
            )
            .collect();
        Ok(Response::new(pb::ListOffsetsResponse { topics }))
    }
}

/// The admin service as brokers serve it: each call is forwarded to the coordinators (which
/// forward it to the controller), and answered once this broker's own metadata has applied the
/// change, so a describe through this broker right after sees it.
#[derive(Debug, Clone)]
pub struct AdminService(pub Arc<ReplicaManager>);

/// Forwards an admin call and waits for the offset its answer names.
macro_rules! forward_admin {
    ($self:ident, $request:ident, $method:ident) => {{
        let manager = &$self.0;
        ready(manager)?;
        let req = $request.into_inner();
        let response = manager
            .coordinators()
            .call(|channel| {
                let req = req.clone();
                async move {
                    AdminClient::new(channel)
                        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                        .$method(req)
                        .await
                }
            })
            .await?
            .into_inner();
        response
    }};
}

impl AdminService {
    async fn caught_up<T>(&self, response: T, offset: u64) -> Result<Response<T>, Status> {
        if let Err(reached) = self.0.wait_reconciled(offset, CATCH_UP_WAIT).await {
            tracing::warn!(
                offset,
                reached,
                "metadata did not catch up with an admin change in time"
            );
        }
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topics(
        &self,
        request: Request<cpb::CreateTopicsRequest>,
    ) -> Result<Response<cpb::CreateTopicsResponse>, Status> {
        let response: cpb::CreateTopicsResponse = forward_admin!(self, request, create_topics);
        let offset = response.metadata_offset;
        self.caught_up(response, offset).await
    }

    async fn delete_topics(
        &self,
        request: Request<cpb::DeleteTopicsRequest>,
    ) -> Result<Response<cpb::DeleteTopicsResponse>, Status> {
        let response: cpb::DeleteTopicsResponse = forward_admin!(self, request, delete_topics);
        let offset = response.metadata_offset;
        self.caught_up(response, offset).await
    }

    async fn create_partitions(
        &self,
        request: Request<cpb::CreatePartitionsRequest>,
    ) -> Result<Response<cpb::CreatePartitionsResponse>, Status> {
        let response: cpb::CreatePartitionsResponse =
            forward_admin!(self, request, create_partitions);
        let offset = response.metadata_offset;
        self.caught_up(response, offset).await
    }

    async fn describe_configs(
        &self,
        request: Request<cpb::DescribeConfigsRequest>,
    ) -> Result<Response<cpb::DescribeConfigsResponse>, Status> {
        let response: cpb::DescribeConfigsResponse =
            forward_admin!(self, request, describe_configs);
        Ok(Response::new(response))
    }

    async fn alter_configs(
        &self,
        request: Request<cpb::AlterConfigsRequest>,
    ) -> Result<Response<cpb::AlterConfigsResponse>, Status> {
        let response: cpb::AlterConfigsResponse = forward_admin!(self, request, alter_configs);
        let offset = response.metadata_offset;
        self.caught_up(response, offset).await
    }

    async fn describe_cluster(
        &self,
        request: Request<cpb::DescribeClusterRequest>,
    ) -> Result<Response<cpb::DescribeClusterResponse>, Status> {
        let response: cpb::DescribeClusterResponse =
            forward_admin!(self, request, describe_cluster);
        Ok(Response::new(response))
    }

    async fn add_coordinator(
        &self,
        request: Request<cpb::AddCoordinatorRequest>,
    ) -> Result<Response<cpb::MembershipResponse>, Status> {
        let response: cpb::MembershipResponse = forward_admin!(self, request, add_coordinator);
        Ok(Response::new(response))
    }

    async fn remove_coordinator(
        &self,
        request: Request<cpb::RemoveCoordinatorRequest>,
    ) -> Result<Response<cpb::MembershipResponse>, Status> {
        let response: cpb::MembershipResponse = forward_admin!(self, request, remove_coordinator);
        Ok(Response::new(response))
    }
}

/// The broker-to-broker replication service (the leader's side).
#[derive(Debug, Clone)]
pub struct ReplicationService(pub Arc<ReplicaManager>);

#[tonic::async_trait]
impl Replication for ReplicationService {
    type ReplicaFetchStream = ReceiverStream<Result<pb::ReplicaFetchResponse, Status>>;

    async fn replica_fetch(
        &self,
        request: Request<tonic::Streaming<pb::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        let manager = self.0.clone();
        ready(&manager)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        crate::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let start = std::time::Instant::now();
                let partitions: Vec<ReplicaFetchPartition> = req
                    .partitions
                    .iter()
                    .map(|p| ReplicaFetchPartition {
                        tp: TopicPartition::new(p.topic.clone(), p.partition),
                        offset: p.fetch_offset,
                        leader_epoch: p.current_leader_epoch,
                        max_bytes: p.partition_max_bytes as usize,
                    })
                    .collect();
                let fetched = manager
                    .replica_fetch(
                        req.replica_id,
                        req.broker_epoch,
                        Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT_CAP),
                        req.min_bytes as usize,
                        req.max_bytes as usize,
                        &partitions,
                    )
                    .await;
                match &fetched {
                    Ok(results) => {
                        METRICS
                            .bytes_out
                            .add(results.iter().map(|r| r.records.len() as u64).sum());
                        METRICS.request(
                            "replica_fetch",
                            start,
                            results
                                .iter()
                                .filter_map(|r| r.error.as_ref().map(|e| e.code))
                                .collect::<Vec<_>>(),
                        );
                    }
                    Err(err) => METRICS.request("replica_fetch", start, [err.code]),
                }
                let response = match fetched {
                    Ok(results) => pb::ReplicaFetchResponse {
                        error: ok(),
                        partitions: results
                            .into_iter()
                            .map(|r| pb::replica_fetch_response::ReplicaPartitionData {
                                topic: r.tp.topic,
                                partition: r.tp.partition,
                                error: r.error.as_ref().map_or_else(ok, wire_error),
                                high_watermark: r.high_watermark,
                                log_start_offset: r.log_start_offset,
                                log_end_offset: r.log_end_offset,
                                records: r.records,
                            })
                            .collect(),
                    },
                    Err(err) => pb::ReplicaFetchResponse {
                        error: wire_error(&err),
                        partitions: Vec::new(),
                    },
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn offsets_for_leader_epoch(
        &self,
        request: Request<pb::OffsetsForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetsForLeaderEpochResponse>, Status> {
        let manager = &self.0;
        ready(manager)?;
        let queries: Vec<(TopicPartition, i32, i32)> = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|q| {
                (
                    TopicPartition::new(q.topic, q.partition),
                    q.current_leader_epoch,
                    q.leader_epoch,
                )
            })
            .collect();
        let partitions = manager
            .offsets_for_leader_epoch(&queries)
            .await
            .into_iter()
            .map(|(tp, result)| match result {
                Ok(end) => pb::offsets_for_leader_epoch_response::EpochEnd {
                    topic: tp.topic,
                    partition: tp.partition,
                    error: ok(),
                    leader_epoch: end.leader_epoch,
                    end_offset: end.end_offset,
                },
                Err(err) => pb::offsets_for_leader_epoch_response::EpochEnd {
                    topic: tp.topic,
                    partition: tp.partition,
                    error: wire_error(&err),
                    leader_epoch: -1,
                    end_offset: -1,
                },
            })
            .collect();
        Ok(Response::new(pb::OffsetsForLeaderEpochResponse {
            partitions,
        }))
    }
}
