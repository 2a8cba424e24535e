//! The Metadata answer: brokers at their addresses on the listener the request came in on,
//! topics, partitions, the controller.

use std::time::Instant;

use tributary_metadata::{BrokerState, MetadataImage, Topic};
use tributary_proto::common::v1::ErrorCode;

use super::{CATCH_UP_WAIT, NotReady, Service};
use crate::api::{
    BrokerEndpoint, ClusterMetadata, MetadataRequest, PartitionError, PartitionMetadata,
    TopicMetadata,
};
use crate::listeners;
use crate::metrics::METRICS;

impl Service {
    /// Kafka's Metadata for a client on `listener`: every broker's address is its address on
    /// that listener, so clients reach every broker through the same kind of listener. Missing
    /// topics are created when both the request and `auto.create.topics.enable` allow it.
    pub async fn metadata(
        &self,
        request: &MetadataRequest,
        listener: &str,
    ) -> Result<ClusterMetadata, NotReady> {
        self.ready()?;
        let start = Instant::now();
        if request.min_metadata_offset > 0 {
            let _ = self
                .manager
                .wait_reconciled(request.min_metadata_offset, CATCH_UP_WAIT)
                .await;
        }
        let auto_create =
            request.allow_auto_topic_creation && self.manager.config().auto_create_topics_enable;
        let (answer, missing) = self
            .manager
            .metadata()
            .read(|image| describe_cluster(image, request, listener, auto_create));
        if auto_create {
            for name in missing {
                self.manager.auto_create(&name);
            }
        }
        METRICS.request("metadata", start, []);
        Ok(answer)
    }
}

/// The answer from `image`, and the names asked for that it lacks.
fn describe_cluster(
    image: &MetadataImage,
    request: &MetadataRequest,
    listener: &str,
    auto_create: bool,
) -> (ClusterMetadata, Vec<String>) {
    let brokers = image
        .brokers
        .values()
        .map(|b| BrokerEndpoint {
            id: b.id,
            address: listeners::broker_address(b, listener),
            rack: b.rack.clone(),
            state: match b.state {
                BrokerState::Running => "RUNNING",
                BrokerState::Fenced => "FENCED",
                BrokerState::ControlledShutdown => "CONTROLLED_SHUTDOWN",
            },
        })
        .collect();
    let mut missing = Vec::new();
    let topics = match &request.topics {
        None => image
            .topics
            .values()
            .map(|t| describe_topic(image, t))
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| match image.topics.get(name) {
                Some(topic) => describe_topic(image, topic),
                None => {
                    missing.push(name.clone());
                    TopicMetadata {
                        name: name.clone(),
                        error: Some(if auto_create {
                            PartitionError::new(
                                ErrorCode::LeaderNotAvailable,
                                format!("topic `{name}` is being created (auto.create.topics.enable); retry shortly"),
                            )
                        } else {
                            PartitionError::new(
                                ErrorCode::UnknownTopicOrPartition,
                                format!("topic `{name}` does not exist; create it first"),
                            )
                        }),
                        topic_id: None,
                        partitions: Vec::new(),
                    }
                }
            })
            .collect(),
    };
    let answer = ClusterMetadata {
        brokers,
        cluster_id: image.cluster_id.clone(),
        controller_id: image.controller.map(|c| c.node_id as i64),
        topics,
        metadata_offset: image.offset,
    };
    (answer, missing)
}

fn describe_topic(image: &MetadataImage, topic: &Topic) -> TopicMetadata {
    let running = |b: &i32| {
        image
            .brokers
            .get(b)
            .is_some_and(|x| x.state != BrokerState::Fenced)
    };
    TopicMetadata {
        name: topic.name.clone(),
        error: None,
        topic_id: Some(topic.id),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionMetadata {
                partition: i as i32,
                error: p.leader.is_none().then(|| {
                    PartitionError::new(
                        ErrorCode::LeaderNotAvailable,
                        format!("{}-{i} has no leader right now", topic.name),
                    )
                }),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline_replicas: p.replicas.iter().copied().filter(|b| !running(b)).collect(),
            })
            .collect(),
    }
}

impl Service {
    /// Broker `id`'s address on `listener`, if it has one (for leader hints).
    pub fn advertised_address(
        &self,
        id: tributary_metadata::BrokerId,
        listener: &str,
    ) -> Option<String> {
        self.manager
            .metadata()
            .read(|image| listeners::advertised_address(image, id, listener))
    }
}
