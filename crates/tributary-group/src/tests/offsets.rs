//! Committing, fetching, validating and expiring offsets; deleting groups.

use super::*;
use tributary_kafka::offsets::{Key, Value, decode_key, decode_value};

#[tokio::test(start_paused = true)]
async fn an_offset_commit_is_acknowledged_once_written_in_kafkas_schema() {
    let (c, cluster) = started().await;
    let (id, generation) = stable_single_member(&c).await;
    let before = cluster.records(0).len();
    let answer = c.offset_commit(commit_request(&id, generation, 42)).await;
    assert_eq!(commit_error(&answer), None);
    let records = cluster.records(0);
    assert_eq!(records.len(), before + 1);
    let record = records.last().unwrap();
    let key = decode_key(record.key.as_deref().unwrap()).unwrap();
    assert_eq!(
        key,
        Key::Offset {
            group: GROUP.into(),
            topic: "t".into(),
            partition: 0
        }
    );
    let Value::Offset(value) = decode_value(&key, record.value.as_deref().unwrap()).unwrap() else {
        panic!("not an offset value");
    };
    assert_eq!((value.offset, value.leader_epoch), (42, 1));
    assert_eq!(value.metadata, "meta");
    assert_eq!(committed(&c), 42);
}

#[tokio::test(start_paused = true)]
async fn a_commit_from_outside_the_group_is_accepted_only_while_it_has_no_members() {
    let (c, _) = started().await;
    let outside = c.offset_commit(commit_request("", -1, 7)).await;
    assert_eq!(commit_error(&outside), None);
    assert_eq!(committed(&c), 7);
    stable_single_member(&c).await;
    let refused = c.offset_commit(commit_request("", -1, 8)).await;
    assert_eq!(commit_error(&refused), Some(ErrorCode::UnknownMemberId));
    assert_eq!(committed(&c), 7);
}

#[tokio::test(start_paused = true)]
async fn a_commit_while_the_group_awaits_its_assignment_gets_rebalance_in_progress() {
    let (c, _) = started().await;
    let id = member_id(&c).await;
    let joined = spawn_join(&c, join_request(&id, None, b"m")).await.unwrap();
    let answer = c
        .offset_commit(commit_request(&id, joined.generation_id, 1))
        .await;
    assert_eq!(commit_error(&answer), Some(ErrorCode::RebalanceInProgress));
}

#[tokio::test(start_paused = true)]
async fn commits_with_an_empty_group_id_are_refused() {
    let (c, _) = started().await;
    let answer = c
        .offset_commit(OffsetCommitRequest {
            group_id: String::new(),
            ..commit_request("", -1, 1)
        })
        .await;
    assert_eq!(commit_error(&answer), Some(ErrorCode::InvalidGroupId));
}

#[tokio::test(start_paused = true)]
async fn offset_metadata_over_4096_bytes_is_refused_for_that_partition_only() {
    let (c, cluster) = started().await;
    let before = cluster.records(0).len();
    let mut req = commit_request("", -1, 3);
    req.topics[0].partitions.push(OffsetCommitPartition {
        partition: 1,
        committed_offset: 9,
        committed_leader_epoch: -1,
        committed_metadata: "x".repeat(4097),
    });
    let answer = c.offset_commit(req).await;
    assert_eq!(err(&answer.topics[0].partitions[0].error), None);
    assert_eq!(
        err(&answer.topics[0].partitions[1].error),
        Some(ErrorCode::OffsetMetadataTooLarge)
    );
    assert_eq!(cluster.records(0).len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn write_failures_become_kafkas_coordinator_errors() {
    let (c, cluster) = started().await;
    for (produce, expected) in [
        (
            ErrorCode::NotEnoughReplicas,
            ErrorCode::CoordinatorNotAvailable,
        ),
        (
            ErrorCode::RequestTimedOut,
            ErrorCode::CoordinatorNotAvailable,
        ),
        (ErrorCode::NotLeaderOrFollower, ErrorCode::NotCoordinator),
        (ErrorCode::KafkaStorageError, ErrorCode::NotCoordinator),
        (
            ErrorCode::MessageTooLarge,
            ErrorCode::InvalidCommitOffsetSize,
        ),
        (ErrorCode::CorruptMessage, ErrorCode::CorruptMessage),
    ] {
        cluster.fail_appends(Some(produce));
        let answer = c.offset_commit(commit_request("", -1, 1)).await;
        assert_eq!(commit_error(&answer), Some(expected), "{produce}");
    }
    cluster.fail_appends(None);
    // Nothing failed was applied.
    assert_eq!(committed(&c), -1);
}

#[tokio::test(start_paused = true)]
async fn offset_fetch_without_topics_returns_every_committed_offset() {
    let (c, _) = started().await;
    let mut req = commit_request("", -1, 3);
    req.topics.push(OffsetCommitTopic {
        name: "a".into(),
        partitions: vec![OffsetCommitPartition {
            partition: 2,
            committed_offset: 11,
            committed_leader_epoch: -1,
            committed_metadata: String::new(),
        }],
    });
    c.offset_commit(req).await;
    let all = c.offset_fetch(fetch_all(GROUP));
    let names: Vec<&str> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "t"]);
    assert_eq!(all.topics[0].partitions[0].committed_offset, 11);
    // A group nobody committed for answers -1.
    let none = c.offset_fetch(OffsetFetchRequest {
        group_id: GROUP.into(),
        topics: vec![OffsetFetchTopic {
            name: "other".into(),
            partitions: vec![0],
        }],
    });
    assert_eq!(none.topics[0].partitions[0].committed_offset, -1);
}

#[tokio::test(start_paused = true)]
async fn offsets_of_a_group_empty_longer_than_retention_expire_with_tombstones() {
    let retention = Duration::from_secs(60);
    let (c, cluster) = started_with(GroupConfig {
        offsets_retention: retention,
        offsets_retention_check_interval: Duration::from_secs(10),
        ..config()
    })
    .await;
    c.offset_commit(commit_request("", -1, 5)).await;
    tokio::time::sleep(retention / 2).await;
    assert_eq!(committed(&c), 5, "kept within the retention");
    tokio::time::sleep(retention).await;
    assert_eq!(committed(&c), -1);
    // An offset tombstone, then the group's.
    let records = cluster.records(0);
    let tail: Vec<_> = records[records.len() - 2..].to_vec();
    assert!(tail.iter().all(|r| r.value.is_none()));
    assert!(matches!(
        decode_key(tail[1].key.as_deref().unwrap()).unwrap(),
        Key::Group { .. }
    ));
    let listed = c.list_groups(ListGroupsRequest::default());
    assert!(listed.groups.is_empty());
}

#[tokio::test(start_paused = true)]
async fn offsets_of_a_group_with_members_never_expire() {
    let retention = Duration::from_secs(60);
    let (c, _) = started_with(GroupConfig {
        offsets_retention: retention,
        offsets_retention_check_interval: Duration::from_secs(10),
        ..config()
    })
    .await;
    let (id, generation) = stable_single_member(&c).await;
    c.offset_commit(commit_request(&id, generation, 5)).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        c.heartbeat(heartbeat_request(&id, generation)).await;
    }
    assert_eq!(committed(&c), 5);
}

#[tokio::test(start_paused = true)]
async fn delete_groups_removes_an_empty_group_and_its_offsets() {
    let (c, cluster) = started().await;
    c.offset_commit(commit_request("", -1, 5)).await;
    let before = cluster.records(0).len();
    let deleted = c
        .delete_groups(DeleteGroupsRequest {
            groups: vec![GROUP.into(), "missing".into()],
        })
        .await;
    assert_eq!(err(&deleted.results[0].error), None);
    assert_eq!(
        err(&deleted.results[1].error),
        Some(ErrorCode::GroupIdNotFound)
    );
    // An offset tombstone and the group's.
    assert_eq!(cluster.records(0).len(), before + 2);
    assert_eq!(committed(&c), -1);
    assert_eq!(describe(&c).group_state, "Dead");
}

#[tokio::test(start_paused = true)]
async fn delete_groups_refuses_a_group_with_members() {
    let (c, _) = started().await;
    stable_single_member(&c).await;
    let deleted = c
        .delete_groups(DeleteGroupsRequest {
            groups: vec![GROUP.into()],
        })
        .await;
    assert_eq!(
        err(&deleted.results[0].error),
        Some(ErrorCode::NonEmptyGroup)
    );
}

#[tokio::test(start_paused = true)]
async fn list_groups_filters_by_kafkas_state_names() {
    let (c, _) = started().await;
    stable_single_member(&c).await;
    let stable = c.list_groups(ListGroupsRequest {
        states_filter: vec!["stable".into()],
    });
    assert_eq!(stable.groups.len(), 1);
    assert_eq!(stable.groups[0].protocol_type, "consumer");
    let empty = c.list_groups(ListGroupsRequest {
        states_filter: vec!["Empty".into()],
    });
    assert!(empty.groups.is_empty());
}

fn delete_request(topic: &str, partitions: Vec<i32>) -> OffsetDeleteRequest {
    OffsetDeleteRequest {
        group_id: GROUP.into(),
        topics: vec![OffsetFetchTopic {
            name: topic.into(),
            partitions,
        }],
    }
}

fn delete_errors(answer: &OffsetDeleteResponse) -> Vec<Option<ErrorCode>> {
    answer
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| err(&p.error))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn offset_delete_removes_an_empty_groups_offsets_with_tombstones() {
    let (c, cluster) = started().await;
    let unknown = c.offset_delete(delete_request("t", vec![0])).await;
    assert_eq!(err(&unknown.error), Some(ErrorCode::GroupIdNotFound));
    assert_eq!(
        err(&c.offset_commit(commit_request("", -1, 7)).await.topics[0].partitions[0].error),
        None
    );
    let before = cluster.records(0).len();
    // Partition 1 has no offset: answered without a tombstone.
    let answer = c.offset_delete(delete_request("t", vec![0, 1])).await;
    assert_eq!(err(&answer.error), None);
    assert_eq!(delete_errors(&answer), vec![None, None]);
    let records = cluster.records(0);
    assert_eq!(records.len(), before + 1);
    assert!(records.last().unwrap().value.is_none(), "a tombstone");
    assert_eq!(committed(&c), -1);
}

#[tokio::test(start_paused = true)]
async fn offset_delete_spares_topics_a_consumer_group_subscribes_to() {
    let (c, _) = started().await;
    let subscription = tributary_kafka::consumer_protocol::Subscription::new(["t"])
        .encode()
        .unwrap();
    let id = member_id(&c).await;
    let joined = spawn_join(
        &c,
        JoinGroupRequest {
            protocols: vec![JoinGroupProtocol {
                name: "range".into(),
                metadata: subscription,
            }],
            ..join_request(&id, None, b"")
        },
    )
    .await
    .unwrap();
    assert_eq!(err(&joined.error), None);
    let generation = joined.generation_id;
    c.sync_group(sync_request(&id, generation, &[(&id, b"a")]))
        .await;
    let mut commit = commit_request(&id, generation, 5);
    commit.topics.push(OffsetCommitTopic {
        name: "other".into(),
        ..commit.topics[0].clone()
    });
    let committed_answer = c.offset_commit(commit).await;
    assert!(
        committed_answer
            .topics
            .iter()
            .all(|t| err(&t.partitions[0].error).is_none())
    );
    let mut request = delete_request("t", vec![0]);
    request.topics.push(OffsetFetchTopic {
        name: "other".into(),
        partitions: vec![0],
    });
    let answer = c.offset_delete(request).await;
    assert_eq!(err(&answer.error), None);
    assert_eq!(
        delete_errors(&answer),
        vec![Some(ErrorCode::GroupSubscribedToTopic), None]
    );
    assert_eq!(committed(&c), 5, "the subscribed topic's offset stays");
}

#[tokio::test(start_paused = true)]
async fn offset_delete_refuses_a_non_consumer_group_with_members() {
    let (c, _) = started().await;
    let id = member_id(&c).await;
    let joined = spawn_join(
        &c,
        JoinGroupRequest {
            protocol_type: "connect".into(),
            ..join_request(&id, None, b"m")
        },
    )
    .await
    .unwrap();
    assert_eq!(err(&joined.error), None);
    let answer = c.offset_delete(delete_request("t", vec![0])).await;
    assert_eq!(err(&answer.error), Some(ErrorCode::NonEmptyGroup));
}
