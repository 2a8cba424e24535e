//! Consumer-group lag for `/metrics`: for every group this broker coordinates, how far each
//! committed offset is behind its partition's high watermark (what a consumer can read).
//!
//! The coordinator knows the committed offsets; the high watermark is the partition leader's.
//! Every [`LAG_INTERVAL`] the coordinator reads the high watermarks of partitions it leads
//! itself and asks the other leaders with one `ListOffsets` (latest) each, over the
//! inter-broker listener, as Kafka's lag exporters do from outside. A scrape reads the last
//! table; a leader that does not answer leaves its partitions out of it until it does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tributary_metadata::BrokerId;
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::broker_client::BrokerClient;

use super::{GroupCoordinator, lock};
use crate::api::TopicPartition;

/// How often the lag table is refreshed.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on one leader's `ListOffsets` answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// One partition's lag for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagSample {
    /// The group.
    pub group: String,
    /// The partition.
    pub tp: TopicPartition,
    /// High watermark minus the committed offset (never negative).
    pub lag: i64,
}

impl GroupCoordinator {
    /// The lag table as last refreshed, ordered by group and partition.
    pub fn lag(&self) -> Vec<LagSample> {
        lock(&self.lag).clone()
    }

    /// Refreshes the lag table every [`LAG_INTERVAL`], forever.
    pub async fn report_lag(self: Arc<Self>) {
        let mut channels: HashMap<String, Channel> = HashMap::new();
        let mut ticker = tokio::time::interval(LAG_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let committed = self.committed_offsets();
            let ends = if committed.is_empty() {
                HashMap::new()
            } else {
                self.high_watermarks(committed.iter().map(|(_, tp, _)| tp), &mut channels)
                    .await
            };
            let samples = committed
                .into_iter()
                .filter_map(|(group, tp, offset)| {
                    let end = *ends.get(&tp)?;
                    Some(LagSample {
                        group,
                        tp,
                        lag: (end - offset).max(0),
                    })
                })
                .collect();
            *lock(&self.lag) = samples;
        }
    }

    /// (group, partition, committed offset) of every loaded group, sorted.
    fn committed_offsets(&self) -> Vec<(String, TopicPartition, i64)> {
        self.coordinator
            .committed_offsets()
            .into_iter()
            .map(|(group, topic, partition, offset)| {
                (group, TopicPartition::new(topic, partition), offset)
            })
            .collect()
    }

    /// The high watermark of each of `tps` whose leader answers.
    async fn high_watermarks(
        &self,
        tps: impl Iterator<Item = &TopicPartition>,
        channels: &mut HashMap<String, Channel>,
    ) -> HashMap<TopicPartition, i64> {
        let me = self.manager.broker_id();
        let mut out = HashMap::new();
        let mut remote: BTreeMap<BrokerId, Vec<TopicPartition>> = BTreeMap::new();
        for tp in tps {
            if out.contains_key(tp) {
                continue;
            }
            if let Some(p) = self.manager.partition(tp)
                && p.role().leader == Some(me)
            {
                out.insert(tp.clone(), p.high_watermark());
                continue;
            }
            let leader = self.manager.metadata().read(|image| {
                image
                    .topics
                    .get(&tp.topic)
                    .and_then(|t| t.partitions.get(usize::try_from(tp.partition).ok()?))
                    .and_then(|p| p.leader)
            });
            if let Some(leader) = leader {
                remote.entry(leader).or_default().push(tp.clone());
            }
        }
        let listener = &self.manager.config().inter_broker_listener_name;
        for (leader, tps) in remote {
            let Some(address) = self
                .manager
                .metadata()
                .read(|image| crate::listeners::advertised_address(image, leader, listener))
            else {
                continue;
            };
            let channel = match channels.get(&address) {
                Some(c) => c.clone(),
                None => match Endpoint::from_shared(format!("http://{address}")) {
                    Ok(e) => {
                        let c = e
                            .connect_timeout(ASK_TIMEOUT)
                            .timeout(ASK_TIMEOUT)
                            .connect_lazy();
                        channels.insert(address.clone(), c.clone());
                        c
                    }
                    Err(_) => continue,
                },
            };
            let mut topics: BTreeMap<&str, Vec<pb::list_offsets_request::PartitionQuery>> =
                BTreeMap::new();
            for tp in &tps {
                topics.entry(&tp.topic).or_default().push(
                    pb::list_offsets_request::PartitionQuery {
                        partition: tp.partition,
                        timestamp: -1,
                        current_leader_epoch: -1,
                    },
                );
            }
            let request = pb::ListOffsetsRequest {
                isolation_level: 0,
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| pb::list_offsets_request::TopicQuery {
                        name: name.to_owned(),
                        partitions,
                    })
                    .collect(),
            };
            match BrokerClient::new(channel).list_offsets(request).await {
                Ok(response) => {
                    for topic in response.into_inner().topics {
                        for p in topic.partitions {
                            if p.error.as_ref().is_none_or(|e| e.code == 0) {
                                out.insert(
                                    TopicPartition::new(topic.name.clone(), p.partition),
                                    p.offset,
                                );
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(leader, error = %status.message(), "no high watermarks for the lag metric");
                    channels.remove(&address);
                }
            }
        }
        out
    }
}
