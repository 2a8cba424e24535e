//! The producer: records are added to a per-partition batch (`batch.size`, `linger.ms`),
//! batches are sent to each partition's leader by a background task, one request in flight per
//! partition (so order is kept) and at most `max.in.flight.requests.per.connection` per broker,
//! retried in place on retriable errors until `delivery.timeout.ms`. With idempotence (the
//! default) each batch carries the producer id, epoch and sequence, so a retry is never
//! written twice.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tributary_proto::broker::v1 as pb;
use tributary_proto::common::v1::ErrorCode;
use tributary_record::BatchBuilder;

use crate::TopicPartition;
use crate::cluster::Cluster;
use crate::config::{ProducerConfig, Properties};
use crate::error::{ClientError, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// A partition chosen by the application (else the partitioner decides).
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Timestamp in ms (default: now).
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    /// A record with a value.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// To a given partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition.
    pub partition: i32,
    /// Offset (-1 with acks=0).
    pub offset: i64,
    /// The record's timestamp.
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged (or has failed for good).
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

struct Waiter {
    done: oneshot::Sender<Result<RecordMetadata>>,
    timestamp: i64,
    _permit: OwnedSemaphorePermit,
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    deadline: Instant,
    base_sequence: i32,
    waiters: Vec<Waiter>,
}

struct ReadyBatch {
    bytes: Bytes,
    deadline: Instant,
    attempts: u32,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
struct Queue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: bool,
    next_sequence: i32,
    retry_at: Option<Instant>,
    /// The producer id and epoch this partition's batches carry, when it differs from the
    /// producer's: after a batch failed for good the partition starts over (see [`Reset`]).
    producer: Option<(i64, i16)>,
    reset: Reset,
}

/// Where an idempotent partition stands after one of its batches failed for good (timed out,
/// or refused with a non-retriable error). The broker expects the failed batch's sequence next,
/// so every later batch would be refused as OUT_OF_ORDER_SEQUENCE_NUMBER: instead the partition
/// takes a fresh producer id and re-stamps its unsent batches from sequence 0 (the effect of
/// Kafka's epoch bump, KIP-360, for this partition alone). Nothing is sent meanwhile.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Reset {
    #[default]
    None,
    /// A batch failed; a new producer id is needed before the next send.
    Needed,
    /// The new producer id is being fetched.
    Fetching,
}

#[derive(Default)]
struct State {
    queues: HashMap<TopicPartition, Queue>,
    sticky: HashMap<String, i32>,
    flushing: bool,
}

struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    partitioner: Arc<dyn Partitioner>,
    /// Producer id and epoch (idempotence), or (-1, -1).
    producer: (i64, i16),
    buffer: Arc<Semaphore>,
    state: Mutex<State>,
    wake: Notify,
    /// Records sent and not yet completed (a plain counter: `send` is per record, and a watch
    /// channel would wake its waiters on every one).
    outstanding: AtomicUsize,
    /// Signalled when `outstanding` drops to zero (for `flush`).
    drained: Notify,
    closed: AtomicBool,
    /// Concurrent requests per broker address.
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Inner {
    /// The producer's id and epoch when it is idempotent.
    fn idempotence(&self) -> Option<(i64, i16)> {
        (self.producer.0 >= 0).then_some(self.producer)
    }
}

/// A producer. Cheap to share behind an `Arc`; `close` (or drop) stops its sender task.
pub struct Producer {
    inner: Arc<Inner>,
    sender: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("producer_id", &self.inner.producer)
            .finish_non_exhaustive()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// A producer from Kafka properties (`bootstrap.servers` required).
    pub async fn new(props: &Properties) -> Result<Self> {
        Self::with_partitioner(props, Arc::new(DefaultPartitioner)).await
    }

    /// A producer with the application's own partitioner.
    pub async fn with_partitioner(
        props: &Properties,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Self> {
        let config = ProducerConfig::from_properties(props)?;
        let cluster = Arc::new(Cluster::new(config.client.clone()));
        let producer = if config.enable_idempotence {
            init_producer_id(&cluster).await?
        } else {
            (-1, -1)
        };
        let inner = Arc::new(Inner {
            buffer: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            cluster,
            partitioner,
            producer,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            outstanding: AtomicUsize::new(0),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            in_flight: Mutex::new(HashMap::new()),
        });
        let sender = tokio::spawn(run_sender(inner.clone()));
        Ok(Self { inner, sender })
    }

    /// The partition count of `topic` (UNKNOWN_TOPIC_OR_PARTITION if it does not exist).
    pub async fn partitions_for(&self, topic: &str) -> Result<usize> {
        Ok(self.inner.cluster.topic(topic).await?.partitions.len())
    }

    /// The producer id and epoch (idempotence), or `None`.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        (self.inner.producer.0 >= 0).then_some(self.inner.producer)
    }

    /// Adds `record` to its partition's batch, waiting for room in `buffer.memory`; the
    /// returned future resolves when it is acknowledged or has failed for good.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let count = inner.cluster.partition_count(&record.topic).await? as i32;
        if count == 0 {
            return Err(ClientError::broker(
                ErrorCode::LeaderNotAvailable,
                format!("topic `{}` has no partitions yet", record.topic),
            ));
        }
        let size = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len())
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
            + 32;
        if size > inner.config.max_request_size {
            return Err(ClientError::broker(
                ErrorCode::MessageTooLarge,
                format!(
                    "the record is {size} bytes, more than max.request.size = {}",
                    inner.config.max_request_size
                ),
            ));
        }
        // Kafka accepts any buffer.memory and refuses, at send, a record that could never fit.
        if size > inner.config.buffer_memory {
            return Err(ClientError::broker(
                ErrorCode::MessageTooLarge,
                format!(
                    "the record is {size} bytes, more than buffer.memory = {}",
                    inner.config.buffer_memory
                ),
            ));
        }
        let permit = inner
            .buffer
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let explicit = match record.partition {
            Some(p) if p < 0 || p >= count => {
                return Err(ClientError::broker(
                    ErrorCode::UnknownTopicOrPartition,
                    format!(
                        "topic `{}` has {count} partitions; {p} does not exist",
                        record.topic
                    ),
                ));
            }
            Some(p) => Some(p),
            None => inner
                .partitioner
                .partition(&record.topic, record.key.as_deref(), count),
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let (tx, rx) = oneshot::channel();
        let config = &inner.config;
        // Counted before the record can reach a batch: the sender may send and complete it
        // before this function returns, and its completion must find it counted.
        inner.outstanding.fetch_add(1, Ordering::AcqRel);
        let wake = {
            let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let partition = match explicit {
                Some(p) => p,
                None => match state.sticky.get(&record.topic) {
                    // Sticky while the partition's batch is open; once the sender has taken it
                    // (linger.ms passed), the next batch goes to a new partition, as Kafka's
                    // sticky partitioner does on a new batch.
                    Some(&p)
                        if p < count
                            && state
                                .queues
                                .get(&TopicPartition::new(record.topic.clone(), p))
                                .is_some_and(|q| q.open.is_some()) =>
                    {
                        p
                    }
                    _ => {
                        let p = random_partition(count);
                        state.sticky.insert(record.topic.clone(), p);
                        p
                    }
                },
            };
            let tp = TopicPartition::new(record.topic.clone(), partition);
            let queue = state.queues.entry(tp).or_default();
            let full = queue.open.as_ref().is_some_and(|b| {
                !b.builder.is_empty() && b.builder.size_bytes() + size > config.batch_size
            });
            let mut closed_batch = false;
            if full {
                close_open(queue, inner.idempotence());
                closed_batch = true;
            }
            let mut opened = false;
            let batch = queue.open.get_or_insert_with(|| {
                opened = true;
                let now = Instant::now();
                let base_sequence = queue.next_sequence;
                let mut builder = BatchBuilder::new(timestamp);
                if config.compression != tributary_record::Compression::None {
                    builder = builder.compression(config.compression);
                }
                if inner.producer.0 >= 0 {
                    builder = builder.producer(inner.producer.0, inner.producer.1, base_sequence);
                }
                OpenBatch {
                    builder,
                    created: now,
                    deadline: now + config.delivery_timeout,
                    base_sequence,
                    waiters: Vec::new(),
                }
            });
            let headers: Vec<(&str, Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            batch.builder.push(
                timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            );
            batch.waiters.push(Waiter {
                done: tx,
                timestamp,
                _permit: permit,
            });
            if batch.builder.size_bytes() >= config.batch_size {
                close_open(queue, inner.idempotence());
                closed_batch = true;
            }
            if closed_batch && explicit.is_none() {
                // Kafka's sticky partitioner: a new batch, a new partition.
                state
                    .sticky
                    .insert(record.topic.clone(), random_partition(count));
            }
            opened || closed_batch
        };
        // The sender needs waking only for a new batch (a new linger deadline) or a closed one
        // (ready to send); a record joining an open batch changes neither.
        if wake {
            inner.wake.notify_one();
        }
        Ok(DeliveryFuture(rx))
    }

    /// Sends everything pending now (ignoring `linger.ms`) and waits until every record sent
    /// so far is acknowledged or has failed.
    pub async fn flush(&self) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushing = true;
        self.inner.wake.notify_one();
        loop {
            // Registered before the check, so a drain between the two is not missed.
            let drained = self.inner.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.inner.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            drained.await;
        }
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushing = false;
    }

    /// Flushes, then stops the producer.
    pub async fn close(self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// A new producer id and epoch from any broker (Kafka's InitProducerId).
async fn init_producer_id(cluster: &Arc<Cluster>) -> Result<(i64, i16)> {
    let response = cluster
        .any(|address| {
            let cluster = cluster.clone();
            async move {
                let mut client = cluster
                    .broker(&address)
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                Ok(client
                    .init_producer_id(pb::InitProducerIdRequest::default())
                    .await?
                    .into_inner())
            }
        })
        .await?;
    if let Some(err) = ClientError::from_wire(&response.error) {
        return Err(err);
    }
    Ok((response.producer_id, response.producer_epoch as i16))
}

/// `base + count`, wrapping at `i32::MAX` as Kafka's sequences do.
fn next_sequence(base: i32, count: i32) -> i32 {
    ((i64::from(base) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Marks an idempotent partition whose batch just failed for good as needing a fresh producer
/// id before its next send ([`Reset`]). A reset already under way is left alone: it re-stamps
/// every batch still queued when the new id arrives, this one's successors included. (Starting
/// a second one would let it re-stamp a batch the first one's id had meanwhile sent, and a
/// retry of that batch under another id would be appended twice.)
fn sequence_broken(idempotent: bool, queue: &mut Queue) {
    if idempotent && queue.reset == Reset::None {
        queue.reset = Reset::Needed;
    }
}

/// Gives `tp` a fresh producer id and re-stamps its unsent batches from sequence 0.
async fn restart_sequence(inner: Arc<Inner>, tp: TopicPartition) {
    let fresh = match init_producer_id(&inner.cluster).await {
        Ok(fresh) => fresh,
        Err(err) => {
            tracing::warn!(partition = %tp, error = %err, "no new producer id yet; retrying");
            tokio::time::sleep(inner.config.client.retry_backoff).await;
            if let Some(queue) = lock(&inner.state).queues.get_mut(&tp) {
                queue.reset = Reset::Needed;
            }
            inner.wake.notify_one();
            return;
        }
    };
    let restamped = {
        let mut state = lock(&inner.state);
        let Some(queue) = state.queues.get_mut(&tp) else {
            return;
        };
        restamp(queue, fresh)
    };
    if restamped {
        tracing::info!(partition = %tp, producer_id = fresh.0, "a batch failed for good: the partition's sequence starts over under a new producer id");
    } else {
        tokio::time::sleep(inner.config.client.retry_backoff).await;
    }
    inner.wake.notify_one();
}

/// Re-stamps the queued batches of a partition whose reset is being fetched with `fresh`'s id
/// and epoch from sequence 0, and ends the reset. Refuses unless every queued batch is unsent
/// and none is in flight: a batch the broker may hold under its old id must keep that id, or
/// its retry would be appended again. A refused reset is asked for again (`Needed`); sent
/// batches leave the queue by their answer or their delivery timeout. Cannot happen while
/// [`sequence_broken`] starts one reset at a time; checked all the same.
fn restamp(queue: &mut Queue, fresh: (i64, i16)) -> bool {
    if queue.reset != Reset::Fetching
        || queue.in_flight
        || queue.ready.iter().any(|b| b.attempts > 0)
    {
        tracing::error!(
            reset = ?queue.reset,
            in_flight = queue.in_flight,
            "a producer-id reset found a sent batch in its queue; not re-stamping it"
        );
        queue.reset = Reset::Needed;
        return false;
    }
    let mut sequence = 0;
    for batch in &mut queue.ready {
        let mut patched = batch.bytes.to_vec();
        tributary_record::set_producer(&mut patched, fresh.0, fresh.1, sequence);
        batch.bytes = Bytes::from(patched);
        sequence = next_sequence(sequence, batch.waiters.len() as i32);
    }
    queue.next_sequence = sequence;
    queue.producer = Some(fresh);
    queue.reset = Reset::None;
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_partition(count: i32) -> i32 {
    (uuid::Uuid::new_v4().as_u128() % count.max(1) as u128) as i32
}

/// Seals the open batch. `producer`: the producer's id and epoch when idempotent.
fn close_open(queue: &mut Queue, producer: Option<(i64, i16)>) {
    if let Some(batch) = queue.open.take() {
        let count = batch.waiters.len() as i32;
        let mut bytes = batch.builder.build();
        if let Some(producer) = producer {
            let base = queue.next_sequence;
            if queue.producer.is_some() || batch.base_sequence != base {
                // The partition started over while the batch was open.
                let (id, epoch) = queue.producer.unwrap_or(producer);
                let mut patched = bytes.to_vec();
                tributary_record::set_producer(&mut patched, id, epoch, base);
                bytes = Bytes::from(patched);
            }
            queue.next_sequence = next_sequence(base, count);
        }
        queue.ready.push_back(ReadyBatch {
            bytes,
            deadline: batch.deadline,
            attempts: 0,
            waiters: batch.waiters,
        });
    }
}

/// One partition's batch in a request being sent.
struct InFlight {
    tp: TopicPartition,
    bytes: Bytes,
}

async fn run_sender(inner: Arc<Inner>) {
    loop {
        let now = Instant::now();
        let mut next_wake = now + Duration::from_millis(100);
        let mut by_leader: HashMap<String, Vec<InFlight>> = HashMap::new();
        let mut need_metadata = Vec::new();
        {
            let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let flushing = state.flushing;
            let idempotent = inner.idempotence();
            for (tp, queue) in state.queues.iter_mut() {
                if let Some(open) = &queue.open {
                    let due = open.created + inner.config.linger;
                    if flushing || due <= now {
                        close_open(queue, idempotent);
                    } else {
                        next_wake = next_wake.min(due);
                    }
                }
                // Batches past their delivery timeout fail (only when none is in flight, so
                // a late answer cannot complete them twice).
                while !queue.in_flight && queue.ready.front().is_some_and(|b| b.deadline <= now) {
                    let batch = queue.ready.pop_front().expect("checked");
                    complete_err(
                        &inner,
                        batch,
                        ClientError::Timeout(format!(
                            "{tp}: not acknowledged within delivery.timeout.ms ({} ms)",
                            inner.config.delivery_timeout.as_millis()
                        )),
                    );
                    sequence_broken(idempotent.is_some(), queue);
                }
                if queue.in_flight || queue.ready.is_empty() {
                    continue;
                }
                match queue.reset {
                    Reset::None => {}
                    Reset::Fetching => continue,
                    Reset::Needed => {
                        queue.reset = Reset::Fetching;
                        tokio::spawn(restart_sequence(inner.clone(), tp.clone()));
                        continue;
                    }
                }
                if let Some(at) = queue.retry_at {
                    if at > now {
                        next_wake = next_wake.min(at);
                        continue;
                    }
                    queue.retry_at = None;
                }
                match inner.cluster.leader(&tp.topic, tp.partition) {
                    Some((_, address, _)) => {
                        queue.in_flight = true;
                        let batch = queue.ready.front_mut().expect("not empty");
                        batch.attempts += 1;
                        by_leader.entry(address).or_default().push(InFlight {
                            tp: tp.clone(),
                            bytes: batch.bytes.clone(),
                        });
                    }
                    None => need_metadata.push(tp.topic.clone()),
                }
            }
        }
        if !need_metadata.is_empty() {
            need_metadata.sort();
            need_metadata.dedup();
            let cluster = inner.cluster.clone();
            let _ = cluster.refresh(&need_metadata).await;
            next_wake = next_wake.min(Instant::now() + inner.config.client.retry_backoff);
        }
        for (address, batches) in by_leader {
            let limit = inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(address.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(inner.config.max_in_flight)))
                .clone();
            let inner = inner.clone();
            tokio::spawn(async move {
                let Ok(_slot) = limit.acquire_owned().await else {
                    return;
                };
                send_request(&inner, &address, batches).await;
                inner.wake.notify_one();
            });
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep_until(next_wake) => {}
        }
    }
}

async fn send_request(inner: &Arc<Inner>, address: &str, batches: Vec<InFlight>) {
    let mut topics: Vec<pb::produce_request::TopicData> = Vec::new();
    for b in &batches {
        let data = pb::produce_request::PartitionData {
            partition: b.tp.partition,
            records: b.bytes.clone(),
        };
        match topics.iter_mut().find(|t| t.name == b.tp.topic) {
            Some(t) => t.partitions.push(data),
            None => topics.push(pb::produce_request::TopicData {
                name: b.tp.topic.clone(),
                partitions: vec![data],
            }),
        }
    }
    let request = pb::ProduceRequest {
        acks: inner.config.acks,
        timeout_ms: inner.config.client.request_timeout.as_millis() as u32,
        topics,
    };
    let result = match inner.cluster.broker(address) {
        Ok(mut client) => client
            .produce(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|status| ClientError::from_status(address, status)),
        Err(e) => Err(e),
    };
    let mut outcomes: HashMap<TopicPartition, Result<(i64, i64)>> = HashMap::new();
    match result {
        Ok(response) => {
            for t in response.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.clone(), p.partition);
                    let outcome = match ClientError::from_wire(&p.error) {
                        Some(err) => Err(err),
                        None => Ok((p.base_offset, p.log_append_time_ms)),
                    };
                    outcomes.insert(tp, outcome);
                }
            }
        }
        Err(err) => {
            for b in &batches {
                outcomes.insert(b.tp.clone(), Err(err.clone()));
            }
        }
    }
    let mut refresh = Vec::new();
    {
        let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        for b in batches {
            let Some(queue) = state.queues.get_mut(&b.tp) else {
                continue;
            };
            queue.in_flight = false;
            let outcome = outcomes
                .remove(&b.tp)
                .unwrap_or_else(|| Err(ClientError::Protocol(format!("no answer for {}", b.tp))));
            match outcome {
                Ok((base_offset, append_time)) => {
                    let batch = queue.ready.pop_front().expect("the batch in flight");
                    complete_ok(inner, &b.tp, batch, base_offset, append_time);
                }
                Err(err) => {
                    let batch = queue.ready.front().expect("the batch in flight");
                    let retry = err.is_retriable()
                        && batch.attempts <= inner.config.retries
                        && Instant::now() < batch.deadline;
                    if retry {
                        tracing::debug!(partition = %b.tp, error = %err, "retrying a batch");
                        queue.retry_at = Some(Instant::now() + inner.config.client.retry_backoff);
                        if matches!(
                            err.code(),
                            Some(
                                ErrorCode::NotLeaderOrFollower
                                    | ErrorCode::LeaderNotAvailable
                                    | ErrorCode::UnknownTopicOrPartition
                                    | ErrorCode::FencedLeaderEpoch
                            ) | None
                        ) {
                            refresh.push(b.tp.topic.clone());
                        }
                    } else {
                        let batch = queue.ready.pop_front().expect("the batch in flight");
                        complete_err(inner, batch, err);
                        sequence_broken(inner.idempotence().is_some(), queue);
                    }
                }
            }
        }
    }
    if !refresh.is_empty() {
        refresh.sort();
        refresh.dedup();
        let _ = inner.cluster.refresh(&refresh).await;
    }
}

fn complete_ok(inner: &Inner, tp: &TopicPartition, batch: ReadyBatch, base: i64, append_time: i64) {
    let n = batch.waiters.len();
    for (i, w) in batch.waiters.into_iter().enumerate() {
        let _ = w.done.send(Ok(RecordMetadata {
            partition: tp.partition,
            offset: if base >= 0 { base + i as i64 } else { -1 },
            timestamp: if append_time >= 0 {
                append_time
            } else {
                w.timestamp
            },
        }));
    }
    completed(inner, n);
}

/// `n` records completed: counts them off, waking `flush` when none is left.
fn completed(inner: &Inner, n: usize) {
    let before = inner
        .outstanding
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
            Some(o.saturating_sub(n))
        })
        .unwrap_or_else(|o| o);
    if before <= n {
        inner.drained.notify_waiters();
    }
}

fn complete_err(inner: &Inner, batch: ReadyBatch, err: ClientError) {
    let n = batch.waiters.len();
    for w in batch.waiters {
        let _ = w.done.send(Err(err.clone()));
    }
    completed(inner, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_at_i32_max_as_kafkas_do() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 2, 5), 2);
    }

    /// A queued batch of `n` records under producer 1, sequence `seq`, sent `attempts` times.
    fn ready(seq: i32, n: usize, attempts: u32) -> ReadyBatch {
        let permits = Arc::new(Semaphore::new(n));
        let mut builder = BatchBuilder::new(0).producer(1, 0, seq);
        let waiters = (0..n)
            .map(|i| {
                builder.push(0, None, Some(format!("{seq}-{i}").as_bytes()), &[]);
                Waiter {
                    done: oneshot::channel().0,
                    timestamp: 0,
                    _permit: permits.clone().try_acquire_owned().unwrap(),
                }
            })
            .collect();
        ReadyBatch {
            bytes: builder.build(),
            deadline: Instant::now(),
            attempts,
            waiters,
        }
    }

    fn stamp(batch: &ReadyBatch) -> (i64, i16, i32) {
        let h = tributary_record::verify_batch(&batch.bytes).unwrap();
        (h.producer_id, h.producer_epoch, h.base_sequence)
    }

    #[test]
    fn a_second_failure_during_a_reset_does_not_start_another() {
        // Two batches expire back to back: the first starts a reset, the second finds it
        // under way. (A second reset used to re-stamp a batch the first one's id had sent.)
        let mut queue = Queue::default();
        sequence_broken(true, &mut queue);
        assert_eq!(queue.reset, Reset::Needed);
        queue.reset = Reset::Fetching; // what the sender does when it spawns the reset
        sequence_broken(true, &mut queue);
        assert_eq!(
            queue.reset,
            Reset::Fetching,
            "the reset under way covers it"
        );
        // A producer without idempotence has no sequence to reset.
        let mut plain = Queue::default();
        sequence_broken(false, &mut plain);
        assert_eq!(plain.reset, Reset::None);
    }

    #[test]
    fn a_reset_restamps_unsent_batches_from_zero_and_never_a_sent_one() {
        let mut queue = Queue {
            reset: Reset::Fetching,
            ..Queue::default()
        };
        queue.ready.push_back(ready(7, 2, 0));
        queue.ready.push_back(ready(9, 3, 0));
        assert!(restamp(&mut queue, (42, 0)));
        assert_eq!(stamp(&queue.ready[0]), (42, 0, 0));
        assert_eq!(stamp(&queue.ready[1]), (42, 0, 2));
        assert_eq!(queue.next_sequence, 5);
        assert_eq!(queue.producer, Some((42, 0)));
        assert_eq!(queue.reset, Reset::None);

        // A batch already sent (the broker may hold it under id 42) keeps its stamp.
        queue.reset = Reset::Fetching;
        queue.ready[0].attempts = 1;
        assert!(!restamp(&mut queue, (43, 0)));
        assert_eq!(stamp(&queue.ready[0]), (42, 0, 0));
        assert_eq!(stamp(&queue.ready[1]), (42, 0, 2));
        assert_eq!(queue.producer, Some((42, 0)));
        assert_eq!(queue.reset, Reset::Needed, "asked for again later");

        // Nor while a batch is in flight, nor without a reset under way.
        queue.ready[0].attempts = 0;
        queue.reset = Reset::Fetching;
        queue.in_flight = true;
        assert!(!restamp(&mut queue, (43, 0)));
        queue.in_flight = false;
        queue.reset = Reset::None;
        assert!(!restamp(&mut queue, (43, 0)));
        assert_eq!(stamp(&queue.ready[0]), (42, 0, 0));
    }

    #[test]
    fn closing_a_batch_after_a_restart_restamps_it() {
        let mut queue = Queue::default();
        let mut builder = BatchBuilder::new(0).producer(1, 0, 10);
        builder.push(0, None, Some(b"a"), &[]);
        builder.push(0, None, Some(b"b"), &[]);
        queue.open = Some(OpenBatch {
            builder,
            created: Instant::now(),
            deadline: Instant::now(),
            base_sequence: 10,
            waiters: Vec::new(),
        });
        // The partition started over under producer 9 while the batch was open.
        queue.producer = Some((9, 0));
        queue.next_sequence = 0;
        close_open(&mut queue, Some((1, 0)));
        let header = tributary_record::verify_batch(&queue.ready[0].bytes).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (9, 0, 0)
        );
        // No waiters were registered, so the next sequence moves by the waiters (0).
        assert_eq!(queue.next_sequence, 0);
    }
}
