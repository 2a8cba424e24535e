//! The `tributary` command-line tool against 3 coordinators and 3 brokers (real processes):
//! the seed's first hands-on lab as written (create, describe, console producer, console
//! consumer --from-beginning), and the precise errors and exit codes of bad input.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tributary_tests::harness::{Cluster, NodeKind, bin_dir};

fn tributary(args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let program = bin_dir()?.join("tributary");
    let mut child = Command::new(&program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
    }
    // Every invocation ends by itself (the tool's waits are bounded); a hang is killed after
    // 60 s and reported with what the tool printed.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let out = waiter.join().expect("waiter thread")?;
        anyhow::bail!(
            "`tributary {}` did not finish within 60 s; stderr: {}",
            args.join(" "),
            text(&out.stderr)
        );
    }
    Ok(waiter.join().expect("waiter thread")?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_first_lab_works_with_only_the_program_name_changed() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(3).brokers(3).start()?;
    let brokers: BTreeMap<u64, String> = cluster
        .of_kind(NodeKind::Broker)
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    let bootstrap = brokers[&1].clone();

    let out = tributary(
        &[
            "topics",
            "--create",
            "--bootstrap-server",
            &bootstrap,
            "--replication-factor",
            "3",
            "--partitions",
            "6",
            "--topic",
            "inventory_purchases",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Created topic inventory_purchases.\n");

    // Describe: Kafka's layout, 6 partitions, 3 replicas each, a full ISR, leaders on every
    // broker.
    let describe = common::eventually(
        "a full ISR on every partition",
        Duration::from_secs(30),
        || {
            let bootstrap = bootstrap.clone();
            async move {
                let out = tributary(
                    &[
                        "topics",
                        "--describe",
                        "--bootstrap-server",
                        &bootstrap,
                        "--topic",
                        "inventory_purchases",
                    ],
                    None,
                )
                .ok()?;
                let stdout = text(&out.stdout);
                let full = stdout.lines().filter(|l| l.starts_with('\t')).all(|l| {
                    l.split('\t')
                        .find_map(|f| f.strip_prefix("Isr: "))
                        .is_some_and(|isr| isr.split(',').count() == 3)
                });
                (out.status.success() && full).then_some(stdout)
            }
        },
    )
    .await?;
    let mut lines = describe.lines();
    let header: Vec<&str> = lines.next().context("a topic line")?.split('\t').collect();
    assert_eq!(header[0], "Topic: inventory_purchases");
    assert_eq!(header[1].strip_prefix("TopicId: ").map(str::len), Some(22));
    assert_eq!(header[2], "PartitionCount: 6");
    assert_eq!(header[3], "ReplicationFactor: 3");
    assert_eq!(header[4], "Configs: ");
    let mut leaders = std::collections::BTreeSet::new();
    let partitions: Vec<&str> = lines.collect();
    assert_eq!(partitions.len(), 6, "{describe}");
    for (i, line) in partitions.iter().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], "");
        assert_eq!(fields[1], "Topic: inventory_purchases");
        assert_eq!(fields[2], format!("Partition: {i}"));
        leaders.insert(
            fields[3]
                .strip_prefix("Leader: ")
                .context("leader")?
                .to_owned(),
        );
        assert_eq!(
            fields[4]
                .strip_prefix("Replicas: ")
                .map(|r| r.split(',').count()),
            Some(3)
        );
        assert_eq!(
            fields[5]
                .strip_prefix("Isr: ")
                .map(|r| r.split(',').count()),
            Some(3)
        );
    }
    assert_eq!(leaders.len(), 3, "leaders on all three brokers: {describe}");

    let out = tributary(
        &[
            "console-producer",
            "--broker-list",
            &bootstrap,
            "--topic",
            "inventory_purchases",
        ],
        Some("product: apples, quantity: 5\nproduct: lemons, quantity: 7\n"),
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "",
        "no prompt when stdin is not a terminal"
    );

    let out = tributary(
        &[
            "console-consumer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "inventory_purchases",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "20000",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut got: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "product: apples, quantity: 5",
            "product: lemons, quantity: 7"
        ]
    );
    assert!(text(&out.stderr).contains("Processed a total of 2 messages"));

    // The formatter's fields, tab-separated, as Kafka prints them.
    let out = tributary(
        &[
            "console-consumer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "inventory_purchases",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "20000",
            "--property",
            "print.partition=true",
            "--property",
            "print.offset=true",
            "--property",
            "print.key=true",
        ],
        None,
    )?;
    for line in text(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        ensure!(fields.len() == 4, "4 fields: {line}");
        assert!(fields[0].starts_with("Partition:"));
        assert!(fields[1].starts_with("Offset:"), "{line}");
        assert_eq!(fields[2], "null");
    }

    // The seed's second lab: consumer groups. A group reads from the beginning once and
    // commits; a second run of the same group gets nothing more (--from-beginning applies only
    // while the group has no committed offset).
    let group_read = |bootstrap: String| {
        tributary(
            &[
                "console-consumer",
                "--bootstrap-server",
                &bootstrap,
                "--topic",
                "inventory_purchases",
                "--group",
                "lab2",
                "--from-beginning",
                "--timeout-ms",
                "8000",
            ],
            None,
        )
    };
    let out = group_read(bootstrap.clone())?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut got: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "product: apples, quantity: 5",
            "product: lemons, quantity: 7"
        ],
        "the group's first read: {}",
        text(&out.stderr)
    );
    let out = group_read(bootstrap.clone())?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "the group's offsets were committed");

    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--list",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lab2\n");
    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--describe",
            "--group",
            "lab2",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let described = text(&out.stdout);
    assert!(
        described.contains("Consumer group 'lab2' has no active members."),
        "{described}"
    );
    let rows: Vec<Vec<&str>> = described
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("Consumer group"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]
    );
    let mut total_end = 0;
    for row in &rows[1..] {
        assert_eq!(row.len(), 9, "{row:?}");
        assert_eq!(row[0], "lab2");
        assert_eq!(row[3], row[4], "committed up to the end: {row:?}");
        assert_eq!(row[5], "0", "no lag: {row:?}");
        assert_eq!(&row[6..], ["-", "-", "-"], "no member: {row:?}");
        total_end += row[4].parse::<i64>()?;
    }
    assert_eq!(total_end, 2, "{described}");
    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--describe",
            "--group",
            "lab2",
            "--state",
        ],
        None,
    )?;
    let state = text(&out.stdout);
    assert!(
        state.contains("ASSIGNMENT-STRATEGY") && state.contains("Empty"),
        "{state}"
    );

    // Reset to the earliest offsets: the group reads everything again.
    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--reset-offsets",
            "--group",
            "lab2",
            "--topic",
            "inventory_purchases",
            "--to-earliest",
            "--execute",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("NEW-OFFSET"),
        "{}",
        text(&out.stdout)
    );
    let out = group_read(bootstrap.clone())?;
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "read again after the reset"
    );
    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--delete",
            "--group",
            "lab2",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("Deletion of requested consumer groups ('lab2') was successful.")
    );
    let out = tributary(
        &[
            "consumer-groups",
            "--bootstrap-server",
            &bootstrap,
            "--describe",
            "--group",
            "lab2",
        ],
        None,
    )?;
    assert!(!out.status.success(), "a deleted group does not exist");
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    // Bad input: one line on stderr, a non-zero exit.
    let out = tributary(
        &[
            "console-consumer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "no_such_topic",
            "--timeout-ms",
            "1000",
        ],
        None,
    )?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        text(&out.stderr)
    );
    let out = tributary(
        &[
            "topics",
            "--create",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "inventory_purchases",
        ],
        None,
    )?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("TOPIC_ALREADY_EXISTS"));
    let out = tributary(
        &[
            "console-producer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "inventory_purchases",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some("k:v\nno separator here\n"),
    )?;
    assert!(!out.status.success(), "a rejected line fails the run");
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    let out = tributary(&["topics", "--list"], None)?;
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let unreachable = format!("127.0.0.1:{}", tributary_tests::harness::free_ports(1)?[0]);
    let out = tributary(
        &["topics", "--list", "--bootstrap-server", &unreachable],
        None,
    )?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&unreachable),
        "names the address: {}",
        text(&out.stderr)
    );
    Ok(())
}

/// `--producer-property acks=1` (and `acks=0`) works as in Kafka: idempotence, on by default,
/// gives way to an acks other than `all`; only an explicit `enable.idempotence=true` with it is
/// refused, with a message naming both settings. What each produced is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_producer_takes_acks_1_as_kafka_does() -> Result<()> {
    let mut cluster = Cluster::builder().coordinators(1).brokers(1).start()?;
    let bootstrap = common::first_broker(&mut cluster)?;
    let out = tributary(
        &[
            "topics",
            "--create",
            "--bootstrap-server",
            &bootstrap,
            "--replication-factor",
            "1",
            "--partitions",
            "1",
            "--topic",
            "acks",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (acks, line) in [("1", "with acks=1"), ("0", "with acks=0")] {
        let out = tributary(
            &[
                "console-producer",
                "--bootstrap-server",
                &bootstrap,
                "--topic",
                "acks",
                "--producer-property",
                &format!("acks={acks}"),
            ],
            Some(&format!("{line}\n")),
        )?;
        assert!(
            out.status.success(),
            "acks={acks} without enable.idempotence: {}",
            text(&out.stderr)
        );
    }
    let out = tributary(
        &[
            "console-producer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "acks",
            "--producer-property",
            "acks=1",
            "--producer-property",
            "enable.idempotence=true",
        ],
        Some("never sent\n"),
    )?;
    assert!(
        !out.status.success(),
        "the explicit contradiction is refused"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("enable.idempotence=true contradicts acks=1"),
        "{stderr}"
    );

    let out = tributary(
        &[
            "console-consumer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "acks",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "20000",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "with acks=1\nwith acks=0\n");
    Ok(())
}

/// `tributary dump-log` over segment files the storage engine wrote: every batch's header line
/// (offsets, producer id, epoch and sequences, leader epoch) and with `--print-data-log` every
/// record; a file that is not a segment, or whose tail is torn, fails with the path and the
/// position, after printing what could be read.
#[test]
fn dump_log_prints_the_batches_of_a_segment_as_kafka_dump_log_does() -> Result<()> {
    use tributary_storage::{Log, LogConfig, LogResources};
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig::default(), LogResources::new(4))?;
    let mut idempotent = tributary_record::BatchBuilder::new(1_000).producer(7, 2, 40);
    idempotent.push(1_000, Some(b"k"), Some(b"first"), &[]);
    idempotent.push(1_001, None, Some(b"second"), &[]);
    log.append_as_leader(&idempotent.build(), 5)?;
    let mut plain = tributary_record::BatchBuilder::new(2_000);
    plain.push(2_000, None, Some(b"third"), &[]);
    log.append_as_leader(&plain.build(), 6)?;
    log.close()?;
    let segment = dir.path().join(format!("{:020}.log", 0));
    let segment = segment.to_str().context("utf-8 path")?;

    let out = tributary(&["dump-log", "--files", segment], None)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("Dumping {segment}"));
    assert_eq!(lines[1], "Log starting offset: 0");
    assert!(
        lines[2].starts_with(
            "baseOffset: 0 lastOffset: 1 count: 2 baseSequence: 40 lastSequence: 41 \
             producerId: 7 producerEpoch: 2 partitionLeaderEpoch: 5 isTransactional: false \
             isControl: false position: 8 CreateTime: 1001 "
        ),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with(
            "baseOffset: 2 lastOffset: 2 count: 1 baseSequence: -1 lastSequence: -1 \
             producerId: -1 producerEpoch: -1 partitionLeaderEpoch: 6 "
        ),
        "{stdout}"
    );
    assert_eq!(lines.len(), 4, "{stdout}");

    let out = tributary(&["dump-log", "--print-data-log", "--files", segment], None)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "| offset: 0 CreateTime: 1000 keySize: 1 valueSize: 5 sequence: 40 headerKeys: [] key: k payload: first\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("| offset: 1 CreateTime: 1001 keySize: -1 valueSize: 6 sequence: 41"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| offset: 2 CreateTime: 2000 keySize: -1 valueSize: 5 sequence: -1"),
        "{stdout}"
    );

    // A torn tail: the first batch is printed, then the failure with the position.
    let len = std::fs::metadata(segment)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment)?
        .set_len(len - 3)?;
    let out = tributary(&["dump-log", "--files", segment], None)?;
    assert!(!out.status.success(), "a torn batch fails the run");
    assert!(text(&out.stdout).contains("baseOffset: 0 lastOffset: 1"));
    assert!(!text(&out.stdout).contains("baseOffset: 2"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(segment) && stderr.contains("corrupt batch at position"),
        "{stderr}"
    );

    // Not a segment file at all.
    let index = dir.path().join(format!("{:020}.index", 0));
    let out = tributary(
        &["dump-log", "--files", index.to_str().context("utf-8")?],
        None,
    )?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad magic"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}
