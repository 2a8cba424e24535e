//! `tributary console-producer` and `tributary console-consumer`: Kafka's console tools.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::io::AsyncBufReadExt;
use tributary_client::{
    ClientError, Consumer, Offset, Producer, ProducerRecord, Properties, TopicPartition,
};

use crate::add_pairs;

#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "broker_list"
    )]
    bootstrap_server: Option<String>,
    /// The same as --bootstrap-server (the older name).
    #[arg(long, value_name = "HOST:PORT")]
    broker_list: Option<String>,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Reader settings: parse.key=true, key.separator=S.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Any producer setting by Kafka's name (repeatable).
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
}

pub async fn produce(args: ProducerArgs) -> Result<ExitCode, ClientError> {
    let bootstrap = args
        .bootstrap_server
        .or(args.broker_list)
        .unwrap_or_default();
    let mut parse_key = false;
    let mut separator = "\t".to_owned();
    for pair in &args.properties {
        let (k, v) = Properties::parse_pair(pair)?;
        match k.as_str() {
            "parse.key" => parse_key = v == "true",
            "key.separator" => separator = v,
            "ignore.error" => {}
            other => {
                return Err(ClientError::Config(format!(
                    "unknown --property `{other}` (known: parse.key, key.separator)"
                )));
            }
        }
    }
    let mut props = Properties::new()
        .set("bootstrap.servers", bootstrap)
        .set("request.timeout.ms", crate::TOOL_TIMEOUT_MS);
    add_pairs(&mut props, &args.producer_properties)?;
    let producer = Producer::new(&props).await?;
    // Fail fast on an unknown topic rather than at the first line.
    producer.partitions_for(&args.topic).await?;

    let interactive = std::io::stdin().is_terminal();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut deliveries = Vec::new();
    let mut failed = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut number = 0usize;
    loop {
        if interactive {
            eprint!(">");
            let _ = std::io::stderr().flush();
        }
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(err) => {
                errors.push(format!("reading stdin: {err}"));
                failed += 1;
                break;
            }
        };
        number += 1;
        let mut record = ProducerRecord::new(args.topic.clone(), Bytes::new());
        if parse_key {
            match line.split_once(separator.as_str()) {
                Some((key, value)) => {
                    record.key = Some(Bytes::copy_from_slice(key.as_bytes()));
                    record.value = Some(Bytes::copy_from_slice(value.as_bytes()));
                }
                None => {
                    eprintln!(
                        "Error: line {number} has no key separator `{}`: {line}",
                        separator.escape_debug()
                    );
                    failed += 1;
                    continue;
                }
            }
        } else {
            record.value = Some(Bytes::from(line.into_bytes()));
        }
        match producer.send(record).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(err) => {
                failed += 1;
                errors.push(err.to_string());
            }
        }
    }
    producer.flush().await;
    for delivery in deliveries {
        if let Err(err) = delivery.await {
            failed += 1;
            errors.push(err.to_string());
        }
    }
    producer.close().await;
    if failed > 0 {
        errors.sort();
        errors.dedup();
        eprintln!(
            "Error: {failed} of {number} records were not acknowledged{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ConsumerArgs {
    /// Brokers to bootstrap from: HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Start from the oldest record rather than only new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// With --partition: an offset, `earliest` or `latest`.
    #[arg(long, requires = "partition")]
    offset: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Consume as a member of this consumer group, committing as it goes (--from-beginning
    /// then applies only while the group has no committed offset, as in Kafka).
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// Any consumer setting by Kafka's name (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
    /// Formatter settings: print.key, print.partition, print.offset, print.timestamp,
    /// key.separator.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
}

#[derive(Debug, Default)]
struct Format {
    key: bool,
    partition: bool,
    offset: bool,
    timestamp: bool,
    separator: String,
}

pub async fn consume(args: ConsumerArgs) -> Result<ExitCode, ClientError> {
    let mut format = Format {
        separator: "\t".into(),
        ..Format::default()
    };
    for pair in &args.properties {
        let (k, v) = Properties::parse_pair(pair)?;
        let on = v == "true";
        match k.as_str() {
            "print.key" => format.key = on,
            "print.partition" => format.partition = on,
            "print.offset" => format.offset = on,
            "print.timestamp" => format.timestamp = on,
            "key.separator" => format.separator = v,
            "print.value" | "line.separator" => {}
            other => {
                return Err(ClientError::Config(format!(
                    "unknown --property `{other}` (known: print.key, print.partition, print.offset, print.timestamp, key.separator)"
                )));
            }
        }
    }
    let mut props = Properties::new()
        .set("bootstrap.servers", &args.bootstrap_server)
        .set("request.timeout.ms", crate::TOOL_TIMEOUT_MS);
    if let Some(group) = &args.group {
        props.insert("group.id", group.clone());
        props.insert(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    }
    add_pairs(&mut props, &args.consumer_properties)?;
    let mut consumer = Consumer::new(&props).await?;
    let topic = wait_for_topic(&consumer, &args.topic).await?;
    if args.group.is_some() {
        consumer.subscribe(vec![args.topic.clone()])?;
        let outcome = print_records(&mut consumer, &args, &format).await;
        let closed = consumer.close().await;
        return outcome.and(closed.map(|()| ExitCode::SUCCESS));
    }
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) => {
            if p < 0 || p as usize >= topic {
                return Err(ClientError::broker(
                    tributary_client::ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "topic `{}` has {topic} partitions; {p} does not exist",
                        args.topic
                    ),
                ));
            }
            vec![TopicPartition::new(args.topic.clone(), p)]
        }
        None => (0..topic as i32)
            .map(|p| TopicPartition::new(args.topic.clone(), p))
            .collect(),
    };
    consumer.assign(partitions.clone());
    let start = match args.offset.as_deref() {
        Some("earliest") => Offset::Beginning,
        Some("latest") => Offset::End,
        Some(n) => Offset::At(n.parse().map_err(|_| {
            ClientError::Config(format!(
                "--offset `{n}` is not a number, earliest or latest"
            ))
        })?),
        None if args.from_beginning => Offset::Beginning,
        None => Offset::End,
    };
    for tp in &partitions {
        consumer.seek(tp, start).await?;
    }
    print_records(&mut consumer, &args, &format).await
}

/// Polls and prints until --max-messages, --timeout-ms of silence, Ctrl-C or SIGTERM.
async fn print_records(
    consumer: &mut Consumer,
    args: &ConsumerArgs,
    format: &Format,
) -> Result<ExitCode, ClientError> {
    let mut count: u64 = 0;
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = tokio::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClientError::Config(format!("cannot listen for SIGTERM: {e}")))?;
    let outcome: Result<(), ClientError> = 'run: loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break Ok(());
        }
        let wait = idle.map_or(Duration::from_millis(500), |i| {
            i.saturating_sub(last_record.elapsed())
                .min(Duration::from_millis(500))
        });
        let records = tokio::select! {
            r = consumer.poll(wait) => r,
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        };
        let records = match records {
            Ok(r) => r,
            Err(err) => break Err(err),
        };
        if records.is_empty() {
            if idle.is_some_and(|i| last_record.elapsed() >= i) {
                break Ok(());
            }
            continue;
        }
        last_record = tokio::time::Instant::now();
        for r in records {
            let mut line = Vec::new();
            let sep = format.separator.as_bytes();
            if format.timestamp {
                let kind = if r.log_append_time {
                    "LogAppendTime"
                } else {
                    "CreateTime"
                };
                line.extend_from_slice(format!("{kind}:{}", r.timestamp).as_bytes());
                line.extend_from_slice(sep);
            }
            if format.partition {
                line.extend_from_slice(format!("Partition:{}", r.partition).as_bytes());
                line.extend_from_slice(sep);
            }
            if format.offset {
                line.extend_from_slice(format!("Offset:{}", r.offset).as_bytes());
                line.extend_from_slice(sep);
            }
            if format.key {
                match &r.key {
                    Some(k) => line.extend_from_slice(k),
                    None => line.extend_from_slice(b"null"),
                }
                line.extend_from_slice(sep);
            }
            match &r.value {
                Some(v) => line.extend_from_slice(v),
                None => line.extend_from_slice(b"null"),
            }
            line.push(b'\n');
            if stdout.write_all(&line).is_err() {
                break 'run Ok(()); // stdout closed (e.g. piped into head)
            }
            count += 1;
            if args.max_messages.is_some_and(|m| count >= m) {
                break;
            }
        }
        if stdout.flush().is_err() {
            break Ok(());
        }
    };
    eprintln!("Processed a total of {count} messages");
    outcome.map(|()| ExitCode::SUCCESS)
}

/// The partition count of `topic`, waiting a bounded time for it to exist.
async fn wait_for_topic(consumer: &Consumer, topic: &str) -> Result<usize, ClientError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match consumer.cluster().topic(topic).await {
            Ok(t) if !t.partitions.is_empty() => return Ok(t.partitions.len()),
            Ok(_) => {}
            Err(err) if tokio::time::Instant::now() >= deadline || !err.is_retriable() => {
                return Err(err);
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClientError::broker(
                tributary_client::ErrorCode::UnknownTopicOrPartition,
                format!("topic `{topic}` does not exist"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
