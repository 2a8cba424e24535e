//! Consumer groups against 3 coordinators and 3 brokers (real processes): the seed's second lab.
//! A producer writes an increasing sequence to `inventory_purchases` (6 partitions, RF 3) while
//! group 1 (one consumer) sees every number, and group 2 splits the partitions between two
//! consumers: disjoint assignments, no number delivered twice while membership is stable, the
//! partitions moving when the second consumer joins and again when one is killed (resuming
//! from the committed offsets, no gap), and the committed offsets surviving a kill -9 of the
//! group's coordinator.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tributary_client::{Admin, Consumer, Producer, ProducerRecord, Properties, TopicPartition};
use tributary_tests::harness::{Cluster, NodeKind};

const TOPIC: &str = "inventory_purchases";

/// A record a consumer saw: (consumer, partition, offset, value).
type Seen = (usize, i32, i64, u64);

struct Member {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Consumer>>,
}

/// Runs a consumer of `group` in a task, sending what it sees.
async fn member(
    id: usize,
    bootstrap: &str,
    group: &str,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<Member> {
    let props = Properties::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", format!("consumer-{id}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.commit.interval.ms", "500")
        .set("request.timeout.ms", "10000");
    let mut consumer = Consumer::new(&props).await?;
    consumer.subscribe(vec![TOPIC.to_owned()])?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        while !stopping.load(Ordering::Relaxed) {
            let polled = consumer.poll(Duration::from_millis(200)).await;
            if let Err(e) = &polled {
                eprintln!("consumer {id}: poll failed: {e}");
            }
            for r in polled? {
                let value: u64 = std::str::from_utf8(r.value.as_deref().unwrap_or_default())?
                    .parse()
                    .context("a value that is not a number")?;
                let _ = seen.send((id, r.partition, r.offset, value));
            }
        }
        Ok(consumer)
    });
    Ok(Member { stop, task })
}

impl Member {
    /// Stops polling and hands the consumer back (still a member until closed or dropped).
    async fn stop(self) -> Result<Consumer> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("consumer task panicked")?
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>, into: &mut Vec<Seen>) {
    while let Ok(s) = rx.try_recv() {
        into.push(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_second_lab_consumer_groups_split_and_move_partitions() -> Result<()> {
    let mut cluster = Cluster::builder()
        .coordinators(3)
        .brokers(3)
        .config(NodeKind::Coordinator, "broker_session_timeout_ms = 3000\n")
        .config(
            NodeKind::Broker,
            "broker_session_timeout_ms = 3000\nbroker_heartbeat_interval_ms = 500\n",
        )
        .start()?;
    let addresses: Vec<String> = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| n.addr().to_string())
        .collect();
    let bootstrap = addresses.join(",");
    let created =
        common::create_topic(&addresses[0], TOPIC, 6, 3, &[("min.insync.replicas", "2")]).await?;
    common::sync_brokers(&addresses, created.metadata_offset).await?;

    // The producer: an increasing sequence, paced, until told to stop.
    let producing = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(AtomicU64::new(0));
    let producer_task = {
        let props = Properties::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "2")
            .set("delivery.timeout.ms", "60000");
        let producer = Producer::new(&props).await?;
        let producing = producing.clone();
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut n: u64 = 0;
            while producing.load(Ordering::Relaxed) {
                deliveries.push(
                    producer
                        .send(ProducerRecord::new(TOPIC, n.to_string()))
                        .await?,
                );
                n += 1;
                if n.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            producer.flush().await;
            for (i, d) in deliveries.into_iter().enumerate() {
                d.await
                    .with_context(|| format!("number {i} was not acknowledged"))?;
            }
            produced.store(n, Ordering::Relaxed);
            anyhow::Ok(n)
        })
    };

    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let g1 = member(1, &bootstrap, "group-1", tx1.clone()).await?;
    let a = member(21, &bootstrap, "group-2", tx2.clone()).await?;
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;

    // Group 2 with one member: it owns all 6 partitions.
    common::until(
        "group-2 stable with 1 member owning 6 partitions",
        Duration::from_secs(30),
        || async {
            let d = admin.describe_group("group-2").await?;
            let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
            ensure!(
                d.state == "Stable" && d.members.len() == 1 && owned == 6,
                "{d:?}"
            );
            Ok(())
        },
    )
    .await?;
    let mut seen2: Vec<Seen> = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), rx2.recv())
        .await
        .context("group-2's first member consumed nothing in 10 s")?;
    seen2.extend(first);

    // The second member joins: the partitions split, disjoint, 6 in all.
    let b = member(22, &bootstrap, "group-2", tx2.clone()).await?;
    let split = common::until(
        "group-2 stable with 2 members splitting 6 partitions",
        Duration::from_secs(30),
        || async {
            let d = admin.describe_group("group-2").await?;
            let mut all = BTreeSet::new();
            let mut total = 0;
            for m in &d.members {
                ensure!(!m.assignment.is_empty(), "a member owns nothing: {d:?}");
                total += m.assignment.len();
                all.extend(m.assignment.iter().cloned());
            }
            ensure!(
                d.state == "Stable" && d.members.len() == 2 && total == 6 && all.len() == 6,
                "{d:?}"
            );
            Ok(d)
        },
    )
    .await?;
    let stable_from = seen2.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drain(&mut rx2, &mut seen2);
    // While membership is stable: each partition read by one consumer, nothing twice.
    let mut offsets = BTreeSet::new();
    for &(_, p, o, _) in &seen2[stable_from..] {
        ensure!(
            offsets.insert((p, o)),
            "partition {p} offset {o} delivered twice while group-2 was stable"
        );
    }
    let consumers_seen: BTreeSet<usize> = seen2[stable_from..].iter().map(|s| s.0).collect();
    ensure!(
        consumers_seen.len() == 2,
        "only {consumers_seen:?} consumed after the split {split:?}"
    );

    // The group's coordinator is killed: committed offsets survive, consumption goes on.
    let coordinator = admin.describe_group("group-2").await?.coordinator.0;
    let before: BTreeMap<TopicPartition, i64> = admin.list_group_offsets("group-2").await?;
    ensure!(before.len() == 6, "group-2 committed {before:?}");
    cluster.broker(coordinator as u64).kill_9()?;
    common::until(
        "group-2's offsets served by a new coordinator",
        Duration::from_secs(40),
        || async {
            let after = admin.list_group_offsets("group-2").await?;
            for (tp, o) in &before {
                let now = after.get(tp).copied().unwrap_or(-1);
                ensure!(
                    now >= *o,
                    "{tp}: committed {o} before the kill, {now} after"
                );
            }
            let d = admin.describe_group("group-2").await?;
            ensure!(
                d.coordinator.0 != coordinator,
                "still coordinated by {coordinator}"
            );
            Ok(())
        },
    )
    .await?;
    drain(&mut rx2, &mut seen2);
    let next = tokio::time::timeout(Duration::from_secs(10), rx2.recv())
        .await
        .context("group-2 consumed nothing within 10 s after its coordinator was killed")?;
    seen2.extend(next);
    cluster.broker(coordinator as u64).restart()?;

    // One member is killed (dropped without leaving): the survivor takes all 6 partitions
    // within the session timeout.
    let b_consumer = b.stop().await?;
    drop(b_consumer);
    common::until(
        "the survivor owning all 6 partitions",
        Duration::from_secs(30),
        || async {
            let d = admin.describe_group("group-2").await?;
            let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
            ensure!(
                d.state == "Stable" && d.members.len() == 1 && owned == 6,
                "{d:?}"
            );
            Ok(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Stop producing; both groups must then have seen every number.
    producing.store(false, Ordering::Relaxed);
    let n = producer_task.await??;
    ensure!(n > 1000, "only {n} numbers produced");
    let mut seen1: Vec<Seen> = Vec::new();
    let everything = |seen: &[Seen]| -> BTreeSet<u64> { seen.iter().map(|s| s.3).collect() };
    common::until(
        "both groups have seen every number",
        Duration::from_secs(60),
        || {
            drain(&mut rx1, &mut seen1);
            drain(&mut rx2, &mut seen2);
            let one = everything(&seen1);
            let two = everything(&seen2);
            let missing1 = (0..n)
                .filter(|i| !one.contains(i))
                .take(5)
                .collect::<Vec<_>>();
            let missing2 = (0..n)
                .filter(|i| !two.contains(i))
                .take(5)
                .collect::<Vec<_>>();
            async move {
                ensure!(
                    missing1.is_empty(),
                    "group-1 is missing {missing1:?} (of {n})"
                );
                ensure!(
                    missing2.is_empty(),
                    "group-2 is missing {missing2:?} (of {n})"
                );
                Ok(())
            }
        },
    )
    .await?;
    // Group 1 never rebalanced: nothing twice.
    let mut once = BTreeSet::new();
    for s in &seen1 {
        if !once.insert(s.3) {
            bail!("group-1 delivered {} twice", s.3);
        }
    }
    let mut last = a.stop().await?;
    last.close().await?;
    let mut g1 = g1.stop().await?;
    g1.close().await?;
    let d = admin.describe_group("group-2").await?;
    ensure!(
        d.state == "Empty" && d.members.is_empty(),
        "after close: {d:?}"
    );
    Ok(())
}
