//! Admin calls as brokers serve them: each is forwarded to the coordinators (which forward it
//! to the controller), and a call that changes the metadata is answered once this broker's own
//! partitions reflect the change, so a describe through this broker right after sees it
//! (read-your-writes).
//!
//! The requests and answers are the coordinators' `Admin` messages: they are the cluster's
//! admin schema (Kafka's CreateTopics, DescribeConfigs, ... field for field), so a second copy
//! as Rust types would only be translated back. A Kafka-protocol listener maps its requests to
//! them and the coordinators' errors to Kafka's codes.

use std::future::Future;

use tonic::transport::Channel;
use tributary_proto::coordinator::v1 as cpb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;

use super::{CATCH_UP_WAIT, NotReady, Service};

/// Why an admin call got no answer from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// This broker does not serve yet.
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// The coordinators could not be reached or refused the call, as they said it.
    #[error("{}", .0.message())]
    Coordinators(#[from] tonic::Status),
}

/// Generates one forwarding method per admin call; `$offset` names the answer's metadata
/// offset for the calls that change the metadata (their answer waits for it).
macro_rules! admin_calls {
    ($($(#[$doc:meta])* $method:ident($request:ty) -> $response:ty $(, waits for $offset:ident)?;)*) => {
        impl Service {
            $(
                $(#[$doc])*
                pub async fn $method(&self, request: $request) -> Result<$response, AdminError> {
                    let response = self
                        .forward(request, |mut client, request| async move {
                            client.$method(request).await
                        })
                        .await?;
                    $(self.caught_up(response.$offset).await;)?
                    Ok(response)
                }
            )*
        }
    };
}

admin_calls! {
    /// Kafka's CreateTopics.
    create_topics(cpb::CreateTopicsRequest) -> cpb::CreateTopicsResponse, waits for metadata_offset;
    /// Kafka's DeleteTopics.
    delete_topics(cpb::DeleteTopicsRequest) -> cpb::DeleteTopicsResponse, waits for metadata_offset;
    /// Kafka's CreatePartitions.
    create_partitions(cpb::CreatePartitionsRequest) -> cpb::CreatePartitionsResponse, waits for metadata_offset;
    /// Kafka's DescribeConfigs.
    describe_configs(cpb::DescribeConfigsRequest) -> cpb::DescribeConfigsResponse;
    /// Kafka's AlterConfigs.
    alter_configs(cpb::AlterConfigsRequest) -> cpb::AlterConfigsResponse, waits for metadata_offset;
    /// Kafka's DescribeCluster.
    describe_cluster(cpb::DescribeClusterRequest) -> cpb::DescribeClusterResponse;
    /// Adds a coordinator to the Raft group (KRaft's AddRaftVoter).
    add_coordinator(cpb::AddCoordinatorRequest) -> cpb::MembershipResponse;
    /// Removes a coordinator from the Raft group (KRaft's RemoveRaftVoter).
    remove_coordinator(cpb::RemoveCoordinatorRequest) -> cpb::MembershipResponse;
}

/// One of this broker's settings, as DescribeConfigs reports a broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfigEntry {
    /// Kafka's dotted name (`auto.create.topics.enable` for the `auto_create_topics_enable`
    /// key).
    pub name: String,
    /// Its value (`None`: not set).
    pub value: Option<String>,
    /// Its default (`None`: none).
    pub default: Option<String>,
}

impl Service {
    /// This broker's settings by name, with their defaults. They are static (the config
    /// file, the environment and the flags at start): dynamic broker configs do not exist.
    pub fn broker_configs(&self) -> Vec<BrokerConfigEntry> {
        let values = |config: &crate::config::BrokerConfig| {
            config::Config::try_from(config)
                .and_then(|c| config::Source::collect(&c))
                .unwrap_or_default()
        };
        let current = values(self.manager.config());
        let defaults = values(&crate::config::BrokerConfig::default());
        let text = |v: Option<&config::Value>| {
            v.filter(|v| !matches!(v.kind, config::ValueKind::Nil))
                .map(ToString::to_string)
        };
        let mut keys: Vec<&String> = current.keys().chain(defaults.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| BrokerConfigEntry {
                name: key.replace('_', "."),
                value: text(current.get(key)),
                default: text(defaults.get(key)),
            })
            .collect()
    }

    /// Sends `request` to the coordinators with `call` (trying each until one answers).
    async fn forward<Req, Resp, F, Fut>(&self, request: Req, call: F) -> Result<Resp, AdminError>
    where
        Req: Clone,
        F: Fn(AdminClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.ready()?;
        let response = self
            .manager
            .coordinators()
            .call(|channel| {
                let client =
                    AdminClient::new(channel).max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
                call(client, request.clone())
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Waits (bounded) until this broker's partitions reflect metadata `offset`.
    async fn caught_up(&self, offset: u64) {
        if let Err(reached) = self.manager.wait_reconciled(offset, CATCH_UP_WAIT).await {
            tracing::warn!(
                offset,
                reached,
                "metadata did not catch up with an admin change in time"
            );
        }
    }
}
