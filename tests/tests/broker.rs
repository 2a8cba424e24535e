//! Three coordinators and three brokers as real processes over real gRPC on loopback, driven
//! through the generated client stubs: topics are created through a broker, records produced
//! to each partition's leader come back byte-identical at the expected offsets, other brokers
//! answer NOT_LEADER_OR_FOLLOWER naming the leader, long-polls wake as data arrives, every bad
//! input gets its precise error, a broker killed with -9 comes back with its records, and a
//! topic deleted and re-created while a broker was down never serves the old data.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::*;
use tributary_proto::broker::v1 as bpb;
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as cpb;
use tributary_tests::harness::{Cluster, Node, NodeKind, NodeSpec, Stopped, free_ports};

const WAIT: Duration = Duration::from_secs(30);

fn broker_addrs(cluster: &mut Cluster) -> BTreeMap<i32, String> {
    cluster
        .of_kind(NodeKind::Broker)
        .map(|n| (n.id() as i32, n.addr().to_string()))
        .collect()
}

/// The stored batch equals the sent one but for the fields the leader assigns (base offset,
/// partition leader epoch), which lie outside the CRC.
fn assert_same_batch(stored: &[u8], sent: &[u8], base_offset: i64) {
    assert_eq!(stored.len(), sent.len(), "batch length");
    assert_eq!(
        i64::from_be_bytes(stored[..8].try_into().unwrap()),
        base_offset,
        "base offset"
    );
    assert_eq!(stored[8..12], sent[8..12], "batch length field");
    assert_eq!(
        stored[16..],
        sent[16..],
        "magic, CRC, attributes and records"
    );
}

fn batches(records: &[u8]) -> Vec<&[u8]> {
    tributary_record::Batches::new(records)
        .map(|b| b.expect("valid batch").2)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_serve_each_partition_from_its_leader() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(3).brokers(3).start()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();

    // Created through a broker (forwarded to the controller); a describe through the same
    // broker right after already sees it.
    let created = create_topic(&any, "orders", 6, 1, &[]).await?;
    let metadata = broker(&any)?
        .metadata(bpb::MetadataRequest {
            topics: vec!["orders".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(code(&metadata.topics[0].error), ErrorCode::None);
    assert_eq!(metadata.topics[0].partitions.len(), 6);
    assert_eq!(metadata.brokers.len(), 3);
    for b in &metadata.brokers {
        assert_eq!(b.address, brokers[&b.broker_id], "advertised address");
    }
    assert!(metadata.controller_id >= 101, "a coordinator controls");

    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let topic = topic_metadata(&any, "orders", WAIT).await?;
    for p in &topic.partitions {
        let leader = p.leader_id;
        let leader_addr = &brokers[&leader];
        let mut client = broker(leader_addr)?;
        let first = batch(1_000, &[&format!("p{}-0", p.partition)]);
        let second = batch(
            2_000,
            &[
                &format!("p{}-1", p.partition),
                &format!("p{}-2", p.partition),
            ],
        );
        let r = produce(&mut client, "orders", p.partition, -1, first.clone()).await?;
        assert_eq!(
            (code(&r.error), r.base_offset),
            (ErrorCode::None, 0),
            "{r:?}"
        );
        let r = produce(&mut client, "orders", p.partition, 1, second.clone()).await?;
        assert_eq!(
            (code(&r.error), r.base_offset),
            (ErrorCode::None, 1),
            "{r:?}"
        );

        let data = fetch(&mut client, fetch_request("orders", p.partition, 0, 0)).await?;
        assert_eq!(code(&data.error), ErrorCode::None);
        assert_eq!((data.high_watermark, data.log_end_offset), (3, 3));
        let stored = batches(&data.records);
        assert_eq!(stored.len(), 2);
        assert_same_batch(stored[0], &first, 0);
        assert_same_batch(stored[1], &second, 1);
        assert_eq!(data.next_fetch_offset, 3);

        for (&other, addr) in brokers.iter().filter(|(id, _)| **id != leader) {
            let mut client = broker(addr)?;
            let r = produce(&mut client, "orders", p.partition, 1, first.clone()).await?;
            let error = r.error.clone().context("an error")?;
            assert_eq!(
                error.error_code(),
                ErrorCode::NotLeaderOrFollower,
                "broker {other}"
            );
            assert!(error.retriable);
            let hint = r.current_leader.context("a leader hint")?;
            assert_eq!((hint.leader_id, &hint.address), (leader, leader_addr));
            let data = fetch(&mut client, fetch_request("orders", p.partition, 0, 0)).await?;
            assert_eq!(code(&data.error), ErrorCode::NotLeaderOrFollower);
            assert_eq!(data.current_leader.map(|h| h.leader_id), Some(leader));
        }
    }

    // Long-poll: a fetch at the log end waits, and returns as soon as a record is committed.
    let p0 = &topic.partitions[0];
    let mut leader0 = broker(&brokers[&p0.leader_id])?;
    let mut waiting = leader0.clone();
    let started = Instant::now();
    let poll =
        tokio::spawn(
            async move { fetch(&mut waiting, fetch_request("orders", 0, 3, 20_000)).await },
        );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "a fetch with nothing new waits");
    let r = produce(&mut leader0, "orders", 0, -1, batch(3_000, &["late"])).await?;
    assert_eq!(code(&r.error), ErrorCode::None);
    let data = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .context("the long-poll did not return within 10 s of the produce")???;
    assert_eq!(values(&data.records)?, [(3, "late".to_owned())]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke before max_wait_ms (20 s)"
    );

    // The streaming form delivers each new record without being asked again.
    let p1 = &topic.partitions[1];
    let mut leader1 = broker(&brokers[&p1.leader_id])?;
    let mut stream = leader1
        .fetch_stream(fetch_request("orders", 1, 3, 5_000))
        .await?
        .into_inner();
    for (offset, value) in [(3, "s1"), (4, "s2")] {
        produce(&mut leader1, "orders", 1, 1, batch(4_000, &[value])).await?;
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("the fetch stream sent nothing within 10 s")??
            .context("the fetch stream ended")?;
        let data = &message.topics[0].partitions[0];
        assert_eq!(values(&data.records)?, [(offset, value.to_owned())]);
    }

    // ListOffsets: earliest, latest, by time.
    let offsets = leader0
        .list_offsets(bpb::ListOffsetsRequest {
            isolation_level: 0,
            topics: vec![bpb::list_offsets_request::TopicQuery {
                name: "orders".into(),
                partitions: [-2, -1, 2_000, 2_001, 10_000_000_000_000]
                    .into_iter()
                    .map(|timestamp| bpb::list_offsets_request::PartitionQuery {
                        partition: 0,
                        timestamp,
                        current_leader_epoch: -1,
                    })
                    .collect(),
            }],
        })
        .await?
        .into_inner();
    let found: Vec<i64> = offsets.topics[0]
        .partitions
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(found, [0, 4, 1, 2, -1]);

    // Bad input, each with its precise error.
    let r = produce(&mut leader0, "nope", 0, 1, batch(0, &["x"])).await?;
    assert_eq!(code(&r.error), ErrorCode::UnknownTopicOrPartition);
    assert!(r.error.unwrap().message.contains("create it first"));
    let r = produce(&mut leader0, "orders", 99, 1, batch(0, &["x"])).await?;
    assert_eq!(code(&r.error), ErrorCode::UnknownTopicOrPartition);
    assert!(r.error.unwrap().message.contains("has 6 partitions"));
    let r = produce(&mut leader0, "orders", 0, 2, batch(0, &["x"])).await?;
    assert_eq!(code(&r.error), ErrorCode::InvalidRequiredAcks);
    let mut corrupt = batch(0, &["x"]).to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    let r = produce(&mut leader0, "orders", 0, 1, corrupt.into()).await?;
    assert_eq!(code(&r.error), ErrorCode::CorruptMessage, "{r:?}");
    assert!(!r.error.unwrap().retriable);
    let r = produce(&mut leader0, "orders", 0, 1, vec![1, 2, 3].into()).await?;
    assert_eq!(code(&r.error), ErrorCode::CorruptMessage, "{r:?}");
    let data = fetch(&mut leader0, fetch_request("orders", 0, 4, 0)).await?;
    assert_eq!(
        (code(&data.error), data.records.len(), data.high_watermark),
        (ErrorCode::None, 0, 4),
        "nothing of a refused batch was written; a fetch at the log end is empty, not an error"
    );
    let data = fetch(&mut leader0, fetch_request("orders", 0, 100, 0)).await?;
    assert_eq!(code(&data.error), ErrorCode::OffsetOutOfRange);
    assert_eq!((data.log_start_offset, data.log_end_offset), (0, 4));
    let data = fetch(&mut leader0, fetch_request("orders", 0, -1, 0)).await?;
    assert_eq!(code(&data.error), ErrorCode::OffsetOutOfRange);
    let mut future_epoch = fetch_request("orders", 0, 0, 0);
    future_epoch.topics[0].partitions[0].current_leader_epoch = p0.leader_epoch + 1;
    let data = fetch(&mut leader0, future_epoch).await?;
    assert_eq!(code(&data.error), ErrorCode::UnknownLeaderEpoch);

    let created = create_topic(&any, "small", 1, 1, &[("max.message.bytes", "1024")]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let small = topic_metadata(&any, "small", WAIT).await?;
    let mut small_leader = broker(&brokers[&small.partitions[0].leader_id])?;
    let big = "x".repeat(2_000);
    let r = produce(&mut small_leader, "small", 0, 1, batch(0, &[&big])).await?;
    assert_eq!(code(&r.error), ErrorCode::MessageTooLarge, "{r:?}");

    // A broker that is still starting (here: it cannot reach any coordinator) says so.
    let ports = free_ports(2)?;
    let spec = {
        let template = cluster.broker(1).spec().clone();
        let mut spec = NodeSpec::new(
            NodeKind::Broker,
            4,
            template.program.clone(),
            cluster.root().join("broker-4"),
            format!("127.0.0.1:{}", ports[0]).parse()?,
        );
        spec.coordinators = vec![(101, format!("127.0.0.1:{}", ports[1]))];
        spec
    };
    let mut starting = Node::start(spec)?;
    let addr = starting.addr().to_string();
    let status = eventually("broker 4 to answer while starting", WAIT, || async {
        match broker(&addr)
            .ok()?
            .metadata(bpb::MetadataRequest::default())
            .await
        {
            Err(status) if status.message().contains("starting") => Some(status),
            _ => None,
        }
    })
    .await?;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!starting.health().is_serving());
    starting.kill_9()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_recover_their_logs_and_never_serve_a_deleted_topic() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(3).brokers(3).start()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();

    // kill -9 and restart: every acknowledged record (flushed per message) comes back.
    let created = create_topic(&any, "durable", 3, 1, &[("flush.messages", "1")]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let topic = topic_metadata(&any, "durable", WAIT).await?;
    let mut expected = BTreeMap::new();
    for p in &topic.partitions {
        let mut client = broker(&brokers[&p.leader_id])?;
        for i in 0..3 {
            let value = format!("d{}-{i}", p.partition);
            let r = produce(&mut client, "durable", p.partition, 1, batch(i, &[&value])).await?;
            ensure!(code(&r.error) == ErrorCode::None, "produce failed: {r:?}");
            expected
                .entry(p.partition)
                .or_insert_with(Vec::new)
                .push((i, value));
        }
    }
    let victim = topic.partitions[0].leader_id;
    let old_epoch = topic.partitions[0].leader_epoch;
    cluster.broker(victim as u64).kill_9()?;
    cluster.broker(victim as u64).restart()?;
    cluster.broker(victim as u64).wait_serving(WAIT)?;
    let topic = eventually(
        "partition 0 of durable to be led again, at a newer epoch",
        WAIT,
        || async {
            let t = topic_metadata(&any, "durable", WAIT).await.ok()?;
            (t.partitions[0].leader_epoch > old_epoch).then_some(t)
        },
    )
    .await?;
    for p in &topic.partitions {
        let mut client = broker(&brokers[&p.leader_id])?;
        let data = fetch(&mut client, fetch_request("durable", p.partition, 0, 0)).await?;
        assert_eq!(code(&data.error), ErrorCode::None, "{data:?}");
        assert_eq!(
            values(&data.records)?,
            expected[&p.partition],
            "partition {}",
            p.partition
        );
    }
    let mut stale = fetch_request("durable", 0, 0, 0);
    stale.topics[0].partitions[0].current_leader_epoch = old_epoch;
    let data = fetch(
        &mut broker(&brokers[&topic.partitions[0].leader_id])?,
        stale,
    )
    .await?;
    assert_eq!(code(&data.error), ErrorCode::FencedLeaderEpoch);
    assert_eq!(
        data.current_leader.map(|h| h.leader_epoch),
        Some(topic.partitions[0].leader_epoch)
    );

    // Deleted and re-created while a broker is down: its old logs are removed, never served.
    let created = create_topic(&any, "reborn", 6, 1, &[]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let topic = topic_metadata(&any, "reborn", WAIT).await?;
    let down = 3;
    let hosted: Vec<i32> = topic
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&down))
        .map(|p| p.partition)
        .collect();
    ensure!(
        !hosted.is_empty(),
        "broker {down} hosts a partition of reborn: {topic:?}"
    );
    for p in &topic.partitions {
        let mut client = broker(&brokers[&p.leader_id])?;
        let r = produce(&mut client, "reborn", p.partition, 1, batch(0, &["old"])).await?;
        ensure!(code(&r.error) == ErrorCode::None, "produce failed: {r:?}");
    }
    let data_dir = cluster.broker(down as u64).data_dir();
    let stopped = cluster.broker(down as u64).stop(Duration::from_secs(40))?;
    assert!(
        matches!(stopped, Stopped::Terminated),
        "SIGTERM is a clean, controlled shutdown: {stopped:?}"
    );
    let old_dirs: Vec<_> = hosted
        .iter()
        .map(|p| data_dir.join(format!("reborn-{p}")))
        .collect();
    for dir in &old_dirs {
        assert!(
            dir.join("partition.metadata").exists(),
            "{} is there while down",
            dir.display()
        );
    }
    let deleted = admin(&any)?
        .delete_topics(cpb::DeleteTopicsRequest {
            names: vec!["reborn".into()],
        })
        .await?
        .into_inner();
    assert_eq!(code(&deleted.results[0].error), ErrorCode::None);
    let created = create_topic(&any, "reborn", 6, 1, &[]).await?;
    let up: Vec<String> = brokers
        .iter()
        .filter(|(id, _)| **id != down)
        .map(|(_, a)| a.clone())
        .collect();
    sync_brokers(&up, created.metadata_offset).await?;
    let topic = topic_metadata(&any, "reborn", WAIT).await?;
    for p in &topic.partitions {
        let mut client = broker(&brokers[&p.leader_id])?;
        let r = produce(&mut client, "reborn", p.partition, 1, batch(0, &["new"])).await?;
        ensure!(code(&r.error) == ErrorCode::None, "produce failed: {r:?}");
    }
    cluster.broker(down as u64).restart()?;
    cluster.broker(down as u64).wait_serving(WAIT)?;
    let new_id = topic.topic_id.to_vec();
    for dir in &old_dirs {
        if dir.exists() {
            let text = std::fs::read_to_string(dir.join("partition.metadata"))?;
            let id = uuid_text(&new_id);
            assert!(
                text.contains(&id),
                "{} still holds the deleted topic: {text}",
                dir.display()
            );
        }
    }
    for p in &topic.partitions {
        let mut client = broker(&brokers[&p.leader_id])?;
        let data = fetch(&mut client, fetch_request("reborn", p.partition, 0, 0)).await?;
        assert_eq!(
            values(&data.records)?,
            [(0, "new".to_owned())],
            "partition {}",
            p.partition
        );
    }
    Ok(())
}

fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_from_the_coordinators_stops_leading_by_itself() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(3)
        .brokers(3)
        .config(NodeKind::Coordinator, "broker_session_timeout_ms = 3000\n")
        // The brokers keep their default session timeout (9 s): the coordinators' shorter one,
        // learned at registration, must govern, or the broker would lead on for 6 s after the
        // controller may have fenced it.
        .config(
            NodeKind::Broker,
            "broker_heartbeat_interval_ms = 500\n\
             auto_create_topics_enable = true\nnum_partitions = 2\n",
        )
        .start()?;
    let brokers = broker_addrs(&mut cluster);
    let any = brokers[&1].clone();

    // auto.create.topics.enable: producing to an unknown topic creates it (retriable
    // LEADER_NOT_AVAILABLE meanwhile), with num.partitions partitions.
    let r = produce(&mut broker(&any)?, "made-on-use", 0, 1, batch(0, &["x"])).await?;
    assert_eq!(code(&r.error), ErrorCode::LeaderNotAvailable, "{r:?}");
    assert!(r.error.as_ref().is_some_and(|e| e.retriable));
    let made = topic_metadata(&any, "made-on-use", WAIT).await?;
    assert_eq!(made.partitions.len(), 2);

    let created = create_topic(&any, "cut", 1, 1, &[]).await?;
    sync_brokers(brokers.values(), created.metadata_offset).await?;
    let topic = topic_metadata(&any, "cut", WAIT).await?;
    let leader = brokers[&topic.partitions[0].leader_id].clone();
    let r = produce(&mut broker(&leader)?, "cut", 0, 1, batch(0, &["before"])).await?;
    assert_eq!(code(&r.error), ErrorCode::None);

    for id in 101..=103 {
        cluster.coordinator(id).pause()?;
    }
    // Writes succeed until the session timeout has passed, then are refused.
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1));
    let refused = eventually(
        "the leader to refuse writes once its session timeout (3 s) passed without a heartbeat",
        Duration::from_secs(20),
        || {
            let accepted = accepted.clone();
            let leader = leader.clone();
            async move {
                let mut client = broker(&leader).ok()?;
                let r = produce(&mut client, "cut", 0, 1, batch(0, &["during"]))
                    .await
                    .ok()?;
                match code(&r.error) {
                    ErrorCode::None => {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        None
                    }
                    ErrorCode::NotLeaderOrFollower => Some(r),
                    _ => None,
                }
            }
        },
    )
    .await;
    for id in 101..=103 {
        cluster.coordinator(id).resume()?;
    }
    let refused = refused?;
    let message = refused.error.map(|e| e.message).unwrap_or_default();
    assert!(message.contains("no heartbeat acknowledged"), "{message}");
    // "... acknowledged by the coordinators for N ms; ...": refused past the coordinators'
    // 3 s, well before the broker's own 9 s.
    let silent_ms: u64 = message
        .split(" for ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {message:?}"));
    assert!(
        (3_000..9_000).contains(&silent_ms),
        "refused after {silent_ms} ms without a heartbeat: the controller's 3 s session timeout should govern, not the broker's 9 s ({message})"
    );

    // Back in touch: it leads again (possibly at a new epoch) and accepts writes.
    let written = eventually("the partition to accept writes again", WAIT, || async {
        let t = topic_metadata(&any, "cut", WAIT).await.ok()?;
        let mut client = broker(&brokers[&t.partitions[0].leader_id]).ok()?;
        let r = produce(&mut client, "cut", 0, 1, batch(0, &["after"]))
            .await
            .ok()?;
        (code(&r.error) == ErrorCode::None).then_some(r)
    })
    .await?;
    assert_eq!(
        written.base_offset,
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        "the refused write left nothing behind"
    );
    Ok(())
}
