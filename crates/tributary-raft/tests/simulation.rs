//! Deterministic simulation of the Raft layer (issue 9): real [`RaftNode`]s (openraft, this
//! crate's storage code and node wrapper) in one process, on a simulated network and simulated
//! disks, under simulated time, with faults chosen by a seed. Each seed runs a few tens of
//! simulated seconds in a fraction of a real second, so `cargo test` runs many of them.
//!
//! # The model
//!
//! - **Time** is tokio's paused clock: a seed runs on its own current-thread runtime that jumps
//!   to the next timer whenever every task waits (openraft's heartbeats and election timeouts,
//!   the network's delays, the clients' and the nemesis's pauses). The production timeouts of
//!   [`RaftConfig::default`] are used as they are.
//! - **The network** (`sim/network.rs`) implements openraft's `RaftNetworkFactory` and
//!   `RaftNetwork`: each RPC (append-entries, vote, install-snapshot chunk) is handed straight to
//!   the target's `openraft::Raft`. Each directed link can be cut (partitions are symmetric cuts,
//!   and there are one-way cuts); a message to a node that is down or over a cut link fails at
//!   once as `Unreachable`; otherwise requests and replies are delayed at random (with rare slow
//!   messages longer than openraft's RPC timeout, so RPCs time out and overlap), and a request or
//!   a reply can be lost (a lost reply means the target acted on a request the sender thinks
//!   failed). A cut or a crash while a message is in flight loses it.
//! - **Disks** (`sim/disk.rs`) are in-memory [`RaftStore`]s that tell flushed from unflushed
//!   writes. A **crash** stops the node at once (nothing reaches it, its Raft is shut down, its
//!   disk fails every later call) and the disk keeps exactly what the store contract promises:
//!   everything flushed, plus a random prefix of the writes since the last flush. A node is
//!   crashed either from outside ("killed", at a moment the nemesis picks) or by its disk failing
//!   at its n-th next call (a power loss in the middle of an append, a vote, a truncation, a
//!   snapshot: between a write and its flush). A **restart** starts a new node, with a new empty
//!   state machine, on that surviving image, as a real process restart on the same directory
//!   would. (sled itself is not used: in one process a dropped sled database cannot lose its
//!   unflushed writes, so it could not test that the Raft layer flushes what it must; a harness
//!   check with flushes made no-ops fails most seeds at once.)
//! - **The workload**: 1-3 clients write unique ids (the command of the test state machine,
//!   `sim/machine.rs`, which records its whole applied history) to the node they believe leads,
//!   following `ForwardToLeader` hints, with a timeout per write. A write whose `client_write`
//!   returned `Ok` is *acknowledged*, with its log index.
//! - **The nemesis**, from the seed: every 0.2-2.5 s one of partition (a random minority cut off
//!   from the rest), one-way cuts, heal, kill a node, arm a node's disk to fail, restart a crashed
//!   node, change the link quality (loss, delays), or trigger a snapshot. Small snapshot thresholds and a short log tail
//!   kept after snapshots make snapshots, log purges and snapshot installs happen. After the
//!   faulty period everything is healed and every crashed node restarted.
//!
//! # The checks (a failure names the seed and what broke, with the nemesis's event log)
//!
//! - **Election safety.** openraft 0.9 as built here (without its `single-term-leader` feature)
//!   identifies a leader by `(term, node id)`, and *allows two leaders in one term* (a voter that
//!   granted `(t, 1)` may then grant the greater `(t, 2)`; the lesser leader is then refused and
//!   steps down; log ids carry the leader's node id, so their entries cannot be confused). So the
//!   check is openraft's form of it: a node acts as leader only with a committed vote for itself
//!   (the vote a quorum granted), and a node's vote never goes back, not even across a crash (votes
//!   must be durable before they are used). Terms with two leaders are counted and reported.
//! - **State-machine safety.** Every replica reports every command it applies, or restores from a
//!   snapshot: no two replicas may apply different writes at one log index, no write may be applied
//!   at two indexes, a replica's indexes strictly increase, and a snapshot it installs extends what
//!   it applied. So all applied histories are prefixes of one history.
//! - **Durability.** Every acknowledged write is, after the final heal, in every node's state at
//!   its acknowledged index.
//! - **Liveness.** Within 30 simulated seconds of the final heal, a write commits (so there is a
//!   leader) and every node applies it and holds the same history up to it.
//! - **No panics** on the simulation's thread (openraft's own assertions included: tokio would
//!   otherwise swallow a panicking task), and each seed finishes within 30 s of real time.
//!
//! # Running
//!
//! `cargo test -p tributary-raft --test simulation` runs [`DEFAULT_SEEDS`] seeds (0, 1, 2, ...)
//! on two threads. `TRIBUTARY_SIM_SEEDS=5000` runs more; `TRIBUTARY_SIM_SEED=1234` replays one
//! seed and prints its event log; `TRIBUTARY_SIM_SEED_START=n` starts the seed range at `n`;
//! `TRIBUTARY_SIM_STRICT=0` excuses the bug below (for bisecting an old commit).
//!
//! # A bug found and fixed ([`KNOWN_BUG`])
//!
//! A follower installing a snapshot from the leader could have its log purge and its commit
//! pointer reach the disk before the snapshot did; a crash then left a store it could not restart
//! from (openraft's `purge_upto <= snapshot_last_log_id` assertion, or "Failed to get log
//! entries" at start). About 4 seeds in 1000 hit it (seed 748, for one). Fixed in
//! `src/storage.rs`: a purge beyond the stored snapshot waits until that snapshot is saved, and
//! the commit pointer read at start is clamped to what the snapshot and the log hold. The harness
//! still detects the state from the surviving image before restarting a node, and fails the run
//! on it.
//!
//! A seed fixes the cluster, the parameters, the fault schedule, and the random streams of the
//! network, the disks and the clients. It does not fix everything: openraft draws its election timeouts from the
//! thread's random generator, and the storage layer flushes on tokio's blocking pool, whose
//! threads finish in real time, so the interleaving of a replay can differ in detail. A failure
//! found by a seed reproduces by replaying it, possibly a few times.

mod sim;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant as WallInstant};

use sim::disk::{Image, SimDisk};
use sim::machine::{History, Observer, WriteId};
use sim::network::{Quality, Router, SimNetworkFactory};
use sim::rng::SplitMix64;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tributary_raft::{Error, NodeId, RaftConfig, RaftNode, RaftStore};

/// How many seeds `cargo test` runs unless `TRIBUTARY_SIM_SEEDS` says otherwise.
const DEFAULT_SEEDS: u64 = 100;

/// How long, in simulated time, the cluster has after the final heal to elect a leader, commit a
/// write and converge.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);

/// A bug of the Raft layer this simulation found, still open: a follower that installs a
/// snapshot from the leader gets its log purged, and its commit pointer moved, up to the
/// snapshot's end *before* the snapshot is durable (openraft 0.9.25 runs `PurgeLog` and
/// `save_committed` on the log store while its state-machine worker is still installing the
/// snapshot, and `LogStorage::purge`/`save_committed` write at once; the next flush of any
/// write makes them durable). A crash in between leaves a store the node cannot restart from.
/// It fails the run (fixed in `src/storage.rs`); with `TRIBUTARY_SIM_STRICT=0` such a node is
/// counted as lost (like a wiped disk) and the other checks go on without it.
const KNOWN_BUG: &str = "known bug: purge/commit of an installed snapshot made durable before \
                         the snapshot";

/// The most real time one seed may take (normally a fraction of a second).
const WALL_LIMIT: Duration = Duration::from_secs(30);

/// The event log of a run: what the nemesis did, when (simulated time).
type Events = Arc<Mutex<Vec<String>>>;

/// The longest a client waits for one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// The parameters of one seed's run.
#[derive(Debug, Clone)]
struct Params {
    nodes: u64,
    clients: u64,
    faulty_period: Duration,
    config: RaftConfig,
}

impl Params {
    fn from_rng(rng: &mut SplitMix64) -> Params {
        let config = RaftConfig {
            snapshot_logs_since_last: rng.between(10, 200),
            max_in_snapshot_log_to_keep: rng.between(0, 20),
            max_payload_entries: rng.between(1, 64),
            ..RaftConfig::default()
        };
        Params {
            nodes: if rng.chance(250) { 5 } else { 3 },
            clients: rng.between(1, 3),
            faulty_period: rng.millis(20_000, 40_000),
            config,
        }
    }
}

/// An acknowledged write.
#[derive(Debug, Clone, Copy)]
struct Ack {
    write: WriteId,
    index: u64,
    node: NodeId,
}

/// One node: its running incarnation, or what its disk kept when it crashed.
#[derive(Debug, Default)]
struct Member {
    running: Option<Running>,
    /// The surviving disk image while the node is down.
    image: Image,
    incarnations: u32,
    /// Lost to the known bug (see [`KNOWN_BUG`]): its disk kept a state it cannot restart from.
    lost: bool,
}

#[derive(Debug)]
struct Running {
    node: Arc<RaftNode<History>>,
    disk: Arc<SimDisk>,
    watcher: JoinHandle<()>,
}

/// The simulated cluster of one seed.
struct Cluster {
    start: Instant,
    config: RaftConfig,
    ids: Vec<NodeId>,
    router: Arc<Router>,
    observer: Arc<Observer>,
    members: Mutex<BTreeMap<NodeId, Member>>,
    acks: Mutex<Vec<Ack>>,
    events: Events,
    /// The random choices of the disks (which unflushed writes survive a crash).
    disk_rng: Mutex<SplitMix64>,
    /// Where disks report crashing by themselves.
    crash_tx: tokio::sync::mpsc::UnboundedSender<NodeId>,
    /// Occurrences of [`KNOWN_BUG`].
    known: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    fn event(&self, what: impl AsRef<str>) {
        let at = self.start.elapsed().as_millis();
        lock(&self.events).push(format!("{at:>6} ms  {}", what.as_ref()));
    }

    /// The running incarnation of node `id`, if it is up.
    fn node(&self, id: NodeId) -> Option<Arc<RaftNode<History>>> {
        lock(&self.members)
            .get(&id)
            .and_then(|m| m.running.as_ref())
            .map(|r| Arc::clone(&r.node))
    }

    fn running_ids(&self) -> Vec<NodeId> {
        lock(&self.members)
            .iter()
            .filter(|(_, m)| m.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether node `id` was lost to [`KNOWN_BUG`].
    fn is_lost(&self, id: NodeId) -> bool {
        lock(&self.members).get(&id).is_some_and(|m| m.lost)
    }

    /// The nodes that are down (and can restart).
    fn down_ids(&self) -> Vec<NodeId> {
        lock(&self.members)
            .iter()
            .filter(|(_, m)| m.running.is_none() && !m.lost)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts node `id` on its surviving disk image (empty the first time).
    async fn start_node(&self, id: NodeId) {
        let image = {
            let mut members = lock(&self.members);
            let member = members.entry(id).or_default();
            assert!(member.running.is_none(), "node {id} is running");
            if let Some(problem) = member.image.restart_problem() {
                member.lost = true;
                drop(members);
                let what = format!("node {id} cannot restart: {problem} ({KNOWN_BUG})");
                self.event(&what);
                lock(&self.known).push(what);
                return;
            }
            member.incarnations += 1;
            std::mem::take(&mut member.image)
        };
        let rng = lock(&self.disk_rng).fork();
        let disk = Arc::new(SimDisk::new(id, image, rng, self.crash_tx.clone()));
        let store: Arc<dyn RaftStore> = Arc::clone(&disk) as Arc<dyn RaftStore>;
        let network = SimNetworkFactory {
            from: id,
            router: Arc::clone(&self.router),
        };
        let state_machine = History::new(id, Arc::clone(&self.observer));
        let node = match RaftNode::start_with(
            id,
            self.config.clone(),
            store,
            network,
            state_machine,
        )
        .await
        {
            Ok(node) => Arc::new(node),
            Err(e) => {
                // A node that cannot restart from what its disk kept is a durability bug.
                self.observer
                    .violation(format!("recovery: node {id} failed to start: {e}"));
                return;
            }
        };
        self.router.connect(id, node.raft().clone());
        let watcher = {
            let mut metrics = node.metrics();
            let observer = Arc::clone(&self.observer);
            tokio::spawn(async move {
                loop {
                    let current = metrics.borrow_and_update().clone();
                    observer.metrics(id, &current);
                    if metrics.changed().await.is_err() {
                        break;
                    }
                }
            })
        };
        lock(&self.members).get_mut(&id).expect("member").running = Some(Running {
            node,
            disk,
            watcher,
        });
    }

    /// The disk of node `id`'s running incarnation.
    fn disk(&self, id: NodeId) -> Option<Arc<SimDisk>> {
        lock(&self.members)
            .get(&id)
            .and_then(|m| m.running.as_ref())
            .map(|r| Arc::clone(&r.disk))
    }

    /// Crashes node `id`: it stops at once and its disk keeps what the store contract promises.
    async fn crash(&self, id: NodeId, why: &str) {
        // All at once, before any await: the node may be restarted while the old incarnation's
        // tasks wind down, and the restart must find the surviving image.
        let running = {
            let mut members = lock(&self.members);
            let Some(member) = members.get_mut(&id) else {
                return;
            };
            let Some(running) = member.running.take() else {
                return;
            };
            self.router.disconnect(id);
            running.watcher.abort();
            let lost = running.disk.crash();
            member.image = running.disk.survivor();
            drop(members);
            self.event(format!(
                "crash node {id}, {why} (term {}, {lost} unflushed writes lost)",
                running.node.term()
            ));
            running
        };
        // Every store call of the old incarnation fails from now on; stop its tasks.
        let _ = tokio::time::timeout(Duration::from_secs(10), running.node.raft().shutdown()).await;
    }

    async fn restart(&self, id: NodeId) {
        let image = lock(&self.members)
            .get(&id)
            .map(|m| m.image.describe())
            .unwrap_or_default();
        self.event(format!("restart node {id} on: {image}"));
        self.start_node(id).await;
    }

    fn ack(&self, ack: Ack) {
        lock(&self.acks).push(ack);
    }
}

/// One client: writes unique ids until `until`, to the node it believes leads.
async fn client(
    cluster: Arc<Cluster>,
    number: u64,
    mut rng: SplitMix64,
    until: Instant,
    writes: Arc<AtomicU64>,
) {
    let mut hint: Option<NodeId> = None;
    let mut next: WriteId = number * 1_000_000_000;
    while Instant::now() < until {
        let target = hint.unwrap_or_else(|| rng.pick(&cluster.ids));
        let Some(node) = cluster.node(target) else {
            hint = None;
            tokio::time::sleep(rng.millis(10, 100)).await;
            continue;
        };
        next += 1;
        let write = next;
        writes.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(WRITE_TIMEOUT, node.client_write(write)).await {
            Ok(Ok(outcome)) => {
                cluster.ack(Ack {
                    write,
                    index: outcome.log_index,
                    node: target,
                });
                hint = Some(target);
                tokio::time::sleep(rng.millis(0, 30)).await;
            }
            Ok(Err(Error::ForwardToLeader { leader_id, .. })) => {
                hint = leader_id.filter(|l| *l != target);
                if hint.is_none() {
                    tokio::time::sleep(rng.millis(20, 200)).await;
                }
            }
            Ok(Err(_)) | Err(_) => {
                hint = None;
                tokio::time::sleep(rng.millis(10, 100)).await;
            }
        }
    }
}

/// A random link quality, from perfect to bad.
fn random_quality(rng: &mut SplitMix64) -> Quality {
    match rng.below(4) {
        0 => Quality::PERFECT,
        1 => Quality {
            lose_request: 0,
            lose_reply: 0,
            max_delay_ms: rng.between(1, 20),
            slow: 0,
            slow_delay_ms: 0,
        },
        _ => Quality {
            lose_request: rng.between(0, 100),
            lose_reply: rng.between(0, 100),
            max_delay_ms: rng.between(1, 40),
            slow: rng.between(0, 30),
            slow_delay_ms: rng.between(100, 1_000),
        },
    }
}

/// The fault schedule: runs until `until`.
async fn nemesis(cluster: &Cluster, rng: &mut SplitMix64, until: Instant) {
    let ids = cluster.ids.clone();
    let n = ids.len();
    loop {
        let pause = rng.millis(200, 2_500);
        if Instant::now() + pause >= until {
            break;
        }
        tokio::time::sleep(pause).await;
        match rng.below(100) {
            0..=19 => {
                // A random minority is cut off from the rest, both ways.
                let mut shuffled = ids.clone();
                for i in (1..n).rev() {
                    let j = usize::try_from(rng.below(i as u64 + 1)).expect("fits");
                    shuffled.swap(i, j);
                }
                let k = usize::try_from(rng.between(1, (n as u64 - 1) / 2)).expect("fits");
                let (minority, majority) = shuffled.split_at(k);
                for &a in minority {
                    for &b in majority {
                        cluster.router.cut(a, b);
                        cluster.router.cut(b, a);
                    }
                }
                cluster.event(format!("partition {minority:?} | {majority:?}"));
            }
            20..=29 => {
                let from = rng.pick(&ids);
                let to = rng.pick(&ids);
                if from != to {
                    cluster.router.cut(from, to);
                    cluster.event(format!("cut {from} -> {to} (one way)"));
                }
            }
            30..=49 => {
                cluster.router.heal();
                cluster.event("heal the network");
            }
            50..=57 => {
                let running = cluster.running_ids();
                if !running.is_empty() {
                    cluster.crash(rng.pick(&running), "killed").await;
                }
            }
            58..=64 => {
                let running = cluster.running_ids();
                if !running.is_empty() {
                    let id = rng.pick(&running);
                    let calls = u32::try_from(rng.between(1, 40)).expect("fits");
                    if let Some(disk) = cluster.disk(id) {
                        disk.arm(calls);
                        cluster.event(format!(
                            "node {id}'s disk fails at its call {calls} from now"
                        ));
                    }
                }
            }
            65..=79 => {
                let down = cluster.down_ids();
                if !down.is_empty() {
                    cluster.restart(rng.pick(&down)).await;
                }
            }
            80..=89 => {
                let quality = random_quality(rng);
                cluster.router.set_quality(quality);
                cluster.event(format!("link quality {quality:?}"));
            }
            _ => {
                let running = cluster.running_ids();
                if !running.is_empty() {
                    let id = rng.pick(&running);
                    if let Some(node) = cluster.node(id) {
                        let _ = node.trigger_snapshot().await;
                        cluster.event(format!("trigger a snapshot on node {id}"));
                    }
                }
            }
        }
    }
}

/// What one seed's run found.
#[derive(Debug)]
struct Outcome {
    failures: Vec<String>,
    summary: String,
    events: Vec<String>,
    /// Terms with two leaders, acknowledged writes.
    counts: (usize, usize),
    /// Occurrences of [`KNOWN_BUG`] (failures unless `TRIBUTARY_SIM_STRICT=0`).
    known: Vec<String>,
}

thread_local! {
    /// The panics of this thread's simulation (openraft's tasks run on it), while one runs.
    static PANICS: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Routes the panics of simulation threads (a task that panics, openraft's core for one, is
/// caught by tokio, and would otherwise show only as a liveness failure) to [`PANICS`].
fn capture_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = PANICS.with(|panics| {
                let mut panics = panics.borrow_mut();
                let Some(panics) = panics.as_mut() else {
                    return false;
                };
                let what = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| {
                        info.payload()
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                    })
                    .unwrap_or_else(|| "a panic".to_owned());
                let at = info
                    .location()
                    .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
                panics.push(format!("panic{at}: {what}"));
                true
            });
            if !captured {
                default(info);
            }
        }));
    });
}

/// Runs one seed on a fresh paused-clock runtime, for at most [`WALL_LIMIT`] of real time.
fn run_seed(seed: u64) -> Outcome {
    capture_panics();
    PANICS.with(|panics| *panics.borrow_mut() = Some(Vec::new()));
    let mut outcome = run_seed_inner(seed);
    let panics = PANICS
        .with(|panics| panics.borrow_mut().take())
        .unwrap_or_default();
    outcome.failures.extend(panics);
    outcome
}

fn run_seed_inner(seed: u64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let events: Events = Arc::default();
    // Every wait of the simulation is bounded in simulated time; this bounds it in real time too
    // (a livelock that never lets the clock advance would otherwise hang the test).
    let (expired, expiry) = tokio::sync::oneshot::channel::<()>();
    let (finished, done) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(WALL_LIMIT) {
            let _ = expired.send(());
        }
    });
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let start = Instant::now();
            tokio::select! {
                outcome = simulate(seed, Arc::clone(&events)) => outcome,
                _ = expiry => Outcome {
                    failures: vec![format!(
                        "the run did not finish within {WALL_LIMIT:?} of real time (stopped \
                         {:?} into the simulation)",
                        start.elapsed()
                    )],
                    summary: String::new(),
                    events: lock(&events).clone(),
                    counts: (0, 0),
                    known: Vec::new(),
                },
            }
        })
    }));
    drop(finished);
    let _ = watchdog.join();
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            Outcome {
                failures: vec![format!("the harness panicked: {what}")],
                summary: String::new(),
                events: lock(&events).clone(),
                counts: (0, 0),
                known: Vec::new(),
            }
        }
    }
}

async fn simulate(seed: u64, events: Events) -> Outcome {
    let mut rng = SplitMix64::new(seed);
    let params = Params::from_rng(&mut rng);
    let ids: Vec<NodeId> = (1..=params.nodes).collect();
    let (crash_tx, mut crashes) = tokio::sync::mpsc::unbounded_channel();
    let cluster = Arc::new(Cluster {
        start: Instant::now(),
        config: params.config.clone(),
        ids: ids.clone(),
        router: Router::new(rng.fork()),
        observer: Arc::new(Observer::default()),
        members: Mutex::new(BTreeMap::new()),
        acks: Mutex::new(Vec::new()),
        events,
        disk_rng: Mutex::new(rng.fork()),
        crash_tx,
        known: Mutex::new(Vec::new()),
    });
    // A disk that crashed by itself takes its node down.
    let crash_listener = {
        let cluster = Arc::clone(&cluster);
        tokio::spawn(async move {
            while let Some(id) = crashes.recv().await {
                if cluster.disk(id).is_some_and(|disk| disk.is_crashed()) {
                    cluster.crash(id, "its disk failed").await;
                }
            }
        })
    };
    cluster.event(format!(
        "{} nodes, {} clients, {:?} of faults, snapshot every {} entries keeping {}, {} entries \
         per append",
        params.nodes,
        params.clients,
        params.faulty_period,
        params.config.snapshot_logs_since_last,
        params.config.max_in_snapshot_log_to_keep,
        params.config.max_payload_entries
    ));
    let mut failures = Vec::new();

    // Bootstrap.
    for &id in &ids {
        cluster.start_node(id).await;
    }
    let members = ids
        .iter()
        .map(|id| (*id, format!("sim://node-{id}")))
        .collect();
    if let Some(node) = cluster.node(1)
        && let Err(e) = node.initialize(members).await
    {
        failures.push(format!("initialize: {e}"));
    }

    // The faulty period: clients write while the nemesis strikes.
    let until = Instant::now() + params.faulty_period;
    let attempted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for number in 1..=params.clients {
        clients.push(tokio::spawn(client(
            Arc::clone(&cluster),
            number,
            rng.fork(),
            until,
            Arc::clone(&attempted),
        )));
    }
    let mut nemesis_rng = rng.fork();
    nemesis(&cluster, &mut nemesis_rng, until).await;
    for client in clients {
        // A client stops at `until`, after its current write (at most WRITE_TIMEOUT).
        match tokio::time::timeout(WRITE_TIMEOUT * 2 + Duration::from_secs(1), client).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("a client failed: {e}")),
            Err(_) => failures.push("a client did not stop".to_owned()),
        }
    }

    // Heal everything.
    cluster.router.heal();
    cluster.router.set_quality(Quality::PERFECT);
    cluster.event("final heal");
    for id in cluster.running_ids() {
        if let Some(disk) = cluster.disk(id) {
            disk.disarm();
            if disk.is_crashed() {
                cluster.crash(id, "its disk failed").await;
            }
        }
    }
    for id in cluster.down_ids() {
        cluster.restart(id).await;
    }
    let healed = Instant::now();
    let deadline = healed + LIVENESS_BOUND;

    // Liveness: a write commits, and every node applies it.
    let barrier = commit_barrier(&cluster, deadline).await;
    let mut finals: BTreeMap<NodeId, Vec<(u64, WriteId)>> = BTreeMap::new();
    match barrier {
        None => failures.push(format!(
            "liveness: no write committed within {LIVENESS_BOUND:?} of the final heal"
        )),
        Some((leader, index)) => {
            cluster.event(format!(
                "barrier write committed at index {index} by node {leader}"
            ));
            for &id in &ids {
                if cluster.is_lost(id) {
                    continue;
                }
                let Some(node) = cluster.node(id) else {
                    failures.push(format!("liveness: node {id} is not running after the heal"));
                    continue;
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(e) = node.wait_applied(index, left).await {
                    failures.push(format!(
                        "liveness: node {id} did not apply the barrier (index {index}) within \
                         {LIVENESS_BOUND:?} of the final heal (applied {}): {e}",
                        node.applied_index()
                    ));
                    continue;
                }
                let history = node.read(|h| h.applied.clone());
                finals.insert(
                    id,
                    history.into_iter().filter(|(i, _)| *i <= index).collect(),
                );
            }
        }
    }
    let converged_after = healed.elapsed();

    // Convergence: every node holds the same history up to the barrier.
    if let Some((&first, expected)) = finals.iter().next() {
        for (&id, history) in &finals {
            if history != expected {
                let at = history
                    .iter()
                    .zip(expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(history.len().min(expected.len()));
                failures.push(format!(
                    "state-machine safety: node {id}'s history ({} entries) differs from node \
                     {first}'s ({} entries) at position {at}: {:?} vs {:?}",
                    history.len(),
                    expected.len(),
                    history.get(at),
                    expected.get(at)
                ));
            }
        }
    }

    // Durability: every acknowledged write is in every node's final state, at its index.
    let acks = lock(&cluster.acks).clone();
    for (&id, history) in &finals {
        let by_index: BTreeMap<u64, WriteId> = history.iter().copied().collect();
        let mut missing = 0;
        for ack in &acks {
            if by_index.get(&ack.index) != Some(&ack.write) {
                if missing < 3 {
                    failures.push(format!(
                        "durability: write {} acknowledged by node {} at index {} is not in node \
                         {id}'s final state (which has {:?} there)",
                        ack.write,
                        ack.node,
                        ack.index,
                        by_index.get(&ack.index)
                    ));
                }
                missing += 1;
            }
        }
        if missing > 3 {
            failures.push(format!(
                "durability: node {id} misses {missing} acknowledged writes in all"
            ));
        }
    }

    failures.extend(cluster.observer.violations());
    let known = lock(&cluster.known).clone();
    let lost = ids.iter().filter(|id| cluster.is_lost(**id)).count();
    if strict() {
        failures.extend(known.iter().cloned());
    } else if lost * 2 >= ids.len() {
        // Without a quorum of restartable nodes the cluster cannot recover: only the safety
        // checks mean anything.
        failures.retain(|f| !f.starts_with("liveness") && !f.starts_with("durability"));
    }

    let (shared_terms, leader_terms) = cluster.observer.leader_terms();
    let stats = cluster.router.stats();
    let incarnations: u32 = lock(&cluster.members)
        .values()
        .map(|m| m.incarnations)
        .sum();
    let summary = format!(
        "seed {seed}: {} nodes, {} starts, {} writes tried, {} acknowledged, {} terms with a \
         leader ({} with two), {} messages delivered, {} lost, {} unreachable, converged {:?} after \
         the heal",
        params.nodes,
        incarnations,
        attempted.load(Ordering::Relaxed),
        acks.len(),
        leader_terms,
        shared_terms,
        stats.delivered,
        stats.lost,
        stats.unreachable,
        converged_after
    );

    // Stop the nodes (the runtime is dropped next anyway).
    crash_listener.abort();
    let nodes: Vec<_> = ids.iter().filter_map(|id| cluster.node(*id)).collect();
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node.raft().shutdown()).await;
    }
    let events = lock(&cluster.events).clone();
    Outcome {
        failures,
        summary,
        events,
        counts: (shared_terms, acks.len()),
        known,
    }
}

/// Commits one more write after the heal, retrying until `deadline`; returns the node that
/// committed it and its index.
async fn commit_barrier(cluster: &Cluster, deadline: Instant) -> Option<(NodeId, u64)> {
    let mut hint: Option<NodeId> = None;
    let mut candidates = cluster.ids.iter().copied().cycle();
    let mut write: WriteId = u64::MAX / 2;
    while Instant::now() < deadline {
        let target = hint
            .take()
            .unwrap_or_else(|| candidates.next().expect("a cycle"));
        let Some(node) = cluster.node(target) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        write += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(WRITE_TIMEOUT), node.client_write(write)).await {
            Ok(Ok(outcome)) => {
                cluster.ack(Ack {
                    write,
                    index: outcome.log_index,
                    node: target,
                });
                return Some((target, outcome.log_index));
            }
            Ok(Err(Error::ForwardToLeader {
                leader_id: Some(leader),
                ..
            })) if leader != target => hint = Some(leader),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// Whether [`KNOWN_BUG`] fails the run: yes, unless `TRIBUTARY_SIM_STRICT=0`.
fn strict() -> bool {
    !std::env::var("TRIBUTARY_SIM_STRICT").is_ok_and(|v| v == "0")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

#[test]
fn raft_survives_seeded_fault_schedules() {
    let wall = WallInstant::now();
    if let Some(seed) = env_u64("TRIBUTARY_SIM_SEED") {
        let outcome = run_seed(seed);
        println!("{}", outcome.events.join("\n"));
        println!("{}", outcome.summary);
        for known in &outcome.known {
            println!("seed {seed}: {known}");
        }
        assert!(
            outcome.failures.is_empty(),
            "seed {seed} failed (replay: TRIBUTARY_SIM_SEED={seed}):\n  {}",
            outcome.failures.join("\n  ")
        );
        return;
    }
    let count = env_u64("TRIBUTARY_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("TRIBUTARY_SIM_SEED_START").unwrap_or(0);
    let next = AtomicU64::new(first);
    let end = first + count;
    let failed: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    let shared_terms = AtomicU64::new(0);
    let acked = AtomicU64::new(0);
    let known: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let outcome = run_seed(seed);
                    shared_terms.fetch_add(outcome.counts.0 as u64, Ordering::Relaxed);
                    acked.fetch_add(outcome.counts.1 as u64, Ordering::Relaxed);
                    for what in &outcome.known {
                        lock(&known).push((seed, what.clone()));
                    }
                    if !outcome.failures.is_empty() {
                        lock(&failed).push((seed, outcome));
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(PoisonError::into_inner);
    failed.sort_by_key(|(seed, _)| *seed);
    let mut known = known.into_inner().unwrap_or_else(PoisonError::into_inner);
    known.sort();
    for (seed, what) in &known {
        println!("seed {seed} (replay: TRIBUTARY_SIM_SEED={seed}): {what}");
    }
    println!(
        "{count} seeds from {first} in {:?}: {} failed, {} lost a node to the {KNOWN_BUG}, {} \
         writes acknowledged, {} terms had two leaders",
        wall.elapsed(),
        failed.len(),
        known.len(),
        acked.load(Ordering::Relaxed),
        shared_terms.load(Ordering::Relaxed)
    );
    if !failed.is_empty() {
        let mut report = String::new();
        for (seed, outcome) in &failed {
            let _ = writeln!(
                report,
                "seed {seed} failed (replay: TRIBUTARY_SIM_SEED={seed}):\n  {}",
                outcome.failures.join("\n  ")
            );
        }
        let (seed, outcome) = &failed[0];
        let _ = writeln!(
            report,
            "events of seed {seed}:\n{}",
            outcome.events.join("\n")
        );
        panic!("{} of {count} seeds failed:\n{report}", failed.len());
    }
}
