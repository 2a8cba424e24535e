//! Produce and InitProducerId.

use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ResponseKind,
    TopicName,
};

use super::{Close, Session, broker_id, host_port, str_bytes};
use crate::api::{PartitionError, TopicPartition, by_topic};

/// Produce v10 added the new leader's endpoint to NOT_LEADER_OR_FOLLOWER answers (KIP-951).
const LEADER_HINT_VERSION: i16 = 10;

/// Kafka's Produce; `None` for acks=0 (no answer, as Kafka).
pub(super) async fn produce(
    session: &Session,
    request: ProduceRequest,
    version: i16,
) -> Result<Option<ResponseKind>, Close> {
    let acks = i32::from(request.acks);
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.is_empty());
    let partitions: Vec<(TopicPartition, bytes::Bytes)> = request
        .topic_data
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic.partition_data.into_iter().map(move |p| {
                (
                    TopicPartition::new(name.clone(), p.index),
                    p.records.unwrap_or_default(),
                )
            })
        })
        .collect();
    let results = if transactional {
        let err = PartitionError::new(
            tributary_proto::common::v1::ErrorCode::InvalidRequest,
            "transactions are not supported yet: produce without a transactional.id",
        );
        partitions
            .into_iter()
            .map(|(tp, _)| (tp, Err(err.clone())))
            .collect()
    } else {
        session.service.produce(acks, timeout, partitions).await?
    };
    if acks == 0 {
        return Ok(None);
    }
    let address = |id| session.service.advertised_address(id, &session.listener);
    Ok(Some(ResponseKind::Produce(produce_response(
        results, version, address,
    ))))
}

/// The answer to a Produce at `version`; `address` gives a broker's address on the request's
/// listener (for KIP-951's leader endpoints).
fn produce_response(
    results: crate::service::ProduceResults,
    version: i16,
    address: impl Fn(i32) -> Option<String>,
) -> ProduceResponse {
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    let responses = by_topic(results)
        .into_iter()
        .map(|(topic, partitions)| {
            TopicProduceResponse::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_responses(
                    partitions
                        .into_iter()
                        .map(|(index, result)| {
                            let answer = PartitionProduceResponse::default().with_index(index);
                            match result {
                                // Versioned fields only from their version on (the codec
                                // refuses them before): log start v5, error message v8.
                                Ok(produced) => {
                                    let answer = answer
                                        .with_base_offset(produced.base_offset)
                                        .with_log_append_time_ms(produced.log_append_time_ms);
                                    if version >= 5 {
                                        answer.with_log_start_offset(produced.log_start_offset)
                                    } else {
                                        answer
                                    }
                                }
                                Err(err) => {
                                    let mut answer = answer
                                        .with_error_code(err.code as i16)
                                        .with_base_offset(-1)
                                        .with_log_append_time_ms(-1);
                                    if version >= 8 {
                                        answer =
                                            answer.with_error_message(Some(str_bytes(err.message)));
                                    }
                                    if let Some(hint) =
                                        err.leader.filter(|_| version >= LEADER_HINT_VERSION)
                                    {
                                        answer = answer.with_current_leader(
                                            LeaderIdAndEpoch::default()
                                                .with_leader_id(broker_id(hint.leader))
                                                .with_leader_epoch(hint.leader_epoch),
                                        );
                                        if let Some(leader) = hint.leader {
                                            add_endpoint(&address, &mut endpoints, leader);
                                        }
                                    }
                                    answer
                                }
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    ProduceResponse::default()
        .with_responses(responses)
        .with_node_endpoints(endpoints)
}

/// Adds broker `id`'s endpoint, once.
fn add_endpoint(
    address: &impl Fn(i32) -> Option<String>,
    endpoints: &mut Vec<NodeEndpoint>,
    id: i32,
) {
    if endpoints.iter().any(|e| e.node_id.0 == id) {
        return;
    }
    if let Some(address) = address(id) {
        let (host, port) = host_port(&address);
        endpoints.push(
            NodeEndpoint::default()
                .with_node_id(broker_id(Some(id)))
                .with_host(host)
                .with_port(port),
        );
    }
}

/// Kafka's InitProducerId (idempotent producers; a transactional id is refused until
/// transactions exist).
pub(super) async fn init_producer_id(
    session: &Session,
    request: InitProducerIdRequest,
) -> Result<ResponseKind, Close> {
    let transactional_id = request.transactional_id.as_ref().map(|id| id.0.as_str());
    let answer = match session.service.init_producer_id(transactional_id).await? {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(id.into())
            .with_producer_epoch(epoch),
        Err(err) => {
            tracing::debug!(error = %err.message, "InitProducerId refused");
            InitProducerIdResponse::default()
                .with_error_code(err.code as i16)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1)
        }
    };
    Ok(ResponseKind::InitProducerId(answer))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::api::{LeaderHint, Produced};

    #[test]
    fn answers_encode_at_every_advertised_version() {
        let (min, max) = super::super::versions::range(ApiKey::Produce).unwrap();
        for version in min.max(3)..=max {
            let results = vec![
                (
                    TopicPartition::new("t", 0),
                    Ok(Produced {
                        base_offset: 7,
                        log_append_time_ms: 1,
                        log_start_offset: 2,
                    }),
                ),
                (
                    TopicPartition::new("t", 1),
                    Err(PartitionError::new(
                        tributary_proto::common::v1::ErrorCode::NotLeaderOrFollower,
                        "moved",
                    )
                    .with_leader(LeaderHint {
                        leader: Some(2),
                        leader_epoch: 3,
                    })),
                ),
            ];
            let answer = produce_response(results, version, |_| Some("h:1".into()));
            let mut out = bytes::BytesMut::new();
            ResponseKind::Produce(answer)
                .encode(&mut out, version)
                .unwrap_or_else(|e| panic!("Produce v{version}: {e}"));
        }
    }
}
