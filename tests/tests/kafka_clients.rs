//! Third-party Kafka clients, unmodified, against a real cluster of 1 coordinator and 3 brokers
//! over the Kafka protocol on the brokers' own (gRPC) listeners:
//!
//! - kcat, with Debian's librdkafka (2.0.2) and with the current one bundled in confluent-kafka:
//!   metadata, every compression codec, offsets by timestamp, a two-member group;
//! - confluent-kafka (`tests/kafka/*.py`): an idempotent producer across a leader's kill -9,
//!   acks=0 and acks=1, a group that rebalances and resumes from committed offsets, a static
//!   member's restart without a rebalance, the AdminClient;
//! - kafka-python: admin, produce and consume, a group consumer; and a group shared by the
//!   `tributary` CLI (gRPC) and a confluent-kafka member.
//!
//! The clients come from `cargo xtask kafka-clients` (`cargo xtask test` runs it first); a test
//! without them fails saying so. Each test checks first that every broker answers Kafka's
//! ApiVersions on its listener, and fails naming the broker if not.

mod common;
#[path = "common/kafka.rs"]
mod kafka_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kafka_cluster::{Kafka, WAIT, until};
use serde_json::Value;
use tributary_tests::harness::{Signal, bin_dir};
use tributary_tests::kafka_clients::{
    Background, Kcat, Librdkafka, Stream, python, run_python, spawn_python,
};

// ---- kcat ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_every_codec_queries_times_and_shares_a_group_with_both_librdkafkas()
-> Result<()> {
    let kcats = Librdkafka::BOTH
        .iter()
        .map(|lib| Kcat::new(*lib))
        .collect::<Result<Vec<_>>>()?;
    let versions = kcats
        .iter()
        .map(Kcat::librdkafka_version)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        versions[0] != versions[1],
        "LD_LIBRARY_PATH should make kcat load the bundled librdkafka; both run {}",
        versions[0]
    );
    let kafka = Kafka::start("", "")?;
    for (kcat, version) in kcats.iter().zip(&versions) {
        let lib = match kcat.librdkafka() {
            Librdkafka::Debian => "debian",
            Librdkafka::Bundled => "bundled",
        };
        let context = || format!("kcat with {lib} librdkafka {version}");
        kcat_lists_every_broker(kcat, &kafka).with_context(context)?;
        kcat_round_trips_every_codec(kcat, &kafka, lib)
            .await
            .with_context(context)?;
        kcat_finds_offsets_by_timestamp(kcat, &kafka, lib)
            .await
            .with_context(context)?;
        kcat_members_share_a_topic_and_rebalance(kcat, &kafka, lib)
            .await
            .with_context(context)?;
    }
    Ok(())
}

/// `kcat -L`: the 3 brokers at their listeners' addresses, a broker as controller.
fn kcat_lists_every_broker(kcat: &Kcat, kafka: &Kafka) -> Result<()> {
    let out = kcat.run_ok(
        &["-b", kafka.any_broker(), "-L", "-J", "-m", "10"],
        None,
        WAIT,
    )?;
    let metadata: Value =
        serde_json::from_str(&out).with_context(|| format!("kcat -L -J printed {out}"))?;
    let brokers: BTreeMap<i64, String> = metadata["brokers"]
        .as_array()
        .with_context(|| format!("no brokers in {metadata}"))?
        .iter()
        .map(|b| {
            Ok((
                b["id"].as_i64().context("a broker id")?,
                b["name"].as_str().context("a broker name")?.to_owned(),
            ))
        })
        .collect::<Result<_>>()?;
    let expected: BTreeMap<i64, String> = kafka
        .brokers
        .iter()
        .map(|(id, addr)| (i64::from(*id), addr.clone()))
        .collect();
    assert_eq!(brokers, expected, "kcat -L: {metadata}");
    let controller = metadata["controllerid"].as_i64().unwrap_or(-1);
    assert!(
        expected.contains_key(&controller),
        "the controller id is a broker id: {metadata}"
    );
    Ok(())
}

const CODECS: [(&str, tributary_record::Compression); 5] = [
    ("none", tributary_record::Compression::None),
    ("gzip", tributary_record::Compression::Gzip),
    ("snappy", tributary_record::Compression::Snappy),
    ("lz4", tributary_record::Compression::Lz4),
    ("zstd", tributary_record::Compression::Zstd),
];

/// `kcat -P -z CODEC` then `kcat -C -e`: the same lines back, stored in batches of that codec.
async fn kcat_round_trips_every_codec(kcat: &Kcat, kafka: &Kafka, lib: &str) -> Result<()> {
    for (codec, compression) in CODECS {
        let topic = format!("codec-{lib}-{codec}");
        kafka.topic(&topic, 1, &[]).await?;
        let lines: Vec<String> = (0..200)
            .map(|i| format!("{lib} {codec} record {i} {}", "x".repeat(i % 50)))
            .collect();
        let input = format!("{}\n", lines.join("\n"));
        kcat.run_ok(
            &[
                "-b",
                &kafka.bootstrap(),
                "-P",
                "-t",
                &topic,
                "-z",
                codec,
                "-X",
                "linger.ms=20",
                "-X",
                "message.timeout.ms=30000",
            ],
            Some(input.as_bytes()),
            WAIT,
        )?;
        let out = kcat.run_ok(
            &[
                "-b",
                &kafka.bootstrap(),
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%s\n",
            ],
            None,
            WAIT,
        )?;
        let read: Vec<&str> = out.lines().collect();
        assert_eq!(
            read, lines,
            "{topic}: kcat -C -e reads back what kcat -P wrote"
        );

        // The stored batches carry the producer's codec (read over gRPC, as stored).
        let (_, leader) = kafka.leader(&topic, 0).await?;
        let mut client = common::broker(&leader)?;
        let data = common::fetch(&mut client, common::fetch_request(&topic, 0, 0, 0)).await?;
        let mut batches = 0;
        for item in tributary_record::Batches::new(&data.records) {
            let (header, _, _) = item?;
            assert_eq!(
                header.compression(),
                compression,
                "{topic}: a batch at offset {} is stored with {}",
                header.base_offset,
                header.compression()
            );
            batches += 1;
        }
        assert!(batches > 0, "{topic}: no batch stored");
    }
    Ok(())
}

/// `kcat -Q`: the first offset at or after a timestamp, from the timestamps kcat reads back.
async fn kcat_finds_offsets_by_timestamp(kcat: &Kcat, kafka: &Kafka, lib: &str) -> Result<()> {
    let topic = format!("times-{lib}");
    kafka.topic(&topic, 1, &[]).await?;
    for run in 0..3 {
        let input: String = (0..20).map(|i| format!("run {run} record {i}\n")).collect();
        kcat.run_ok(
            &[
                "-b",
                &kafka.bootstrap(),
                "-P",
                "-t",
                &topic,
                "-X",
                "message.timeout.ms=30000",
            ],
            Some(input.as_bytes()),
            WAIT,
        )?;
    }
    let out = kcat.run_ok(
        &[
            "-b",
            &kafka.bootstrap(),
            "-C",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o %T\n",
        ],
        None,
        WAIT,
    )?;
    let stored: Vec<(i64, i64)> = out
        .lines()
        .map(|l| {
            let (o, t) = l.split_once(' ').context("offset and timestamp")?;
            Ok((o.parse()?, t.parse()?))
        })
        .collect::<Result<_>>()
        .with_context(|| format!("kcat -f '%o %T' printed {out}"))?;
    assert_eq!(stored.len(), 60, "{out}");
    let query = |timestamp: i64| -> Result<i64> {
        let out = kcat.run_ok(
            &[
                "-b",
                &kafka.bootstrap(),
                "-Q",
                "-t",
                &format!("{topic}:0:{timestamp}"),
            ],
            None,
            WAIT,
        )?;
        out.lines()
            .find_map(|l| l.split_once(" offset ").map(|(_, o)| o.trim().parse().ok()))
            .flatten()
            .with_context(|| format!("kcat -Q printed no offset: {out}"))
    };
    let middle = stored[30].1;
    let expected = stored
        .iter()
        .find(|(_, t)| *t >= middle)
        .map(|(o, _)| *o)
        .context("a record at or after the middle timestamp")?;
    assert_eq!(
        query(middle)?,
        expected,
        "the first offset at or after {middle}"
    );
    assert_eq!(query(0)?, 0, "timestamp 0: the first offset");
    let later = stored.iter().map(|(_, t)| *t).max().unwrap_or(0) + 3_600_000;
    assert_eq!(
        query(later)?,
        -1,
        "no record at or after {later}: offset -1, as in Kafka"
    );
    Ok(())
}

/// The partitions a kcat -G member owns after the rebalances it printed on stderr
/// (`% Group G rebalanced (memberid M): assigned: t [0], t [2]` / `... revoked: ...`).
fn kcat_owned(stderr: &str) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    for line in stderr.lines().filter(|l| l.contains("rebalanced")) {
        if line.contains("revoked:") {
            owned.clear();
        }
        if let Some((_, list)) = line.split_once("assigned:") {
            owned = list
                .split('[')
                .skip(1)
                .filter_map(|p| p.split(']').next()?.trim().parse().ok())
                .collect();
        }
    }
    owned
}

/// Records a kcat -G member printed with `-f '%p %o %s\n'`: (partition, value).
fn kcat_records(stdout: &str) -> Vec<(i32, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut fields = l.splitn(3, ' ');
            let partition = fields.next()?.parse().ok()?;
            let _offset = fields.next()?;
            Some((partition, fields.next()?.to_owned()))
        })
        .collect()
}

/// Two `kcat -G` members split a 4-partition topic 2+2, each reading only its own partitions;
/// when one exits (SIGTERM: it leaves the group) the other takes all 4.
async fn kcat_members_share_a_topic_and_rebalance(
    kcat: &Kcat,
    kafka: &Kafka,
    lib: &str,
) -> Result<()> {
    let topic = format!("group-{lib}");
    let group = format!("kcat-{lib}");
    kafka.topic(&topic, 4, &[]).await?;
    let bootstrap = kafka.bootstrap();
    let member = || {
        kcat.spawn(&[
            "-b",
            &bootstrap,
            "-G",
            &group,
            &topic,
            "-u",
            "-f",
            "%p %o %s\n",
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "session.timeout.ms=10000",
            "-X",
            "heartbeat.interval.ms=500",
        ])
    };
    let a = member()?;
    let b = member()?;
    let split = || {
        let (oa, ob) = (kcat_owned(&a.stderr()), kcat_owned(&b.stderr()));
        (oa.len() == 2 && ob.len() == 2 && oa.is_disjoint(&ob)).then_some((oa, ob))
    };
    let (owned_a, owned_b) = until(
        "two kcat members to own 2 partitions each",
        WAIT,
        split,
        || format!("a: {}\nb: {}", a.stderr(), b.stderr()),
    )?;

    let values: Vec<String> = (0..40).map(|i| format!("{lib}-shared-{i}")).collect();
    kafka.produce_grpc(&topic, &values).await?;
    let seen = || {
        let mut all = kcat_records(&a.stdout());
        all.extend(kcat_records(&b.stdout()));
        all
    };
    until(
        "the two members to read the 40 records",
        WAIT,
        || (seen().len() >= 40).then_some(()),
        || format!("{:?}", seen()),
    )?;
    for (name, process, owned) in [("a", &a, &owned_a), ("b", &b, &owned_b)] {
        let records = kcat_records(&process.stdout());
        assert!(!records.is_empty(), "member {name} read nothing");
        for (partition, value) in &records {
            assert!(
                owned.contains(partition),
                "member {name} read {value} from partition {partition}, not its own {owned:?}"
            );
        }
    }
    let mut read: Vec<String> = seen().into_iter().map(|(_, v)| v).collect();
    read.sort();
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(read, expected, "each record once, across both members");

    let b_done = b.stop(Signal::Term, WAIT)?;
    assert!(
        b_done.status.success(),
        "kcat exits cleanly on SIGTERM: {}",
        b_done.stderr
    );
    until(
        "the remaining member to own all 4 partitions",
        WAIT,
        || (kcat_owned(&a.stderr()).len() == 4).then_some(()),
        || a.stderr(),
    )?;
    let more: Vec<String> = (0..20).map(|i| format!("{lib}-alone-{i}")).collect();
    kafka.produce_grpc(&topic, &more).await?;
    a.wait_for(
        Stream::Stdout,
        "the remaining member to read the 20 new records",
        WAIT,
        |text| more.iter().all(|v| text.contains(v.as_str())).then_some(()),
    )?;
    let a_done = a.stop(Signal::Term, WAIT)?;
    assert!(a_done.status.success(), "{}", a_done.stderr);
    Ok(())
}

// ---- confluent-kafka ----------------------------------------------------------------------

/// The JSON lines of a script's stdout (others skipped).
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The highest `{"acked": n}` progress count `produce.py` printed so far.
fn acked_so_far(stdout: &str) -> u64 {
    json_lines(stdout)
        .iter()
        .filter_map(|v| v["acked"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The line of `produce.py` that ends its run.
fn done_line(stdout: &str) -> Result<Value> {
    json_lines(stdout)
        .into_iter()
        .find(|v| v["event"] == "done")
        .with_context(|| format!("no done line in {stdout}"))
}

/// A record `consume.py` printed: (partition, offset, key, value).
type Consumed = (i32, i64, String, String);

/// Per partition, (log start offset, high watermark).
type Watermarks = BTreeMap<i32, (i64, i64)>;

/// `consume.py`'s records and its watermarks line.
fn consumed(stdout: &str) -> Result<(Vec<Consumed>, Watermarks)> {
    let mut records = Vec::new();
    let mut watermarks = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("#watermarks\t") {
            let map: BTreeMap<String, (i64, i64)> = serde_json::from_str(json)?;
            for (p, range) in map {
                watermarks.insert(p.parse()?, range);
            }
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [p, o, k, v] = fields[..] else {
            bail!("consume.py printed `{line}`");
        };
        records.push((p.parse()?, o.parse()?, k.to_owned(), v.to_owned()));
    }
    Ok((records, watermarks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_idempotent_producer_loses_duplicates_and_reorders_nothing_across_a_leader_kill_9()
-> Result<()> {
    const RECORDS: usize = 100_000;
    const KEYS: usize = 50;
    python()?;
    // Short broker sessions: the killed leader's partitions fail over within seconds.
    let mut kafka = Kafka::start(
        "broker_session_timeout_ms = 3000\n",
        "broker_session_timeout_ms = 3000\nbroker_heartbeat_interval_ms = 500\n",
    )?;
    kafka
        .topic("idempotent", 3, &[("min.insync.replicas", "2")])
        .await?;
    let bootstrap = kafka.bootstrap();
    let count = RECORDS.to_string();
    let keys = KEYS.to_string();
    let producer = spawn_python(
        "produce.py",
        &[
            &bootstrap,
            "idempotent",
            "--count",
            &count,
            "--keys",
            &keys,
            "--config",
            "enable.idempotence=true",
            "--config",
            "acks=all",
            "--progress-every",
            "10000",
            // After the kill point, about 4 s more of records in flight while the cluster
            // fails over.
            "--slow-after",
            "30000",
            "--rate",
            "20000",
            "--timeout",
            "150",
        ],
    )?;
    producer.wait_for_line("30,000 records acknowledged", WAIT, |l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .and_then(|v| v["acked"].as_u64())
            .is_some_and(|n| n >= 30_000)
    })?;
    let (leader, _) = kafka.leader("idempotent", 0).await?;
    kafka.cluster.broker(leader as u64).kill_9()?;
    let acked_at_kill = acked_so_far(&producer.stdout());
    assert!(
        acked_at_kill < RECORDS as u64,
        "the kill must land mid-run ({acked_at_kill} acknowledged already)"
    );
    let finished = producer.finish(Duration::from_secs(180))?;
    let stdout = finished.stdout.clone();
    finished.success()?;
    let done = done_line(&stdout)?;
    assert_eq!(done["acked"], RECORDS, "every record acknowledged: {done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["unflushed"], 0, "{done}");

    let survivors: Vec<String> = kafka
        .brokers
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, addr)| addr.clone())
        .collect();
    // Partition 0 failed over: its records after the kill went to a new leader.
    let metadata = common::topic_metadata(&survivors[0], "idempotent", WAIT).await?;
    let new_leader = metadata
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .map(|p| p.leader_id);
    assert!(
        new_leader.is_some_and(|l| l >= 0 && l != leader),
        "partition 0 has a new leader, not the killed {leader}: {new_leader:?}"
    );
    let out = run_python(
        "consume.py",
        &[
            &survivors.join(","),
            "idempotent",
            "--count",
            &count,
            "--timeout",
            "90",
        ],
        Duration::from_secs(120),
    )?;
    let (records, watermarks) = consumed(&out)?;
    assert_eq!(records.len(), RECORDS, "every record read back");
    let stored: i64 = watermarks.values().map(|(low, high)| high - low).sum();
    assert_eq!(
        stored, RECORDS as i64,
        "the log holds no duplicate: {watermarks:?}"
    );
    // Per key: 0, 1, 2, ... in offset order, each once.
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut sorted = records.clone();
    sorted.sort_by_key(|(p, o, _, _)| (*p, *o));
    for (p, o, key, value) in &sorted {
        let (value_key, seq) = value.split_once(':').context("key:seq")?;
        assert_eq!(value_key, key, "record {p}:{o}");
        let seq: usize = seq.parse()?;
        let expected = next.entry(key.clone()).or_default();
        assert_eq!(
            seq, *expected,
            "{key}: record {p}:{o} holds {seq}, expected {expected} (lost, duplicated or reordered)"
        );
        *expected += 1;
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(*p),
            *p,
            "{key} stays in one partition"
        );
    }
    assert_eq!(next.len(), KEYS);
    assert!(next.values().all(|n| *n == RECORDS / KEYS), "{next:?}");
    Ok(())
}

/// The partitions a `group_member.py` owns after the last rebalance event it printed.
fn member_owned(stdout: &str) -> Option<BTreeSet<i64>> {
    json_lines(stdout)
        .iter()
        .rev()
        .find(|v| matches!(v["event"].as_str(), Some("assigned" | "revoked" | "lost")))
        .and_then(|v| {
            v["owned"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
        })
}

/// How many rebalance events a `group_member.py` printed.
fn rebalance_events(stdout: &str) -> usize {
    json_lines(stdout)
        .iter()
        .filter(|v| matches!(v["event"].as_str(), Some("assigned" | "revoked" | "lost")))
        .count()
}

/// The records a `group_member.py` printed: (partition, offset, value).
fn member_records(stdout: &str) -> Vec<(i64, i64, String)> {
    json_lines(stdout)
        .iter()
        .filter(|v| v["event"] == "record")
        .filter_map(|v| {
            Some((
                v["p"].as_i64()?,
                v["o"].as_i64()?,
                v["v"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Waits until the members own `sizes` partitions each, disjoint, covering `partitions`.
fn wait_split(members: &[&Background], sizes: &[usize], partitions: usize) -> Result<()> {
    until(
        &format!("the members to own {sizes:?} partitions"),
        WAIT,
        || {
            let owned: Vec<BTreeSet<i64>> = members
                .iter()
                .map(|m| member_owned(&m.stdout()).unwrap_or_default())
                .collect();
            let union: BTreeSet<i64> = owned.iter().flatten().copied().collect();
            let total: usize = owned.iter().map(BTreeSet::len).sum();
            (owned.iter().map(BTreeSet::len).eq(sizes.iter().copied())
                && total == union.len()
                && union.len() == partitions)
                .then_some(())
        },
        || {
            members
                .iter()
                .map(|m| format!("{:?}", member_owned(&m.stdout())))
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// Closes a `group_member.py` (it leaves the group unless static) and checks its exit.
fn close_member(mut member: Background) -> Result<String> {
    member.write_line("close")?;
    let finished = member.finish(WAIT)?;
    let stdout = finished.stdout.clone();
    finished.success()?;
    ensure!(
        stdout.contains(r#""event": "closed""#),
        "the member did not report closing: {stdout}"
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_acks_groups_static_members_and_admin() -> Result<()> {
    python()?;
    let kafka = Kafka::start("", "")?;
    let bootstrap = kafka.bootstrap();

    // acks=0 and acks=1: everything arrives.
    kafka.topic("acks", 3, &[]).await?;
    for acks in ["0", "1"] {
        let out = run_python(
            "produce.py",
            &[
                &bootstrap,
                "acks",
                "--count",
                "1000",
                "--value-prefix",
                &format!("acks{acks}-"),
                "--config",
                &format!("acks={acks}"),
            ],
            WAIT,
        )?;
        let done = done_line(&out)?;
        assert_eq!(done["acked"], 1000, "acks={acks}: {done}");
        assert_eq!(done["failed"], 0, "acks={acks}: {done}");
    }
    let out = run_python(
        "consume.py",
        &[&bootstrap, "acks", "--count", "2000", "--timeout", "30"],
        WAIT,
    )?;
    let (records, watermarks) = consumed(&out)?;
    let values: BTreeSet<String> = records.into_iter().map(|r| r.3).collect();
    let expected: BTreeSet<String> = ["acks0-", "acks1-"]
        .iter()
        .flat_map(|p| (0..1000).map(move |i| format!("{p}{i}")))
        .collect();
    assert_eq!(values, expected, "acks=0 and acks=1 records, each once");
    let stored: i64 = watermarks.values().map(|(l, h)| h - l).sum();
    assert_eq!(stored, 2000, "{watermarks:?}");

    group_rebalances_and_resumes_from_committed_offsets(&kafka)
        .await
        .context("the 2-member group")?;
    static_member_restarts_without_a_rebalance(&kafka)
        .await
        .context("the static members")?;

    let out = run_python(
        "admin.py",
        &[&bootstrap, "admin", "3"],
        Duration::from_secs(180),
    )?;
    let steps: Vec<String> = json_lines(&out)
        .iter()
        .filter_map(|v| v["step"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        steps,
        [
            "create",
            "describe_topics",
            "describe_configs",
            "alter_configs",
            "create_partitions",
            "describe_cluster",
            "groups",
            "delete_topics"
        ],
        "{out}"
    );
    assert!(done_line(&out).is_ok(), "{out}");
    Ok(())
}

/// Members A and B split 4 partitions 2+2; B leaves and A takes all 4; B' joins and they split
/// 2+2 again. Records are produced only between rebalances, so with commits after every poll
/// each is read exactly once: a new owner starts at the committed offsets.
async fn group_rebalances_and_resumes_from_committed_offsets(kafka: &Kafka) -> Result<()> {
    kafka.topic("rebalance", 4, &[]).await?;
    let bootstrap = kafka.bootstrap();
    let member = || {
        spawn_python(
            "group_member.py",
            &[&bootstrap, "rebalance-group", "rebalance"],
        )
    };
    let a = member()?;
    let b = member()?;
    wait_split(&[&a, &b], &[2, 2], 4)?;
    let mut produced: Vec<String> = Vec::new();
    let mut phase = |name: &str| -> Vec<String> {
        let values: Vec<String> = (0..200).map(|i| format!("{name}-{i}")).collect();
        produced.extend(values.clone());
        values
    };
    let wait_read = |members: &[&Background], values: &[String], what: &str| {
        until(
            what,
            WAIT,
            || {
                let text: String = members.iter().map(|m| m.stdout()).collect();
                values
                    .iter()
                    .all(|v| text.contains(&format!("\"{v}\"")))
                    .then_some(())
            },
            || {
                format!(
                    "{} lines",
                    members
                        .iter()
                        .map(|m| m.stdout().lines().count())
                        .sum::<usize>()
                )
            },
        )
    };
    let first = phase("first");
    kafka.produce_grpc("rebalance", &first).await?;
    wait_read(&[&a, &b], &first, "2+2 members to read the first 200")?;

    let b_out = close_member(b)?;
    wait_split(&[&a], &[4], 4)?;
    let second = phase("second");
    kafka.produce_grpc("rebalance", &second).await?;
    wait_read(&[&a], &second, "the lone member to read the second 200")?;

    let b2 = member()?;
    wait_split(&[&a, &b2], &[2, 2], 4)?;
    let third = phase("third");
    kafka.produce_grpc("rebalance", &third).await?;
    wait_read(&[&a, &b2], &third, "2+2 members to read the third 200")?;

    let b2_out = close_member(b2)?;
    let a_out = close_member(a)?;
    let mut read: Vec<String> = [&a_out, &b_out, &b2_out]
        .iter()
        .flat_map(|out| member_records(out))
        .map(|(_, _, v)| v)
        .collect();
    read.sort();
    produced.sort();
    assert_eq!(read.len(), produced.len(), "no record read twice or missed");
    assert_eq!(read, produced);
    for out in [&a_out, &b_out, &b2_out] {
        assert!(
            !out.contains("commit-failed"),
            "a commit failed, so a record may be read twice: {out}"
        );
    }
    Ok(())
}

/// Static members s1 and s2 split 4 partitions; s1 closes (a static member does not leave)
/// and restarts with the same group.instance.id within the session timeout: it gets its
/// partitions back, and s2 sees no rebalance.
async fn static_member_restarts_without_a_rebalance(kafka: &Kafka) -> Result<()> {
    kafka.topic("static", 4, &[]).await?;
    let bootstrap = kafka.bootstrap();
    let member = |id: &str| {
        spawn_python(
            "group_member.py",
            &[
                &bootstrap,
                "static-group",
                "static",
                "--config",
                &format!("group.instance.id={id}"),
                "--config",
                "session.timeout.ms=30000",
            ],
        )
    };
    let s1 = member("s1")?;
    let s2 = member("s2")?;
    wait_split(&[&s1, &s2], &[2, 2], 4)?;
    let s1_owned = member_owned(&s1.stdout()).unwrap_or_default();
    let s2_events = rebalance_events(&s2.stdout());
    close_member(s1)?;
    let s1 = member("s1")?;
    until(
        "the restarted s1 to get its partitions back",
        WAIT,
        || (member_owned(&s1.stdout()) == Some(s1_owned.clone())).then_some(()),
        || s1.stdout(),
    )?;
    // Records to every partition reach both members: the group works, and s2 has been polling
    // (so it would have seen a rebalance) all along.
    let values: Vec<String> = (0..80).map(|i| format!("static-{i}")).collect();
    kafka.produce_grpc("static", &values).await?;
    until(
        "s1 and s2 to read the 80 records",
        WAIT,
        || {
            let text = format!("{}{}", s1.stdout(), s2.stdout());
            values
                .iter()
                .all(|v| text.contains(&format!("\"{v}\"")))
                .then_some(())
        },
        || format!("s1: {}\ns2: {}", s1.stdout(), s2.stdout()),
    )?;
    assert_eq!(
        rebalance_events(&s2.stdout()),
        s2_events,
        "s2 saw a rebalance when s1 restarted: {}",
        s2.stdout()
    );
    close_member(s1)?;
    close_member(s2)?;
    Ok(())
}

// ---- kafka-python, and a group of the tributary CLI and confluent-kafka ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_round_trips_and_a_group_mixes_the_tributary_cli_with_confluent_kafka()
-> Result<()> {
    python()?;
    let kafka = Kafka::start("", "")?;
    let bootstrap = kafka.bootstrap();
    let out = run_python(
        "kafka_python.py",
        &[&bootstrap, "kafka-python", "3"],
        Duration::from_secs(180),
    )?;
    let steps: Vec<String> = json_lines(&out)
        .iter()
        .filter_map(|v| v["step"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(steps, ["admin", "produce", "consume", "group"], "{out}");
    assert!(done_line(&out).is_ok(), "{out}");

    // One member on the tributary CLI (gRPC), one on confluent-kafka (Kafka protocol).
    kafka.topic("mixed", 4, &[]).await?;
    let cli = bin_dir()?.join("tributary");
    let mut command = std::process::Command::new(&cli);
    command
        .args([
            "console-consumer",
            "--bootstrap-server",
            kafka.any_broker(),
            "--topic",
            "mixed",
            "--group",
            "mixed-group",
            "--from-beginning",
        ])
        .stdin(std::process::Stdio::null());
    let cli_member = Background::spawn(command, "tributary console-consumer --group".into())?;
    let python_member = spawn_python("group_member.py", &[&bootstrap, "mixed-group", "mixed"])?;
    // The confluent-kafka member owning 2 of 4 partitions means the CLI member owns the others.
    until(
        "the confluent-kafka member to own 2 of the 4 partitions",
        WAIT,
        || (member_owned(&python_member.stdout())?.len() == 2).then_some(()),
        || format!("{}\nCLI: {}", python_member.stdout(), cli_member.stderr()),
    )?;
    let values: Vec<String> = (0..400).map(|i| format!("mixed-{i}")).collect();
    kafka.produce_grpc("mixed", &values).await?;
    let read = || {
        let mut all: Vec<String> = member_records(&python_member.stdout())
            .into_iter()
            .map(|(_, _, v)| v)
            .collect();
        all.extend(cli_member.stdout().lines().map(str::to_owned));
        all
    };
    until(
        "the two members to read the 400 records",
        WAIT,
        || (read().len() >= values.len()).then_some(()),
        || format!("{} read", read().len()),
    )?;
    let python_read = member_records(&python_member.stdout()).len();
    let cli_finished = cli_member.stop(Signal::Term, WAIT)?;
    let python_out = close_member(python_member)?;
    let cli_out = cli_finished.success()?;
    let mut all: Vec<String> = member_records(&python_out)
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    all.extend(cli_out.lines().map(str::to_owned));
    all.sort();
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(
        all, expected,
        "each record delivered once, to one of the two members"
    );
    assert!(
        python_read > 0 && cli_out.lines().count() > 0,
        "both members read records (confluent-kafka {python_read})"
    );
    Ok(())
}
