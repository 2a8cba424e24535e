//! Leaving, static membership, group size, protocol choice, eager and cooperative rejoins.

use super::*;

fn leave(member: &str, instance: Option<&str>) -> LeaveGroupRequest {
    LeaveGroupRequest {
        group_id: GROUP.into(),
        members: vec![LeaveGroupMember {
            member_id: member.into(),
            group_instance_id: instance.map(Into::into),
            reason: "test".into(),
        }],
    }
}

/// A static member joined and synced: (member id, generation).
async fn stable_static_member(c: &Arc<Coordinator>, instance: &str) -> (String, i32) {
    let joined = spawn_join(c, join_request("", Some(instance), b"m"))
        .await
        .unwrap();
    assert_eq!(err(&joined.error), None);
    let id = joined.member_id.clone();
    let synced = c
        .sync_group(sync_request(&id, joined.generation_id, &[(&id, b"mine")]))
        .await;
    assert_eq!(err(&synced.error), None);
    (id, joined.generation_id)
}

#[tokio::test(start_paused = true)]
async fn a_leaving_member_triggers_a_rebalance_of_the_rest() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let generation = ja.await.unwrap().generation_id;
    jb.await.unwrap();
    let left = c.leave_group(leave(&b, None));
    assert_eq!(err(&left.error), None);
    assert_eq!(err(&left.members[0].error), None);
    assert_eq!(describe(&c).group_state, "PreparingRebalance");
    let rejoined = spawn_join(&c, join_request(&a, None, b"m")).await.unwrap();
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(rejoined.members.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_member_leaving_empties_the_group_and_writes_it() {
    let (c, cluster) = started().await;
    let (id, _) = stable_single_member(&c).await;
    let before = cluster.records(0).len();
    let left = c.leave_group(leave(&id, None));
    assert_eq!(err(&left.members[0].error), None);
    assert_eq!(describe(&c).group_state, "Empty");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(cluster.records(0).len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_member_cannot_leave() {
    let (c, _) = started().await;
    stable_single_member(&c).await;
    let left = c.leave_group(leave("stranger", None));
    assert_eq!(err(&left.error), None);
    assert_eq!(
        err(&left.members[0].error),
        Some(ErrorCode::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let (c, cluster) = started().await;
    let (old, generation) = stable_static_member(&c, "i-1").await;
    let before = cluster.records(0).len();
    let start = tokio::time::Instant::now();
    let rejoined = c
        .join_group(join_request("", Some("i-1"), b"m"), "/h".into())
        .await;
    assert_eq!(err(&rejoined.error), None);
    assert!(start.elapsed() < Duration::from_millis(10));
    assert_ne!(rejoined.member_id, old);
    assert_eq!(rejoined.generation_id, generation);
    // It was the leader: told it need not assign again (KIP-814).
    assert!(rejoined.skip_assignment);
    let synced = c
        .sync_group(sync_request(&rejoined.member_id, generation, &[]))
        .await;
    assert_eq!(&synced.assignment[..], b"mine");
    assert_eq!(describe(&c).group_state, "Stable");
    // The replacement is written.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(cluster.records(0).len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_static_member_is_fenced_with_fenced_instance_id() {
    let (c, _) = started().await;
    let (old, generation) = stable_static_member(&c, "i-1").await;
    c.join_group(join_request("", Some("i-1"), b"m"), "/h".into())
        .await;
    let beat = c
        .heartbeat(HeartbeatRequest {
            group_instance_id: Some("i-1".into()),
            ..heartbeat_request(&old, generation)
        })
        .await;
    assert_eq!(err(&beat.error), Some(ErrorCode::FencedInstanceId));
    let commit = c
        .offset_commit(OffsetCommitRequest {
            group_instance_id: Some("i-1".into()),
            ..commit_request(&old, generation, 1)
        })
        .await;
    assert_eq!(commit_error(&commit), Some(ErrorCode::FencedInstanceId));
}

#[tokio::test(start_paused = true)]
async fn a_static_member_can_leave_by_its_instance_id() {
    let (c, _) = started().await;
    let (id, _) = stable_static_member(&c, "i-1").await;
    let left = c.leave_group(leave("", Some("i-1")));
    assert_eq!(left.members[0].member_id, id);
    assert_eq!(err(&left.members[0].error), None);
    assert_eq!(describe(&c).group_state, "Empty");
}

#[tokio::test(start_paused = true)]
async fn group_max_size_refuses_one_member_too_many() {
    let (c, _) = started_with(GroupConfig {
        group_max_size: 1,
        ..config()
    })
    .await;
    stable_single_member(&c).await;
    let id = member_id(&c).await;
    let refused = c
        .join_group(join_request(&id, None, b"m"), "/h".into())
        .await;
    assert_eq!(err(&refused.error), Some(ErrorCode::GroupMaxSizeReached));
}

fn with_protocols(member: &str, protocols: &[(&str, &'static [u8])]) -> JoinGroupRequest {
    JoinGroupRequest {
        protocols: protocols
            .iter()
            .map(|(name, metadata)| JoinGroupProtocol {
                name: (*name).into(),
                metadata: Bytes::from_static(metadata),
            })
            .collect(),
        ..join_request(member, None, b"")
    }
}

#[tokio::test(start_paused = true)]
async fn the_group_chooses_the_assignor_every_member_supports_by_vote() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    // Eager `range` and cooperative `cooperative-sticky`: both support both, `b` prefers the
    // cooperative one, and the tie goes to the first member's order.
    let ja = spawn_join(
        &c,
        with_protocols(&a, &[("cooperative-sticky", b"ca"), ("range", b"ra")]),
    );
    let jb = spawn_join(
        &c,
        with_protocols(&b, &[("cooperative-sticky", b"cb"), ("range", b"rb")]),
    );
    let (ja, jb) = (ja.await.unwrap(), jb.await.unwrap());
    assert_eq!(ja.protocol_name, "cooperative-sticky");
    assert_eq!(jb.protocol_name, "cooperative-sticky");
    let leader = if ja.leader == a { ja } else { jb };
    assert!(leader.members.iter().all(|m| m.metadata.starts_with(b"c")));
}

#[tokio::test(start_paused = true)]
async fn a_member_sharing_no_assignor_with_the_group_is_refused() {
    let (c, _) = started().await;
    stable_single_member(&c).await;
    let id = member_id(&c).await;
    let refused = c
        .join_group(with_protocols(&id, &[("roundrobin", b"x")]), "/h".into())
        .await;
    assert_eq!(
        err(&refused.error),
        Some(ErrorCode::InconsistentGroupProtocol)
    );
    let other_type = c
        .join_group(
            JoinGroupRequest {
                protocol_type: "connect".into(),
                ..join_request(&id, None, b"m")
            },
            "/h".into(),
        )
        .await;
    assert_eq!(
        err(&other_type.error),
        Some(ErrorCode::InconsistentGroupProtocol)
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_rejoining_a_stable_group_unchanged_gets_the_current_generation() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let (ja, _) = (ja.await.unwrap(), jb.await.unwrap());
    let (leader, follower) = if ja.leader == a { (a, b) } else { (b, a) };
    c.sync_group(sync_request(&leader, ja.generation_id, &[]))
        .await;
    let start = tokio::time::Instant::now();
    let again = c
        .join_group(join_request(&follower, None, b"m"), "/h".into())
        .await;
    assert_eq!(err(&again.error), None);
    assert_eq!(again.generation_id, ja.generation_id);
    assert!(start.elapsed() < Duration::from_millis(10));
    assert_eq!(describe(&c).group_state, "Stable");
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_member_rejoining_with_new_owned_partitions_starts_a_rebalance() {
    let (c, _) = started().await;
    let (id, generation) = stable_single_member(&c).await;
    // A cooperative consumer rejoins with the partitions it owns in its metadata.
    let joined = spawn_join(&c, join_request(&id, None, b"owned: t-0"))
        .await
        .unwrap();
    assert_eq!(err(&joined.error), None);
    assert_eq!(joined.generation_id, generation + 1);
    assert_eq!(&joined.members[0].metadata[..], b"owned: t-0");
}

#[tokio::test(start_paused = true)]
async fn member_id_required_only_when_the_join_asks_for_it() {
    let (c, _) = started().await;
    // JoinGroup v0-3: a new member is admitted with the id it is given, in one round trip.
    let joined = spawn_join(
        &c,
        JoinGroupRequest {
            require_known_member_id: false,
            ..join_request("", None, b"m")
        },
    )
    .await
    .unwrap();
    assert_eq!(err(&joined.error), None);
    assert!(!joined.member_id.is_empty());
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(describe(&c).members.len(), 1);
    // v4+: MEMBER_ID_REQUIRED first, and the member is not in the group until it rejoins.
    let first = c
        .join_group(join_request("", None, b"m"), "/h".into())
        .await;
    assert_eq!(err(&first.error), Some(ErrorCode::MemberIdRequired));
    assert_eq!(describe(&c).members.len(), 1);
}
