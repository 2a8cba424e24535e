//! Produce and InitProducerId.

use std::time::Instant;

use tributary_proto::common::v1::ErrorCode;

use super::{NotReady, Service, is_internal_topic};
use crate::api::{PartitionError, ProduceRequest, Produced, TopicPartition};
use crate::metrics::METRICS;

/// Each partition's answer to a Produce request.
pub type ProduceResults = Vec<(TopicPartition, Result<Produced, PartitionError>)>;

impl Service {
    /// Kafka's Produce: appends each partition's batches on its leader; with acks=all answers
    /// once the high watermark has passed them (or the request's timeout). `acks` is Kafka's
    /// number; clients cannot write to internal topics (INVALID_TOPIC_EXCEPTION, as in Kafka).
    pub async fn produce(
        &self,
        acks: i32,
        timeout: std::time::Duration,
        partitions: Vec<(TopicPartition, bytes::Bytes)>,
    ) -> Result<ProduceResults, NotReady> {
        self.ready()?;
        let start = Instant::now();
        let Some(acks) = crate::api::Acks::from_kafka(acks) else {
            let err = PartitionError::new(
                ErrorCode::InvalidRequiredAcks,
                format!("acks must be 0, 1 or -1 (all), got {acks}"),
            );
            let results: ProduceResults = partitions
                .into_iter()
                .map(|(tp, _)| (tp, Err(err.clone())))
                .collect();
            METRICS.request("produce", start, results.iter().map(|_| err.code));
            return Ok(results);
        };
        let (internal, partitions): (Vec<_>, Vec<_>) = partitions
            .into_iter()
            .partition(|(tp, _)| is_internal_topic(&tp.topic));
        let mut results = if partitions.is_empty() {
            Vec::new()
        } else {
            self.manager
                .append_records(ProduceRequest {
                    acks,
                    timeout,
                    partitions,
                })
                .await
        };
        for (tp, _) in internal {
            let message = format!(
                "{} is an internal topic: clients cannot write to it",
                tp.topic
            );
            results.push((
                tp,
                Err(PartitionError::new(
                    ErrorCode::InvalidTopicException,
                    message,
                )),
            ));
        }
        METRICS.request(
            "produce",
            start,
            results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|e| e.code))
                .collect::<Vec<_>>(),
        );
        Ok(results)
    }

    /// Kafka's InitProducerId for idempotent producers: a new producer id at epoch 0, from the
    /// block the controller allocated to this broker (a new block when it runs out). A
    /// transactional id is refused until transactions exist.
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
    ) -> Result<Result<(i64, i16), PartitionError>, NotReady> {
        self.ready()?;
        if transactional_id.is_some_and(|id| !id.is_empty()) {
            return Ok(Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                "transactions are not supported yet: leave transactional_id empty",
            )));
        }
        Ok(self.next_producer_id().await)
    }

    async fn next_producer_id(&self) -> Result<(i64, i16), PartitionError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let request = tributary_proto::coordinator::v1::AllocateProducerIdsRequest {
                broker_id: self.manager.broker_id(),
                broker_epoch: self.manager.session().broker_epoch(),
            };
            let response = self
                .manager
                .coordinators()
                .call(|channel| async move {
                    {
                        tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient::new(channel)
                            .allocate_producer_ids(request)
                            .await
                    }
                })
                .await
                .map_err(|status| {
                    PartitionError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!("cannot allocate producer ids: {}", status.message()),
                    )
                })?
                .into_inner();
            if let Some(err) = response.error.filter(|e| e.error_code() != ErrorCode::None) {
                return Err(PartitionError::new(err.error_code(), err.message));
            }
            if response.count <= 0 {
                return Err(PartitionError::new(
                    ErrorCode::UnknownServerError,
                    "the controller allocated no producer ids",
                ));
            }
            *ids = (
                response.first_producer_id,
                response.first_producer_id + response.count,
            );
        }
        let id = ids.0;
        ids.0 += 1;
        Ok((id, 0))
    }
}
