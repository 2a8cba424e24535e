//! The group rules, against an in-memory `__consumer_offsets` under tokio's paused clock.

mod coordinator_moves;
mod membership;
mod memory;
mod offsets;
mod rebalance;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tributary_kafka::ErrorCode;

use crate::api::*;
use crate::config::GroupConfig;
use crate::coordinator::GroupCoordinator;
use memory::{Cluster, MemoryLog};

type Coordinator = GroupCoordinator<MemoryLog>;

const GROUP: &str = "g";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config() -> GroupConfig {
    GroupConfig {
        offsets_topic_num_partitions: 1,
        offsets_topic_replication_factor: 1,
        ..GroupConfig::default()
    }
}

/// A cluster whose `__consumer_offsets` has one partition led by broker 1, and broker 1's
/// coordinator with the partition loaded.
async fn started() -> (Arc<Coordinator>, Arc<Cluster>) {
    started_with(config()).await
}

async fn started_with(config: GroupConfig) -> (Arc<Coordinator>, Arc<Cluster>) {
    let cluster = Cluster::new(1);
    cluster.set_leader(0, 1, 0);
    let c = GroupCoordinator::new(MemoryLog::new(&cluster, 1), config);
    wait_loaded(&c).await;
    // The maintenance loop runs as on a broker (until the test's runtime ends).
    tokio::spawn(c.clone().run());
    (c, cluster)
}

/// Runs maintenance until the group's partition answers.
async fn wait_loaded(c: &Arc<Coordinator>) {
    for _ in 0..100 {
        c.maintain();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if c.offset_fetch(fetch_all(GROUP)).error.is_none() {
            return;
        }
    }
    panic!("the offsets partition never loaded");
}

fn err(error: &Option<GroupError>) -> Option<ErrorCode> {
    error.as_ref().map(|e| e.code)
}

fn join_request(
    member_id: &str,
    instance: Option<&str>,
    metadata: &'static [u8],
) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: GROUP.into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        member_id: member_id.into(),
        group_instance_id: instance.map(Into::into),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupProtocol {
            name: "range".into(),
            metadata: Bytes::from_static(metadata),
        }],
        client_id: "client".into(),
        reason: String::new(),
        require_known_member_id: true,
    }
}

/// Joins in the background (a join waits for the rebalance).
fn spawn_join(
    c: &Arc<Coordinator>,
    req: JoinGroupRequest,
) -> tokio::task::JoinHandle<JoinGroupResponse> {
    let c = c.clone();
    tokio::spawn(async move { c.join_group(req, "/127.0.0.1".into()).await })
}

/// A new dynamic member's id (KIP-394's first round trip).
async fn member_id(c: &Arc<Coordinator>) -> String {
    let first = c
        .join_group(join_request("", None, b"m"), "/127.0.0.1".into())
        .await;
    assert_eq!(err(&first.error), Some(ErrorCode::MemberIdRequired));
    first.member_id
}

fn sync_request(
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupRequest {
    SyncGroupRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member.into(),
        assignments: assignments
            .iter()
            .map(|(m, a)| SyncGroupAssignment {
                member_id: (*m).into(),
                assignment: Bytes::from_static(a),
            })
            .collect(),
        ..Default::default()
    }
}

/// One member joined and synced: (member id, generation).
async fn stable_single_member(c: &Arc<Coordinator>) -> (String, i32) {
    let id = member_id(c).await;
    let joined = spawn_join(c, join_request(&id, None, b"m")).await.unwrap();
    assert_eq!(err(&joined.error), None);
    let synced = c
        .sync_group(sync_request(&id, joined.generation_id, &[(&id, b"a")]))
        .await;
    assert_eq!(err(&synced.error), None);
    (id, joined.generation_id)
}

fn heartbeat_request(member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        max_wait_ms: 0,
    }
}

fn commit_request(member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                committed_offset: offset,
                committed_leader_epoch: 1,
                committed_metadata: "meta".into(),
            }],
        }],
    }
}

fn commit_error(response: &OffsetCommitResponse) -> Option<ErrorCode> {
    err(&response.topics[0].partitions[0].error)
}

fn fetch_all(group: &str) -> OffsetFetchRequest {
    OffsetFetchRequest {
        group_id: group.into(),
        topics: Vec::new(),
    }
}

/// The committed offset of `t-0` in the group, as OffsetFetch answers.
fn committed(c: &Arc<Coordinator>) -> i64 {
    let fetched = c.offset_fetch(OffsetFetchRequest {
        group_id: GROUP.into(),
        topics: vec![OffsetFetchTopic {
            name: "t".into(),
            partitions: vec![0],
        }],
    });
    assert_eq!(err(&fetched.error), None);
    fetched.topics[0].partitions[0].committed_offset
}

fn describe(c: &Arc<Coordinator>) -> DescribedGroup {
    c.describe_groups(DescribeGroupsRequest {
        groups: vec![GROUP.into()],
    })
    .groups
    .remove(0)
}
