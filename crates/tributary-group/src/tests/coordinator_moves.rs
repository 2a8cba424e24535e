//! Finding the coordinator, loading after a coordinator move, losing leadership.

use super::*;
use crate::api::FindCoordinatorRequest;
use memory::{Cluster, MemoryLog};

fn find(key: &str) -> FindCoordinatorRequest {
    FindCoordinatorRequest {
        key: key.into(),
        key_type: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn find_coordinator_creates_the_offsets_topic_once_enough_brokers_run() {
    let cluster = Cluster::new(0);
    cluster.set_running_brokers(1);
    let c = GroupCoordinator::new(
        MemoryLog::new(&cluster, 1),
        GroupConfig {
            offsets_topic_replication_factor: 3,
            ..config()
        },
    );
    let early = c.find_coordinator(&find(GROUP)).unwrap_err();
    assert_eq!(early.code, ErrorCode::CoordinatorNotAvailable);
    assert!(cluster.create_requests().is_empty());
    cluster.set_running_brokers(3);
    for _ in 0..3 {
        let creating = c.find_coordinator(&find(GROUP)).unwrap_err();
        assert_eq!(creating.code, ErrorCode::CoordinatorNotAvailable);
    }
    // Asked once, not once per request.
    assert_eq!(cluster.create_requests(), [(1, 3)]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.find_coordinator(&find(GROUP)).unwrap_err();
    assert_eq!(cluster.create_requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn find_coordinator_names_the_leader_of_the_groups_partition() {
    let cluster = Cluster::new(1);
    let c = GroupCoordinator::new(MemoryLog::new(&cluster, 1), config());
    let none = c.find_coordinator(&find(GROUP)).unwrap_err();
    assert_eq!(none.code, ErrorCode::CoordinatorNotAvailable);
    cluster.set_leader(0, 2, 4);
    assert_eq!(c.find_coordinator(&find(GROUP)), Ok(2));
    let bad_type = FindCoordinatorRequest {
        key_type: 1,
        ..find(GROUP)
    };
    assert_eq!(
        c.find_coordinator(&bad_type).unwrap_err().code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        c.find_coordinator(&find("")).unwrap_err().code,
        ErrorCode::InvalidGroupId
    );
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_does_not_lead_the_groups_partition_answers_not_coordinator() {
    let cluster = Cluster::new(1);
    cluster.set_leader(0, 2, 0);
    let c = GroupCoordinator::new(MemoryLog::new(&cluster, 1), config());
    c.maintain();
    let answer = c.offset_fetch(fetch_all(GROUP));
    assert_eq!(err(&answer.error), Some(ErrorCode::NotCoordinator));
}

#[tokio::test(start_paused = true)]
async fn requests_before_the_partition_is_loaded_get_coordinator_load_in_progress() {
    let cluster = Cluster::new(1);
    cluster.set_leader(0, 1, 0);
    let c = GroupCoordinator::new(MemoryLog::new(&cluster, 1), config());
    let answer = c.offset_fetch(fetch_all(GROUP));
    assert_eq!(
        err(&answer.error),
        Some(ErrorCode::CoordinatorLoadInProgress)
    );
    wait_loaded(&c).await;
    assert_eq!(err(&c.offset_fetch(fetch_all(GROUP)).error), None);
}

#[tokio::test(start_paused = true)]
async fn a_self_fenced_broker_answers_not_coordinator() {
    let (c, cluster) = started().await;
    cluster.fence(1);
    let answer = c.offset_fetch(fetch_all(GROUP));
    assert_eq!(err(&answer.error), Some(ErrorCode::NotCoordinator));
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_replays_offsets_and_membership_after_a_coordinator_move() {
    let (old, cluster) = started().await;
    let (id, generation) = stable_single_member(&old).await;
    let commit = old.offset_commit(commit_request(&id, generation, 42)).await;
    assert_eq!(commit_error(&commit), None);
    // An older commit of another group that was later deleted must not come back.
    let other = OffsetCommitRequest {
        group_id: "gone".into(),
        ..commit_request("", -1, 1)
    };
    old.offset_commit(other).await;
    old.delete_groups(DeleteGroupsRequest {
        groups: vec!["gone".into()],
    })
    .await;

    cluster.set_leader(0, 2, 1);
    let new = GroupCoordinator::new(MemoryLog::new(&cluster, 2), config());
    wait_loaded(&new).await;
    assert_eq!(committed(&new), 42);
    let group = describe(&new);
    assert_eq!(group.group_state, "Stable");
    assert_eq!(group.members[0].member_id, id);
    assert_eq!(&group.members[0].member_assignment[..], b"a");
    // The member carries on with its generation at the new coordinator.
    let beat = new.heartbeat(heartbeat_request(&id, generation)).await;
    assert_eq!(err(&beat.error), None);
    let listed = new.list_groups(ListGroupsRequest::default());
    assert_eq!(listed.groups.len(), 1);

    // The old coordinator lets go at its next pass.
    old.maintain();
    let answer = old.offset_fetch(fetch_all(GROUP));
    assert_eq!(err(&answer.error), Some(ErrorCode::NotCoordinator));
}

#[tokio::test(start_paused = true)]
async fn losing_leadership_answers_a_waiting_join() {
    let (c, cluster) = started().await;
    let id = member_id(&c).await;
    let waiting = spawn_join(&c, join_request(&id, None, b"m"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    cluster.set_leader(0, 2, 1);
    c.maintain();
    let answer = waiting.await.unwrap();
    assert!(answer.error.is_some());
    assert_eq!(answer.generation_id, -1);
}

#[tokio::test(start_paused = true)]
async fn a_leader_epoch_change_reloads_the_partition() {
    let (c, cluster) = started().await;
    c.offset_commit(commit_request("", -1, 9)).await;
    cluster.set_leader(0, 1, 1);
    c.maintain();
    wait_loaded(&c).await;
    assert_eq!(committed(&c), 9);
}
