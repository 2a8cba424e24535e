//! Connections to brokers and the cached cluster metadata: bootstrap from any of the configured
//! servers (the next is tried when one is down), refreshed on demand (leadership errors,
//! unknown partitions) and at least every `metadata.max.age.ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::broker_client::BrokerClient;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use uuid::Uuid;

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// Largest gRPC message sent or received.
pub(crate) const MAX_MESSAGE_BYTES: usize = 100 << 20;

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: i32,
    /// `host:port`.
    pub address: String,
    /// Rack, if set.
    pub rack: Option<String>,
    /// RUNNING, FENCED or CONTROLLED_SHUTDOWN.
    pub state: String,
}

/// A partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Index.
    pub partition: i32,
    /// Leader, if any.
    pub leader: Option<i32>,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Replicas on brokers that are down.
    pub offline_replicas: Vec<i32>,
}

/// A topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: Uuid,
    /// Partitions by index.
    pub partitions: Vec<PartitionInfo>,
}

/// The cluster as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Cluster id.
    pub cluster_id: String,
    /// The controller (a coordinator node id), if known.
    pub controller_id: Option<i64>,
    /// Brokers by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
}

#[derive(Debug, Default)]
struct Cache {
    metadata: Metadata,
    refreshed: Option<Instant>,
}

/// Channels and metadata shared by a client's parts.
#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    cache: RwLock<Cache>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// A cluster reached through `config.bootstrap_servers` (nothing is contacted yet).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            channels: Mutex::new(HashMap::new()),
            cache: RwLock::new(Cache::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The client configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A (cached, lazily connecting) channel to `address`.
    pub fn channel(&self, address: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| ClientError::Config(format!("bad address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.config.request_timeout + Duration::from_secs(60))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_frame_size(1 << 20)
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A broker client for `address`.
    pub fn broker(&self, address: &str) -> Result<BrokerClient<Channel>> {
        Ok(BrokerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// An admin client for `address`.
    pub fn admin(&self, address: &str) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Addresses to try for cluster-wide calls: known running brokers, then the bootstrap list.
    pub fn addresses(&self) -> Vec<String> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = cache
            .metadata
            .brokers
            .values()
            .filter(|b| b.state == "RUNNING" && !b.address.is_empty())
            .map(|b| b.address.clone())
            .collect();
        for s in &self.config.bootstrap_servers {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Calls `f` on each address in turn until one answers (an unreachable broker, or one still
    /// starting, moves on to the next); bounded by the request timeout overall.
    pub async fn any<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut last = None;
        loop {
            for address in self.addresses() {
                match f(address.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(status) => {
                        let err = ClientError::from_status(&address, status);
                        if !err.is_retriable() {
                            return Err(err);
                        }
                        last = Some(err);
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(
                    last.unwrap_or_else(|| ClientError::Timeout("no broker answered".into()))
                );
            }
            tokio::time::sleep(self.config.retry_backoff).await;
        }
    }

    /// The cached metadata.
    pub fn metadata(&self) -> Metadata {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .metadata
            .clone()
    }

    /// A topic from the cache (refreshing if absent or stale).
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        let stale = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            cache
                .refreshed
                .is_none_or(|t| t.elapsed() > self.config.metadata_max_age)
        };
        if !stale && let Some(t) = self.cached_topic(name) {
            return Ok(t);
        }
        self.refresh(&[name.to_owned()]).await?;
        self.cached_topic(name).ok_or_else(|| {
            ClientError::broker(
                tributary_proto::common::v1::ErrorCode::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })
    }

    /// The partition count of `topic` (cheap: no copy of the metadata), refreshing when it is
    /// not cached or the cache is older than `metadata.max.age.ms`.
    pub async fn partition_count(&self, name: &str) -> Result<usize> {
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let fresh = cache
                .refreshed
                .is_some_and(|t| t.elapsed() <= self.config.metadata_max_age);
            if fresh && let Some(t) = cache.metadata.topics.get(name) {
                return Ok(t.partitions.len());
            }
        }
        Ok(self.topic(name).await?.partitions.len())
    }

    fn cached_topic(&self, name: &str) -> Option<TopicInfo> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .metadata
            .topics
            .get(name)
            .cloned()
    }

    /// The leader of a partition from the cache: (broker id, address, leader epoch).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(i32, String, i32)> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let p = cache
            .metadata
            .topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)?;
        let leader = p.leader?;
        let address = cache.metadata.brokers.get(&leader)?.address.clone();
        Some((leader, address, p.leader_epoch))
    }

    /// Fetches metadata for `topics` (empty: every topic) and caches it. Topics that do not
    /// exist are left out of the cache (and their absence reported by the caller).
    pub async fn refresh(&self, topics: &[String]) -> Result<Metadata> {
        let _serial = self.refreshing.lock().await;
        let request = pb::MetadataRequest {
            topics: topics.to_vec(),
            allow_auto_topic_creation: true,
            min_metadata_offset: 0,
        };
        let response = self
            .any(|address| {
                let request = request.clone();
                async move {
                    let mut client = match self.broker(&address) {
                        Ok(c) => c,
                        Err(e) => return Err(tonic::Status::invalid_argument(e.to_string())),
                    };
                    Ok(client.metadata(request).await?.into_inner())
                }
            })
            .await?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let m = &mut cache.metadata;
        m.cluster_id = response.cluster_id;
        m.controller_id = (response.controller_id >= 0).then_some(response.controller_id);
        m.brokers = response
            .brokers
            .into_iter()
            .map(|b| {
                (
                    b.broker_id,
                    BrokerInfo {
                        id: b.broker_id,
                        address: b.address,
                        rack: b.rack,
                        state: b.state,
                    },
                )
            })
            .collect();
        if topics.is_empty() {
            m.topics.clear();
        }
        for t in response.topics {
            if ClientError::from_wire(&t.error).is_some() && t.partitions.is_empty() {
                m.topics.remove(&t.name);
                continue;
            }
            let id = Uuid::from_slice(&t.topic_id).unwrap_or_default();
            m.topics.insert(
                t.name.clone(),
                TopicInfo {
                    name: t.name,
                    id,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionInfo {
                            partition: p.partition,
                            leader: (p.leader_id >= 0).then_some(p.leader_id),
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas,
                            isr: p.isr,
                            offline_replicas: p.offline_replicas,
                        })
                        .collect(),
                },
            );
        }
        cache.refreshed = Some(Instant::now());
        Ok(cache.metadata.clone())
    }
}
