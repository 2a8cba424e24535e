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
//!
//! # Map
//!
//! - `main.rs`: the constants, the simulation's types ([`Sim`] and what it holds), one seed's
//!   run ([`run_seed`]) and the test.
//! - `scheduler.rs`: building a seed's cluster, the simulated clock and network, the dispatch
//!   of events.
//! - `controller.rs`: the controller's metadata writes, elections, fencing and answers.
//! - `broker.rs`: the brokers' loops and messages (metadata, fetchers, acks=all waits, the
//!   leader's side of a fetch), crash and restart.
//! - `client.rs`: the plain and the idempotent producers and the acknowledgements they record.
//! - `faults.rs`: the fault schedule (the nemesis) and the heal.
//! - `checker.rs`: the checks: leaders observed as the seed runs, the heal condition, the final
//!   check.
//!
//! [`on_epoch_end`]: tributary_broker::replication::on_epoch_end
//! [`on_fetched`]: tributary_broker::replication::on_fetched
//! [`plan_create_topic`]: tributary_metadata::controller::plan_create_topic
//! [`plan_elections`]: tributary_metadata::controller::plan_elections
//! [`plan_alter_partition`]: tributary_metadata::controller::plan_alter_partition
//! [`plan_preferred_leaders`]: tributary_metadata::controller::plan_preferred_leaders
//! [`MetadataImage::apply`]: tributary_metadata::MetadataImage::apply

// The Raft simulation's generator; this harness uses only part of it.
#[allow(dead_code)]
#[path = "../../../tributary-raft/tests/sim/rng.rs"]
mod rng;

mod broker;
mod checker;
mod client;
mod controller;
mod faults;
mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rng::SplitMix64;
use tributary_broker::api::TopicPartition;
use tributary_broker::partition::{IsrProposal, Partition};
use tributary_broker::replication::Fetched;
use tributary_metadata::{BrokerId, MetadataImage, PartitionState};
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

/// One partition of a follower's fetch: partition, log end offset, log start offset, leader
/// epoch followed.
type FetchPosition = (i32, i64, i64, i32);

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
        partitions: Vec<FetchPosition>,
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
