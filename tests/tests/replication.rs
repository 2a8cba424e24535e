//! Replication through real processes: 3 coordinators and 3 brokers over real gRPC. Records
//! acknowledged with acks=all survive the leader's kill -9 at the same offsets on every replica;
//! a paused follower leaves the ISR and comes back; min.insync.replicas refuses writes when too
//! few replicas are in sync; unclean leader election is off (the partition waits) until a topic
//! opts in.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use tributary_proto::broker::v1 as bpb;
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as cpb;
use tributary_storage::{Log, LogConfig, LogResources};
use tributary_tests::harness::{Cluster, NodeKind};

const WAIT: Duration = Duration::from_secs(30);

/// Short timeouts so faults show within seconds; the session timeout (6 s) is well above the
/// replica lag time (2 s), so a paused follower leaves the ISR by its leader's decision before
/// the controller would fence it.
fn cluster() -> Result<Cluster> {
    Cluster::builder()
        .coordinators(3)
        .brokers(3)
        .metrics()
        .config(NodeKind::Coordinator, "broker_session_timeout_ms = 6000\n")
        .config(
            NodeKind::Broker,
            "broker_session_timeout_ms = 6000\nbroker_heartbeat_interval_ms = 500\n\
             replica_lag_time_max_ms = 2000\nreplica_fetch_wait_max_ms = 200\n",
        )
        .start()
}

fn broker_addrs(cluster: &mut Cluster) -> BTreeMap<i32, String> {
    cluster
        .of_kind(NodeKind::Broker)
        .map(|n| (n.id() as i32, n.addr().to_string()))
        .collect()
}

async fn partition_state(
    addr: &str,
    topic: &str,
) -> Option<bpb::metadata_response::PartitionMetadata> {
    let response = broker(addr)
        .ok()?
        .metadata(bpb::MetadataRequest {
            topics: vec![topic.into()],
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    response
        .topics
        .into_iter()
        .next()?
        .partitions
        .into_iter()
        .next()
}

/// Waits until partition 0 of `topic` satisfies `check` (as broker `addr` sees it).
async fn wait_partition(
    addr: &str,
    topic: &str,
    what: &str,
    check: impl Fn(&bpb::metadata_response::PartitionMetadata) -> bool,
) -> Result<bpb::metadata_response::PartitionMetadata> {
    eventually(what, WAIT, || async {
        partition_state(addr, topic).await.filter(|p| check(p))
    })
    .await
}

async fn produce_all(
    addr: &str,
    topic: &str,
    value: &str,
) -> Result<bpb::produce_response::PartitionResponse> {
    produce(&mut broker(addr)?, topic, 0, -1, batch(0, &[value])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_the_leaders_kill_on_every_replica() -> Result<()> {
    let mut cluster = cluster()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();
    let created = create_topic(&any, "safe", 1, 3, &[("min.insync.replicas", "2")]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let p = wait_partition(&any, "safe", "a leader and a full ISR", |p| {
        p.leader_id >= 0 && p.isr.len() == 3
    })
    .await?;

    // Acknowledged with acks=all, before and across the kill.
    let mut acked: Vec<(i64, String)> = Vec::new();
    for i in 0..20 {
        let value = format!("v{i}");
        let r = produce_all(&brokers[&p.leader_id], "safe", &value).await?;
        ensure!(code(&r.error) == ErrorCode::None, "produce {i}: {r:?}");
        acked.push((r.base_offset, value));
    }
    let old_leader = p.leader_id;
    cluster.broker(old_leader as u64).kill_9()?;
    let p = wait_partition(
        &any_other(&brokers, old_leader),
        "safe",
        "a new leader from the ISR",
        |p| p.leader_id >= 0 && p.leader_id != old_leader,
    )
    .await?;
    let new_leader = brokers[&p.leader_id].clone();
    for i in 20..30 {
        let value = format!("v{i}");
        let r = eventually("the new leader to accept acks=all writes", WAIT, || async {
            let r = produce_all(&new_leader, "safe", &value).await.ok()?;
            (code(&r.error) == ErrorCode::None).then_some(r)
        })
        .await?;
        acked.push((r.base_offset, value));
    }
    cluster.broker(old_leader as u64).restart()?;
    cluster.broker(old_leader as u64).wait_serving(WAIT)?;
    wait_partition(
        &new_leader,
        "safe",
        "the restarted broker back in the ISR",
        |p| p.isr.len() == 3,
    )
    .await?;

    // Every acknowledged record, at its offset, from the leader.
    let data = fetch(&mut broker(&new_leader)?, fetch_request("safe", 0, 0, 0)).await?;
    let mut read = values(&data.records)?;
    while read.len() < acked.len() {
        let next = read.last().map_or(0, |(o, _)| o + 1);
        let data = fetch(
            &mut broker(&new_leader)?,
            fetch_request("safe", 0, next, 1_000),
        )
        .await?;
        ensure!(!data.records.is_empty(), "records stop at {next}");
        read.extend(values(&data.records)?);
    }
    let read: BTreeMap<i64, String> = read.into_iter().collect();
    for (offset, value) in &acked {
        assert_eq!(
            read.get(offset),
            Some(value),
            "acknowledged record at {offset}"
        );
    }
    let high_watermark = data.high_watermark;

    // Every replica byte-identical below the high watermark (logs read after a clean stop).
    for id in 1..=3 {
        cluster.broker(id).stop(Duration::from_secs(40))?;
    }
    let mut copies = Vec::new();
    for id in 1..=3u64 {
        let dir = cluster.broker(id).data_dir().join("safe-0");
        let log = Log::open(&dir, LogConfig::default(), LogResources::new(8))
            .with_context(|| format!("opening {}", dir.display()))?;
        let mut bytes = Vec::new();
        let mut offset = 0;
        while offset < high_watermark {
            let r = log.read(offset, 1 << 20, Some(high_watermark), true)?;
            ensure!(!r.records.is_empty(), "broker {id} lacks offset {offset}");
            bytes.extend_from_slice(&r.records);
            offset = r.next_offset;
        }
        log.close()?;
        copies.push(bytes);
    }
    assert!(
        copies.iter().all(|c| *c == copies[0]),
        "replicas differ below the high watermark"
    );
    Ok(())
}

fn any_other(brokers: &BTreeMap<i32, String>, not: i32) -> String {
    brokers
        .iter()
        .find(|(id, _)| **id != not)
        .map(|(_, a)| a.clone())
        .expect("another broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isr_shrinks_and_expands_and_min_insync_and_unclean_election_hold() -> Result<()> {
    let mut cluster = cluster()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();

    // A paused follower leaves the ISR (lag 2 s) and comes back after SIGCONT.
    let created = create_topic(&any, "lag", 1, 3, &[("min.insync.replicas", "2")]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let p = wait_partition(&any, "lag", "a full ISR", |p| {
        p.leader_id >= 0 && p.isr.len() == 3
    })
    .await?;
    let leader = p.leader_id;
    let follower = *p
        .replicas
        .iter()
        .find(|&&b| b != leader)
        .context("a follower")?;
    let r = produce_all(&brokers[&leader], "lag", "x").await?;
    ensure!(code(&r.error) == ErrorCode::None, "{r:?}");
    cluster.broker(follower as u64).pause()?;
    let shrunk = wait_partition(
        &brokers[&leader],
        "lag",
        "the paused follower to leave the ISR",
        |p| !p.isr.contains(&follower),
    )
    .await;
    // Writes go on with the other two in sync.
    let during = produce_all(&brokers[&leader], "lag", "y").await;
    cluster.broker(follower as u64).resume()?;
    shrunk?;
    ensure!(
        code(&during?.error) == ErrorCode::None,
        "min.insync 2 is met by two replicas"
    );
    wait_partition(
        &brokers[&leader],
        "lag",
        "the follower back in the ISR",
        |p| p.isr.contains(&follower),
    )
    .await?;

    // Two brokers down: min.insync.replicas = 2 refuses acks=all writes, appending nothing.
    let others: Vec<i32> = brokers.keys().copied().filter(|&b| b != leader).collect();
    for &b in &others {
        cluster.broker(b as u64).kill_9()?;
    }
    wait_partition(
        &brokers[&leader],
        "lag",
        "the ISR to shrink to the leader",
        |p| p.isr == [leader],
    )
    .await?;
    let before = fetch(
        &mut broker(&brokers[&leader])?,
        fetch_request("lag", 0, 0, 0),
    )
    .await?;
    let r = produce_all(&brokers[&leader], "lag", "refused").await?;
    assert_eq!(code(&r.error), ErrorCode::NotEnoughReplicas, "{r:?}");
    assert!(r.error.unwrap().retriable);
    let after = fetch(
        &mut broker(&brokers[&leader])?,
        fetch_request("lag", 0, 0, 0),
    )
    .await?;
    assert_eq!(
        after.log_end_offset, before.log_end_offset,
        "nothing appended"
    );
    // acks=1 still works on the leader alone.
    let r = produce(
        &mut broker(&brokers[&leader])?,
        "lag",
        0,
        1,
        batch(0, &["one"]),
    )
    .await?;
    assert_eq!(code(&r.error), ErrorCode::None);

    // The last in-sync replica dies: with unclean election off the partition waits, even
    // though out-of-sync replicas come back.
    cluster.broker(leader as u64).kill_9()?;
    for &b in &others {
        cluster.broker(b as u64).restart()?;
    }
    for &b in &others {
        cluster.broker(b as u64).wait_serving(WAIT)?;
    }
    let survivor = brokers[&others[0]].clone();
    let p = wait_partition(&survivor, "lag", "the partition to be leaderless", |p| {
        p.leader_id < 0
    })
    .await?;
    assert_eq!(p.isr, [leader], "the ISR keeps its last member");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = partition_state(&survivor, "lag")
        .await
        .context("metadata")?;
    assert_eq!(
        p.leader_id, -1,
        "no unclean election unless the topic allows it"
    );

    // Opting in elects an out-of-sync replica, which then takes writes.
    let altered = admin(&survivor)?
        .alter_configs(cpb::AlterConfigsRequest {
            topic: "lag".into(),
            set: [(
                "unclean.leader.election.enable".to_owned(),
                "true".to_owned(),
            )]
            .into(),
            delete: vec![],
            validate_only: false,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(code(&altered.error), ErrorCode::None);
    let p = wait_partition(&survivor, "lag", "an unclean election", |p| {
        p.leader_id >= 0 && p.leader_id != leader
    })
    .await?;
    let r = eventually("the unclean leader to take writes", WAIT, || async {
        let r = produce(
            &mut broker(&brokers[&p.leader_id]).ok()?,
            "lag",
            0,
            1,
            batch(0, &["after"]),
        )
        .await
        .ok()?;
        (code(&r.error) == ErrorCode::None).then_some(r)
    })
    .await?;
    assert!(r.base_offset >= 1);
    // The controller counted the unclean election.
    let mut unclean = 0.0;
    for id in 101..=103 {
        let addr = cluster
            .coordinator(id)
            .metrics_addr()
            .context("metrics endpoint")?;
        let text = scrape(addr).await?;
        unclean += metric(
            &text,
            "tributary_leader_elections_total",
            &["kind=\"unclean\""],
        );
    }
    assert!(unclean >= 1.0, "an unclean election is counted");
    Ok(())
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> bytes::Bytes {
    let mut builder = tributary_record::BatchBuilder::new(0).producer(pid, epoch, seq);
    for v in values {
        builder.push(0, None, Some(v.as_bytes()), &[]);
    }
    builder.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_not_duplicated_across_a_leader_kill() -> Result<()> {
    let mut cluster = cluster()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();
    let created = create_topic(&any, "idem", 1, 3, &[("min.insync.replicas", "2")]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let p = wait_partition(&any, "idem", "a full ISR", |p| {
        p.leader_id >= 0 && p.isr.len() == 3
    })
    .await?;
    let leader = p.leader_id;

    let init = broker(&any)?
        .init_producer_id(bpb::InitProducerIdRequest::default())
        .await?
        .into_inner();
    assert_eq!(code(&init.error), ErrorCode::None);
    let (pid, epoch) = (init.producer_id, init.producer_epoch as i16);
    let first = idempotent_batch(pid, epoch, 0, &["a", "b"]);
    let r = produce(
        &mut broker(&brokers[&leader])?,
        "idem",
        0,
        -1,
        first.clone(),
    )
    .await?;
    assert_eq!((code(&r.error), r.base_offset), (ErrorCode::None, 0));
    let r = produce(
        &mut broker(&brokers[&leader])?,
        "idem",
        0,
        -1,
        first.clone(),
    )
    .await?;
    assert_eq!(
        (code(&r.error), r.base_offset),
        (ErrorCode::None, 0),
        "a retry gets its offset"
    );

    cluster.broker(leader as u64).kill_9()?;
    let p = wait_partition(&any_other(&brokers, leader), "idem", "a new leader", |p| {
        p.leader_id >= 0 && p.leader_id != leader
    })
    .await?;
    let new_leader = brokers[&p.leader_id].clone();
    // The producer did not hear back and retries on the new leader: the followers kept the
    // producer state, so the batch is not written twice.
    let r = eventually("the new leader to answer the retry", WAIT, || async {
        let r = produce(&mut broker(&new_leader).ok()?, "idem", 0, -1, first.clone())
            .await
            .ok()?;
        (code(&r.error) == ErrorCode::None).then_some(r)
    })
    .await?;
    assert_eq!(
        r.base_offset, 0,
        "the retried batch keeps its original offset"
    );
    let next = idempotent_batch(pid, epoch, 2, &["c"]);
    let r = produce(&mut broker(&new_leader)?, "idem", 0, -1, next).await?;
    assert_eq!((code(&r.error), r.base_offset), (ErrorCode::None, 2));
    let gap = idempotent_batch(pid, epoch, 10, &["x"]);
    let r = produce(&mut broker(&new_leader)?, "idem", 0, -1, gap).await?;
    assert_eq!(code(&r.error), ErrorCode::OutOfOrderSequenceNumber, "{r:?}");
    let stale = idempotent_batch(pid, epoch - 1, 3, &["x"]);
    let r = produce(&mut broker(&new_leader)?, "idem", 0, -1, stale).await?;
    assert_ne!(
        code(&r.error),
        ErrorCode::None,
        "an older producer epoch is refused"
    );

    let data = fetch(&mut broker(&new_leader)?, fetch_request("idem", 0, 0, 0)).await?;
    let read: Vec<String> = values(&data.records)?.into_iter().map(|(_, v)| v).collect();
    assert_eq!(read, ["a", "b", "c"]);
    Ok(())
}
