//! The config APIs on the Kafka protocol: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs, for topics (the coordinators' DescribeConfigs and AlterConfigs) and
//! brokers (this broker's settings, static: dynamic broker configs do not exist).
//!
//! Reported as Kafka reports them: a topic's key set on the topic has source TOPIC_CONFIG,
//! otherwise DEFAULT_CONFIG; its synonyms are the topic entry (when set) then the broker-level
//! key it defaults from (`retention.ms` from `log.retention.ms`). A broker's key set in its
//! config has source STATIC_BROKER_CONFIG, otherwise DEFAULT_CONFIG, and is read-only. A broker
//! answers only for itself (or for the cluster-wide defaults: none), as Kafka's brokers do.
//!
//! AlterConfigs replaces a topic's overrides with those given (Kafka's legacy semantics);
//! IncrementalAlterConfigs' SET, DELETE, APPEND and SUBTRACT go to the controller in one call,
//! which applies them to the current overrides atomically.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use tributary_kafka::ErrorCode;
use tributary_metadata::config::{ConfigKey, ConfigType};
use tributary_proto::coordinator::v1 as cpb;

use super::admin::{
    Refusal, SOURCE_DEFAULT, SOURCE_STATIC_BROKER, SOURCE_TOPIC, refusal, wire_refusal,
};
use super::{Close, Session, str_bytes};
use crate::service::BrokerConfigEntry;

/// Kafka's resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs v3 (KIP-569): config types and documentation.
const DESCRIBE_TYPES: i16 = 3;
/// IncrementalAlterConfigs' operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn invalid_request(message: impl Into<String>) -> Refusal {
    (ErrorCode::InvalidRequest.code(), message.into())
}

/// Kafka's config type numbers (DescribeConfigs v3+).
fn config_type(kind: ConfigType) -> i8 {
    match kind {
        ConfigType::Boolean => 1,
        ConfigType::OneOf(_) => 2,
        ConfigType::Int { .. } => 3,
        ConfigType::Long { .. } => 5,
        ConfigType::Double { .. } => 6,
        ConfigType::ListOf(_) => 7,
    }
}

/// The broker-level key a topic key defaults from (Kafka's `TopicConfigSynonyms`).
fn broker_synonym(topic_key: &str) -> &str {
    match topic_key {
        "cleanup.policy" => "log.cleanup.policy",
        "delete.retention.ms" => "log.cleaner.delete.retention.ms",
        "flush.messages" => "log.flush.interval.messages",
        "flush.ms" => "log.flush.interval.ms",
        "max.compaction.lag.ms" => "log.cleaner.max.compaction.lag.ms",
        "max.message.bytes" => "message.max.bytes",
        "message.timestamp.type" => "log.message.timestamp.type",
        "min.cleanable.dirty.ratio" => "log.cleaner.min.cleanable.ratio",
        "min.compaction.lag.ms" => "log.cleaner.min.compaction.lag.ms",
        "retention.bytes" => "log.retention.bytes",
        "retention.ms" => "log.retention.ms",
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        // compression.type, min.insync.replicas, unclean.leader.election.enable: the same name.
        same => same,
    }
}

// ---- DescribeConfigs --------------------------------------------------------------------------

/// What DescribeConfigs asks of every resource.
#[derive(Debug, Clone, Copy)]
struct Detail {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

/// Kafka's DescribeConfigs: topics from the coordinators, this broker's own settings.
pub(super) async fn describe_configs(
    session: &Session,
    request: DescribeConfigsRequest,
    version: i16,
) -> Result<ResponseKind, Close> {
    let detail = Detail {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
        version,
    };
    let topics: Vec<String> = request
        .resources
        .iter()
        .filter(|r| r.resource_type == RESOURCE_TOPIC)
        .map(|r| r.resource_name.as_str().to_owned())
        .collect();
    let mut described: HashMap<String, Result<Vec<Entry>, Refusal>> = HashMap::new();
    if !topics.is_empty() {
        match session
            .service
            .describe_configs(cpb::DescribeConfigsRequest {
                topics: topics.clone(),
            })
            .await
        {
            Ok(answer) => {
                for result in answer.results {
                    let entries = match wire_refusal(&result.error) {
                        Some(refused) => Err(refused),
                        None => Ok(result.entries),
                    };
                    described.insert(result.topic, entries);
                }
            }
            Err(err) => {
                let refused = refusal(err)?;
                for topic in topics {
                    described.insert(topic, Err(refused.clone()));
                }
            }
        }
    }
    let me = session.service.manager().broker_id();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_owned();
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect());
            let wanted = |key: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == key));
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match described.get(&name).cloned() {
                    Some(Ok(entries)) => Ok(entries
                        .into_iter()
                        .filter(|e| wanted(&e.name))
                        .map(|e| topic_entry(e, detail))
                        .collect()),
                    Some(Err(refused)) => Err(refused),
                    None => Err((
                        ErrorCode::UnknownServerError.code(),
                        format!("the coordinators did not describe topic `{name}`"),
                    )),
                },
                RESOURCE_BROKER if name.is_empty() => Ok(Vec::new()),
                RESOURCE_BROKER if name == me.to_string() => Ok(broker_entries(
                    &session.service.broker_configs(),
                    detail,
                    &wanted,
                )),
                RESOURCE_BROKER => Err(invalid_request(format!(
                    "unexpected broker id, expected {me} or empty string, but received {name}"
                ))),
                other => Err(invalid_request(format!(
                    "resource type {other} is not supported (2: topic, 4: broker)"
                ))),
            };
            describe_result(resource.resource_type, name, configs)
        })
        .collect();
    Ok(ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(results),
    ))
}

fn describe_result(
    resource_type: i8,
    name: String,
    configs: Result<Vec<DescribeConfigsResourceResult>, Refusal>,
) -> DescribeConfigsResult {
    let result = DescribeConfigsResult::default()
        .with_resource_type(resource_type)
        .with_resource_name(str_bytes(name));
    match configs {
        Ok(configs) => result.with_error_message(None).with_configs(configs),
        Err((code, message)) => result
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    }
}

/// One of a topic's configs as the coordinators describe it.
type Entry = cpb::describe_configs_response::ConfigEntry;

/// A topic's entry: its type, documentation and broker synonym from the config table (a key
/// the table lacks, from a newer controller, goes without them).
fn topic_entry(e: Entry, detail: Detail) -> DescribeConfigsResourceResult {
    let key: Option<&ConfigKey> = tributary_metadata::config::config_key(&e.name);
    let source = if e.is_override {
        SOURCE_TOPIC
    } else {
        SOURCE_DEFAULT
    };
    let mut synonyms = Vec::new();
    if detail.synonyms {
        if e.is_override {
            synonyms.push(synonym(&e.name, &e.value, SOURCE_TOPIC));
        }
        if let Some(key) = key {
            synonyms.push(synonym(
                broker_synonym(key.name),
                key.default,
                SOURCE_DEFAULT,
            ));
        }
    }
    let entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name))
        .with_value(Some(str_bytes(e.value)))
        .with_read_only(false)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if detail.version >= DESCRIBE_TYPES {
        entry
            .with_config_type(key.map_or(0, |k| config_type(k.kind)))
            .with_documentation(
                key.filter(|_| detail.documentation)
                    .map(|k| str_bytes(k.doc)),
            )
    } else {
        entry
    }
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

/// This broker's settings: read-only, STATIC_BROKER_CONFIG where set, else DEFAULT_CONFIG
/// (their type is not tracked: UNKNOWN).
fn broker_entries(
    configs: &[BrokerConfigEntry],
    detail: Detail,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    configs
        .iter()
        .filter(|c| wanted(&c.name))
        .map(|c| {
            let set = c.value != c.default;
            let source = if set {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let value = c.value.clone().map(StrBytes::from_string);
            let mut synonyms = vec![
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(c.name.clone()))
                    .with_value(value.clone())
                    .with_source(source),
            ];
            if set {
                synonyms.push(
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(c.name.clone()))
                        .with_value(c.default.clone().map(StrBytes::from_string))
                        .with_source(SOURCE_DEFAULT),
                );
            }
            let entry = DescribeConfigsResourceResult::default()
                .with_name(str_bytes(c.name.clone()))
                .with_value(value)
                .with_read_only(true)
                .with_config_source(source)
                .with_is_sensitive(false)
                .with_synonyms(if detail.synonyms {
                    synonyms
                } else {
                    Vec::new()
                });
            if detail.version >= DESCRIBE_TYPES {
                entry.with_documentation(None)
            } else {
                entry
            }
        })
        .collect()
}

// ---- AlterConfigs, IncrementalAlterConfigs ----------------------------------------------------

/// A topic's change as the controller gets it (or why it is refused first).
type Change = Result<cpb::AlterConfigsRequest, Refusal>;

/// Kafka's AlterConfigs: a topic's overrides become those given.
pub(super) async fn alter_configs(
    session: &Session,
    request: AlterConfigsRequest,
) -> Result<ResponseKind, Close> {
    let twice = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut answers = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_owned();
        let configs: Vec<(String, Option<String>)> = resource
            .configs
            .into_iter()
            .map(|c| {
                (
                    c.name.as_str().to_owned(),
                    c.value.map(|v| v.as_str().to_owned()),
                )
            })
            .collect();
        let change = if twice.contains(&(resource.resource_type, name.clone())) {
            Err(invalid_request(format!(
                "resource `{name}` is named more than once"
            )))
        } else {
            legacy_change(&name, configs, request.validate_only)
        };
        let refused = alter(session, resource.resource_type, &name, change).await?;
        answers.push((resource.resource_type, name, refused));
    }
    Ok(ResponseKind::AlterConfigs(alter_configs_response(answers)))
}

/// Each resource's answer: type, name, refusal.
type Altered = Vec<(i8, String, Option<Refusal>)>;

fn alter_configs_response(answers: Altered) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    AlterConfigsResponse::default().with_responses(
        answers
            .into_iter()
            .map(|(kind, name, refused)| {
                let (code, message) = split(refused);
                AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(str_bytes(name))
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect(),
    )
}

/// Kafka's IncrementalAlterConfigs.
pub(super) async fn incremental_alter_configs(
    session: &Session,
    request: IncrementalAlterConfigsRequest,
) -> Result<ResponseKind, Close> {
    let twice = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut answers = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_owned();
        let ops: Vec<(String, i8, Option<String>)> = resource
            .configs
            .into_iter()
            .map(|c| {
                (
                    c.name.as_str().to_owned(),
                    c.config_operation,
                    c.value.map(|v| v.as_str().to_owned()),
                )
            })
            .collect();
        let change = if twice.contains(&(resource.resource_type, name.clone())) {
            Err(invalid_request(format!(
                "resource `{name}` is named more than once"
            )))
        } else {
            incremental_change(&name, ops, request.validate_only)
        };
        let refused = alter(session, resource.resource_type, &name, change).await?;
        answers.push((resource.resource_type, name, refused));
    }
    Ok(ResponseKind::IncrementalAlterConfigs(
        incremental_alter_configs_response(answers),
    ))
}

fn incremental_alter_configs_response(answers: Altered) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    IncrementalAlterConfigsResponse::default().with_responses(
        answers
            .into_iter()
            .map(|(kind, name, refused)| {
                let (code, message) = split(refused);
                AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(str_bytes(name))
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect(),
    )
}

fn split(refused: Option<Refusal>) -> (i16, Option<StrBytes>) {
    refused.map_or((0, None), |(code, message)| {
        (code, Some(str_bytes(message)))
    })
}

fn duplicate_resources<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> Vec<(i8, String)> {
    let mut seen: HashMap<(i8, &str), usize> = HashMap::new();
    for resource in resources {
        *seen.entry(resource).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((kind, name), _)| (kind, name.to_owned()))
        .collect()
}

fn no_duplicate_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut seen = HashSet::new();
    for key in keys {
        if !seen.insert(key) {
            return Err(invalid_request(format!(
                "config `{key}` is named more than once for one resource"
            )));
        }
    }
    Ok(())
}

/// AlterConfigs' change to a topic: exactly the given overrides.
fn legacy_change(
    topic: &str,
    configs: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> Change {
    no_duplicate_keys(configs.iter().map(|(k, _)| k.as_str()))?;
    let mut set = HashMap::new();
    for (key, value) in configs {
        let value =
            value.ok_or_else(|| invalid_request(format!("null value for config `{key}`")))?;
        set.insert(key, value);
    }
    Ok(cpb::AlterConfigsRequest {
        topic: topic.to_owned(),
        set,
        validate_only,
        replace: true,
        ..Default::default()
    })
}

/// IncrementalAlterConfigs' change to a topic.
fn incremental_change(
    topic: &str,
    ops: Vec<(String, i8, Option<String>)>,
    validate_only: bool,
) -> Change {
    no_duplicate_keys(ops.iter().map(|(k, ..)| k.as_str()))?;
    let mut change = cpb::AlterConfigsRequest {
        topic: topic.to_owned(),
        validate_only,
        ..Default::default()
    };
    for (key, op, value) in ops {
        if op == OP_DELETE {
            change.delete.push(key);
            continue;
        }
        let value =
            value.ok_or_else(|| invalid_request(format!("null value for config `{key}`")))?;
        let map = match op {
            OP_SET => &mut change.set,
            OP_APPEND => &mut change.append,
            OP_SUBTRACT => &mut change.subtract,
            other => {
                return Err(invalid_request(format!(
                    "unknown config operation {other} for `{key}` (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)"
                )));
            }
        };
        map.insert(key, value);
    }
    Ok(change)
}

/// Applies `change` to resource `name` of `kind`: topics through the controller; a broker's
/// settings are static, so only an empty change succeeds.
async fn alter(
    session: &Session,
    kind: i8,
    name: &str,
    change: Change,
) -> Result<Option<Refusal>, Close> {
    let change = match change {
        Ok(change) => change,
        Err(refused) => return Ok(Some(refused)),
    };
    match kind {
        RESOURCE_TOPIC => match session.service.alter_configs(change).await {
            Ok(answer) => Ok(wire_refusal(&answer.error)),
            Err(err) => Ok(Some(refusal(err)?)),
        },
        RESOURCE_BROKER => {
            let keys: Vec<&String> = change
                .set
                .keys()
                .chain(change.append.keys())
                .chain(change.subtract.keys())
                .chain(change.delete.iter())
                .collect();
            Ok((!keys.is_empty()).then(|| {
                (
                    ErrorCode::InvalidConfig.code(),
                    format!(
                        "cannot update these configs dynamically: {} (broker settings are \
                         static: set them in each broker's config file{})",
                        keys.iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if name.is_empty() {
                            String::new()
                        } else {
                            format!(", here broker {name}'s")
                        }
                    ),
                )
            }))
        }
        other => Ok(Some(invalid_request(format!(
            "resource type {other} is not supported (2: topic, 4: broker)"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::super::versions::assert_encodes;
    use super::*;

    fn entry(name: &str, value: &str, is_override: bool) -> Entry {
        Entry {
            name: name.into(),
            value: value.into(),
            is_override,
        }
    }

    fn detail(version: i16) -> Detail {
        Detail {
            synonyms: true,
            documentation: true,
            version,
        }
    }

    fn broker_configs() -> Vec<BrokerConfigEntry> {
        vec![
            BrokerConfigEntry {
                name: "broker.id".into(),
                value: Some("2".into()),
                default: Some("1".into()),
            },
            BrokerConfigEntry {
                name: "rack".into(),
                value: None,
                default: None,
            },
        ]
    }

    #[test]
    fn describe_configs_answers_encode_at_every_version() {
        assert_encodes(ApiKey::DescribeConfigs, |v| {
            let topic = vec![
                topic_entry(entry("retention.ms", "1000", true), detail(v)),
                topic_entry(entry("segment.bytes", "1073741824", false), detail(v)),
                topic_entry(entry("from.a.newer.controller", "x", true), detail(v)),
            ];
            ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
                describe_result(RESOURCE_TOPIC, "t".into(), Ok(topic)),
                describe_result(
                    RESOURCE_TOPIC,
                    "gone".into(),
                    Err((ErrorCode::UnknownTopicOrPartition.code(), "none".into())),
                ),
                describe_result(
                    RESOURCE_BROKER,
                    "2".into(),
                    Ok(broker_entries(&broker_configs(), detail(v), &|_| true)),
                ),
            ]))
        });
    }

    #[test]
    fn topic_configs_report_kafkas_sources_and_synonyms() {
        let set = topic_entry(entry("retention.ms", "1000", true), detail(4));
        assert_eq!(set.config_source, SOURCE_TOPIC);
        let synonyms: Vec<(&str, i8)> = set
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(
            synonyms,
            [
                ("retention.ms", SOURCE_TOPIC),
                ("log.retention.ms", SOURCE_DEFAULT)
            ]
        );
        assert_eq!(set.config_type, 5, "LONG");
        assert!(set.documentation.is_some());
        let default = topic_entry(entry("cleanup.policy", "delete", false), detail(4));
        assert_eq!(default.config_source, SOURCE_DEFAULT);
        assert_eq!(default.synonyms.len(), 1);
        assert_eq!(default.synonyms[0].name.as_str(), "log.cleanup.policy");
        assert_eq!(default.config_type, 7, "LIST");
        let without = topic_entry(
            entry("cleanup.policy", "delete", false),
            Detail {
                synonyms: false,
                documentation: false,
                version: 4,
            },
        );
        assert!(without.synonyms.is_empty() && without.documentation.is_none());
    }

    #[test]
    fn broker_configs_are_read_only_and_static_where_set() {
        let entries = broker_entries(&broker_configs(), detail(4), &|_| true);
        assert!(entries.iter().all(|e| e.read_only));
        assert_eq!(entries[0].config_source, SOURCE_STATIC_BROKER);
        assert_eq!(
            entries[0].synonyms.len(),
            2,
            "the set value, then the default"
        );
        assert_eq!(entries[1].config_source, SOURCE_DEFAULT);
        assert_eq!(entries[1].value, None);
        let only = broker_entries(&broker_configs(), detail(4), &|k| k == "rack");
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn alter_configs_replaces_and_refuses_nulls_and_repeats() {
        let change =
            legacy_change("t", vec![("retention.ms".into(), Some("5".into()))], true).unwrap();
        assert!(change.replace && change.validate_only);
        assert_eq!(
            change.set.get("retention.ms").map(String::as_str),
            Some("5")
        );
        let null = legacy_change("t", vec![("retention.ms".into(), None)], false).unwrap_err();
        assert_eq!(null.0, ErrorCode::InvalidRequest.code());
        let twice = legacy_change(
            "t",
            vec![
                ("retention.ms".into(), Some("5".into())),
                ("retention.ms".into(), Some("6".into())),
            ],
            false,
        )
        .unwrap_err();
        assert_eq!(twice.0, ErrorCode::InvalidRequest.code());
    }

    #[test]
    fn incremental_operations_reach_the_controller_as_one_change() {
        let change = incremental_change(
            "t",
            vec![
                ("retention.ms".into(), OP_SET, Some("5".into())),
                ("segment.ms".into(), OP_DELETE, None),
                ("cleanup.policy".into(), OP_APPEND, Some("compact".into())),
                ("other.list".into(), OP_SUBTRACT, Some("x".into())),
            ],
            false,
        )
        .unwrap();
        assert!(!change.replace);
        assert_eq!(change.set.len(), 1);
        assert_eq!(change.delete, vec!["segment.ms".to_owned()]);
        assert_eq!(
            change.append.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert_eq!(change.subtract.len(), 1);
        let unknown = incremental_change("t", vec![("a".into(), 9, Some("x".into()))], false);
        assert_eq!(unknown.unwrap_err().0, ErrorCode::InvalidRequest.code());
        let twice = incremental_change(
            "t",
            vec![
                ("a".into(), OP_DELETE, None),
                ("a".into(), OP_SET, Some("x".into())),
            ],
            false,
        );
        assert_eq!(twice.unwrap_err().0, ErrorCode::InvalidRequest.code());
        let null = incremental_change("t", vec![("a".into(), OP_APPEND, None)], false);
        assert_eq!(null.unwrap_err().0, ErrorCode::InvalidRequest.code());
    }

    #[test]
    fn alter_answers_encode_at_every_version() {
        let answers = || {
            vec![
                (RESOURCE_TOPIC, "t".to_owned(), None),
                (
                    RESOURCE_BROKER,
                    "1".to_owned(),
                    Some((ErrorCode::InvalidConfig.code(), "static".to_owned())),
                ),
            ]
        };
        assert_encodes(ApiKey::AlterConfigs, |_| {
            ResponseKind::AlterConfigs(alter_configs_response(answers()))
        });
        assert_encodes(ApiKey::IncrementalAlterConfigs, |_| {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs_response(answers()))
        });
    }
}
