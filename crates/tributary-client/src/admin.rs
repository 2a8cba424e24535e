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
                validate_only: false,
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
                ..Default::default()
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

/// A group as `ListGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// "consumer" for consumer groups.
    pub protocol_type: String,
    /// Kafka's state name.
    pub state: String,
}

/// A group member as `DescribeGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host (`/address`).
    pub host: String,
    /// Its assigned partitions.
    pub assignment: Vec<TopicPartition>,
}

/// A group as `DescribeGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// Kafka's state name (`Dead`: no such group).
    pub state: String,
    /// The chosen assignor.
    pub assignor: String,
    /// The coordinating broker's id and address.
    pub coordinator: (i32, String),
    /// Members.
    pub members: Vec<MemberDescription>,
}

impl Admin {
    /// Every group of the cluster (each broker lists those it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.cluster.refresh(&[]).await?;
        let mut out = Vec::new();
        for broker in metadata.brokers.values() {
            if broker.state != "RUNNING" || broker.address.is_empty() {
                continue;
            }
            let mut client = tributary_proto::broker::v1::group_client::GroupClient::new(
                self.cluster.channel(&broker.address)?,
            );
            let response = client
                .list_groups(tributary_proto::broker::v1::ListGroupsRequest::default())
                .await
                .map_err(|s| ClientError::from_status(&broker.address, s))?
                .into_inner();
            if let Some(err) = ClientError::from_wire(&response.error) {
                return Err(err);
            }
            out.extend(response.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.group_state,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    async fn group_coordinator(&self, group: &str) -> Result<String> {
        crate::group::find_coordinator(&self.cluster, group).await
    }

    /// A group's state and members (state `Dead` if it does not exist).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let deadline = tokio::time::Instant::now() + self.cluster.config().request_timeout;
        loop {
            let address = self.group_coordinator(group).await?;
            let mut client = tributary_proto::broker::v1::group_client::GroupClient::new(
                self.cluster.channel(&address)?,
            );
            let response = client
                .describe_groups(tributary_proto::broker::v1::DescribeGroupsRequest {
                    groups: vec![group.to_owned()],
                })
                .await
                .map_err(|s| ClientError::from_status(&address, s))?
                .into_inner();
            let g = response
                .groups
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Protocol("empty DescribeGroups answer".into()))?;
            match ClientError::from_wire(&g.error) {
                Some(err) if err.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                    continue;
                }
                Some(err) => return Err(err),
                None => {}
            }
            let members = g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    assignment: if m.member_assignment.is_empty() {
                        Vec::new()
                    } else {
                        crate::consumer_protocol::Assignment::decode(&m.member_assignment)
                            .map(|a| a.partitions)
                            .unwrap_or_default()
                    },
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    host: m.client_host,
                })
                .collect();
            return Ok(GroupDescription {
                group_id: g.group_id,
                state: g.group_state,
                assignor: g.protocol_data,
                coordinator: (g.coordinator_id, address),
                members,
            });
        }
    }

    /// A group's committed offsets.
    pub async fn list_group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let deadline = tokio::time::Instant::now() + self.cluster.config().request_timeout;
        loop {
            let address = self.group_coordinator(group).await?;
            match crate::group::fetch_offsets(&self.cluster, &address, group, &[]).await {
                Err(err) if err.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                }
                Err(err) => return Err(err),
                Ok(offsets) => return Ok(offsets.into_iter().collect()),
            }
        }
    }

    /// Sets a group's committed offsets (refused while the group has members).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.cluster.config().request_timeout;
        loop {
            let address = self.group_coordinator(group).await?;
            match crate::group::commit_offsets(
                &self.cluster,
                &address,
                group,
                "",
                -1,
                None,
                offsets,
            )
            .await
            {
                Err(err) if err.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.cluster.config().request_timeout;
        loop {
            let address = self.group_coordinator(group).await?;
            let mut client = tributary_proto::broker::v1::group_client::GroupClient::new(
                self.cluster.channel(&address)?,
            );
            let response = client
                .delete_groups(tributary_proto::broker::v1::DeleteGroupsRequest {
                    groups: vec![group.to_owned()],
                })
                .await
                .map_err(|s| ClientError::from_status(&address, s))?
                .into_inner();
            let error = response.results.into_iter().next().and_then(|r| r.error);
            match ClientError::from_wire(&error) {
                Some(err) if err.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                }
                Some(err) => return Err(err),
                None => return Ok(()),
            }
        }
    }
}
