//! The admin APIs on the Kafka protocol: CreateTopics, DeleteTopics, CreatePartitions and
//! DescribeCluster here, the config APIs in `configs`. Each is forwarded to the coordinators
//! through the service layer (DescribeCluster is answered from this broker's metadata, as
//! Kafka's brokers do), and the coordinators' errors become Kafka's codes.
//!
//! Kafka's rules kept here: -1 partitions or replication factor means the broker's
//! `num.partitions` / `default.replication.factor`; a topic named twice in one request is
//! refused (INVALID_REQUEST) without touching the other; manual replica assignments are
//! refused (INVALID_REPLICA_ASSIGNMENT) as the controller places replicas itself; a coordinator
//! that cannot be reached answers REQUEST_TIMED_OUT (retriable) per topic.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    ResponseKind, TopicName,
};
use tributary_kafka::ErrorCode;
use tributary_proto::common::v1::Error as WireError;
use tributary_proto::coordinator::v1 as cpb;
use uuid::Uuid;

use super::{Close, Session, broker_id, host_port, str_bytes};
use crate::service::AdminError;

/// CreateTopics v5 (KIP-525): the created topic's partitions, replication factor and configs.
const CREATE_TOPICS_DETAILS: i16 = 5;
/// CreateTopics v7 and DeleteTopics v6 (KIP-516): topic ids.
const TOPIC_IDS: i16 = 7;
/// DeleteTopics v6: topics by name or id.
const DELETE_BY_ID: i16 = 6;
/// DeleteTopics v5: error messages.
const DELETE_MESSAGES: i16 = 5;
/// DescribeCluster's endpoint type for brokers (2 asks for controllers, which clients do not
/// reach here).
const ENDPOINT_BROKERS: i8 = 1;
/// Config sources as DescribeConfigs and CreateTopics report them.
pub(super) const SOURCE_TOPIC: i8 = 1;
pub(super) const SOURCE_STATIC_BROKER: i8 = 4;
pub(super) const SOURCE_DEFAULT: i8 = 5;

/// A refusal: Kafka's code and a message.
pub(super) type Refusal = (i16, String);

/// Kafka's code for a gRPC error of the coordinators; a broker that is not ready closes the
/// connection instead.
pub(super) fn refusal(err: AdminError) -> Result<Refusal, Close> {
    match err {
        AdminError::NotReady(not_ready) => Err(Close::NotReady(not_ready)),
        AdminError::Coordinators(status) => {
            let code = match status.code() {
                // No coordinator answered in time (or none leads yet): retriable.
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => ErrorCode::RequestTimedOut,
                tonic::Code::InvalidArgument => ErrorCode::InvalidRequest,
                _ => ErrorCode::UnknownServerError,
            };
            Ok((
                code.code(),
                format!("the coordinators did not answer: {}", status.message()),
            ))
        }
    }
}

/// The refusal in a coordinator's answer, if any.
pub(super) fn wire_refusal(error: &Option<WireError>) -> Option<Refusal> {
    error
        .as_ref()
        .filter(|e| e.code != 0)
        .map(|e| (e.code as i16, e.message.clone()))
}

fn invalid_request(message: impl Into<String>) -> Refusal {
    (ErrorCode::InvalidRequest.code(), message.into())
}

/// The names that appear more than once in `names`.
fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for name in names {
        *seen.entry(name).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_owned())
        .collect()
}

// ---- CreateTopics -----------------------------------------------------------------------------

/// One topic of a CreateTopics request, as the controller gets it or refused beforehand.
#[derive(Debug)]
struct NewTopic {
    name: String,
    partitions: i32,
    replication_factor: i32,
    configs: BTreeMap<String, String>,
    refused: Option<Refusal>,
}

/// Kafka's CreateTopics.
pub(super) async fn create_topics(
    session: &Session,
    request: CreateTopicsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let config = session.service.manager().config();
    let defaults = (config.num_partitions, config.default_replication_factor);
    let topics = new_topics(request.topics, defaults);
    let asked: Vec<cpb::create_topics_request::NewTopic> = topics
        .iter()
        .filter(|t| t.refused.is_none())
        .map(|t| cpb::create_topics_request::NewTopic {
            name: t.name.clone(),
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs.clone().into_iter().collect(),
        })
        .collect();
    let mut outcomes: HashMap<String, Result<Uuid, Refusal>> = HashMap::new();
    if !asked.is_empty() {
        let names: Vec<String> = asked.iter().map(|t| t.name.clone()).collect();
        let answer = session
            .service
            .create_topics(cpb::CreateTopicsRequest {
                topics: asked,
                validate_only: request.validate_only,
            })
            .await;
        match answer {
            Ok(answer) => {
                for result in answer.results {
                    let outcome = match wire_refusal(&result.error) {
                        Some(refused) => Err(refused),
                        None => Ok(Uuid::from_slice(&result.topic_id).unwrap_or_default()),
                    };
                    outcomes.insert(result.name, outcome);
                }
            }
            Err(err) => {
                let refused = refusal(err)?;
                for name in names {
                    outcomes.insert(name, Err(refused.clone()));
                }
            }
        }
    }
    // What the created topics look like now (this broker has caught up with the creation).
    let created: HashMap<String, (i32, i32, BTreeMap<String, String>)> =
        session.service.manager().metadata().read(|image| {
            topics
                .iter()
                .filter_map(|t| {
                    let topic = image.topics.get(&t.name)?;
                    let rf = topic.partitions.first().map_or(0, |p| p.replicas.len());
                    Some((
                        t.name.clone(),
                        (
                            topic.partitions.len() as i32,
                            rf as i32,
                            topic.configs.clone(),
                        ),
                    ))
                })
                .collect()
        });
    let results = topics
        .into_iter()
        .map(|t| {
            let outcome = match t.refused.clone() {
                Some(refused) => Err(refused),
                None => outcomes.remove(&t.name).unwrap_or_else(|| {
                    Err((
                        ErrorCode::UnknownServerError.code(),
                        format!("the controller did not answer for topic `{}`", t.name),
                    ))
                }),
            };
            // Validation only: what the topic would be.
            let details = match (&outcome, request.validate_only) {
                (Ok(_), true) => Some((t.partitions, t.replication_factor, t.configs.clone())),
                (Ok(_), false) => created.get(&t.name).cloned(),
                (Err(_), _) => None,
            };
            create_topic_result(t.name, outcome, details, version)
        })
        .collect();
    Ok(ResponseKind::CreateTopics(
        CreateTopicsResponse::default().with_topics(results),
    ))
}

/// The request's topics with the broker's defaults for -1, and their refusals.
fn new_topics(
    topics: Vec<kafka_protocol::messages::create_topics_request::CreatableTopic>,
    (default_partitions, default_rf): (i32, i32),
) -> Vec<NewTopic> {
    let twice = duplicates(topics.iter().map(|t| t.name.0.as_str()));
    topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.as_str().to_owned();
            let refused = if twice.contains(&name) {
                Some(invalid_request(format!(
                    "topic `{name}` is named more than once in the request"
                )))
            } else if !t.assignments.is_empty() {
                Some((
                    ErrorCode::InvalidReplicaAssignment.code(),
                    "manual replica assignments are not supported: give num_partitions and \
                     replication_factor (or -1 for the broker's defaults)"
                        .to_owned(),
                ))
            } else {
                None
            };
            NewTopic {
                partitions: if t.num_partitions == -1 {
                    default_partitions
                } else {
                    t.num_partitions
                },
                replication_factor: if t.replication_factor == -1 {
                    default_rf
                } else {
                    i32::from(t.replication_factor)
                },
                // A null value sets nothing.
                configs: t
                    .configs
                    .into_iter()
                    .filter_map(|c| {
                        Some((c.name.as_str().to_owned(), c.value?.as_str().to_owned()))
                    })
                    .collect(),
                name,
                refused,
            }
        })
        .collect()
}

/// The config entries Kafka lists for a topic with `overrides`: every key, its source.
pub(super) fn topic_config_entries(
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static tributary_metadata::config::ConfigKey, String, bool)> {
    tributary_metadata::config::TOPIC_CONFIGS
        .iter()
        .map(|key| match overrides.get(key.name) {
            Some(value) => (key, value.clone(), true),
            None => (key, key.default.to_owned(), false),
        })
        .collect()
}

fn create_topic_result(
    name: String,
    outcome: Result<Uuid, Refusal>,
    details: Option<(i32, i32, BTreeMap<String, String>)>,
    version: i16,
) -> CreatableTopicResult {
    let result = CreatableTopicResult::default().with_name(TopicName(str_bytes(name)));
    let id = match outcome {
        Err((code, message)) => {
            return result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)));
        }
        Ok(id) => id,
    };
    let mut result = result.with_error_message(None);
    if version >= TOPIC_IDS {
        result = result.with_topic_id(id);
    }
    if let Some((partitions, rf, overrides)) = details.filter(|_| version >= CREATE_TOPICS_DETAILS)
    {
        let configs = topic_config_entries(&overrides)
            .into_iter()
            .map(|(key, value, is_override)| {
                CreatableTopicConfigs::default()
                    .with_name(str_bytes(key.name))
                    .with_value(Some(str_bytes(value)))
                    .with_config_source(if is_override {
                        SOURCE_TOPIC
                    } else {
                        SOURCE_DEFAULT
                    })
            })
            .collect();
        result = result
            .with_num_partitions(partitions)
            .with_replication_factor(i16::try_from(rf).unwrap_or(-1))
            .with_configs(Some(configs));
    }
    result
}

// ---- DeleteTopics -----------------------------------------------------------------------------

/// Kafka's DeleteTopics: by name, and from v6 by id (resolved through this broker's
/// metadata; an unknown id is UNKNOWN_TOPIC_ID).
pub(super) async fn delete_topics(
    session: &Session,
    request: DeleteTopicsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    // (name, id) as asked, resolved against the metadata: a name or why there is none.
    let asked: Vec<(Option<String>, Uuid)> = if version >= DELETE_BY_ID {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.as_str().to_owned()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.as_str().to_owned()), Uuid::nil()))
            .collect()
    };
    let resolved: Vec<(Option<String>, Uuid, Option<Refusal>)> =
        session.service.manager().metadata().read(|image| {
            asked
                .into_iter()
                .map(|(name, id)| match (name, id.is_nil()) {
                    (Some(name), true) => {
                        let id = image.topics.get(&name).map_or(Uuid::nil(), |t| t.id);
                        (Some(name), id, None)
                    }
                    (None, false) => match image.topics.values().find(|t| t.id == id) {
                        Some(topic) => (Some(topic.name.clone()), id, None),
                        None => (
                            None,
                            id,
                            Some((
                                ErrorCode::UnknownTopicId.code(),
                                format!("no topic has id {id}"),
                            )),
                        ),
                    },
                    (name, _) => (
                        name,
                        id,
                        Some(invalid_request("give a topic's name or its id, not both")),
                    ),
                })
                .collect()
        });
    let names: Vec<String> = resolved
        .iter()
        .filter(|(_, _, refused)| refused.is_none())
        .filter_map(|(name, _, _)| name.clone())
        .collect();
    let mut outcomes: HashMap<String, Option<Refusal>> = HashMap::new();
    if !names.is_empty() {
        match session
            .service
            .delete_topics(cpb::DeleteTopicsRequest {
                names: names.clone(),
            })
            .await
        {
            Ok(answer) => {
                for result in answer.results {
                    outcomes.insert(result.name, wire_refusal(&result.error));
                }
            }
            Err(err) => {
                let refused = refusal(err)?;
                for name in names {
                    outcomes.insert(name, Some(refused.clone()));
                }
            }
        }
    }
    let responses = resolved
        .into_iter()
        .map(|(name, id, refused)| {
            let refused = refused.or_else(|| {
                name.as_ref()
                    .and_then(|n| outcomes.get(n).cloned().flatten())
            });
            delete_topic_result(name, id, refused, version)
        })
        .collect();
    Ok(ResponseKind::DeleteTopics(
        DeleteTopicsResponse::default().with_responses(responses),
    ))
}

fn delete_topic_result(
    name: Option<String>,
    id: Uuid,
    refused: Option<Refusal>,
    version: i16,
) -> DeletableTopicResult {
    let (code, message) = refused.map_or((0, None), |(code, message)| (code, Some(message)));
    let mut result = DeletableTopicResult::default()
        // Null only at v6, for an unknown id.
        .with_name(
            Some(TopicName(str_bytes(name.unwrap_or_default())))
                .filter(|n| version < DELETE_BY_ID || !n.0.is_empty()),
        )
        .with_error_code(code);
    if version >= DELETE_BY_ID {
        result = result.with_topic_id(id);
    }
    if version >= DELETE_MESSAGES {
        result = result.with_error_message(message.map(str_bytes));
    }
    result
}

// ---- CreatePartitions -------------------------------------------------------------------------

/// Kafka's CreatePartitions: each topic on its own (one topic's refusal leaves the others).
pub(super) async fn create_partitions(
    session: &Session,
    request: CreatePartitionsRequest,
) -> Result<ResponseKind, Close> {
    let twice = duplicates(request.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_owned();
        let refused = if twice.contains(&name) {
            Some(invalid_request(format!(
                "topic `{name}` is named more than once in the request"
            )))
        } else if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Some((
                ErrorCode::InvalidReplicaAssignment.code(),
                "manual replica assignments are not supported: give only the new count".to_owned(),
            ))
        } else {
            let answer = session
                .service
                .create_partitions(cpb::CreatePartitionsRequest {
                    topic: name.clone(),
                    total_count: topic.count,
                    validate_only: request.validate_only,
                })
                .await;
            match answer {
                Ok(answer) => wire_refusal(&answer.error),
                Err(err) => Some(refusal(err)?),
            }
        };
        results.push(create_partitions_result(name, refused));
    }
    Ok(ResponseKind::CreatePartitions(
        CreatePartitionsResponse::default().with_results(results),
    ))
}

fn create_partitions_result(name: String, refused: Option<Refusal>) -> CreatePartitionsTopicResult {
    let (code, message) = refused.map_or((0, None), |(code, message)| (code, Some(message)));
    CreatePartitionsTopicResult::default()
        .with_name(TopicName(str_bytes(name)))
        .with_error_code(code)
        .with_error_message(message.map(str_bytes))
}

// ---- DescribeCluster --------------------------------------------------------------------------

/// Kafka's DescribeCluster, from this broker's metadata: the running brokers at their addresses
/// on the session's listener and, as in Metadata, a live broker as the controller (KRaft's
/// rule: clients do not reach the real controllers).
pub(super) async fn describe_cluster(
    session: &Session,
    request: DescribeClusterRequest,
) -> Result<ResponseKind, Close> {
    if request.endpoint_type != ENDPOINT_BROKERS {
        return Ok(ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
                .with_error_message(Some(str_bytes(format!(
                    "endpoint type {} is not served: brokers answer for brokers (1) only",
                    request.endpoint_type
                ))))
                .with_endpoint_type(ENDPOINT_BROKERS),
        ));
    }
    let answer = session
        .service
        .metadata(
            &crate::api::MetadataRequest {
                topics: Some(Vec::new()),
                allow_auto_topic_creation: false,
                min_metadata_offset: 0,
            },
            &session.listener,
        )
        .await?;
    let me = session.service.manager().broker_id();
    Ok(ResponseKind::DescribeCluster(describe_cluster_response(
        answer, me,
    )))
}

fn describe_cluster_response(
    answer: crate::api::ClusterMetadata,
    me: tributary_metadata::BrokerId,
) -> DescribeClusterResponse {
    let (alive, controller) = super::live_brokers(&answer.brokers, me);
    DescribeClusterResponse::default()
        .with_error_message(None)
        .with_cluster_id(str_bytes(answer.cluster_id.clone().unwrap_or_default()))
        .with_controller_id(broker_id(controller))
        .with_brokers(
            alive
                .iter()
                .map(|b| {
                    let (host, port) = host_port(b.address.as_deref().unwrap_or_default());
                    DescribeClusterBroker::default()
                        .with_broker_id(broker_id(Some(b.id)))
                        .with_host(host)
                        .with_port(port)
                        .with_rack(b.rack.clone().map(str_bytes))
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };

    use super::super::versions::assert_encodes;
    use super::*;
    use crate::api::{BrokerEndpoint, ClusterMetadata};

    fn creatable(name: &'static str, partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    }

    #[test]
    fn minus_one_takes_the_broker_defaults_and_bad_topics_are_refused_alone() {
        let topics = new_topics(
            vec![
                creatable("defaults", -1, -1).with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(str_bytes("retention.ms"))
                        .with_value(Some(str_bytes("1000"))),
                    CreatableTopicConfig::default()
                        .with_name(str_bytes("segment.ms"))
                        .with_value(None),
                ]),
                creatable("given", 4, 2),
                creatable("twice", 1, 1),
                creatable("twice", 2, 1),
                creatable("manual", -1, -1).with_assignments(vec![
                    CreatableReplicaAssignment::default().with_partition_index(0),
                ]),
            ],
            (3, 2),
        );
        assert_eq!((topics[0].partitions, topics[0].replication_factor), (3, 2));
        assert_eq!(
            topics[0].configs,
            BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
            "a null value sets nothing"
        );
        assert!(topics[0].refused.is_none());
        assert_eq!((topics[1].partitions, topics[1].replication_factor), (4, 2));
        for twice in &topics[2..4] {
            assert_eq!(
                twice.refused.as_ref().map(|r| r.0),
                Some(ErrorCode::InvalidRequest.code())
            );
        }
        assert_eq!(
            topics[4].refused.as_ref().map(|r| r.0),
            Some(ErrorCode::InvalidReplicaAssignment.code())
        );
    }

    #[test]
    fn create_topics_answers_encode_at_every_version() {
        let id = Uuid::new_v4();
        let details = || {
            Some((
                3,
                2,
                BTreeMap::from([("retention.ms".into(), "1000".into())]),
            ))
        };
        assert_encodes(ApiKey::CreateTopics, |v| {
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                create_topic_result("a".into(), Ok(id), details(), v),
                create_topic_result(
                    "b".into(),
                    Err((ErrorCode::TopicAlreadyExists.code(), "exists".into())),
                    None,
                    v,
                ),
            ]))
        });
        let v7 = create_topic_result("a".into(), Ok(id), details(), 7);
        assert_eq!((v7.num_partitions, v7.replication_factor), (3, 2));
        assert_eq!(v7.topic_id, id);
        assert_eq!(v7.error_message, None);
        let configs = v7.configs.unwrap();
        let retention = configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.config_source, SOURCE_TOPIC);
        let segment = configs
            .iter()
            .find(|c| c.name.as_str() == "segment.bytes")
            .unwrap();
        assert_eq!(segment.config_source, SOURCE_DEFAULT);
        let v4 = create_topic_result("a".into(), Ok(id), details(), 4);
        assert_eq!(v4.num_partitions, -1, "no details before v5");
    }

    #[test]
    fn delete_topics_answers_encode_at_every_version() {
        let id = Uuid::new_v4();
        assert_encodes(ApiKey::DeleteTopics, |v| {
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(vec![
                delete_topic_result(Some("a".into()), id, None, v),
                delete_topic_result(
                    Some("b".into()),
                    Uuid::nil(),
                    Some((ErrorCode::UnknownTopicOrPartition.code(), "none".into())),
                    v,
                ),
                delete_topic_result(
                    None,
                    id,
                    Some((ErrorCode::UnknownTopicId.code(), "no such id".into())),
                    v,
                ),
            ]))
        });
        let v6 = delete_topic_result(None, id, Some((100, "no such id".into())), 6);
        assert_eq!(v6.name, None);
        assert_eq!(v6.topic_id, id);
        assert_eq!(v6.error_message.as_deref(), Some("no such id"));
    }

    #[test]
    fn create_partitions_answers_encode_at_every_version() {
        assert_encodes(ApiKey::CreatePartitions, |_| {
            ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(vec![
                create_partitions_result("a".into(), None),
                create_partitions_result(
                    "b".into(),
                    Some((ErrorCode::InvalidPartitions.code(), "fewer".into())),
                ),
            ]))
        });
    }

    #[test]
    fn describe_cluster_names_a_live_broker_as_controller() {
        let broker = |id, state, address: Option<&str>| BrokerEndpoint {
            id,
            address: address.map(Into::into),
            rack: Some("r1".into()),
            state,
        };
        let answer = || ClusterMetadata {
            brokers: vec![
                broker(1, "RUNNING", Some("localhost:9092")),
                broker(2, "FENCED", Some("localhost:9093")),
                broker(3, "RUNNING", Some("localhost:9094")),
            ],
            cluster_id: Some("c".into()),
            controller_id: Some(101),
            topics: Vec::new(),
            metadata_offset: 7,
        };
        assert_encodes(ApiKey::DescribeCluster, |_| {
            ResponseKind::DescribeCluster(describe_cluster_response(answer(), 3))
        });
        let mine = describe_cluster_response(answer(), 3);
        assert_eq!(mine.controller_id.0, 3);
        assert_eq!(mine.brokers.len(), 2, "fenced brokers are left out");
        assert_eq!(mine.brokers[1].port, 9094);
        // A broker that is fenced itself names another.
        assert_eq!(describe_cluster_response(answer(), 2).controller_id.0, 1);
    }

    #[test]
    fn unreachable_coordinators_are_retriable_timeouts() {
        let (code, message) = refusal(AdminError::Coordinators(tonic::Status::unavailable(
            "no leader",
        )))
        .unwrap();
        assert_eq!(code, ErrorCode::RequestTimedOut.code());
        assert_eq!(message, "the coordinators did not answer: no leader");
        let (code, _) = refusal(AdminError::Coordinators(tonic::Status::internal("boom"))).unwrap();
        assert_eq!(code, ErrorCode::UnknownServerError.code());
    }
}
