//! The group protocol's rules on a real broker (1 coordinator, 1 broker, processes): the offsets
//! topic waits for enough brokers, members of an old generation are fenced, commits from
//! outside a group with members are refused, extra members stay idle, a static member that
//! restarts gets its partitions back without a rebalance, and cooperative-sticky revokes only
//! what moves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tributary_client::{
    Admin, Consumer, ErrorCode, Producer, ProducerRecord, Properties, RebalanceListener,
    TopicPartition,
};
use tributary_proto::broker::v1 as pb;
use tributary_proto::broker::v1::group_client::GroupClient;
use tributary_tests::harness::{Cluster, NodeKind};

fn consumer_props(bootstrap: &str, group: &str) -> Properties {
    Properties::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("request.timeout.ms", "10000")
}

/// Polls each consumer in turn until `done` says the group has settled.
async fn poll_until(
    consumers: &mut [&mut Consumer],
    what: &str,
    done: impl Fn(&[&mut Consumer]) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(50)).await?;
        }
        if done(consumers) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let assignments: Vec<Vec<TopicPartition>> =
                consumers.iter().map(|c| c.assignment()).collect();
            bail!("timed out waiting for {what}; assignments {assignments:?}");
        }
    }
}

#[derive(Default)]
struct Recorder {
    revoked: Vec<TopicPartition>,
    assigned: Vec<TopicPartition>,
}

struct Listener(Arc<Mutex<Recorder>>);

impl RebalanceListener for Listener {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().revoked.extend_from_slice(partitions);
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .assigned
            .extend_from_slice(partitions);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_protocol_rules_on_a_real_broker() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(1)
        .config(
            NodeKind::Broker,
            "offsets_topic_replication_factor = 1\noffsets_topic_num_partitions = 3\n",
        )
        .start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let created = common::create_topic(&bootstrap, "t4", 4, 1, &[]).await?;
    common::sync_brokers(std::slice::from_ref(&bootstrap), created.metadata_offset).await?;
    let producer = Producer::new(&Properties::new().set("bootstrap.servers", &bootstrap)).await?;
    for i in 0..40 {
        producer
            .send(ProducerRecord::new("t4", i.to_string()).key(i.to_string()))
            .await?;
    }
    producer.flush().await;

    // ---- Fencing, over the raw protocol -------------------------------------------------
    let coordinator = common::until(
        "a coordinator for group `raw`",
        Duration::from_secs(20),
        || {
            let bootstrap = bootstrap.clone();
            async move {
                let r = GroupClient::new(common::channel(&bootstrap)?)
                    .find_coordinator(pb::FindCoordinatorRequest {
                        key: "raw".into(),
                        key_type: 0,
                    })
                    .await?
                    .into_inner();
                ensure!(common::code(&r.error) == ErrorCode::None, "{:?}", r.error);
                Ok(r.address)
            }
        },
    )
    .await?;
    let mut group = GroupClient::new(common::channel(&coordinator)?);
    let join = |member_id: String| pb::JoinGroupRequest {
        group_id: "raw".into(),
        session_timeout_ms: 6000,
        rebalance_timeout_ms: 10_000,
        member_id,
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![pb::join_group_request::Protocol {
            name: "range".into(),
            metadata: Default::default(),
        }],
        client_id: "raw-client".into(),
        reason: String::new(),
    };
    // The coordinator may still be loading its partition (COORDINATOR_LOAD_IN_PROGRESS).
    let first = common::until("the coordinator to load", Duration::from_secs(20), || {
        let mut group = group.clone();
        let request = join(String::new());
        async move {
            let r = group.join_group(request).await?.into_inner();
            ensure!(
                common::code(&r.error) != ErrorCode::CoordinatorLoadInProgress,
                "{:?}",
                r.error
            );
            Ok(r)
        }
    })
    .await?;
    ensure!(
        common::code(&first.error) == ErrorCode::MemberIdRequired && !first.member_id.is_empty(),
        "a new member first gets MEMBER_ID_REQUIRED and an id: {first:?}"
    );
    let joined = group
        .join_group(join(first.member_id.clone()))
        .await?
        .into_inner();
    ensure!(common::code(&joined.error) == ErrorCode::None, "{joined:?}");
    ensure!(
        joined.leader == joined.member_id && joined.generation_id == 1,
        "{joined:?}"
    );
    let synced = group
        .sync_group(pb::SyncGroupRequest {
            group_id: "raw".into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocol_name: "range".into(),
            assignments: vec![pb::sync_group_request::Assignment {
                member_id: joined.member_id.clone(),
                assignment: bytes::Bytes::from_static(b"opaque"),
            }],
        })
        .await?
        .into_inner();
    ensure!(
        common::code(&synced.error) == ErrorCode::None && &synced.assignment[..] == b"opaque",
        "{synced:?}"
    );
    let commit = |member_id: &str, generation_id: i32| pb::OffsetCommitRequest {
        group_id: "raw".into(),
        generation_id,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        topics: vec![pb::offset_commit_request::Topic {
            name: "t4".into(),
            partitions: vec![pb::offset_commit_request::Partition {
                partition: 0,
                committed_offset: 7,
                committed_leader_epoch: -1,
                committed_metadata: "m".into(),
            }],
        }],
    };
    let code_of = |r: pb::OffsetCommitResponse| common::code(&r.topics[0].partitions[0].error);
    let old = group
        .offset_commit(commit(&joined.member_id, 0))
        .await?
        .into_inner();
    ensure!(
        code_of(old) == ErrorCode::IllegalGeneration,
        "an old generation is fenced"
    );
    let stranger = group.offset_commit(commit("nobody", 1)).await?.into_inner();
    ensure!(
        code_of(stranger) == ErrorCode::UnknownMemberId,
        "unknown members are refused"
    );
    let outside = group.offset_commit(commit("", -1)).await?.into_inner();
    ensure!(
        code_of(outside) == ErrorCode::UnknownMemberId,
        "a commit from outside a group with members is refused"
    );
    let ok = group
        .offset_commit(commit(&joined.member_id, 1))
        .await?
        .into_inner();
    ensure!(
        code_of(ok) == ErrorCode::None,
        "the member's commit is accepted"
    );
    let hb = group
        .heartbeat(pb::HeartbeatRequest {
            group_id: "raw".into(),
            generation_id: 0,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            max_wait_ms: 0,
        })
        .await?
        .into_inner();
    ensure!(
        common::code(&hb.error) == ErrorCode::IllegalGeneration,
        "{hb:?}"
    );
    // A held heartbeat (max_wait_ms) is answered as soon as a rebalance starts.
    let held = {
        let mut group = group.clone();
        let member_id = joined.member_id.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = group
                .heartbeat(pb::HeartbeatRequest {
                    group_id: "raw".into(),
                    generation_id: 1,
                    member_id,
                    group_instance_id: None,
                    max_wait_ms: 8000,
                })
                .await?
                .into_inner();
            anyhow::Ok((common::code(&r.error), started.elapsed()))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = group.join_group(join(String::new())).await?.into_inner();
    ensure!(
        common::code(&second.error) == ErrorCode::MemberIdRequired,
        "{second:?}"
    );
    let second_join = {
        let mut group = group.clone();
        let request = join(second.member_id.clone());
        tokio::spawn(async move { group.join_group(request).await })
    };
    let (code, waited) = held.await??;
    ensure!(
        code == ErrorCode::RebalanceInProgress && waited < Duration::from_secs(5),
        "a held heartbeat answered {code:?} after {waited:?}"
    );
    let left = group
        .leave_group(pb::LeaveGroupRequest {
            group_id: "raw".into(),
            members: vec![pb::leave_group_request::Member {
                member_id: joined.member_id.clone(),
                group_instance_id: None,
                reason: "test".into(),
            }],
        })
        .await?
        .into_inner();
    ensure!(common::code(&left.error) == ErrorCode::None, "{left:?}");
    // With the first member gone, the second's join completes alone; then it leaves too.
    let second = second_join.await??.into_inner();
    ensure!(common::code(&second.error) == ErrorCode::None, "{second:?}");
    let left = group
        .leave_group(pb::LeaveGroupRequest {
            group_id: "raw".into(),
            members: vec![pb::leave_group_request::Member {
                member_id: second.member_id.clone(),
                group_instance_id: None,
                reason: "test".into(),
            }],
        })
        .await?
        .into_inner();
    ensure!(common::code(&left.error) == ErrorCode::None, "{left:?}");
    let after = group.offset_commit(commit("", -1)).await?.into_inner();
    ensure!(
        code_of(after) == ErrorCode::None,
        "an empty group accepts outside commits"
    );
    let fetched = group
        .offset_fetch(pb::OffsetFetchRequest {
            group_id: "raw".into(),
            topics: vec![],
        })
        .await?
        .into_inner();
    let p = &fetched.topics[0].partitions[0];
    ensure!(p.committed_offset == 7 && p.metadata == "m", "{fetched:?}");

    // ---- More members than partitions: the extras stay idle -----------------------------
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;
    let mut consumers = Vec::new();
    for _ in 0..5 {
        let mut c = Consumer::new(&consumer_props(&bootstrap, "wide")).await?;
        c.subscribe(vec!["t4".into()])?;
        consumers.push(c);
    }
    {
        let mut refs: Vec<&mut Consumer> = consumers.iter_mut().collect();
        poll_until(&mut refs, "4 partitions over 5 members", |cs| {
            let sizes: Vec<usize> = cs.iter().map(|c| c.assignment().len()).collect();
            let all: BTreeSet<TopicPartition> = cs.iter().flat_map(|c| c.assignment()).collect();
            sizes.iter().sum::<usize>() == 4 && all.len() == 4 && sizes.contains(&0)
        })
        .await?;
    }
    let d = admin.describe_group("wide").await?;
    ensure!(d.members.len() == 5 && d.state == "Stable", "{d:?}");
    for mut c in consumers {
        c.close().await?;
    }

    // ---- Static membership: a restart within the session timeout keeps the partitions --------
    let static_props = consumer_props(&bootstrap, "static").set("group.instance.id", "s-1");
    let mut s1 = Consumer::new(&static_props).await?;
    s1.subscribe(vec!["t4".into()])?;
    let mut d1 = Consumer::new(&consumer_props(&bootstrap, "static")).await?;
    d1.subscribe(vec!["t4".into()])?;
    poll_until(
        &mut [&mut s1, &mut d1],
        "2 members with 2 partitions each",
        |cs| cs.iter().all(|c| c.assignment().len() == 2),
    )
    .await?;
    let (_, generation) = d1.group_member().context("member")?;
    let kept = s1.assignment();
    drop(s1); // a crash: no LeaveGroup (static members never send one)
    let mut s1 = Consumer::new(&static_props).await?;
    s1.subscribe(vec!["t4".into()])?;
    poll_until(&mut [&mut s1, &mut d1], "the static member back", |cs| {
        cs[0].assignment().len() == 2
    })
    .await?;
    ensure!(
        s1.assignment() == kept,
        "the static member got {:?}, had {kept:?}",
        s1.assignment()
    );
    let (_, now) = d1.group_member().context("member")?;
    ensure!(
        now == generation,
        "no rebalance: generation {generation} became {now}"
    );
    let (_, static_generation) = s1.group_member().context("member")?;
    ensure!(
        static_generation == generation,
        "the static member rejoined generation {generation}"
    );
    d1.close().await?;
    s1.close().await?;

    // ---- Cooperative-sticky: only what moves is revoked ---------------------------------
    let coop = consumer_props(&bootstrap, "coop")
        .set("partition.assignment.strategy", "cooperative-sticky");
    let rec1 = Arc::new(Mutex::new(Recorder::default()));
    let mut c1 = Consumer::new(&coop).await?;
    c1.set_rebalance_listener(Box::new(Listener(rec1.clone())));
    c1.subscribe(vec!["t4".into()])?;
    poll_until(&mut [&mut c1], "one member owning 4 partitions", |cs| {
        cs[0].assignment().len() == 4
    })
    .await?;
    let mut c2 = Consumer::new(&coop).await?;
    c2.subscribe(vec!["t4".into()])?;
    poll_until(&mut [&mut c1, &mut c2], "2 + 2 partitions", |cs| {
        cs.iter().all(|c| c.assignment().len() == 2)
    })
    .await?;
    let revoked = rec1.lock().unwrap().revoked.clone();
    ensure!(
        revoked.len() == 2,
        "cooperative: 2 partitions revoked, not all: {revoked:?}"
    );
    for tp in c1.assignment() {
        ensure!(!revoked.contains(&tp), "{tp} was revoked and kept");
    }
    c1.close().await?;
    c2.close().await?;

    // ---- A pattern subscription follows new topics, and added partitions rebalance --------
    let mut p1 =
        Consumer::new(&consumer_props(&bootstrap, "pattern").set("metadata.max.age.ms", "300"))
            .await?;
    p1.subscribe_pattern("t[0-9]+")?;
    poll_until(&mut [&mut p1], "t4's 4 partitions", |cs| {
        cs[0].assignment().len() == 4
    })
    .await?;
    let created = common::create_topic(&bootstrap, "t5", 2, 1, &[]).await?;
    common::sync_brokers(std::slice::from_ref(&bootstrap), created.metadata_offset).await?;
    common::create_topic(&bootstrap, "other", 1, 1, &[]).await?;
    poll_until(&mut [&mut p1], "t4's and the new t5's partitions", |cs| {
        cs[0].assignment().len() == 6
    })
    .await?;
    admin.create_partitions("t5", 3).await?;
    poll_until(&mut [&mut p1], "t5's added partition", |cs| {
        cs[0].assignment().contains(&TopicPartition::new("t5", 2))
    })
    .await?;
    ensure!(
        !p1.assignment().iter().any(|tp| tp.topic == "other"),
        "`other` does not match the pattern: {:?}",
        p1.assignment()
    );
    p1.close().await?;

    // ---- commit_async, and leaving after max.poll.interval.ms without a poll ------------
    let mut lazy = Consumer::new(
        &consumer_props(&bootstrap, "lazy")
            .set("max.poll.interval.ms", "2000")
            .set("enable.auto.commit", "false"),
    )
    .await?;
    lazy.subscribe(vec!["t4".into()])?;
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got == 0 {
        got += lazy.poll(Duration::from_millis(200)).await?.len();
        ensure!(
            tokio::time::Instant::now() < deadline,
            "`lazy` read nothing in 30 s"
        );
    }
    lazy.commit_async()?.await??;
    let committed = admin.list_group_offsets("lazy").await?;
    ensure!(
        !committed.is_empty() && committed.values().any(|&o| o > 0),
        "commit_async committed the positions read: {committed:?}"
    );
    // No poll now: the member leaves by itself after max.poll.interval.ms.
    common::until(
        "`lazy` leaving after max.poll.interval.ms",
        Duration::from_secs(15),
        || {
            let admin = admin.clone();
            async move {
                let d = admin.describe_group("lazy").await?;
                ensure!(d.members.is_empty(), "{d:?}");
                Ok(())
            }
        },
    )
    .await?;
    drop(lazy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_waits_for_enough_brokers() -> Result<()> {
    // Default offsets.topic.replication.factor 3 and a single broker.
    let mut cluster = Cluster::builder().coordinators(1).brokers(1).start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let r = GroupClient::new(common::channel(&bootstrap)?)
        .find_coordinator(pb::FindCoordinatorRequest {
            key: "g".into(),
            key_type: 0,
        })
        .await?
        .into_inner();
    ensure!(
        common::code(&r.error) == ErrorCode::CoordinatorNotAvailable,
        "{:?}",
        r.error
    );
    let message = r.error.map(|e| e.message).unwrap_or_default();
    ensure!(message.contains("needs 3 running brokers"), "{message}");
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;
    ensure!(
        !admin
            .list_topics()
            .await?
            .iter()
            .any(|t| t == "__consumer_offsets"),
        "the offsets topic must not be created with too few brokers"
    );
    Ok(())
}

/// `offsets.retention`: an empty group's offsets are tombstoned once it has been empty for the
/// retention time, and the group goes with them; a group with a live member keeps its offsets
/// however old they are; expired offsets stay gone after the coordinator restarts (tombstones
/// were written, not just forgotten in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_groups_offsets_expire_after_the_retention_time() -> Result<()> {
    const RETENTION: Duration = Duration::from_millis(2000);
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(1)
        .config(
            NodeKind::Broker,
            format!(
                "offsets_topic_replication_factor = 1\noffsets_topic_num_partitions = 3\n\
                 offsets_retention_ms = {}\noffsets_retention_check_interval_ms = 200\n\
                 group_initial_rebalance_delay_ms = 0\n",
                RETENTION.as_millis()
            ),
        )
        .start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let created = common::create_topic(&bootstrap, "kept", 2, 1, &[]).await?;
    common::sync_brokers(std::slice::from_ref(&bootstrap), created.metadata_offset).await?;
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;
    let tp0 = TopicPartition::new("kept", 0);
    let tp1 = TopicPartition::new("kept", 1);

    // An empty group: offsets committed from outside any generation (as the admin tools do).
    let offsets = BTreeMap::from([(tp0.clone(), 7), (tp1.clone(), 9)]);
    common::until("the offsets of `idle`", Duration::from_secs(20), || {
        let (admin, offsets) = (&admin, &offsets);
        async move { Ok(admin.alter_group_offsets("idle", offsets).await?) }
    })
    .await?;
    ensure!(admin.list_group_offsets("idle").await? == offsets);

    // A group with a live member, whose offsets are committed once and then only grow old.
    let mut member = Consumer::new(&consumer_props(&bootstrap, "live")).await?;
    member.subscribe(vec!["kept".into()])?;
    poll_until(&mut [&mut member], "`live` to own both partitions", |c| {
        c[0].assignment().len() == 2
    })
    .await?;
    member
        .commit_offsets(BTreeMap::from([(tp0.clone(), 3)]))
        .await?;

    let idle_gone = tokio::time::Instant::now();
    let deadline = idle_gone + RETENTION * 10;
    loop {
        member.poll(Duration::from_millis(100)).await?;
        if admin.list_group_offsets("idle").await?.is_empty() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the offsets of the empty group `idle` did not expire within {:?}",
            RETENTION * 10
        );
    }
    ensure!(
        idle_gone.elapsed() >= RETENTION - Duration::from_millis(100),
        "offsets expired after {:?}, before the retention time",
        idle_gone.elapsed()
    );
    let groups: Vec<String> = admin
        .list_groups()
        .await?
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    ensure!(
        !groups.contains(&"idle".to_string()),
        "an expired group is removed: {groups:?}"
    );
    // Keep the live member polling for more than another retention time.
    let until = tokio::time::Instant::now() + RETENTION + Duration::from_millis(600);
    while tokio::time::Instant::now() < until {
        member.poll(Duration::from_millis(100)).await?;
    }
    ensure!(
        admin.list_group_offsets("live").await? == BTreeMap::from([(tp0.clone(), 3)]),
        "a group with a member keeps its offsets"
    );
    member.close().await?;

    // Restart the coordinator broker: the tombstones keep `idle`'s offsets gone.
    cluster.broker(1).restart()?;
    cluster.broker(1).wait_serving(Duration::from_secs(30))?;
    let after = common::until(
        "the offsets of `idle` after a restart",
        Duration::from_secs(30),
        || {
            let admin = &admin;
            async move { Ok(admin.list_group_offsets("idle").await?) }
        },
    )
    .await?;
    ensure!(after.is_empty(), "expired offsets came back: {after:?}");
    Ok(())
}
