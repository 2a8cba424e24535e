//! Admin: topics, partitions, configs, the cluster, offsets. Calls go to any broker (which
//! forwards them to the controller and answers once its own metadata has the change).

use std::collections::BTreeMap;
use std::sync::Arc;

use tributary_proto::coordinator::v1 as cpb;

use crate::TopicPartition;
use crate::cluster::{Cluster, Metadata, TopicInfo};
use crate::config::{ClientConfig, Properties};
use crate::error::{ClientError, Result};

/// A topic config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka's name.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Set on the topic (not the default).
    pub is_override: bool,
}

/// A new topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// An admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

macro_rules! call_admin {
    ($self:ident, $method:ident, $request:expr) => {{
        let request = $request;
        $self
            .cluster
            .any(|address| {
                let request = request.clone();
                let cluster = $self.cluster.clone();
                async move {
                    let mut client = cluster
                        .admin(&address)
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    Ok(client.$method(request).await?.into_inner())
                }
            })
            .await?
    }};
}

impl Admin {
    /// An admin client from Kafka properties (`bootstrap.servers` required).
    pub fn new(props: &Properties) -> Result<Self> {
        let config = ClientConfig::from_properties(props)?;
        Ok(Self {
            cluster: Arc::new(Cluster::new(config)),
        })
    }

    /// The cluster connection.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Creates a topic (fails with TOPIC_ALREADY_EXISTS, INVALID_CONFIG, ...).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let response: cpb::CreateTopicsResponse = call_admin!(
            self,
            create_topics,
            cpb::CreateTopicsRequest {
                topics: vec![cpb::create_topics_request::NewTopic {
                    name: topic.name.clone(),
                    partitions: topic.partitions,
                    replication_factor: topic.replication_factor,
                    configs: topic.configs.clone().into_iter().collect(),
                }],
                validate_only: false,
            }
        );
        let result = response
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol("empty CreateTopics answer".into()))?;
        match ClientError::from_wire(&result.error) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let response: cpb::DeleteTopicsResponse = call_admin!(
            self,
            delete_topics,
            cpb::DeleteTopicsRequest {
                names: vec![name.to_owned()],
            }
        );
        let result = response
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol("empty DeleteTopics answer".into()))?;
        match ClientError::from_wire(&result.error) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Raises a topic's partition count to `total`.
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<()> {
        let response: cpb::CreatePartitionsResponse = call_admin!(
            self,
            create_partitions,
            cpb::CreatePartitionsRequest {
                topic: name.to_owned(),
                total_count: total,
            }
        );
        match ClientError::from_wire(&response.error) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The whole cluster's metadata (brokers, every topic).
    pub async fn metadata(&self) -> Result<Metadata> {
        self.cluster.refresh(&[]).await
    }

    /// Topic names, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.metadata().await?.topics.into_keys().collect())
    }

    /// Describes `names` (empty: every topic); an unknown name is UNKNOWN_TOPIC_OR_PARTITION.
    pub async fn describe_topics(&self, names: &[String]) -> Result<Vec<TopicInfo>> {
        let metadata = self.cluster.refresh(names).await?;
        if names.is_empty() {
            return Ok(metadata.topics.into_values().collect());
        }
        names
            .iter()
            .map(|n| {
                metadata.topics.get(n).cloned().ok_or_else(|| {
                    ClientError::broker(
                        tributary_proto::common::v1::ErrorCode::UnknownTopicOrPartition,
                        format!("topic `{n}` does not exist"),
                    )
                })
            })
            .collect()
    }

    /// Every config of a topic, with whether it is set on the topic.
    pub async fn describe_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let response: cpb::DescribeConfigsResponse = call_admin!(
            self,
            describe_configs,
            cpb::DescribeConfigsRequest {
                topics: vec![topic.to_owned()],
            }
        );
        let result = response
            .results
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeConfigs answer".into()))?;
        if let Some(err) = ClientError::from_wire(&result.error) {
            return Err(err);
        }
        Ok(result
            .entries
            .into_iter()
            .map(|e| ConfigEntry {
                name: e.name,
                value: e.value,
                is_override: e.is_override,
            })
            .collect())
    }

    /// Sets and removes config overrides of a topic.
    pub async fn alter_configs(
        &self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<()> {
        let response: cpb::AlterConfigsResponse = call_admin!(
            self,
            alter_configs,
            cpb::AlterConfigsRequest {
                topic: topic.to_owned(),
                set: set.clone().into_iter().collect(),
                delete: delete.clone(),
                validate_only: false,
            }
        );
        match ClientError::from_wire(&response.error) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The coordinator nodes: (node id, address, is the controller).
    pub async fn coordinators(&self) -> Result<Vec<(u64, String, bool)>> {
        let response: cpb::DescribeClusterResponse = call_admin!(
            self,
            describe_cluster,
            cpb::DescribeClusterRequest {
                min_metadata_offset: 0,
            }
        );
        Ok(response
            .coordinators
            .into_iter()
            .map(|c| (c.node_id, c.address, c.is_leader))
            .collect())
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest, or a timestamp.
    pub async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<i64> {
        crate::consumer::list_offset(&self.cluster, tp, timestamp).await
    }
}
