//! Deterministic simulation of the replication protocol (issue 9): real partitions on real logs,
//! the real follower decisions, and the controller's real decisions, driven by one seeded
//! scheduler over a simulated network and a simulated clock, under faults chosen by the seed.
//! Each seed runs about 20 simulated seconds in a few tens of real milliseconds, so `cargo
//! test` runs many of them.
//!
//! # What is real and what is simulated
//!
//! - **Real:** every broker's [`Partition`]s over real [`Log`]s in a temporary directory (leader
//!   appends, replica fetches on the leader, follower appends, KIP-101/279 truncation, ISR
//!   shrink and expansion proposals, the high watermark, `committed` for acks=all); the
//!   follower's reactions to the leader's answers ([`on_epoch_end`], [`on_fetched`], shared with
//!   the gRPC fetcher); the controller's decisions ([`plan_create_topic`], [`plan_elections`],
//!   [`plan_alter_partition`], [`plan_preferred_leaders`]) and [`MetadataImage::apply`].
//! - **Simulated:** the network (each message is delayed at random, can be lost, and directed
//!   links can be cut), the clock (a simulated millisecond counter; partitions get
//!   `Instant`s derived from it), and the Raft layer beneath the controller (one linearizable
//!   image; the Raft simulation in `tributary-raft` covers Raft itself). The broker's loops
//!   (fetcher, heartbeats, ISR shrink check, acks=all waits, registration and fencing, the
//!   heartbeat rules of the coordinator service) are re-enacted here as events, with the same
//!   rules as `replication.rs`, `manager.rs`, `lifecycle.rs` and the coordinator's `service.rs`.
//! - **Crashes** are process crashes: the broker's partitions and logs are dropped without a
//!   clean close (what was written stays, as the page cache keeps it) and reopened on restart,
//!   with the last checkpointed high watermarks. Power loss (unflushed writes lost) is left to
//!   the storage crash tests and the process fault suite's torn-write nemesis.
//!
//! # The checker
//!
//! - No acknowledged write (acks=all, `min.insync.replicas` 2) is lost: after the faults heal,
//!   the leader's log holds each at its acknowledged offset.
//! - No value is in the healed log twice: each partition's idempotent producer retries its
//!   batch (same producer id and sequence) across leader changes, and the brokers' producer
//!   state must answer a retry of a batch already in the log with its first offsets. One
//!   producer id's acknowledgements rise.
//! - No offset below a leader's high watermark ever holds two different values, across leaders
//!   and over time; no two acknowledgements name one offset with different values.
//! - A leader's high watermark never goes backwards within its leader epoch.
//! - After healing, within a bound: every partition has a leader and a full ISR, and every
//!   replica's log is byte-identical to the leader's.
//!
//! With unclean leader election enabled (a quarter of the seeds) a partition that had an
//! unclean election is exempt from the first two checks, as in Kafka; the others still hold.
//!
//! `TRIBUTARY_SIM_SEED=N` runs one seed (with a trace of its faults), `TRIBUTARY_SIM_SEEDS=N`
//! and `TRIBUTARY_SIM_SEED_START=S` run seeds `S..S+N` (the Raft simulation reads the same
//! variables).

// The Raft simulation's generator; this harness uses only part of it.
#[allow(dead_code)]
#[path = "../../tributary-raft/tests/sim/rng.rs"]
mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rng::SplitMix64;
use tributary_broker::api::TopicPartition;
use tributary_broker::partition::{IsrProposal, Partition};
use tributary_broker::replication::{Fetched, FollowStep, on_epoch_end, on_fetched};
use tributary_metadata::controller::{
    AlterPartitionRequest, NewTopic, plan_alter_partition, plan_create_topic, plan_elections,
    plan_preferred_leaders,
};
use tributary_metadata::{
    BrokerId, BrokerState, MetadataImage, MetadataRecord, PartitionState, RecordResult,
};
use tributary_proto::common::v1::ErrorCode;
use tributary_storage::{Log, LogConfig, LogResources};
use uuid::Uuid;

const TOPIC: &str = "sim";
const MIN_INSYNC: usize = 2;
/// Simulated milliseconds.
type Ms = u64;
const HEARTBEAT_EVERY: Ms = 100;
const SESSION_TIMEOUT: Ms = 450;
const REPLICA_LAG: Ms = 300;
const SHRINK_EVERY: Ms = REPLICA_LAG / 2;
const BROKER_TICK: Ms = 10;
const CONTROLLER_TICK: Ms = 50;
const REBALANCE_EVERY: Ms = 3_000;
const HW_CHECKPOINT_EVERY: Ms = 500;
const ALTER_RETRY: Ms = 500;
const FETCH_TIMEOUT: Ms = 1_000;
const PRODUCE_TIMEOUT: Ms = 1_500;
const OBSERVE_EVERY: Ms = 100;
const FAULT_PHASE: Ms = 12_000;
const HEAL_BOUND: Ms = 20_000;
const PARTITION_MAX_BYTES: usize = 16 * 1024;
/// An idempotent producer retries a batch for this long (delivery.timeout.ms), then gives up on
/// it and starts over under a new producer id (as the client does).
const DELIVERY_TIMEOUT: Ms = 3_000;
/// A produce request unanswered this long is sent again.
const REQUEST_TIMEOUT: Ms = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Controller,
    Broker(BrokerId),
    Client,
}

#[derive(Debug)]
enum Msg {
    Register {
        incarnation: Uuid,
    },
    Registered {
        epoch: u64,
        image: Box<MetadataImage>,
    },
    Heartbeat {
        epoch: u64,
        metadata_offset: u64,
        sent_at: Ms,
    },
    HeartbeatAck {
        sent_at: Ms,
        image: Option<Box<MetadataImage>>,
    },
    Metadata {
        image: Box<MetadataImage>,
    },
    AlterPartition {
        epoch: u64,
        proposal: IsrProposal,
    },
    AlterPartitionAck {
        proposal: IsrProposal,
        result: Result<PartitionState, ErrorCode>,
    },
    /// (partition, the follower's current leader epoch, the epoch asked about).
    EpochQuery {
        request: u64,
        queries: Vec<(i32, i32, i32)>,
    },
    /// (partition, following epoch, code, the leader's epoch, its end offset).
    EpochAnswer {
        request: u64,
        answers: Vec<(i32, i32, ErrorCode, i32, i64)>,
    },
    /// (partition, fetch offset, following epoch).
    Fetch {
        request: u64,
        broker_epoch: u64,
        partitions: Vec<(i32, i64, i32)>,
    },
    FetchAnswer {
        request: u64,
        error: Option<ErrorCode>,
        partitions: Vec<(i32, i32, Fetched)>,
    },
    Produce {
        request: u64,
        partition: i32,
        batch: Bytes,
    },
    ProduceAnswer {
        request: u64,
        result: Result<i64, ErrorCode>,
    },
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: Node,
        to: Node,
        /// A reply goes only to the broker life that asked.
        to_life: Option<u64>,
        msg: Msg,
    },
    BrokerTick(BrokerId, u64),
    Heartbeat(BrokerId, u64),
    ShrinkCheck(BrokerId, u64),
    Checkpoint(BrokerId, u64),
    AlterRetry(BrokerId, u64, IsrProposal),
    ControllerTick,
    Produce,
    Idempotent,
    Observe,
    Nemesis,
    Restart(BrokerId),
    Uncut(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
struct Follow {
    leader: BrokerId,
    epoch: i32,
    truncated: bool,
    retry_at: Ms,
}

#[derive(Debug)]
struct PendingAck {
    request: u64,
    partition: i32,
    first: i64,
    last: i64,
    epoch: i32,
    deadline: Ms,
}

struct Broker {
    dir: PathBuf,
    up: bool,
    life: u64,
    paused_until: Option<Ms>,
    incarnation: Uuid,
    /// Registration epoch; 0 until registered in this life.
    epoch: u64,
    image: MetadataImage,
    partitions: BTreeMap<i32, Arc<Partition>>,
    /// Send time of the latest acknowledged heartbeat.
    heartbeat_acked: Option<Ms>,
    follows: BTreeMap<i32, Follow>,
    /// Per leader: the request outstanding and its deadline.
    in_flight: BTreeMap<BrokerId, (u64, Ms)>,
    /// Per leader: no request before this time (after a refused or failed one).
    backoff_until: BTreeMap<BrokerId, Ms>,
    pending_acks: Vec<PendingAck>,
    hw_checkpoint: BTreeMap<i32, i64>,
}

struct Controller {
    image: MetadataImage,
    liveness: BTreeMap<BrokerId, Ms>,
    since: Ms,
    last_rebalance: Ms,
}

/// One partition's idempotent producer: one batch in flight, retried with the same producer
/// id and sequence until acknowledged or given up.
#[derive(Debug)]
struct Session {
    producer_id: i64,
    next_sequence: i32,
    delivery: Option<Delivery>,
    /// The offset of this producer id's last acknowledged batch (acknowledgements must rise).
    last_acked: Option<i64>,
}

#[derive(Debug)]
struct Delivery {
    values: Vec<String>,
    batch: Bytes,
    started: Ms,
    request: u64,
    /// When to send (again): after an error or a timeout.
    resend_at: Ms,
}

/// A leader as the checker last saw it.
#[derive(Debug, Clone, Copy)]
struct Observed {
    /// The broker's life and the leader epoch.
    term: (u64, i32),
    high_watermark: i64,
    /// How far its log was checked against what was seen committed.
    checked: i64,
}

/// What one seed did.
#[derive(Debug, Default, Clone)]
struct Summary {
    faults: u64,
    produce_requests: u64,
    acknowledged: u64,
    failed: u64,
    idempotent_acknowledged: u64,
    idempotent_retries: u64,
    idempotent_given_up: u64,
    leader_changes: u64,
    unclean_elections: u64,
    truncations: u64,
    healed_at: Ms,
    messages: u64,
    dropped: u64,
}

struct Sim {
    seed: u64,
    verbose: bool,
    rng: SplitMix64,
    now: Ms,
    base: Instant,
    seq: u64,
    events: BTreeMap<(Ms, u64), Event>,
    cuts: BTreeSet<(Node, Node)>,
    loss_per_mille: u64,
    brokers: BTreeMap<BrokerId, Broker>,
    controller: Controller,
    topic_id: Uuid,
    partition_count: i32,
    unclean_allowed: bool,
    next_request: u64,
    next_value: u64,
    /// Client requests in flight: request -> (partition, values, sent at).
    client_pending: BTreeMap<u64, (i32, Vec<String>, Ms)>,
    /// The idempotent producers, one per partition.
    sessions: BTreeMap<i32, Session>,
    next_producer_id: i64,
    producing: bool,
    /// Acknowledged writes: (partition, offset) -> value.
    acked: BTreeMap<(i32, i64), String>,
    /// Values seen below some leader's high watermark: (partition, offset) -> value.
    committed: BTreeMap<(i32, i64), String>,
    /// Per (broker, partition): what was last observed of it leading.
    observed: BTreeMap<(BrokerId, i32), Observed>,
    /// Partitions that had an unclean election.
    unclean: BTreeSet<i32>,
    summary: Summary,
}

fn values_of(batches: &Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for batch in tributary_record::Batches::new(batches) {
        let (_, at, bytes) = batch.expect("a log returns whole, valid batches");
        let records = tributary_record::decode_records(&batches.slice(at..at + bytes.len()))
            .expect("a stored batch decodes");
        for record in records {
            let value = record.value.expect("the simulation writes values");
            out.push((
                record.offset,
                String::from_utf8(value.to_vec()).expect("utf-8 values"),
            ));
        }
    }
    out
}

/// Every batch of `log` in `[from, to)` (whole batches: the first may start before `from`).
fn read_range(log: &Log, from: i64, to: i64) -> Bytes {
    let mut out = Vec::new();
    let mut offset = from.max(log.log_start_offset());
    while offset < to {
        let read = log
            .read(offset, 1 << 20, Some(to), true)
            .expect("reading a simulated log");
        if read.records.is_empty() {
            break;
        }
        out.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    Bytes::from(out)
}

fn open_partition(dir: &Path, p: i32, me: BrokerId, topic_id: Uuid) -> Arc<Partition> {
    let config = LogConfig {
        segment_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.join(format!("p{p}")), config, LogResources::new(64))
        .expect("opening a simulated log");
    Arc::new(Partition::new(
        TopicPartition::new(TOPIC, p),
        topic_id,
        me,
        log,
        Arc::new(tokio::sync::watch::channel(0).0),
    ))
}

impl Sim {
    fn new(seed: u64, root: &Path, verbose: bool) -> Self {
        let mut rng = SplitMix64::new(seed);
        let broker_count: BrokerId = if rng.chance(300) { 4 } else { 3 };
        let partition_count = rng.between(1, 2) as i32;
        let unclean_allowed = rng.chance(250);
        let topic_id = Uuid::from_u64_pair(seed, 0x51);
        let mut image = MetadataImage::default();
        let mut offset = 0;
        let mut apply = |image: &mut MetadataImage, record: MetadataRecord| {
            offset += 1;
            image
                .apply(offset, &record)
                .expect("the initial records apply")
        };
        apply(
            &mut image,
            MetadataRecord::Bootstrap {
                cluster_id: "sim".into(),
            },
        );
        apply(
            &mut image,
            MetadataRecord::BecomeController {
                node_id: 1,
                term: 1,
            },
        );
        let mut epochs = BTreeMap::new();
        for id in 1..=broker_count {
            let RecordResult::BrokerRegistered { epoch } = apply(
                &mut image,
                MetadataRecord::RegisterBroker {
                    id,
                    incarnation: Uuid::from_u64_pair(id as u64, 0),
                    listeners: BTreeMap::new(),
                    rack: None,
                },
            ) else {
                panic!("registration answers with an epoch")
            };
            apply(
                &mut image,
                MetadataRecord::SetBrokerState {
                    id,
                    epoch,
                    state: BrokerState::Running,
                },
            );
            epochs.insert(id, epoch);
        }
        let mut configs = BTreeMap::from([("min.insync.replicas".into(), MIN_INSYNC.to_string())]);
        if unclean_allowed {
            configs.insert("unclean.leader.election.enable".into(), "true".into());
        }
        let create = plan_create_topic(
            &image,
            &NewTopic {
                name: TOPIC.into(),
                partitions: partition_count,
                replication_factor: 3,
                configs,
            },
            topic_id,
            seed,
        )
        .expect("the topic can be placed");
        apply(&mut image, create);

        let brokers = (1..=broker_count)
            .map(|id| {
                let dir = root.join(format!("broker-{id}"));
                let partitions = image.topics[TOPIC]
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.replicas.contains(&id))
                    .map(|(p, _)| (p as i32, open_partition(&dir, p as i32, id, topic_id)))
                    .collect();
                let broker = Broker {
                    dir,
                    up: true,
                    life: 0,
                    paused_until: None,
                    incarnation: Uuid::from_u64_pair(id as u64, 0),
                    epoch: epochs[&id],
                    image: MetadataImage::default(),
                    partitions,
                    heartbeat_acked: Some(0),
                    follows: BTreeMap::new(),
                    in_flight: BTreeMap::new(),
                    backoff_until: BTreeMap::new(),
                    pending_acks: Vec::new(),
                    hw_checkpoint: BTreeMap::new(),
                };
                (id, broker)
            })
            .collect();
        let mut sim = Sim {
            seed,
            verbose,
            rng,
            now: 0,
            base: Instant::now(),
            seq: 0,
            events: BTreeMap::new(),
            cuts: BTreeSet::new(),
            loss_per_mille: 0,
            brokers,
            controller: Controller {
                image: image.clone(),
                liveness: BTreeMap::new(),
                since: 0,
                last_rebalance: 0,
            },
            topic_id,
            partition_count,
            unclean_allowed,
            next_request: 0,
            next_value: 0,
            client_pending: BTreeMap::new(),
            sessions: (0..partition_count)
                .map(|p| {
                    (
                        p,
                        Session {
                            producer_id: 1_000 + i64::from(p),
                            next_sequence: 0,
                            delivery: None,
                            last_acked: None,
                        },
                    )
                })
                .collect(),
            next_producer_id: 2_000,
            producing: true,
            acked: BTreeMap::new(),
            committed: BTreeMap::new(),
            observed: BTreeMap::new(),
            unclean: BTreeSet::new(),
            summary: Summary::default(),
        };
        for id in 1..=broker_count {
            sim.apply_image(id, image.clone());
            sim.start_timers(id);
        }
        sim.schedule(CONTROLLER_TICK, Event::ControllerTick);
        sim.schedule(1, Event::Produce);
        sim.schedule(2, Event::Idempotent);
        sim.schedule(OBSERVE_EVERY, Event::Observe);
        let first = sim.rng.between(200, 1_000);
        sim.schedule(first, Event::Nemesis);
        sim
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("[seed {} t={}ms] {}", self.seed, self.now, what());
        }
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn schedule(&mut self, after: Ms, event: Event) {
        self.seq += 1;
        self.events.insert((self.now + after, self.seq), event);
    }

    fn start_timers(&mut self, id: BrokerId) {
        let life = self.brokers[&id].life;
        let jitter = self.rng.between(0, 9);
        self.schedule(jitter + 1, Event::BrokerTick(id, life));
        self.schedule(jitter + 2, Event::Heartbeat(id, life));
        self.schedule(SHRINK_EVERY + jitter, Event::ShrinkCheck(id, life));
        self.schedule(HW_CHECKPOINT_EVERY + jitter, Event::Checkpoint(id, life));
    }

    fn send(&mut self, from: Node, to: Node, to_life: Option<u64>, msg: Msg) {
        self.summary.messages += 1;
        let delay = if self.rng.chance(20) {
            self.rng.between(50, 400)
        } else {
            self.rng.between(1, 15)
        };
        self.schedule(
            delay,
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            },
        );
    }

    fn life_of(&self, id: BrokerId) -> u64 {
        self.brokers[&id].life
    }

    /// Runs until `until` (or until `stop` says so, checked after each event).
    fn run_until(&mut self, until: Ms, mut stop: impl FnMut(&mut Sim) -> bool) -> bool {
        while let Some(entry) = self.events.first_entry() {
            let (at, _) = *entry.key();
            if at > until {
                self.now = until;
                return false;
            }
            let event = entry.remove();
            self.now = at;
            self.handle(event);
            if stop(self) {
                return true;
            }
        }
        false
    }

    /// The broker an event is for, when it is paused: the event waits for the pause to end.
    fn postponed(&mut self, event: Event) -> Option<Event> {
        let target = match &event {
            Event::Deliver {
                to: Node::Broker(id),
                ..
            }
            | Event::BrokerTick(id, _)
            | Event::Heartbeat(id, _)
            | Event::ShrinkCheck(id, _)
            | Event::Checkpoint(id, _)
            | Event::AlterRetry(id, _, _) => Some(*id),
            _ => None,
        };
        if let Some(id) = target
            && let Some(until) = self.brokers[&id].paused_until
        {
            if until > self.now {
                self.seq += 1;
                self.events.insert((until, self.seq), event);
                return None;
            }
            self.brokers
                .get_mut(&id)
                .expect("known broker")
                .paused_until = None;
        }
        Some(event)
    }

    fn handle(&mut self, event: Event) {
        let Some(event) = self.postponed(event) else {
            return;
        };
        let alive = |sim: &Sim, id: BrokerId, life: u64| {
            let b = &sim.brokers[&id];
            b.up && b.life == life
        };
        match event {
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            } => {
                let lost = self.cuts.contains(&(from, to)) || self.rng.chance(self.loss_per_mille);
                let down = match to {
                    Node::Broker(id) => {
                        let b = &self.brokers[&id];
                        !b.up || to_life.is_some_and(|l| l != b.life)
                    }
                    _ => false,
                };
                if lost || down {
                    self.summary.dropped += 1;
                    return;
                }
                match to {
                    Node::Controller => self.controller_receive(from, msg),
                    Node::Broker(id) => self.broker_receive(id, from, msg),
                    Node::Client => self.client_receive(msg),
                }
            }
            Event::BrokerTick(id, life) if alive(self, id, life) => {
                self.broker_tick(id);
                self.schedule(BROKER_TICK, Event::BrokerTick(id, life));
            }
            Event::Heartbeat(id, life) if alive(self, id, life) => {
                let b = &self.brokers[&id];
                let msg = if b.epoch == 0 {
                    Msg::Register {
                        incarnation: b.incarnation,
                    }
                } else {
                    Msg::Heartbeat {
                        epoch: b.epoch,
                        metadata_offset: b.image.offset,
                        sent_at: self.now,
                    }
                };
                self.send(Node::Broker(id), Node::Controller, None, msg);
                self.schedule(HEARTBEAT_EVERY, Event::Heartbeat(id, life));
            }
            Event::ShrinkCheck(id, life) if alive(self, id, life) => {
                let now = self.instant();
                let partitions: Vec<_> = self.brokers[&id].partitions.values().cloned().collect();
                for partition in partitions {
                    if let Some(proposal) =
                        partition.shrink_proposal(now, Duration::from_millis(REPLICA_LAG))
                    {
                        self.propose(id, proposal);
                    }
                }
                self.schedule(SHRINK_EVERY, Event::ShrinkCheck(id, life));
            }
            Event::Checkpoint(id, life) if alive(self, id, life) => {
                let b = self.brokers.get_mut(&id).expect("known broker");
                b.hw_checkpoint = b
                    .partitions
                    .iter()
                    .map(|(p, partition)| (*p, partition.high_watermark()))
                    .collect();
                self.schedule(HW_CHECKPOINT_EVERY, Event::Checkpoint(id, life));
            }
            Event::AlterRetry(id, life, proposal) if alive(self, id, life) => {
                let pending = self.brokers[&id]
                    .partitions
                    .get(&proposal.tp.partition)
                    .is_some_and(|p| p.is_pending(&proposal));
                if pending {
                    self.propose(id, proposal);
                }
            }
            Event::BrokerTick(..)
            | Event::Heartbeat(..)
            | Event::ShrinkCheck(..)
            | Event::Checkpoint(..)
            | Event::AlterRetry(..) => {}
            Event::ControllerTick => {
                self.controller_tick();
                self.schedule(CONTROLLER_TICK, Event::ControllerTick);
            }
            Event::Produce => {
                if self.producing {
                    self.produce();
                    let next = self.rng.between(2, 8);
                    self.schedule(next, Event::Produce);
                }
            }
            Event::Idempotent => {
                self.idempotent();
                let next = self.rng.between(3, 10);
                self.schedule(next, Event::Idempotent);
            }
            Event::Observe => {
                self.observe();
                self.schedule(OBSERVE_EVERY, Event::Observe);
            }
            Event::Nemesis => {
                if self.now < FAULT_PHASE {
                    self.nemesis();
                    let next = self.rng.between(150, 1_200);
                    self.schedule(next, Event::Nemesis);
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::Uncut(edges) => {
                for edge in edges {
                    self.cuts.remove(&edge);
                }
            }
        }
    }

    // ---- the controller -------------------------------------------------------------------

    fn write(&mut self, record: MetadataRecord) -> Result<RecordResult, ErrorCode> {
        let offset = self.controller.image.offset + 1;
        let result = self
            .controller
            .image
            .apply(offset, &record)
            .map_err(|e| e.code());
        if result.is_ok() {
            // Brokers learn new metadata as the Raft log streams to them.
            let image = Box::new(self.controller.image.clone());
            let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
            for id in ids {
                self.send(
                    Node::Controller,
                    Node::Broker(id),
                    None,
                    Msg::Metadata {
                        image: image.clone(),
                    },
                );
            }
        }
        result
    }

    fn run_elections(&mut self) {
        for change in plan_elections(&self.controller.image) {
            let before =
                self.controller.image.topics[TOPIC].partitions[change.partition as usize].leader;
            let unclean = change.unclean;
            let partition = change.partition;
            let leader = change.leader;
            if self.write(MetadataRecord::ChangePartition(change)).is_ok() {
                if leader != before && leader.is_some() {
                    self.summary.leader_changes += 1;
                }
                if unclean {
                    self.summary.unclean_elections += 1;
                    self.unclean.insert(partition);
                    self.trace(|| {
                        format!("unclean election of {leader:?} for partition {partition}")
                    });
                }
            }
        }
    }

    fn controller_tick(&mut self) {
        let expired: Vec<(BrokerId, u64)> = self
            .controller
            .image
            .brokers
            .values()
            .filter(|b| b.state != BrokerState::Fenced)
            .filter(|b| {
                let last = *self
                    .controller
                    .liveness
                    .entry(b.id)
                    .or_insert(self.controller.since);
                self.now.saturating_sub(last) > SESSION_TIMEOUT
            })
            .map(|b| (b.id, b.epoch))
            .collect();
        for (id, epoch) in expired {
            self.trace(|| format!("controller fences broker {id}"));
            let _ = self.write(MetadataRecord::SetBrokerState {
                id,
                epoch,
                state: BrokerState::Fenced,
            });
        }
        self.run_elections();
        if self.now - self.controller.last_rebalance >= REBALANCE_EVERY {
            self.controller.last_rebalance = self.now;
            for change in plan_preferred_leaders(&self.controller.image) {
                if self.write(MetadataRecord::ChangePartition(change)).is_ok() {
                    self.summary.leader_changes += 1;
                }
            }
        }
    }

    fn controller_receive(&mut self, from: Node, msg: Msg) {
        let Node::Broker(id) = from else {
            panic!("only brokers talk to the controller")
        };
        let reply_life = Some(self.life_of(id));
        match msg {
            Msg::Register { incarnation } => {
                let result = self.write(MetadataRecord::RegisterBroker {
                    id,
                    incarnation,
                    listeners: BTreeMap::new(),
                    rack: None,
                });
                if let Ok(RecordResult::BrokerRegistered { epoch }) = result {
                    self.controller.liveness.insert(id, self.now);
                    self.run_elections();
                    let image = Box::new(self.controller.image.clone());
                    self.send(
                        Node::Controller,
                        from,
                        reply_life,
                        Msg::Registered { epoch, image },
                    );
                }
            }
            Msg::Heartbeat {
                epoch,
                metadata_offset,
                sent_at,
            } => {
                let Ok(broker) = self.controller.image.registered_broker(id, epoch).cloned() else {
                    return;
                };
                self.controller.liveness.insert(id, self.now);
                if broker.state == BrokerState::Fenced && metadata_offset >= broker.epoch {
                    self.trace(|| format!("controller unfences broker {id}"));
                    if self
                        .write(MetadataRecord::SetBrokerState {
                            id,
                            epoch,
                            state: BrokerState::Running,
                        })
                        .is_ok()
                    {
                        self.run_elections();
                    }
                }
                let image = (self.controller.image.offset > metadata_offset)
                    .then(|| Box::new(self.controller.image.clone()));
                self.send(
                    Node::Controller,
                    from,
                    reply_life,
                    Msg::HeartbeatAck { sent_at, image },
                );
            }
            Msg::AlterPartition { epoch, proposal } => {
                let request = AlterPartitionRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    topic_id: proposal.topic_id,
                    partition: proposal.tp.partition,
                    leader_epoch: proposal.leader_epoch,
                    partition_epoch: proposal.partition_epoch,
                    new_isr: proposal.new_isr.clone(),
                };
                let result = plan_alter_partition(&self.controller.image, &request)
                    .map_err(|e| e.code())
                    .and_then(|change| self.write(MetadataRecord::ChangePartition(change)))
                    .map(|r| match r {
                        RecordResult::Partition(state) => state,
                        other => panic!("a partition change answers {other:?}"),
                    });
                self.send(
                    Node::Controller,
                    from,
                    reply_life,
                    Msg::AlterPartitionAck { proposal, result },
                );
            }
            other => panic!("the controller got {other:?}"),
        }
    }

    // ---- brokers --------------------------------------------------------------------------

    /// A broker takes on a newer image: every hosted partition's role, then its fetchers
    /// (exactly as `ReplicaManager::reconcile` and `Fetchers::update`).
    fn apply_image(&mut self, id: BrokerId, image: MetadataImage) {
        let now = self.instant();
        let b = self.brokers.get_mut(&id).expect("known broker");
        if image.offset <= b.image.offset {
            return;
        }
        if let Some(topic) = image.topics.get(TOPIC) {
            for (p, partition) in &b.partitions {
                let state = &topic.partitions[*p as usize];
                partition
                    .apply_state_at(state, now)
                    .expect("applying a partition state");
            }
        }
        b.image = image;
        let mut follows = BTreeMap::new();
        for (p, partition) in &b.partitions {
            let role = partition.role();
            let Some(leader) = role.leader.filter(|&l| l != id) else {
                continue;
            };
            let follow = match b.follows.get(p) {
                Some(f) if f.leader == leader && f.epoch == role.leader_epoch => f.clone(),
                _ => Follow {
                    leader,
                    epoch: role.leader_epoch,
                    truncated: false,
                    retry_at: 0,
                },
            };
            follows.insert(*p, follow);
        }
        b.follows = follows;
    }

    /// `ReplicaManager::self_fence`: may this broker act as a leader now?
    fn self_fenced(&self, id: BrokerId) -> bool {
        let b = &self.brokers[&id];
        let heard = b
            .heartbeat_acked
            .is_some_and(|sent| self.now.saturating_sub(sent) <= SESSION_TIMEOUT);
        let standing = b
            .image
            .brokers
            .get(&id)
            .is_some_and(|x| x.epoch == b.epoch && x.state != BrokerState::Fenced);
        !(heard && standing)
    }

    fn propose(&mut self, id: BrokerId, proposal: IsrProposal) {
        let life = self.life_of(id);
        let epoch = self.brokers[&id].epoch;
        self.send(
            Node::Broker(id),
            Node::Controller,
            None,
            Msg::AlterPartition {
                epoch,
                proposal: proposal.clone(),
            },
        );
        self.schedule(ALTER_RETRY, Event::AlterRetry(id, life, proposal));
    }

    fn broker_tick(&mut self, id: BrokerId) {
        // acks=all producers waiting for the high watermark.
        let pending = std::mem::take(&mut self.brokers.get_mut(&id).expect("known").pending_acks);
        let mut still = Vec::new();
        for ack in pending {
            let partition = self.brokers[&id].partitions[&ack.partition].clone();
            let result = match partition.committed(ack.last, ack.epoch, Some(MIN_INSYNC)) {
                Ok(true) => Some(Ok(ack.first)),
                Ok(false) if self.now >= ack.deadline => Some(Err(ErrorCode::RequestTimedOut)),
                Ok(false) => None,
                Err(err) => Some(Err(err.code)),
            };
            match result {
                Some(result) => self.send(
                    Node::Broker(id),
                    Node::Client,
                    None,
                    Msg::ProduceAnswer {
                        request: ack.request,
                        result,
                    },
                ),
                None => still.push(ack),
            }
        }
        self.brokers.get_mut(&id).expect("known").pending_acks = still;

        // The fetchers: one request at a time per leader; truncation before fetching.
        let leaders: BTreeSet<BrokerId> = self.brokers[&id]
            .follows
            .values()
            .map(|f| f.leader)
            .collect();
        for leader in leaders {
            let now = self.now;
            let b = self.brokers.get_mut(&id).expect("known");
            if b.in_flight
                .get(&leader)
                .is_some_and(|(_, deadline)| *deadline > now)
                || b.backoff_until.get(&leader).is_some_and(|t| *t > now)
            {
                continue;
            }
            b.in_flight.remove(&leader);
            let ready: Vec<(i32, Follow)> = b
                .follows
                .iter()
                .filter(|(_, f)| f.leader == leader && f.retry_at <= now)
                .map(|(p, f)| (*p, f.clone()))
                .collect();
            let mut queries = Vec::new();
            for (p, f) in ready.iter().filter(|(_, f)| !f.truncated) {
                match b.partitions[p].log().latest_epoch() {
                    None => {
                        b.follows.get_mut(p).expect("followed").truncated = true;
                    }
                    Some(latest) => queries.push((*p, f.epoch, latest)),
                }
            }
            self.next_request += 1;
            let request = self.next_request;
            let msg = if !queries.is_empty() {
                Msg::EpochQuery { request, queries }
            } else {
                let partitions: Vec<(i32, i64, i32)> = b
                    .follows
                    .iter()
                    .filter(|(_, f)| f.leader == leader && f.retry_at <= now && f.truncated)
                    .map(|(p, f)| (*p, b.partitions[p].log().log_end_offset(), f.epoch))
                    .collect();
                if partitions.is_empty() {
                    continue;
                }
                Msg::Fetch {
                    request,
                    broker_epoch: b.epoch,
                    partitions,
                }
            };
            b.in_flight.insert(leader, (request, now + FETCH_TIMEOUT));
            self.send(Node::Broker(id), Node::Broker(leader), None, msg);
        }
    }

    /// Applies a follower step, as `replication::mark` does, if `p` still follows `leader`
    /// at `epoch`.
    fn mark(&mut self, id: BrokerId, p: i32, leader: BrokerId, epoch: i32, step: FollowStep) {
        let now = self.now;
        let b = self.brokers.get_mut(&id).expect("known");
        let Some(f) = b
            .follows
            .get_mut(&p)
            .filter(|f| f.leader == leader && f.epoch == epoch)
        else {
            return;
        };
        match step {
            FollowStep::Fetch => f.truncated = true,
            FollowStep::AskAgain | FollowStep::Unchanged => {}
            FollowStep::RetryAfter(wait) => f.retry_at = now + wait.as_millis() as Ms,
            FollowStep::Retruncate(wait) => {
                f.truncated = false;
                f.retry_at = now + wait.as_millis() as Ms;
            }
        }
    }

    fn broker_receive(&mut self, id: BrokerId, from: Node, msg: Msg) {
        let life = self.life_of(id);
        match msg {
            Msg::Registered { epoch, image } => {
                let b = self.brokers.get_mut(&id).expect("known");
                if b.epoch == 0 {
                    b.epoch = epoch;
                    self.trace(|| format!("broker {id} registered at epoch {epoch}"));
                }
                self.apply_image(id, *image);
            }
            Msg::HeartbeatAck { sent_at, image } => {
                let b = self.brokers.get_mut(&id).expect("known");
                b.heartbeat_acked = Some(b.heartbeat_acked.map_or(sent_at, |t| t.max(sent_at)));
                if let Some(image) = image {
                    self.apply_image(id, *image);
                }
            }
            Msg::Metadata { image } => self.apply_image(id, *image),
            Msg::AlterPartitionAck { proposal, result } => {
                let Some(partition) = self.brokers[&id]
                    .partitions
                    .get(&proposal.tp.partition)
                    .cloned()
                else {
                    return;
                };
                match result {
                    Ok(state) => {
                        let now = self.instant();
                        partition
                            .apply_state_at(&state, now)
                            .expect("applying a new ISR");
                    }
                    Err(
                        ErrorCode::NotLeaderOrFollower
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::InvalidUpdateVersion,
                    ) => {}
                    Err(_) => partition.proposal_failed(&proposal),
                }
            }
            Msg::EpochQuery { request, queries } => {
                let Node::Broker(follower) = from else {
                    panic!("epoch queries come from brokers")
                };
                let b = &self.brokers[&id];
                let answers = queries
                    .into_iter()
                    .map(|(p, current, epoch)| {
                        match b
                            .partitions
                            .get(&p)
                            .map(|x| x.end_offset_for_epoch(current, epoch))
                        {
                            Some(Ok(end)) => (
                                p,
                                current,
                                ErrorCode::None,
                                end.leader_epoch,
                                end.end_offset,
                            ),
                            Some(Err(err)) => (p, current, err.code, -1, -1),
                            None => (p, current, ErrorCode::NotLeaderOrFollower, -1, -1),
                        }
                    })
                    .collect();
                let reply_life = Some(self.life_of(follower));
                self.send(
                    Node::Broker(id),
                    from,
                    reply_life,
                    Msg::EpochAnswer { request, answers },
                );
            }
            Msg::EpochAnswer { request, answers } => {
                let Node::Broker(leader) = from else {
                    panic!("epoch answers come from brokers")
                };
                if !self.answered(id, leader, request) {
                    return;
                }
                for (p, epoch, code, leader_epoch, end_offset) in answers {
                    let partition = self.brokers[&id].partitions[&p].clone();
                    let before = partition.log().log_end_offset();
                    let step =
                        on_epoch_end(&partition, leader, epoch, code, leader_epoch, end_offset);
                    if partition.log().log_end_offset() < before {
                        self.summary.truncations += 1;
                        self.trace(|| {
                            format!(
                                "broker {id} truncated partition {p} from {before} to {}",
                                partition.log().log_end_offset()
                            )
                        });
                    }
                    self.mark(id, p, leader, epoch, step);
                }
            }
            Msg::Fetch {
                request,
                broker_epoch,
                partitions,
            } => {
                let Node::Broker(follower) = from else {
                    panic!("fetches come from brokers")
                };
                let reply_life = Some(self.life_of(follower));
                let answer = self.leader_fetch(id, follower, broker_epoch, request, partitions);
                self.send(Node::Broker(id), from, reply_life, answer);
            }
            Msg::FetchAnswer {
                request,
                error,
                partitions,
            } => {
                let Node::Broker(leader) = from else {
                    panic!("fetch answers come from brokers")
                };
                if !self.answered(id, leader, request) {
                    return;
                }
                if error.is_some() {
                    let wait = self.rng.between(50, 1_000);
                    self.brokers
                        .get_mut(&id)
                        .expect("known")
                        .backoff_until
                        .insert(leader, self.now + wait);
                    return;
                }
                for (p, epoch, fetched) in partitions {
                    let partition = self.brokers[&id].partitions[&p].clone();
                    let step = on_fetched(&partition, leader, epoch, fetched);
                    self.mark(id, p, leader, epoch, step);
                }
            }
            Msg::Produce {
                request,
                partition,
                batch,
            } => {
                let result = if self.self_fenced(id) {
                    Err(ErrorCode::NotLeaderOrFollower)
                } else {
                    self.brokers[&id]
                        .partitions
                        .get(&partition)
                        .ok_or(ErrorCode::NotLeaderOrFollower)
                        .and_then(|p| p.append(&batch, Some(MIN_INSYNC)).map_err(|e| e.code))
                };
                match result {
                    Ok((info, epoch)) => {
                        let deadline = self.now + PRODUCE_TIMEOUT;
                        self.brokers
                            .get_mut(&id)
                            .expect("known")
                            .pending_acks
                            .push(PendingAck {
                                request,
                                partition,
                                first: info.first_offset,
                                last: info.last_offset,
                                epoch,
                                deadline,
                            });
                    }
                    Err(code) => self.send(
                        Node::Broker(id),
                        Node::Client,
                        None,
                        Msg::ProduceAnswer {
                            request,
                            result: Err(code),
                        },
                    ),
                }
            }
            other => panic!("broker {id} (life {life}) got {other:?}"),
        }
    }

    /// Whether `request` is the one outstanding to `leader` (and clears it).
    fn answered(&mut self, id: BrokerId, leader: BrokerId, request: u64) -> bool {
        let b = self.brokers.get_mut(&id).expect("known");
        if b.in_flight.get(&leader).is_some_and(|(r, _)| *r == request) {
            b.in_flight.remove(&leader);
            true
        } else {
            false
        }
    }

    /// `ReplicaManager::replica_fetch` on the leader, without the long poll.
    fn leader_fetch(
        &mut self,
        id: BrokerId,
        follower: BrokerId,
        broker_epoch: u64,
        request: u64,
        partitions: Vec<(i32, i64, i32)>,
    ) -> Msg {
        let b = &self.brokers[&id];
        if let Err(err) = b.image.registered_broker(follower, broker_epoch) {
            return Msg::FetchAnswer {
                request,
                error: Some(err.code()),
                partitions: Vec::new(),
            };
        }
        let eligible = b
            .image
            .brokers
            .get(&follower)
            .is_some_and(|x| x.epoch == broker_epoch && x.state == BrokerState::Running);
        let fenced = self.self_fenced(id);
        let now = self.instant();
        let mut first_data = true;
        let mut answers = Vec::new();
        let mut proposals = Vec::new();
        for (p, offset, epoch) in partitions {
            let outcome = match b.partitions.get(&p) {
                None => Err((ErrorCode::NotLeaderOrFollower, None)),
                Some(_) if fenced => Err((ErrorCode::NotLeaderOrFollower, None)),
                Some(partition) => partition
                    .replica_fetch(
                        follower,
                        offset,
                        epoch,
                        PARTITION_MAX_BYTES,
                        first_data,
                        eligible,
                        now,
                    )
                    .map_err(|e| (e.code, e.range)),
            };
            let fetched = match outcome {
                Ok((fetched, proposal)) => {
                    if !fetched.records.is_empty() {
                        first_data = false;
                    }
                    proposals.extend(proposal);
                    Fetched {
                        code: ErrorCode::None,
                        records: fetched.records,
                        high_watermark: fetched.high_watermark,
                        log_start_offset: fetched.log_start_offset,
                    }
                }
                Err((code, range)) => Fetched {
                    code,
                    records: Bytes::new(),
                    high_watermark: -1,
                    log_start_offset: range.map_or(-1, |(start, _)| start),
                },
            };
            answers.push((p, epoch, fetched));
        }
        for proposal in proposals {
            self.propose(id, proposal);
        }
        Msg::FetchAnswer {
            request,
            error: None,
            partitions: answers,
        }
    }

    /// Stops broker `id`: a crash drops its logs without a clean close (they recover on the
    /// next open); a clean stop closes them, snapshotting the producer state at each log end.
    fn crash(&mut self, id: BrokerId, clean: bool) {
        let b = self.brokers.get_mut(&id).expect("known");
        b.up = false;
        b.life += 1;
        b.paused_until = None;
        if clean {
            for partition in b.partitions.values() {
                partition.close().expect("closing a simulated log");
            }
        }
        b.partitions.clear();
        b.follows.clear();
        b.in_flight.clear();
        b.backoff_until.clear();
        b.pending_acks.clear();
    }

    fn restart(&mut self, id: BrokerId) {
        if self.brokers[&id].up {
            return;
        }
        let topic_id = self.topic_id;
        let placement: Vec<i32> = self.controller.image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.replicas.contains(&id))
            .map(|(p, _)| p as i32)
            .collect();
        let b = self.brokers.get_mut(&id).expect("known");
        b.up = true;
        b.life += 1;
        b.incarnation = Uuid::from_u64_pair(id as u64, b.life);
        b.epoch = 0;
        b.image = MetadataImage::default();
        b.heartbeat_acked = None;
        for p in placement {
            let partition = open_partition(&b.dir, p, id, topic_id);
            if let Some(&hw) = b.hw_checkpoint.get(&p) {
                partition.restore_high_watermark(hw);
            }
            b.partitions.insert(p, partition);
        }
        self.trace(|| format!("broker {id} restarts"));
        self.start_timers(id);
    }

    // ---- the client -----------------------------------------------------------------------

    /// Where the client sends a produce for `p`: mostly the leader the controller knows;
    /// sometimes a broker's stale view or a wrong guess.
    fn target(&mut self, p: i32) -> BrokerId {
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        if self.rng.chance(850) {
            self.controller.image.topics[TOPIC].partitions[p as usize].leader
        } else {
            let asked = self.rng.pick(&ids);
            self.brokers[&asked]
                .image
                .topics
                .get(TOPIC)
                .and_then(|t| t.partitions[p as usize].leader)
        }
        .unwrap_or_else(|| self.rng.pick(&ids))
    }

    fn produce(&mut self) {
        let p = self.rng.below(self.partition_count as u64) as i32;
        let target = self.target(p);
        let count = self.rng.between(1, 3);
        let mut builder = tributary_record::BatchBuilder::new(self.now as i64);
        let mut values = Vec::new();
        for _ in 0..count {
            self.next_value += 1;
            let value = format!("v{}", self.next_value);
            builder.push(self.now as i64, None, Some(value.as_bytes()), &[]);
            values.push(value);
        }
        self.next_request += 1;
        let request = self.next_request;
        self.client_pending.insert(request, (p, values, self.now));
        self.summary.produce_requests += 1;
        self.send_produce(target, request, p, builder.build());
    }

    fn client_receive(&mut self, msg: Msg) {
        let Msg::ProduceAnswer { request, result } = msg else {
            panic!("the client got {msg:?}")
        };
        if self.idempotent_answer(request, &result) {
            return;
        }
        let Some((p, values, _)) = self.client_pending.remove(&request) else {
            return;
        };
        match result {
            Ok(first) => self.summary.acknowledged += self.record_acks(p, first, values),
            Err(_) => self.summary.failed += values.len() as u64,
        }
    }

    /// Records `values` acknowledged at offsets from `first` of `p` (no offset acknowledged
    /// twice, unless an unclean election made that possible); returns how many.
    fn record_acks(&mut self, p: i32, first: i64, values: Vec<String>) -> u64 {
        let count = values.len() as u64;
        for (i, value) in values.into_iter().enumerate() {
            let offset = first + i as i64;
            if let Some(other) = self.acked.get(&(p, offset))
                && !self.unclean.contains(&p)
            {
                self.fail(format!(
                    "partition {p} offset {offset} acknowledged twice: {other} and {value}"
                ));
            }
            self.acked.insert((p, offset), value);
        }
        count
    }

    /// Sends a produce of `batch` to `p` on `target` as client request `request`.
    fn send_produce(&mut self, target: BrokerId, request: u64, p: i32, batch: Bytes) {
        self.send(
            Node::Client,
            Node::Broker(target),
            None,
            Msg::Produce {
                request,
                partition: p,
                batch,
            },
        );
    }

    /// Each partition's idempotent producer: starts its next batch when idle (while the
    /// workload runs), sends it again when due.
    fn idempotent(&mut self) {
        for p in 0..self.partition_count {
            let now = self.now;
            let session = &self.sessions[&p];
            let resend = match &session.delivery {
                None if self.producing => {
                    let count = self.rng.between(1, 3);
                    let mut builder = tributary_record::BatchBuilder::new(now as i64).producer(
                        session.producer_id,
                        0,
                        session.next_sequence,
                    );
                    let mut values = Vec::new();
                    for _ in 0..count {
                        self.next_value += 1;
                        let value = format!("i{}", self.next_value);
                        builder.push(now as i64, None, Some(value.as_bytes()), &[]);
                        values.push(value);
                    }
                    self.sessions
                        .get_mut(&p)
                        .expect("a session per partition")
                        .delivery = Some(Delivery {
                        values,
                        batch: builder.build(),
                        started: now,
                        request: 0,
                        resend_at: now,
                    });
                    true
                }
                None => false,
                Some(d) => d.resend_at <= now,
            };
            if !resend {
                continue;
            }
            let target = self.target(p);
            self.next_request += 1;
            let request = self.next_request;
            let d = self
                .sessions
                .get_mut(&p)
                .expect("a session per partition")
                .delivery
                .as_mut()
                .expect("set above");
            if d.request != 0 {
                self.summary.idempotent_retries += 1;
            }
            d.request = request;
            d.resend_at = now + REQUEST_TIMEOUT;
            let batch = d.batch.clone();
            self.send_produce(target, request, p, batch);
        }
    }

    /// Takes the answer to an idempotent producer's request (`false`: not one of theirs, or a
    /// superseded attempt's).
    fn idempotent_answer(&mut self, request: u64, result: &Result<i64, ErrorCode>) -> bool {
        let Some((&p, _)) = self
            .sessions
            .iter()
            .find(|(_, s)| s.delivery.as_ref().is_some_and(|d| d.request == request))
        else {
            return false;
        };
        let now = self.now;
        let unclean = self.unclean.contains(&p);
        let session = self.sessions.get_mut(&p).expect("found");
        let d = session.delivery.as_mut().expect("found");
        match result {
            Ok(first) => {
                let first = *first;
                if !unclean && session.last_acked.is_some_and(|last| first <= last) {
                    let (pid, last) = (session.producer_id, session.last_acked);
                    self.fail(format!(
                        "producer {pid} on partition {p}: a later batch acknowledged at offset {first}, at or before the previous one ({last:?})"
                    ));
                }
                let d = session.delivery.take().expect("found");
                session.next_sequence += d.values.len() as i32;
                session.last_acked = Some(first);
                self.summary.idempotent_acknowledged += self.record_acks(p, first, d.values);
            }
            Err(code) => {
                let retriable = matches!(
                    code,
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::NotEnoughReplicasAfterAppend
                        | ErrorCode::RequestTimedOut
                        | ErrorCode::KafkaStorageError
                );
                if retriable && now - d.started < DELIVERY_TIMEOUT {
                    d.resend_at = now + 20;
                } else {
                    // Given up (its records may or may not be in the log): a new producer id,
                    // sequences from 0, as the client's reset after a failed batch.
                    self.summary.idempotent_given_up += 1;
                    self.summary.failed += d.values.len() as u64;
                    session.delivery = None;
                    session.producer_id = self.next_producer_id;
                    session.next_sequence = 0;
                    session.last_acked = None;
                    self.next_producer_id += 1;
                }
            }
        }
        true
    }

    // ---- faults ---------------------------------------------------------------------------

    fn nemesis(&mut self) {
        self.summary.faults += 1;
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        let b = self.rng.pick(&ids);
        let node = Node::Broker(b);
        match self.rng.below(10) {
            0 | 1 => {
                if self.brokers[&b].up {
                    let down_for = self.rng.between(50, 2_000);
                    let clean = self.rng.chance(333);
                    self.trace(|| {
                        let how = if clean { "stop (clean)" } else { "crash" };
                        format!("{how} broker {b} for {down_for} ms")
                    });
                    self.crash(b, clean);
                    self.schedule(down_for, Event::Restart(b));
                }
            }
            2 => {
                let pause = self.rng.between(100, 1_200);
                self.trace(|| format!("pause broker {b} for {pause} ms"));
                let broker = self.brokers.get_mut(&b).expect("known");
                if broker.up {
                    broker.paused_until = Some(self.now + pause);
                }
            }
            3 => {
                let edges = if self.rng.chance(500) {
                    vec![(node, Node::Controller), (Node::Controller, node)]
                } else if self.rng.chance(500) {
                    vec![(node, Node::Controller)]
                } else {
                    vec![(Node::Controller, node)]
                };
                self.cut(edges);
            }
            4 => {
                let other = self.rng.pick(&ids);
                if other != b {
                    let mut edges = vec![(node, Node::Broker(other))];
                    if self.rng.chance(500) {
                        edges.push((Node::Broker(other), node));
                    }
                    self.cut(edges);
                }
            }
            5 => {
                // Cut from its peers (the leader-isolation case), or from everything.
                let everything = self.rng.chance(400);
                let mut edges = Vec::new();
                for &other in ids.iter().filter(|&&o| o != b) {
                    edges.push((node, Node::Broker(other)));
                    edges.push((Node::Broker(other), node));
                }
                if everything {
                    edges.push((node, Node::Controller));
                    edges.push((Node::Controller, node));
                    edges.push((node, Node::Client));
                    edges.push((Node::Client, node));
                }
                self.cut(edges);
            }
            6 => {
                self.trace(|| "controller failover".to_owned());
                self.controller.liveness.clear();
                self.controller.since = self.now;
                let node_id = 1 + self.rng.below(3);
                let _ = self.write(MetadataRecord::BecomeController {
                    node_id,
                    term: self.now,
                });
            }
            7 => {
                self.loss_per_mille = if self.loss_per_mille == 0 {
                    self.rng.between(20, 250)
                } else {
                    0
                };
                self.trace(|| format!("message loss {} per mille", self.loss_per_mille));
            }
            _ => {
                // Crash the leader of a partition (the most damaging crash).
                let p = self.rng.below(self.partition_count as u64) as usize;
                if let Some(leader) = self.controller.image.topics[TOPIC].partitions[p].leader
                    && self.brokers[&leader].up
                {
                    let down_for = self.rng.between(50, 2_000);
                    self.trace(|| {
                        format!("crash leader {leader} of partition {p} for {down_for} ms")
                    });
                    self.crash(leader, false);
                    self.schedule(down_for, Event::Restart(leader));
                }
            }
        }
    }

    fn cut(&mut self, edges: Vec<(Node, Node)>) {
        let duration = self.rng.between(100, 2_500);
        self.trace(|| format!("cut {edges:?} for {duration} ms"));
        for edge in &edges {
            self.cuts.insert(*edge);
        }
        self.schedule(duration, Event::Uncut(edges));
    }

    fn heal(&mut self) {
        self.cuts.clear();
        self.loss_per_mille = 0;
        let ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        for id in ids {
            self.brokers.get_mut(&id).expect("known").paused_until = None;
            self.restart(id);
        }
        self.producing = false;
    }

    // ---- the checker ----------------------------------------------------------------------

    fn fail(&self, what: String) -> ! {
        panic!(
            "replication simulation seed {} failed at {} ms: {what}\nreplay: TRIBUTARY_SIM_SEED={} cargo test -p tributary-broker --test replication_sim",
            self.seed, self.now, self.seed
        );
    }

    /// Checks every leader's log below its high watermark against what was seen committed.
    fn observe(&mut self) {
        let mut leaders = Vec::new();
        for (id, b) in &self.brokers {
            if !b.up {
                continue;
            }
            for (p, partition) in &b.partitions {
                let role = partition.role();
                if role.leader == Some(*id) {
                    leaders.push((*id, *p, b.life, role.leader_epoch, partition.clone()));
                }
            }
        }
        for (id, p, life, epoch, partition) in leaders {
            let hw = partition.high_watermark();
            let key = (life, epoch);
            let from = match self.observed.get(&(id, p)) {
                Some(seen) if seen.term == key => {
                    if hw < seen.high_watermark {
                        self.fail(format!(
                            "broker {id} leads partition {p} at epoch {epoch} and its high watermark went back from {} to {hw}",
                            seen.high_watermark
                        ));
                    }
                    seen.checked
                }
                _ => 0,
            };
            if hw > from {
                let batches = read_range(partition.log(), from, hw);
                for (offset, value) in values_of(&batches) {
                    if offset < from || offset >= hw || self.unclean.contains(&p) {
                        continue;
                    }
                    match self.committed.get(&(p, offset)) {
                        Some(seen) if *seen != value => self.fail(format!(
                            "partition {p} offset {offset} was committed as {seen}, but leader {id} (epoch {epoch}) holds {value} below its high watermark {hw}"
                        )),
                        Some(_) => {}
                        None => {
                            self.committed.insert((p, offset), value);
                        }
                    }
                }
            }
            self.observed.insert(
                (id, p),
                Observed {
                    term: key,
                    high_watermark: hw,
                    checked: hw.max(from),
                },
            );
        }
    }

    /// Whether every partition has a leader, a full ISR, and every replica has the leader's
    /// whole log, committed.
    fn healed(&self) -> bool {
        let image = &self.controller.image;
        if image
            .brokers
            .values()
            .any(|b| b.state != BrokerState::Running)
        {
            return false;
        }
        image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
            .all(|(p, state)| {
                let Some(leader) = state.leader else {
                    return false;
                };
                let mut isr = state.isr.clone();
                let mut replicas = state.replicas.clone();
                isr.sort_unstable();
                replicas.sort_unstable();
                if isr != replicas {
                    return false;
                }
                let lead = &self.brokers[&leader].partitions[&(p as i32)];
                let leo = lead.log().log_end_offset();
                lead.role().isr.len() == replicas.len()
                    && lead.high_watermark() == leo
                    && replicas.iter().all(|r| {
                        let partition = &self.brokers[r].partitions[&(p as i32)];
                        partition.log().log_end_offset() == leo
                            && partition.role().leader == Some(leader)
                    })
            })
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (p, state) in self.controller.image.topics[TOPIC]
            .partitions
            .iter()
            .enumerate()
        {
            out.push_str(&format!("\n  partition {p}: {state:?}"));
            for r in &state.replicas {
                let b = &self.brokers[r];
                match b.partitions.get(&(p as i32)) {
                    Some(partition) => out.push_str(&format!(
                        "\n    broker {r} (up {}, epoch {}): role {:?}, leo {}, hw {}, epochs {:?}, follow {:?}, in flight {:?}",
                        b.up,
                        b.epoch,
                        partition.role(),
                        partition.log().log_end_offset(),
                        partition.high_watermark(),
                        partition.log().epoch_entries(),
                        b.follows.get(&(p as i32)),
                        b.in_flight,
                    )),
                    None => out.push_str(&format!("\n    broker {r}: down")),
                }
            }
        }
        for b in self.controller.image.brokers.values() {
            out.push_str(&format!(
                "\n  broker {} state {:?} epoch {}",
                b.id, b.state, b.epoch
            ));
        }
        out
    }

    fn final_check(&mut self) {
        self.observe();
        for p in 0..self.partition_count {
            let state = &self.controller.image.topics[TOPIC].partitions[p as usize];
            let leader = state.leader.expect("healed: a leader");
            let lead = self.brokers[&leader].partitions[&p].clone();
            let leo = lead.log().log_end_offset();
            let reference = read_range(lead.log(), 0, leo);
            for r in &state.replicas {
                let log_bytes = read_range(self.brokers[r].partitions[&p].log(), 0, leo);
                if log_bytes != reference {
                    self.fail(format!(
                        "partition {p}: broker {r}'s log differs from leader {leader}'s below the log end {leo}"
                    ));
                }
            }
            if self.unclean.contains(&p) {
                continue;
            }
            let held: BTreeMap<i64, String> = values_of(&reference).into_iter().collect();
            let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
            for (offset, value) in &held {
                if let Some(earlier) = seen.insert(value, *offset) {
                    self.fail(format!(
                        "partition {p}: {value} is in the log twice, at offsets {earlier} and {offset} (idempotence broken)"
                    ));
                }
            }
            for ((ap, offset), value) in self.acked.range((p, i64::MIN)..=(p, i64::MAX)) {
                debug_assert_eq!(*ap, p);
                match held.get(offset) {
                    Some(v) if v == value => {}
                    other => self.fail(format!(
                        "acknowledged write {value} at partition {p} offset {offset} is lost: the log holds {other:?}"
                    )),
                }
            }
            for ((_, offset), value) in self.committed.range((p, i64::MIN)..=(p, i64::MAX)) {
                if held.get(offset) != Some(value) {
                    self.fail(format!(
                        "partition {p} offset {offset} was committed as {value}; the healed log holds {:?}",
                        held.get(offset)
                    ));
                }
            }
        }
    }
}

/// Runs one seed in a fresh directory and checks it.
fn run_seed(seed: u64, verbose: bool) -> Summary {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut sim = Sim::new(seed, tmp.path(), verbose);
    sim.trace(|| {
        format!(
            "{} brokers, {} partitions, unclean election {}",
            sim.brokers.len(),
            sim.partition_count,
            if sim.unclean_allowed { "on" } else { "off" }
        )
    });
    sim.run_until(FAULT_PHASE, |_| false);
    sim.trace(|| "heal".to_owned());
    sim.heal();
    let deadline = FAULT_PHASE + HEAL_BOUND;
    let mut next_check = sim.now;
    let healed = sim.run_until(deadline, |s| {
        if s.now < next_check {
            return false;
        }
        next_check = s.now + 50;
        // A request or answer lost on the way: the client gives up on it (not acknowledged).
        let now = s.now;
        let before = s.client_pending.len();
        s.client_pending
            .retain(|_, (_, _, sent)| now - *sent < PRODUCE_TIMEOUT + 1_000);
        s.summary.failed += (before - s.client_pending.len()) as u64;
        s.client_pending.is_empty()
            && s.sessions.values().all(|x| x.delivery.is_none())
            && s.healed()
    });
    if !healed {
        sim.fail(format!(
            "the cluster did not heal within {HEAL_BOUND} ms after the faults stopped:{}",
            sim.describe()
        ));
    }
    sim.summary.healed_at = sim.now - FAULT_PHASE;
    sim.final_check();
    sim.summary.clone()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

#[test]
fn replication_survives_crashes_partitions_pauses_and_controller_failovers() {
    let (seeds, verbose) = match env_u64("TRIBUTARY_SIM_SEED") {
        Some(seed) => (seed..seed + 1, true),
        None => {
            let start = env_u64("TRIBUTARY_SIM_SEED_START").unwrap_or(1);
            let count = env_u64("TRIBUTARY_SIM_SEEDS").unwrap_or(100);
            (start..start + count, false)
        }
    };
    let started = Instant::now();
    let mut total = Summary::default();
    let mut slowest_heal = 0;
    let count = seeds.end - seeds.start;
    for seed in seeds {
        let s = run_seed(seed, verbose);
        total.faults += s.faults;
        total.produce_requests += s.produce_requests;
        total.acknowledged += s.acknowledged;
        total.failed += s.failed;
        total.idempotent_acknowledged += s.idempotent_acknowledged;
        total.idempotent_retries += s.idempotent_retries;
        total.idempotent_given_up += s.idempotent_given_up;
        total.leader_changes += s.leader_changes;
        total.unclean_elections += s.unclean_elections;
        total.truncations += s.truncations;
        total.messages += s.messages;
        total.dropped += s.dropped;
        slowest_heal = slowest_heal.max(s.healed_at);
        if verbose {
            eprintln!("seed {seed}: {s:?}");
        }
    }
    eprintln!(
        "replication simulation: {count} seeds in {:.1} s: {} faults, {} produce requests, {} records acknowledged (0 lost; {} by idempotent producers, after {} retries, none duplicated; {} batches given up), {} failed, {} leader changes, {} unclean elections, {} follower truncations, {} messages ({} dropped), slowest heal {} ms",
        started.elapsed().as_secs_f64(),
        total.faults,
        total.produce_requests,
        total.acknowledged + total.idempotent_acknowledged,
        total.idempotent_acknowledged,
        total.idempotent_retries,
        total.idempotent_given_up,
        total.failed,
        total.leader_changes,
        total.unclean_elections,
        total.truncations,
        total.messages,
        total.dropped,
        slowest_heal
    );
    assert!(total.acknowledged > 0, "the workload acknowledged nothing");
    assert!(
        total.leader_changes > 0,
        "no leader ever changed: the faults did nothing"
    );
}
