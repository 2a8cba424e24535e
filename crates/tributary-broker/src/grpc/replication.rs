//! `tributary.broker.v1.Replication`: the leader's side of followers' fetches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::replication_server::Replication;

use super::{ok, wire_error};
use crate::api::{EpochQuery, ReplicaFetchPartition, ReplicaFetchRequest, TopicPartition};
use crate::service::{MAX_WAIT_CAP, Service};

/// The broker-to-broker replication service.
#[derive(Debug, Clone)]
pub struct ReplicationService(pub Arc<Service>);

fn replica_fetch_request(req: &pb::ReplicaFetchRequest) -> ReplicaFetchRequest {
    ReplicaFetchRequest {
        replica: req.replica_id,
        broker_epoch: req.broker_epoch,
        max_wait: Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_WAIT_CAP),
        min_bytes: req.min_bytes as usize,
        max_bytes: req.max_bytes as usize,
        partitions: req
            .partitions
            .iter()
            .map(|p| ReplicaFetchPartition {
                tp: TopicPartition::new(p.topic.clone(), p.partition),
                offset: p.fetch_offset,
                leader_epoch: p.current_leader_epoch,
                max_bytes: p.partition_max_bytes as usize,
                log_start_offset: p.log_start_offset.unwrap_or(-1),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    type ReplicaFetchStream = ReceiverStream<Result<pb::ReplicaFetchResponse, Status>>;

    async fn replica_fetch(
        &self,
        request: Request<tonic::Streaming<pb::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        let service = self.0.clone();
        service.ready()?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        crate::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let fetched = match service.replica_fetch(&replica_fetch_request(&req)).await {
                    Ok(fetched) => fetched,
                    Err(not_ready) => {
                        let _ = tx.send(Err(not_ready.into())).await;
                        break;
                    }
                };
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
        let queries: Vec<EpochQuery> = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|q| EpochQuery {
                tp: TopicPartition::new(q.topic, q.partition),
                current_leader_epoch: q.current_leader_epoch,
                leader_epoch: q.leader_epoch,
            })
            .collect();
        let partitions = self
            .0
            .offsets_for_leader_epoch(&queries)
            .await?
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
