//! Consumer-group benchmarks (issue 7): how long a rebalance of 10 consumers over 60 partitions
//! takes after the last join, and offset commits per second. A tool, not a test: it prints
//! numbers.
//!
//! ```text
//! cargo build --release -p tributary-coordinator -p tributary-broker
//! TRIBUTARY_BIN_DIR=target/release cargo run --release -p tributary-tests \
//!     --example groups_perf -- [--rounds 5] [--commit-secs 5]
//! ```
//!
//! It starts 1 coordinator and 3 brokers (real processes, from `$TRIBUTARY_BIN_DIR`), creates a
//! 60-partition RF-3 topic, then:
//!
//! 1. **Rebalance.** `--rounds` times: 9 consumers of a fresh group are polled until they share
//!    the 60 partitions; then a 10th subscribes and the time from its first poll until all 10
//!    own exactly 6 partitions each (disjoint, 60 in all) is measured. Consumers run in their
//!    own tasks, polling every 50 ms, with the default assignor list (range first).
//! 2. **Commits.** One member commits one partition's offset synchronously in a loop for
//!    `--commit-secs` (each acknowledged once replicated to 3 replicas), then 16 tasks do so
//!    concurrently: commits per second and the latency percentiles.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use tributary_client::{Admin, Consumer, Properties, TopicPartition};
use tributary_tests::harness::{Cluster, NodeKind};

const TOPIC: &str = "rebalance-bench";
const PARTITIONS: usize = 60;

fn arg(name: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("a value after the flag")?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

/// A consumer polling in its own task; publishes its assignment.
struct Running {
    stop: Arc<AtomicBool>,
    assignment: watch::Receiver<Vec<TopicPartition>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

async fn run_consumer(bootstrap: &str, group: &str) -> Result<Running> {
    let props = Properties::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000"); // Kafka's default
    let mut consumer = Consumer::new(&props).await?;
    consumer.subscribe(vec![TOPIC.to_owned()])?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = watch::channel(Vec::new());
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        while !stopping.load(Ordering::Relaxed) {
            consumer.poll(Duration::from_millis(50)).await?;
            let now = consumer.assignment();
            tx.send_if_modified(|a| {
                let changed = *a != now;
                *a = now.clone();
                changed
            });
        }
        consumer.close().await?;
        Ok(())
    });
    Ok(Running {
        stop,
        assignment: rx,
        task,
    })
}

/// Waits until the members own `per_member` partitions each, disjoint, 60 in all.
async fn balanced(members: &[Running], per_member: usize, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut all = BTreeSet::new();
        let mut ok = true;
        for m in members {
            let a = m.assignment.borrow().clone();
            ok &= a.len() == per_member;
            all.extend(a);
        }
        if ok && all.len() == PARTITIONS {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the group did not settle within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds = arg("--rounds", 5)?;
    let commit_secs = arg("--commit-secs", 5)?;
    let mut cluster = Cluster::builder()
        .coordinators(1)
        .brokers(3)
        .start_timeout(Duration::from_secs(90))
        .start()?;
    let bootstrap: String = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| n.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let admin = Admin::new(&Properties::new().set("bootstrap.servers", &bootstrap))?;
    admin
        .create_topic(tributary_client::admin::NewTopic {
            name: TOPIC.into(),
            partitions: PARTITIONS as i32,
            replication_factor: 3,
            configs: Default::default(),
        })
        .await?;

    println!("rebalance: 10th consumer joins 9 over {PARTITIONS} partitions");
    let mut times = Vec::new();
    for round in 0..rounds {
        let group = format!("bench-{round}");
        let mut members = Vec::new();
        for _ in 0..9 {
            members.push(run_consumer(&bootstrap, &group).await?);
        }
        // 60 over 9: 6 or 7 each.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let counts: Vec<usize> = members
                .iter()
                .map(|m| m.assignment.borrow().len())
                .collect();
            let all: BTreeSet<TopicPartition> = members
                .iter()
                .flat_map(|m| m.assignment.borrow().clone())
                .collect();
            if all.len() == PARTITIONS && counts.iter().all(|c| (6..=7).contains(c)) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("9 consumers did not settle: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let joined = Instant::now();
        members.push(run_consumer(&bootstrap, &group).await?);
        balanced(&members, 6, Duration::from_secs(60)).await?;
        let took = joined.elapsed();
        println!("  round {round}: {:.0} ms", took.as_secs_f64() * 1000.0);
        times.push(took);
        for m in members {
            m.stop.store(true, Ordering::Relaxed);
            m.task.await??;
        }
    }
    times.sort();
    println!(
        "  min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times[0].as_secs_f64() * 1000.0,
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );

    for concurrency in [1usize, 16] {
        let mut tasks = Vec::new();
        let end = Instant::now() + Duration::from_secs(commit_secs);
        for i in 0..concurrency {
            let props = Properties::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("committer-{concurrency}-{i}"));
            let mut consumer = Consumer::new(&props).await?;
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let tp = TopicPartition::new(TOPIC, (i % PARTITIONS) as i32);
                let mut offset = 0;
                while Instant::now() < end {
                    offset += 1;
                    let started = Instant::now();
                    consumer
                        .commit_offsets([(tp.clone(), offset)].into_iter().collect())
                        .await?;
                    latencies.push(started.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        all.sort();
        println!(
            "commits, {concurrency} committer(s): {:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms",
            all.len() as f64 / commit_secs as f64,
            percentile(&all, 0.5).as_secs_f64() * 1000.0,
            percentile(&all, 0.99).as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
