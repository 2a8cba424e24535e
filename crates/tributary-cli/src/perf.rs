//! `tributary producer-perf-test` and `tributary consumer-perf-test`: Kafka's performance
//! tools, with Kafka's output lines.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;
use tributary_client::{
    ClientError, Consumer, DeliveryFuture, Offset, Producer, ProducerRecord, Properties,
    TopicPartition,
};

use crate::add_pairs;

#[derive(Debug, Args)]
pub struct ProducerPerfArgs {
    /// Brokers to bootstrap from (or bootstrap.servers in --producer-props).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: Option<String>,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Records to send.
    #[arg(long)]
    num_records: u64,
    /// Bytes per record value.
    #[arg(long)]
    record_size: usize,
    /// Records per second to aim at; -1: as fast as possible.
    #[arg(long, allow_negative_numbers = true)]
    throughput: f64,
    /// Producer settings by Kafka's names: k=v ...
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    producer_props: Vec<String>,
}

struct Stats {
    start: Instant,
    count: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    window_start: Instant,
    window_count: u64,
    window_bytes: u64,
    window_latency_us: u64,
    window_max_us: u32,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn record(&mut self, latency: Duration, bytes: usize) {
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        self.count += 1;
        self.bytes += bytes as u64;
        self.latencies_us.push(us);
        self.window_count += 1;
        self.window_bytes += bytes as u64;
        self.window_latency_us += u64::from(us);
        self.window_max_us = self.window_max_us.max(us);
        if self.window_start.elapsed() >= Duration::from_secs(5) {
            let secs = self.window_start.elapsed().as_secs_f64();
            eprintln!(
                "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                self.window_count,
                self.window_count as f64 / secs,
                self.window_bytes as f64 / secs / (1024.0 * 1024.0),
                self.window_latency_us as f64 / self.window_count.max(1) as f64 / 1000.0,
                f64::from(self.window_max_us) / 1000.0
            );
            self.window_start = Instant::now();
            self.window_count = 0;
            self.window_bytes = 0;
            self.window_latency_us = 0;
            self.window_max_us = 0;
        }
    }
}

pub async fn producer(args: ProducerPerfArgs) -> Result<ExitCode, ClientError> {
    let mut props = Properties::new();
    if let Some(b) = &args.bootstrap_server {
        props.insert("bootstrap.servers", b.clone());
    }
    add_pairs(&mut props, &args.producer_props)?;
    let producer = Producer::new(&props).await?;
    producer.partitions_for(&args.topic).await?;
    let payload = Bytes::from(
        (0..args.record_size)
            .map(|i| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26])
            .collect::<Vec<u8>>(),
    );
    let (tx, mut rx) = mpsc::channel::<(Instant, DeliveryFuture)>(100_000);
    let record_size = args.record_size;
    let collector = tokio::spawn(async move {
        let now = Instant::now();
        let mut stats = Stats {
            start: now,
            count: 0,
            bytes: 0,
            latencies_us: Vec::new(),
            window_start: now,
            window_count: 0,
            window_bytes: 0,
            window_latency_us: 0,
            window_max_us: 0,
            errors: 0,
            first_error: None,
        };
        while let Some((sent, delivery)) = rx.recv().await {
            match delivery.await {
                Ok(_) => stats.record(sent.elapsed(), record_size),
                Err(err) => {
                    stats.errors += 1;
                    stats.first_error.get_or_insert_with(|| err.to_string());
                }
            }
        }
        stats
    });
    let start = Instant::now();
    for i in 0..args.num_records {
        if args.throughput > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.throughput);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let sent = Instant::now();
        let delivery = producer
            .send(ProducerRecord::new(args.topic.clone(), payload.clone()))
            .await?;
        if tx.send((sent, delivery)).await.is_err() {
            break;
        }
    }
    drop(tx);
    producer.flush().await;
    let mut stats = collector
        .await
        .map_err(|e| ClientError::Protocol(format!("collector failed: {e}")))?;
    producer.close().await;
    let secs = stats.start.elapsed().as_secs_f64();
    stats.latencies_us.sort_unstable();
    let pct = |p: f64| -> u64 {
        if stats.latencies_us.is_empty() {
            return 0;
        }
        let i = ((stats.latencies_us.len() as f64 * p) as usize).min(stats.latencies_us.len() - 1);
        u64::from(stats.latencies_us[i]) / 1000
    };
    let avg = stats
        .latencies_us
        .iter()
        .map(|&l| u64::from(l))
        .sum::<u64>() as f64
        / stats.latencies_us.len().max(1) as f64
        / 1000.0;
    let max = stats.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
    println!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {avg:.2} ms avg latency, {max:.2} ms max latency, {} ms 50th, {} ms 95th, {} ms 99th, {} ms 99.9th.",
        stats.count,
        stats.count as f64 / secs,
        stats.bytes as f64 / secs / (1024.0 * 1024.0),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(0.999)
    );
    if stats.errors > 0 {
        eprintln!(
            "Error: {} records failed: {}",
            stats.errors,
            stats.first_error.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ConsumerPerfArgs {
    /// Brokers to bootstrap from.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Records to consume.
    #[arg(long)]
    messages: u64,
    /// Give up when no record arrives for this long (ms).
    #[arg(long, default_value_t = 10_000)]
    timeout: u64,
    /// Consumer settings by Kafka's names: k=v ...
    #[arg(long = "consumer-props", num_args = 1.., value_name = "KEY=VALUE")]
    consumer_props: Vec<String>,
}

pub async fn consumer(args: ConsumerPerfArgs) -> Result<ExitCode, ClientError> {
    let mut props = Properties::new().set("bootstrap.servers", &args.bootstrap_server);
    add_pairs(&mut props, &args.consumer_props)?;
    let mut consumer = Consumer::new(&props).await?;
    let topic = consumer.cluster().topic(&args.topic).await?;
    let partitions: Vec<TopicPartition> = (0..topic.partitions.len() as i32)
        .map(|p| TopicPartition::new(args.topic.clone(), p))
        .collect();
    consumer.assign(partitions.clone());
    for tp in &partitions {
        consumer.seek(tp, Offset::Beginning).await?;
    }
    let start = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut last = Instant::now();
    while count < args.messages {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            if last.elapsed() > Duration::from_millis(args.timeout) {
                eprintln!(
                    "WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded.",
                    args.timeout
                );
                break;
            }
            continue;
        }
        last = Instant::now();
        for r in records {
            count += 1;
            bytes += (r.value.as_ref().map_or(0, |v| v.len())
                + r.key.as_ref().map_or(0, |k| k.len())) as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec");
    println!(
        "{:.3}, {:.3}, {mb:.4}, {:.4}, {count}, {:.4}",
        0.0,
        secs,
        mb / secs,
        count as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}
