//! `tributary.broker.v1.Broker`: translation to and from the service layer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::broker_server::Broker;
use tributary_proto::common::v1::Error as WireError;

use super::{known_epoch, ok, wire_error, wire_hint};
use crate::api::{
    ClusterMetadata, FetchPartition, FetchRequest, FetchedPartition, Isolation, MetadataRequest,
    OffsetQuery, PartitionError, TopicPartition, by_topic,
};
use crate::service::{MAX_WAIT_CAP, Service};

/// Kafka's `fetch.max.bytes` default, for a request that leaves it 0.
const FETCH_MAX_BYTES_DEFAULT: usize = 52_428_800;
/// Kafka's `max.partition.fetch.bytes` default, for a partition that leaves it 0.
const PARTITION_MAX_BYTES_DEFAULT: usize = 1_048_576;

/// The client-facing broker service, one per listener.
#[derive(Debug, Clone)]
pub struct BrokerService {
    service: Arc<Service>,
    /// The name of the listener this instance serves: every broker address it answers with
    /// is that broker's address on this listener.
    listener: Arc<str>,
}

impl BrokerService {
    /// The service for clients on `listener`.
    pub fn new(service: Arc<Service>, listener: Arc<str>) -> Self {
        Self { service, listener }
    }
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

fn wire_error_or_ok(err: &Option<PartitionError>) -> Option<WireError> {
    err.as_ref().map_or_else(ok, wire_error)
}

fn fetch_request(req: pb::FetchRequest) -> Result<FetchRequest, Status> {
    Ok(FetchRequest {
        max_wait: Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT_CAP),
        min_bytes: req.min_bytes as usize,
        max_bytes: if req.max_bytes == 0 {
            FETCH_MAX_BYTES_DEFAULT
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
                        PARTITION_MAX_BYTES_DEFAULT
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
    service: &Service,
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
                    error: wire_error_or_ok(&r.error),
                    current_leader: r
                        .error
                        .as_ref()
                        .and_then(|e| wire_hint(service, listener, &e.leader)),
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

fn metadata_response(answer: ClusterMetadata) -> pb::MetadataResponse {
    pb::MetadataResponse {
        brokers: answer
            .brokers
            .into_iter()
            .map(|b| pb::metadata_response::BrokerEndpoint {
                broker_id: b.id,
                address: b.address.unwrap_or_default(),
                rack: b.rack,
                state: b.state.to_owned(),
            })
            .collect(),
        cluster_id: answer.cluster_id.unwrap_or_default(),
        controller_id: answer.controller_id.unwrap_or(-1),
        topics: answer
            .topics
            .into_iter()
            .map(|t| pb::metadata_response::TopicMetadata {
                error: wire_error_or_ok(&t.error),
                name: t.name,
                topic_id: t
                    .topic_id
                    .map(|id| id.as_bytes().to_vec().into())
                    .unwrap_or_default(),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| pb::metadata_response::PartitionMetadata {
                        error: wire_error_or_ok(&p.error),
                        partition: p.partition,
                        leader_id: p.leader.unwrap_or(-1),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas,
                        isr: p.isr,
                        offline_replicas: p.offline_replicas,
                    })
                    .collect(),
            })
            .collect(),
        metadata_offset: answer.metadata_offset,
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = request.into_inner();
        let request = MetadataRequest {
            // gRPC's empty list means every topic (Kafka's null list).
            topics: (!req.topics.is_empty()).then_some(req.topics),
            allow_auto_topic_creation: req.allow_auto_topic_creation,
            min_metadata_offset: req.min_metadata_offset,
        };
        let answer = self.service.metadata(&request, &self.listener).await?;
        Ok(Response::new(metadata_response(answer)))
    }

    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
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
        let timeout = Duration::from_millis(u64::from(req.timeout_ms));
        let results = self.service.produce(req.acks, timeout, partitions).await?;
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
                            current_leader: wire_hint(&self.service, &self.listener, &e.leader),
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
        self.service.ready()?;
        let req = fetch_request(request.into_inner())?;
        let results = self.service.fetch(&req).await?;
        Ok(Response::new(fetch_response(
            &self.service,
            &self.listener,
            results,
        )))
    }

    type FetchStreamStream = ReceiverStream<Result<pb::FetchResponse, Status>>;

    async fn fetch_stream(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStreamStream>, Status> {
        self.service.ready()?;
        let req = fetch_request(request.into_inner())?;
        let mut results = self.service.fetch_stream(req)?;
        let (tx, rx) = mpsc::channel(2);
        let (service, listener) = (self.service.clone(), self.listener.clone());
        crate::spawn(async move {
            while let Some(batch) = results.recv().await {
                let response = fetch_response(&service, &listener, batch);
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let req = request.into_inner();
        let response = match self
            .service
            .init_producer_id(Some(&req.transactional_id))
            .await?
        {
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
        self.service.ready()?;
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
        let topics = by_topic(self.service.list_offsets(&queries).await?)
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
                                current_leader: wire_hint(&self.service, &self.listener, &e.leader),
                            },
                        })
                        .collect(),
                },
            )
            .collect();
        Ok(Response::new(pb::ListOffsetsResponse { topics }))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        let answer =
            super::records::delete_records(&self.service, &self.listener, request.into_inner())
                .await?;
        Ok(Response::new(answer))
    }

    async fn describe_log_dirs(
        &self,
        request: Request<pb::DescribeLogDirsRequest>,
    ) -> Result<Response<pb::DescribeLogDirsResponse>, Status> {
        let answer = super::records::describe_log_dirs(&self.service, request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}
