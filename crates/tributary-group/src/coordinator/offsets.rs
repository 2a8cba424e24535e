//! OffsetCommit, OffsetFetch and OffsetDelete.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tributary_kafka::ErrorCode;
use tributary_kafka::offsets::{OffsetValue, encode_offset};

use super::{GroupCoordinator, OFFSET_METADATA_MAX_BYTES, lock};
use crate::api::{
    GroupError, OffsetCommitRequest, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use crate::group::{GroupState, check_generation, check_member, offset_key};
use crate::log::OffsetsLog;

impl<L: OffsetsLog> GroupCoordinator<L> {
    /// Kafka's OffsetCommit: acknowledged once replicated.
    pub async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let respond = |error: &dyn Fn(&str, i32) -> Option<GroupError>| OffsetCommitResponse {
            topics: req
                .topics
                .iter()
                .map(|t| OffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| OffsetCommitResponsePartition {
                            partition: p.partition,
                            error: error(&t.name, p.partition),
                        })
                        .collect(),
                })
                .collect(),
        };
        if req.group_id.is_empty() {
            let e = GroupError::new(ErrorCode::InvalidGroupId, "the group id is empty");
            return respond(&|_, _| Some(e.clone()));
        }
        let checked = self.locate_or_create(&req.group_id).and_then(|(located, group)| {
            let mut g = lock(&group);
            if req.generation_id < 0 && req.member_id.is_empty() {
                if !g.members.is_empty() {
                    return Err(GroupError::new(
                        ErrorCode::UnknownMemberId,
                        format!(
                            "group `{}` has active members; only they may commit (stop them first)",
                            g.id
                        ),
                    ));
                }
            } else {
                check_member(&g, &req.member_id, req.group_instance_id.as_deref())?;
                check_generation(&g, req.generation_id)?;
                if g.state == GroupState::CompletingRebalance {
                    return Err(GroupError::new(
                        ErrorCode::RebalanceInProgress,
                        "the group is rebalancing; rejoin before committing",
                    ));
                }
                if let Some(m) = g.members.get_mut(&req.member_id) {
                    m.session_deadline = Instant::now() + m.session_timeout;
                }
            }
            if g.state == GroupState::Dead {
                g.set_state(GroupState::Empty, self.now_ms());
            }
            Ok((located, group.clone()))
        });
        let (located, group) = match checked {
            Ok(found) => found,
            Err(e) => return respond(&|_, _| Some(e.clone())),
        };
        let ts = self.now_ms();
        let mut writes = Vec::new();
        let mut entries = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                if p.committed_metadata.len() > OFFSET_METADATA_MAX_BYTES {
                    continue;
                }
                let value = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.clone(),
                    commit_timestamp: ts,
                };
                writes.push((
                    offset_key(&req.group_id, &t.name, p.partition),
                    Some(encode_offset(&value)),
                ));
                entries.push(((t.name.clone(), p.partition), value));
            }
        }
        let written = if writes.is_empty() {
            Ok(0)
        } else {
            self.append(located.partition, writes).await
        };
        match written {
            Ok(base) => {
                let mut g = lock(&group);
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    g.put_offset(key, value, base + i as i64);
                }
                respond(&|topic, partition| {
                    let too_large = req
                        .topics
                        .iter()
                        .filter(|t| t.name == topic)
                        .flat_map(|t| &t.partitions)
                        .any(|p| {
                            p.partition == partition
                                && p.committed_metadata.len() > OFFSET_METADATA_MAX_BYTES
                        });
                    too_large.then(|| {
                        GroupError::new(
                            ErrorCode::OffsetMetadataTooLarge,
                            format!(
                                "offset metadata is longer than {OFFSET_METADATA_MAX_BYTES} bytes"
                            ),
                        )
                    })
                })
            }
            Err(e) => respond(&|_, _| Some(e.clone())),
        }
    }

    /// Kafka's OffsetFetch.
    pub fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let located = match self.locate(&req.group_id) {
            Ok(l) => l,
            Err(e) => {
                return OffsetFetchResponse {
                    error: Some(e),
                    topics: Vec::new(),
                };
            }
        };
        let offsets: BTreeMap<(String, i32), OffsetValue> = located
            .group
            .map(|g| {
                lock(&g)
                    .offsets
                    .iter()
                    .map(|(k, c)| (k.clone(), c.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let partition = |topic: &str, p: i32| {
            let found = offsets.get(&(topic.to_owned(), p));
            OffsetFetchResponsePartition {
                partition: p,
                committed_offset: found.map_or(-1, |v| v.offset),
                committed_leader_epoch: found.map_or(-1, |v| v.leader_epoch),
                metadata: found.map(|v| v.metadata.clone()).unwrap_or_default(),
                error: None,
            }
        };
        let topics = if req.topics.is_empty() {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, p) in offsets.keys() {
                by_topic.entry(topic.clone()).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(name, ps)| OffsetFetchResponseTopic {
                    partitions: ps.into_iter().map(|p| partition(&name, p)).collect(),
                    name,
                })
                .collect()
        } else {
            req.topics
                .iter()
                .map(|t| OffsetFetchResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|&p| partition(&t.name, p))
                        .collect(),
                })
                .collect()
        };
        OffsetFetchResponse {
            error: None,
            topics,
        }
    }

    /// Kafka's OffsetDelete: removes the offsets [`crate::group`]'s rule allows, acknowledged
    /// once their tombstones are replicated.
    pub async fn offset_delete(&self, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let fail = |e: GroupError| OffsetDeleteResponse {
            error: Some(e),
            topics: Vec::new(),
        };
        let not_found = || {
            GroupError::new(
                ErrorCode::GroupIdNotFound,
                format!("group `{}` does not exist", req.group_id),
            )
        };
        let located = match self.locate(&req.group_id) {
            Ok(located) => located,
            Err(e) => return fail(e),
        };
        let Some(group) = located.group else {
            return fail(not_found());
        };
        let (mut results, deleting) = {
            let g = lock(&group);
            if g.state == GroupState::Dead {
                return fail(not_found());
            }
            let results = match g.offset_deletion(&req.topics) {
                Ok(results) => results,
                Err(e) => return fail(e),
            };
            // Only offsets that exist need a tombstone.
            let deleting: Vec<(String, i32)> = results
                .iter()
                .filter(|(topic, p, error)| {
                    error.is_none() && g.offsets.contains_key(&(topic.clone(), *p))
                })
                .map(|(topic, p, _)| (topic.clone(), *p))
                .collect();
            (results, deleting)
        };
        if !deleting.is_empty() {
            let writes = deleting
                .iter()
                .map(|(topic, p)| (offset_key(&req.group_id, topic, *p), None))
                .collect();
            match self.append(located.partition, writes).await {
                Ok(base) => {
                    let mut g = lock(&group);
                    for (i, key) in deleting.iter().enumerate() {
                        // A commit written after the tombstone stays.
                        if g.offsets
                            .get(key)
                            .is_some_and(|c| c.log_offset < base + i as i64)
                        {
                            g.offsets.remove(key);
                        }
                    }
                }
                Err(e) => {
                    for (topic, p, error) in &mut results {
                        if deleting.iter().any(|(t, q)| t == topic && q == p) {
                            *error = Some(e.clone());
                        }
                    }
                }
            }
        }
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        for (topic, partition, error) in results {
            let answer = OffsetCommitResponsePartition { partition, error };
            match topics.last_mut().filter(|t| t.name == topic) {
                Some(t) => t.partitions.push(answer),
                None => topics.push(OffsetCommitResponseTopic {
                    name: topic,
                    partitions: vec![answer],
                }),
            }
        }
        OffsetDeleteResponse {
            error: None,
            topics,
        }
    }
}
