//! Conversions between the image's types and their wire form in the proto crate
//! (`tributary.coordinator.v1`), shared by the coordinator (which sends them) and brokers (which
//! follow them). Decoding checks what the wire cannot: ids are 16 bytes, enums are known.

use tributary_proto::common::v1::{Error as CommonError, ErrorCode};
use tributary_proto::coordinator::v1 as wire;
use uuid::Uuid;

use crate::error::ApiError;
use crate::image::{
    Broker, BrokerState, Controller, IMAGE_FORMAT_VERSION, MetadataImage, MetadataRecord,
    PartitionChange, PartitionState, Topic,
};

fn malformed(what: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("malformed {what}"))
}

/// A UUID from its 16 wire bytes.
pub fn uuid_from_wire(bytes: &[u8], what: &str) -> Result<Uuid, ApiError> {
    Uuid::from_slice(bytes)
        .map_err(|_| malformed(&format!("{what}: expected 16 bytes, got {}", bytes.len())))
}

/// An error for the wire (`None` for success).
pub fn error_to_wire(error: Option<&ApiError>) -> Option<CommonError> {
    Some(match error {
        None => CommonError::none(),
        Some(e) => CommonError::new(e.code(), e.message.clone()),
    })
}

fn state_to_wire(state: BrokerState) -> i32 {
    (match state {
        BrokerState::Running => wire::BrokerState::Running,
        BrokerState::Fenced => wire::BrokerState::Fenced,
        BrokerState::ControlledShutdown => wire::BrokerState::ControlledShutdown,
    }) as i32
}

fn state_from_wire(state: i32) -> Result<BrokerState, ApiError> {
    match wire::BrokerState::try_from(state) {
        Ok(wire::BrokerState::Running) => Ok(BrokerState::Running),
        Ok(wire::BrokerState::Fenced) => Ok(BrokerState::Fenced),
        Ok(wire::BrokerState::ControlledShutdown) => Ok(BrokerState::ControlledShutdown),
        _ => Err(malformed(&format!("broker state {state}"))),
    }
}

impl From<&PartitionState> for wire::PartitionState {
    fn from(p: &PartitionState) -> Self {
        Self {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader.unwrap_or(-1),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        }
    }
}

impl From<&wire::PartitionState> for PartitionState {
    fn from(p: &wire::PartitionState) -> Self {
        Self {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: (p.leader >= 0).then_some(p.leader),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        }
    }
}

impl From<&Topic> for wire::Topic {
    fn from(t: &Topic) -> Self {
        Self {
            name: t.name.clone(),
            id: t.id.as_bytes().to_vec().into(),
            configs: t.configs.clone().into_iter().collect(),
            partitions: t.partitions.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<&wire::Topic> for Topic {
    type Error = ApiError;
    fn try_from(t: &wire::Topic) -> Result<Self, ApiError> {
        Ok(Self {
            name: t.name.clone(),
            id: uuid_from_wire(&t.id, "topic id")?,
            configs: t.configs.clone().into_iter().collect(),
            partitions: t.partitions.iter().map(Into::into).collect(),
        })
    }
}

impl From<&Broker> for wire::Broker {
    fn from(b: &Broker) -> Self {
        Self {
            id: b.id,
            incarnation: b.incarnation.as_bytes().to_vec().into(),
            epoch: b.epoch,
            listeners: b.listeners.clone().into_iter().collect(),
            rack: b.rack.clone(),
            state: state_to_wire(b.state),
        }
    }
}

impl TryFrom<&wire::Broker> for Broker {
    type Error = ApiError;
    fn try_from(b: &wire::Broker) -> Result<Self, ApiError> {
        Ok(Self {
            id: b.id,
            incarnation: uuid_from_wire(&b.incarnation, "broker incarnation")?,
            epoch: b.epoch,
            listeners: b.listeners.clone().into_iter().collect(),
            rack: b.rack.clone(),
            state: state_from_wire(b.state)?,
        })
    }
}

impl From<&MetadataImage> for wire::MetadataImage {
    fn from(image: &MetadataImage) -> Self {
        Self {
            format_version: IMAGE_FORMAT_VERSION,
            cluster_id: image.cluster_id.clone(),
            offset: image.offset,
            controller: image.controller.map(|c| wire::Controller {
                node_id: c.node_id,
                epoch: c.epoch,
            }),
            brokers: image.brokers.values().map(Into::into).collect(),
            topics: image.topics.values().map(Into::into).collect(),
            next_producer_id: image.next_producer_id,
        }
    }
}

impl TryFrom<&wire::MetadataImage> for MetadataImage {
    type Error = ApiError;
    fn try_from(image: &wire::MetadataImage) -> Result<Self, ApiError> {
        if image.format_version != IMAGE_FORMAT_VERSION {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "metadata image format {} (this build reads {IMAGE_FORMAT_VERSION})",
                    image.format_version
                ),
            ));
        }
        let mut brokers = std::collections::BTreeMap::new();
        for b in &image.brokers {
            let broker = Broker::try_from(b)?;
            brokers.insert(broker.id, broker);
        }
        let mut topics = std::collections::BTreeMap::new();
        for t in &image.topics {
            let topic = Topic::try_from(t)?;
            topics.insert(topic.name.clone(), topic);
        }
        Ok(Self {
            cluster_id: image.cluster_id.clone(),
            offset: image.offset,
            controller: image.controller.map(|c| Controller {
                node_id: c.node_id,
                epoch: c.epoch,
            }),
            brokers,
            topics,
            next_producer_id: image.next_producer_id,
        })
    }
}

impl From<&PartitionChange> for wire::PartitionChange {
    fn from(c: &PartitionChange) -> Self {
        Self {
            topic_id: c.topic_id.as_bytes().to_vec().into(),
            partition: c.partition,
            partition_epoch: c.partition_epoch,
            leader: c.leader.unwrap_or(-1),
            isr: c.isr.clone(),
            unclean: c.unclean,
        }
    }
}

impl From<&MetadataRecord> for wire::MetadataRecord {
    fn from(record: &MetadataRecord) -> Self {
        use wire::metadata_record as r;
        let inner = match record {
            MetadataRecord::Bootstrap { cluster_id } => r::Record::Bootstrap(r::Bootstrap {
                cluster_id: cluster_id.clone(),
            }),
            MetadataRecord::BecomeController { node_id, term } => {
                r::Record::BecomeController(r::BecomeController {
                    node_id: *node_id,
                    term: *term,
                })
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                listeners,
                rack,
            } => r::Record::RegisterBroker(r::RegisterBroker {
                id: *id,
                incarnation: incarnation.as_bytes().to_vec().into(),
                listeners: listeners.clone().into_iter().collect(),
                rack: rack.clone(),
            }),
            MetadataRecord::SetBrokerState { id, epoch, state } => {
                r::Record::SetBrokerState(r::SetBrokerState {
                    id: *id,
                    epoch: *epoch,
                    state: state_to_wire(*state),
                })
            }
            MetadataRecord::CreateTopic { topic } => r::Record::CreateTopic(topic.into()),
            MetadataRecord::DeleteTopic { id } => r::Record::DeleteTopic(r::DeleteTopic {
                id: id.as_bytes().to_vec().into(),
            }),
            MetadataRecord::CreatePartitions { id, partitions } => {
                r::Record::CreatePartitions(r::CreatePartitions {
                    id: id.as_bytes().to_vec().into(),
                    partitions: partitions.iter().map(Into::into).collect(),
                })
            }
            MetadataRecord::AlterConfigs { id, configs } => {
                r::Record::AlterConfigs(r::AlterConfigs {
                    id: id.as_bytes().to_vec().into(),
                    configs: configs.clone().into_iter().collect(),
                })
            }
            MetadataRecord::ChangePartition(change) => r::Record::ChangePartition(change.into()),
            MetadataRecord::AllocateProducerIds {
                broker_id,
                broker_epoch,
                count,
            } => r::Record::AllocateProducerIds(r::AllocateProducerIds {
                broker_id: *broker_id,
                broker_epoch: *broker_epoch,
                count: *count,
            }),
        };
        Self {
            record: Some(inner),
        }
    }
}

impl TryFrom<&wire::MetadataRecord> for MetadataRecord {
    type Error = ApiError;
    fn try_from(record: &wire::MetadataRecord) -> Result<Self, ApiError> {
        use wire::metadata_record as r;
        Ok(
            match record
                .record
                .as_ref()
                .ok_or_else(|| malformed("metadata record: empty"))?
            {
                r::Record::Bootstrap(b) => Self::Bootstrap {
                    cluster_id: b.cluster_id.clone(),
                },
                r::Record::BecomeController(b) => Self::BecomeController {
                    node_id: b.node_id,
                    term: b.term,
                },
                r::Record::RegisterBroker(b) => Self::RegisterBroker {
                    id: b.id,
                    incarnation: uuid_from_wire(&b.incarnation, "broker incarnation")?,
                    listeners: b.listeners.clone().into_iter().collect(),
                    rack: b.rack.clone(),
                },
                r::Record::SetBrokerState(s) => Self::SetBrokerState {
                    id: s.id,
                    epoch: s.epoch,
                    state: state_from_wire(s.state)?,
                },
                r::Record::CreateTopic(t) => Self::CreateTopic {
                    topic: Topic::try_from(t)?,
                },
                r::Record::DeleteTopic(d) => Self::DeleteTopic {
                    id: uuid_from_wire(&d.id, "topic id")?,
                },
                r::Record::CreatePartitions(c) => Self::CreatePartitions {
                    id: uuid_from_wire(&c.id, "topic id")?,
                    partitions: c.partitions.iter().map(Into::into).collect(),
                },
                r::Record::AlterConfigs(a) => Self::AlterConfigs {
                    id: uuid_from_wire(&a.id, "topic id")?,
                    configs: a.configs.clone().into_iter().collect(),
                },
                r::Record::ChangePartition(c) => Self::ChangePartition(PartitionChange {
                    topic_id: uuid_from_wire(&c.topic_id, "topic id")?,
                    partition: c.partition,
                    partition_epoch: c.partition_epoch,
                    leader: (c.leader >= 0).then_some(c.leader),
                    isr: c.isr.clone(),
                    unclean: c.unclean,
                }),
                r::Record::AllocateProducerIds(a) => Self::AllocateProducerIds {
                    broker_id: a.broker_id,
                    broker_epoch: a.broker_epoch,
                    count: a.count,
                },
            },
        )
    }
}
