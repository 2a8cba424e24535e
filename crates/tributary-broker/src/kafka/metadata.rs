//! Metadata: brokers at their addresses on the listener the request came in on, the topics
//! asked for (by name or by id), and a broker as the "controller" clients may send admin
//! requests to (KRaft's rule: the real controllers are not reachable by clients).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use tributary_kafka::ErrorCode;
use uuid::Uuid;

use super::{Close, Session, broker_id, host_port, str_bytes};
use crate::api::{self, ClusterMetadata, PartitionError, TopicMetadata};
use crate::service::is_internal_topic;

/// Kafka's Metadata.
pub(super) async fn metadata(
    session: &Session,
    request: MetadataRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    // Topics asked for by id (v10+) are looked up by name; unknown ids are answered as such.
    let mut unknown_ids = Vec::new();
    let topics = match request.topics {
        // v0 has no null: an empty list means every topic.
        Some(topics) if !(version == 0 && topics.is_empty()) => {
            let mut names = Vec::with_capacity(topics.len());
            for topic in topics {
                match topic.name {
                    Some(name) => names.push(name.0.to_string()),
                    None => match topic_name(session, topic.topic_id) {
                        Some(name) => names.push(name),
                        None => unknown_ids.push(topic.topic_id),
                    },
                }
            }
            Some(names)
        }
        _ => None,
    };
    let answer = session
        .service
        .metadata(
            &api::MetadataRequest {
                topics,
                // v0-3 always allowed it.
                allow_auto_topic_creation: version < 4 || request.allow_auto_topic_creation,
                min_metadata_offset: 0,
            },
            &session.listener,
        )
        .await?;
    let me = session.service.manager().broker_id();
    let mut response = response(me, answer, version);
    response.topics.extend(unknown_ids.into_iter().map(|id| {
        MetadataResponseTopic::default()
            .with_error_code(ErrorCode::UnknownTopicId.code())
            .with_topic_id(id)
    }));
    Ok(ResponseKind::Metadata(response))
}

fn topic_name(session: &Session, id: Uuid) -> Option<String> {
    session.service.manager().metadata().read(|image| {
        image
            .topics
            .values()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
    })
}

/// Versioned fields are set only from their version on (the codec refuses them before): rack
/// and controller v1, cluster id v2, offline replicas v5, leader epoch v7, topic id v10.
fn response(me: i32, answer: ClusterMetadata, version: i16) -> MetadataResponse {
    let (alive, controller) = super::live_brokers(&answer.brokers, me);
    MetadataResponse::default()
        .with_brokers(
            alive
                .iter()
                .map(|b| {
                    let (host, port) = host_port(b.address.as_deref().unwrap_or_default());
                    MetadataResponseBroker::default()
                        .with_node_id(broker_id(Some(b.id)))
                        .with_host(host)
                        .with_port(port)
                        .with_rack(b.rack.clone().filter(|_| version >= 1).map(str_bytes))
                })
                .collect(),
        )
        .with_cluster_id(answer.cluster_id.filter(|_| version >= 2).map(str_bytes))
        .with_controller_id(broker_id(controller.filter(|_| version >= 1)))
        .with_topics(
            answer
                .topics
                .into_iter()
                .map(|t| topic(t, version))
                .collect(),
        )
}

fn code(error: &Option<PartitionError>) -> i16 {
    error.as_ref().map_or(0, |e| e.code as i16)
}

fn topic(t: TopicMetadata, version: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code(&t.error))
        .with_is_internal(version >= 1 && is_internal_topic(&t.name))
        .with_topic_id(t.topic_id.filter(|_| version >= 10).unwrap_or_default())
        .with_name(Some(TopicName(str_bytes(t.name))))
        .with_partitions(
            t.partitions
                .into_iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_error_code(code(&p.error))
                        .with_partition_index(p.partition)
                        .with_leader_id(broker_id(p.leader))
                        .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                        .with_replica_nodes(p.replicas.into_iter().map(Into::into).collect())
                        .with_isr_nodes(p.isr.into_iter().map(Into::into).collect())
                        .with_offline_replicas(if version >= 5 {
                            p.offline_replicas.into_iter().map(Into::into).collect()
                        } else {
                            Vec::new()
                        })
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::api::{BrokerEndpoint, PartitionMetadata};

    #[test]
    fn answers_encode_at_every_advertised_version() {
        let (min, max) = super::super::versions::range(ApiKey::Metadata).unwrap();
        for version in min..=max {
            let answer = ClusterMetadata {
                brokers: vec![BrokerEndpoint {
                    id: 1,
                    address: Some("localhost:9092".into()),
                    rack: Some("r1".into()),
                    state: "RUNNING",
                }],
                cluster_id: Some("c".into()),
                controller_id: Some(101),
                topics: vec![TopicMetadata {
                    name: "__consumer_offsets".into(),
                    error: None,
                    topic_id: Some(Uuid::new_v4()),
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        error: None,
                        leader: Some(1),
                        leader_epoch: 3,
                        replicas: vec![1, 2],
                        isr: vec![1],
                        offline_replicas: vec![2],
                    }],
                }],
                metadata_offset: 9,
            };
            let answer = response(1, answer, version);
            assert_eq!(answer.controller_id.0, if version >= 1 { 1 } else { -1 });
            let mut out = bytes::BytesMut::new();
            ResponseKind::Metadata(answer)
                .encode(&mut out, version)
                .unwrap_or_else(|e| panic!("Metadata v{version}: {e}"));
        }
    }
}
