//! Joining, syncing, timeouts and generations.

use super::*;
use crate::coordinator::TICK;

#[tokio::test(start_paused = true)]
async fn a_new_dynamic_member_first_learns_its_id_with_member_id_required() {
    let (c, _) = started().await;
    let first = c
        .join_group(join_request("", None, b"m"), "/h".into())
        .await;
    assert_eq!(err(&first.error), Some(ErrorCode::MemberIdRequired));
    assert!(first.member_id.starts_with("client-"));
    assert_eq!(first.generation_id, -1);
}

#[tokio::test(start_paused = true)]
async fn the_first_rebalance_of_an_empty_group_waits_the_initial_delay() {
    let (c, _) = started().await;
    let id = member_id(&c).await;
    let start = tokio::time::Instant::now();
    let joined = spawn_join(&c, join_request(&id, None, b"m")).await.unwrap();
    assert_eq!(err(&joined.error), None);
    assert!(start.elapsed() >= config().group_initial_rebalance_delay);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, id);
    assert_eq!(joined.protocol_name, "range");
}

#[tokio::test(start_paused = true)]
async fn without_an_initial_delay_a_lone_member_is_answered_at_once() {
    let (c, _) = started_with(GroupConfig {
        group_initial_rebalance_delay: Duration::ZERO,
        ..config()
    })
    .await;
    let id = member_id(&c).await;
    let start = tokio::time::Instant::now();
    let joined = spawn_join(&c, join_request(&id, None, b"m")).await.unwrap();
    assert_eq!(err(&joined.error), None);
    assert!(start.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn joins_with_bad_parameters_are_refused_with_kafkas_codes() {
    let (c, _) = started().await;
    let empty_group = JoinGroupRequest {
        group_id: String::new(),
        ..join_request("", None, b"m")
    };
    let too_short = JoinGroupRequest {
        session_timeout_ms: 1_000,
        ..join_request("", None, b"m")
    };
    let too_long = JoinGroupRequest {
        session_timeout_ms: 1_800_001,
        ..join_request("", None, b"m")
    };
    let no_protocols = JoinGroupRequest {
        protocols: Vec::new(),
        ..join_request("", None, b"m")
    };
    for (req, expected) in [
        (empty_group, ErrorCode::InvalidGroupId),
        (too_short, ErrorCode::InvalidSessionTimeout),
        (too_long, ErrorCode::InvalidSessionTimeout),
        (no_protocols, ErrorCode::InconsistentGroupProtocol),
    ] {
        let answer = c.join_group(req, "/h".into()).await;
        assert_eq!(err(&answer.error), Some(expected));
        assert_eq!(answer.generation_id, -1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_leader_gets_every_members_metadata_and_followers_get_none() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"meta-a"));
    let jb = spawn_join(&c, join_request(&b, None, b"meta-b"));
    let (ja, jb) = (ja.await.unwrap(), jb.await.unwrap());
    assert_eq!(ja.generation_id, jb.generation_id);
    let (leader, follower) = if ja.leader == a { (ja, jb) } else { (jb, ja) };
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    let metadata: Vec<&[u8]> = leader.members.iter().map(|m| &m.metadata[..]).collect();
    assert!(metadata.contains(&&b"meta-a"[..]) && metadata.contains(&&b"meta-b"[..]));
}

#[tokio::test(start_paused = true)]
async fn the_leaders_assignment_reaches_every_member_once_written() {
    let (c, cluster) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let (ja, _) = (ja.await.unwrap(), jb.await.unwrap());
    let (leader, follower) = if ja.leader == a { (a, b) } else { (b, a) };
    let generation = ja.generation_id;
    let before = cluster.records(0).len();
    let c2 = c.clone();
    let f = follower.clone();
    let follower_sync =
        tokio::spawn(async move { c2.sync_group(sync_request(&f, generation, &[])).await });
    tokio::task::yield_now().await;
    let leader_sync = c
        .sync_group(sync_request(
            &leader,
            generation,
            &[(&leader, b"to-leader"), (&follower, b"to-follower")],
        ))
        .await;
    assert_eq!(&leader_sync.assignment[..], b"to-leader");
    let follower_sync = follower_sync.await.unwrap();
    assert_eq!(err(&follower_sync.error), None);
    assert_eq!(&follower_sync.assignment[..], b"to-follower");
    // The membership record was written before anyone got an answer.
    assert_eq!(cluster.records(0).len(), before + 1);
    assert_eq!(describe(&c).group_state, "Stable");
}

#[tokio::test(start_paused = true)]
async fn a_sync_from_an_old_generation_is_fenced_with_illegal_generation() {
    let (c, _) = started().await;
    let (id, generation) = stable_single_member(&c).await;
    let answer = c.sync_group(sync_request(&id, generation - 1, &[])).await;
    assert_eq!(err(&answer.error), Some(ErrorCode::IllegalGeneration));
}

#[tokio::test(start_paused = true)]
async fn a_sync_from_an_unknown_member_gets_unknown_member_id() {
    let (c, _) = started().await;
    let (_, generation) = stable_single_member(&c).await;
    let answer = c
        .sync_group(sync_request("stranger", generation, &[]))
        .await;
    assert_eq!(err(&answer.error), Some(ErrorCode::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_from_an_old_generation_gets_illegal_generation() {
    let (c, _) = started().await;
    let (id, generation) = stable_single_member(&c).await;
    let ok = c.heartbeat(heartbeat_request(&id, generation)).await;
    assert_eq!(err(&ok.error), None);
    let old = c.heartbeat(heartbeat_request(&id, generation - 1)).await;
    assert_eq!(err(&old.error), Some(ErrorCode::IllegalGeneration));
    let stranger = c.heartbeat(heartbeat_request("x", generation)).await;
    assert_eq!(err(&stranger.error), Some(ErrorCode::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_during_a_rebalance_asks_the_member_to_rejoin() {
    let (c, _) = started().await;
    let (a, generation) = stable_single_member(&c).await;
    // A second member's join starts a rebalance.
    let b = member_id(&c).await;
    let _jb = spawn_join(&c, join_request(&b, None, b"m"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let answer = c.heartbeat(heartbeat_request(&a, generation)).await;
    assert_eq!(err(&answer.error), Some(ErrorCode::RebalanceInProgress));
}

#[tokio::test(start_paused = true)]
async fn a_held_heartbeat_returns_as_soon_as_a_rebalance_starts() {
    let (c, _) = started().await;
    let (a, generation) = stable_single_member(&c).await;
    let c2 = c.clone();
    let a2 = a.clone();
    let start = tokio::time::Instant::now();
    let held = tokio::spawn(async move {
        c2.heartbeat(HeartbeatRequest {
            max_wait_ms: 20_000,
            ..heartbeat_request(&a2, generation)
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = member_id(&c).await;
    let _jb = spawn_join(&c, join_request(&b, None, b"m"));
    let answer = held.await.unwrap();
    assert_eq!(err(&answer.error), Some(ErrorCode::RebalanceInProgress));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_member_that_misses_its_session_timeout_is_removed_and_the_group_rebalances() {
    let (c, cluster) = started().await;
    let (id, generation) = stable_single_member(&c).await;
    // Heartbeats keep it in for longer than a session.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(SESSION_MS as u64 / 2)).await;
        let answer = c.heartbeat(heartbeat_request(&id, generation)).await;
        assert_eq!(err(&answer.error), None);
    }
    let before = cluster.records(0).len();
    tokio::time::sleep(Duration::from_millis(SESSION_MS as u64) + TICK * 2).await;
    let answer = c.heartbeat(heartbeat_request(&id, generation)).await;
    assert_eq!(err(&answer.error), Some(ErrorCode::UnknownMemberId));
    let group = describe(&c);
    assert_eq!(group.group_state, "Empty");
    assert!(group.members.is_empty());
    // The now empty group is written.
    tokio::time::sleep(TICK).await;
    assert_eq!(cluster.records(0).len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_rejoin_within_the_rebalance_timeout_is_removed() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let generation = ja.await.unwrap().generation_id;
    jb.await.unwrap();
    // A third member joins; only `a` rejoins, `b` keeps heartbeating the old generation
    // (answered REBALANCE_IN_PROGRESS, which keeps its session alive but is no rejoin).
    let d = member_id(&c).await;
    let jd = spawn_join(&c, join_request(&d, None, b"m"));
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let start = tokio::time::Instant::now();
    let c2 = c.clone();
    let b2 = b.clone();
    let beats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            c2.heartbeat(heartbeat_request(&b2, generation)).await;
        }
    });
    let (ja, jd) = (ja.await.unwrap(), jd.await.unwrap());
    beats.abort();
    assert!(start.elapsed() >= Duration::from_millis(REBALANCE_MS as u64));
    assert_eq!(ja.generation_id, generation + 1);
    assert_eq!(jd.generation_id, generation + 1);
    let members: Vec<String> = describe(&c)
        .members
        .into_iter()
        .map(|m| m.member_id)
        .collect();
    assert!(!members.contains(&b));
    assert_eq!(members.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_generation_fences_commits_and_syncs_of_the_old_one() {
    let (c, _) = started().await;
    let (a, generation) = stable_single_member(&c).await;
    let b = member_id(&c).await;
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let (ja, _) = (ja.await.unwrap(), jb.await.unwrap());
    assert_eq!(ja.generation_id, generation + 1);
    let old_commit = c.offset_commit(commit_request(&a, generation, 5)).await;
    assert_eq!(
        commit_error(&old_commit),
        Some(ErrorCode::IllegalGeneration)
    );
    let old_sync = c.sync_group(sync_request(&a, generation, &[])).await;
    assert_eq!(err(&old_sync.error), Some(ErrorCode::IllegalGeneration));
}

#[tokio::test(start_paused = true)]
async fn a_rebalance_that_starts_again_answers_waiting_syncs_with_rebalance_in_progress() {
    let (c, _) = started().await;
    let a = member_id(&c).await;
    let b = member_id(&c).await;
    let ja = spawn_join(&c, join_request(&a, None, b"m"));
    let jb = spawn_join(&c, join_request(&b, None, b"m"));
    let (ja, jb) = (ja.await.unwrap(), jb.await.unwrap());
    let follower = if ja.leader == a { b.clone() } else { a.clone() };
    let c2 = c.clone();
    let f = follower.clone();
    let generation = jb.generation_id;
    let waiting =
        tokio::spawn(async move { c2.sync_group(sync_request(&f, generation, &[])).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The follower rejoins with new metadata before the leader syncs.
    let _rejoin = spawn_join(&c, join_request(&follower, None, b"changed"));
    let answer = waiting.await.unwrap();
    assert_eq!(err(&answer.error), Some(ErrorCode::RebalanceInProgress));
}

#[tokio::test(start_paused = true)]
async fn a_failed_assignment_write_fails_the_sync_and_rebalances() {
    let (c, cluster) = started().await;
    let id = member_id(&c).await;
    let joined = spawn_join(&c, join_request(&id, None, b"m")).await.unwrap();
    cluster.fail_appends(Some(ErrorCode::NotEnoughReplicas));
    let synced = c
        .sync_group(sync_request(&id, joined.generation_id, &[(&id, b"a")]))
        .await;
    assert_eq!(err(&synced.error), Some(ErrorCode::CoordinatorNotAvailable));
    assert_eq!(describe(&c).group_state, "PreparingRebalance");
}
