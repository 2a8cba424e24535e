//! Coordinator benchmarks (issue 3, "Benchmarks (not timed tests)"): metadata writes per second
//! through Raft, and controller failover time. A tool, not a test: it prints numbers and checks
//! nothing about speed.
//!
//! ```text
//! cargo build --release -p tributary-coordinator
//! TRIBUTARY_BIN_DIR=target/release cargo run --release -p tributary-tests \
//!     --example coordinator_perf -- [--topics 10000] [--concurrency 32] [--failovers 5]
//! ```
//!
//! It starts 3 real `tributary-coordinator` processes with the process harness (from
//! `$TRIBUTARY_BIN_DIR`; without it, from the `target/<profile>` directory this example was built
//! into), registers 3 stand-in brokers through the real `BrokerLifecycle` API that keep
//! heartbeating (so replication factor 3 is possible), then:
//!
//! 1. **Writes.** Creates `--topics` single-partition RF-3 topics through the `Admin` API with
//!    `--concurrency` requests in flight (one tokio task per request, bounded by a semaphore),
//!    sent to the controller; a request that fails with a retriable status (UNAVAILABLE, a
//!    timeout, a broken connection) is retried on the next coordinator (followers forward to the
//!    controller), and TOPIC_ALREADY_EXISTS on a retry counts as created (an earlier attempt
//!    whose answer was lost created it). Reports the total time, topics/s and the latency
//!    percentiles of one topic's creation (retries included), then checks with DescribeCluster
//!    (`min_metadata_offset` = the last acknowledged offset) that every topic is on all 3 nodes.
//! 2. **Failover.** `--failovers` times: waits for a steady cluster (all three nodes SERVING, at
//!    the same offset, agreeing on a controller that has claimed the role), kills the controller
//!    with SIGKILL, and from then on sends a CreateTopics every 10 ms to the two survivors
//!    (alternating, each attempt bounded by 5 s) until one is acknowledged: the failover time is
//!    from the kill to that acknowledgement. Then restarts the killed node on its data and waits
//!    until it serves and has caught up before the next round.
//!
//! Every wait is bounded and says what it waited for. The nodes' directories are temporary
//! unless `--dir DIR` is given; on an error the tail of each node's log is printed.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tonic::Code;
use tonic::transport::Channel;
use tributary_proto::common::v1::ErrorCode;
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use tributary_proto::coordinator::v1::broker_lifecycle_client::BrokerLifecycleClient;
use tributary_tests::harness::{BIN_DIR_ENV, Cluster, NodeKind};

/// How long the cluster may take to start (all three nodes SERVING).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Waits for the cluster's state: a controller, running brokers, catching up, a new leader.
const WAIT: Duration = Duration::from_secs(60);
/// How long a restarted coordinator may take to serve again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of one RPC (a CreateTopics gets [`PER_TOPIC_TIMEOUT`] more per topic).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// More time for each topic of a CreateTopics request (they are written one after another).
const PER_TOPIC_TIMEOUT: Duration = Duration::from_millis(20);
/// How long one request's topics may keep failing with retriable errors before the run fails.
const TOPIC_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Pause before retrying a topic's creation.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);
/// How often the failover probe sends a CreateTopics.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// How long one probe attempt may take.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the kill a write must be acknowledged before the round fails.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Stand-in brokers heartbeat this often (the coordinators' default session timeout is 9 s).
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);
/// The largest response accepted (a DescribeCluster of 10,000 topics is about 1 MiB).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The stand-in brokers' ids.
const BROKERS: [i32; 3] = [1, 2, 3];
/// The goals of issue 3.
const GOAL_TOPICS: usize = 10_000;
const GOAL_TOPICS_TIME: Duration = Duration::from_secs(30);
const GOAL_FAILOVER: Duration = Duration::from_secs(2);

const USAGE: &str = "\
coordinator_perf: metadata writes per second through Raft, and controller failover time, on 3
real tributary-coordinator processes (release binaries from $TRIBUTARY_BIN_DIR).

USAGE:
    TRIBUTARY_BIN_DIR=target/release cargo run --release -p tributary-tests \\
        --example coordinator_perf -- [OPTIONS]

OPTIONS:
    --topics N        single-partition RF-3 topics to create (default 10000; 0 skips)
    --concurrency K   CreateTopics requests in flight (default 32)
    --batch B         topics per CreateTopics request (default 1)
    --failovers M     controller kill -9 rounds (default 5; 0 skips)
    --dir DIR         keep the nodes' data and logs in DIR (default: a temporary directory)
    -h, --help        this text";

#[derive(Debug, Clone)]
struct Args {
    topics: usize,
    concurrency: usize,
    batch: usize,
    failovers: usize,
    dir: Option<PathBuf>,
}

/// The arguments, or `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut parsed = Args {
        topics: GOAL_TOPICS,
        concurrency: 32,
        batch: 1,
        failovers: 5,
        dir: None,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        let count = |v: String| -> Result<usize> {
            v.parse::<usize>()
                .with_context(|| format!("{flag} {v:?}: expected a whole number"))
        };
        match flag.as_str() {
            "--topics" => parsed.topics = count(value()?)?,
            "--concurrency" => parsed.concurrency = count(value()?)?,
            "--batch" => parsed.batch = count(value()?)?,
            "--failovers" => parsed.failovers = count(value()?)?,
            "--dir" => parsed.dir = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if parsed.concurrency == 0 || parsed.batch == 0 {
        bail!("--concurrency and --batch must be at least 1");
    }
    Ok(Some(parsed))
}

fn main() -> Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let bin_dir = node_bin_dir()?;
    let coordinator_bin = bin_dir.join(NodeKind::Coordinator.binary_name());
    if !coordinator_bin.is_file() {
        bail!(
            "no {} (build it: `cargo build --release -p tributary-coordinator`, and point \
             ${BIN_DIR_ENV} at target/release)",
            coordinator_bin.display()
        );
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# coordinator_perf");
    println!();
    println!(
        "cores: {cores}; coordinator binary: {}{}",
        coordinator_bin.display(),
        if coordinator_bin.to_string_lossy().contains("/debug/") {
            " (a DEBUG build: numbers are not representative)"
        } else {
            ""
        }
    );
    println!(
        "topics: {}, per request: {}, concurrency: {}, failovers: {}",
        args.topics, args.batch, args.concurrency, args.failovers
    );

    let mut builder = Cluster::builder()
        .coordinators(3)
        .bin_dir(&bin_dir)
        .start_timeout(START_TIMEOUT);
    if let Some(dir) = &args.dir {
        builder = builder.root(dir);
    }
    let started = Instant::now();
    let mut cluster = builder.start().context("starting 3 coordinators")?;
    println!(
        "cluster: 3 coordinators SERVING in {:.1} s, under {}",
        started.elapsed().as_secs_f64(),
        cluster.root().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = run(&mut cluster, &runtime, &args);
    if outcome.is_err() {
        for node in cluster.nodes() {
            eprintln!(
                "\n--- the last lines of {} ({}) ---\n{}",
                node.name(),
                node.log_path().display(),
                node.log_tail(30)
            );
        }
        if args.dir.is_none() {
            eprintln!("\n(run with --dir DIR to keep the nodes' data and logs)");
        }
    }
    // Stop the heartbeat tasks before the nodes go.
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// Where the node binaries are: `$TRIBUTARY_BIN_DIR`, else `target/<profile>` (this example runs
/// from `target/<profile>/examples/`).
fn node_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return std::path::absolute(PathBuf::from(dir)).context("resolving $TRIBUTARY_BIN_DIR");
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe.parent().context("the executable's directory")?;
    Ok(match dir.file_name() {
        Some(name) if name == "examples" || name == "deps" => {
            dir.parent().unwrap_or(dir).to_path_buf()
        }
        _ => dir.to_path_buf(),
    })
}

/// One coordinator as the tool talks to it.
#[derive(Debug, Clone)]
struct Coord {
    id: u64,
    channel: Channel,
}

impl Coord {
    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn lifecycle(&self) -> BrokerLifecycleClient<Channel> {
        BrokerLifecycleClient::new(self.channel.clone())
    }
}

fn coordinators(cluster: &Cluster) -> Result<Vec<Coord>> {
    cluster
        .coordinator_members()
        .into_iter()
        .map(|(id, addr)| {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy();
            Ok(Coord { id, channel })
        })
        .collect()
}

fn run(cluster: &mut Cluster, runtime: &tokio::runtime::Runtime, args: &Args) -> Result<()> {
    // Channels connect lazily on the runtime's reactor.
    let coords = {
        let _context = runtime.enter();
        coordinators(cluster)?
    };
    let steady = runtime.block_on(steady_cluster(&coords, None))?;
    println!(
        "controller: coordinator {} (controller epoch {})",
        steady.leader, steady.controller_epoch
    );

    let brokers = runtime.block_on(start_brokers(&coords))?;
    runtime.block_on(eventually("3 running brokers", WAIT, || async {
        let image = describe(&coords[0], 0).await.ok()?.image?;
        let running = image
            .brokers
            .iter()
            .filter(|b| b.state == pb::BrokerState::Running as i32)
            .count();
        (running == BROKERS.len()).then_some(())
    }))?;
    println!(
        "brokers: {} stand-ins registered and running",
        BROKERS.len()
    );

    let writes = if args.topics > 0 {
        let stats = runtime.block_on(create_topics(&coords, steady.leader, args))?;
        println!();
        println!("{}", stats.table(args));
        let verified = runtime.block_on(verify_topics(&coords, args.topics, stats.last_offset))?;
        println!();
        println!("{verified}");
        Some(stats)
    } else {
        None
    };

    let mut rounds = Vec::new();
    for round in 1..=args.failovers {
        let result = failover_round(cluster, runtime, &coords, round)
            .with_context(|| format!("failover round {round}"))?;
        eprintln!(
            "round {round}: killed {} at {} UTC, new controller {}, a write acknowledged after \
             {:.0} ms",
            result.killed,
            time_of_day(result.killed_wall),
            result.new_leader,
            ms(result.failover)
        );
        rounds.push(result);
    }
    if !rounds.is_empty() {
        println!();
        println!("{}", failover_table(&rounds));
    }

    // The stand-in brokers stayed alive all along (a fenced one would mean lost heartbeats).
    let image = runtime
        .block_on(eventually("a final DescribeCluster", WAIT, || async {
            describe(&coords[0], 0).await.ok()?.image
        }))
        .context("describing the cluster at the end")?;
    let fenced: Vec<i32> = image
        .brokers
        .iter()
        .filter(|b| b.state != pb::BrokerState::Running as i32)
        .map(|b| b.id)
        .collect();
    brokers.store(false, Ordering::SeqCst);

    println!();
    println!("## Goals (issue 3)");
    println!();
    if let Some(stats) = &writes {
        let verdict = if stats.elapsed < GOAL_TOPICS_TIME {
            "met"
        } else {
            "NOT met"
        };
        let note = if args.topics == GOAL_TOPICS {
            String::new()
        } else {
            format!(
                " (the goal is for {GOAL_TOPICS} topics; at this rate they would take {:.1} s)",
                GOAL_TOPICS as f64 / stats.rate()
            )
        };
        println!(
            "- {} topics created in {:.1} s, goal < {} s: {verdict}{note}",
            args.topics,
            stats.elapsed.as_secs_f64(),
            GOAL_TOPICS_TIME.as_secs()
        );
    }
    if !rounds.is_empty() {
        let times = sorted(rounds.iter().map(|r| r.failover).collect());
        let max = times[times.len() - 1];
        let verdict = if max < GOAL_FAILOVER {
            "met"
        } else if median(&times) < GOAL_FAILOVER {
            "NOT met in every round"
        } else {
            "NOT met"
        };
        println!(
            "- failover median {:.0} ms, max {:.0} ms, goal < {} ms: {verdict}",
            ms(median(&times)),
            ms(max),
            GOAL_FAILOVER.as_millis()
        );
    }
    if !fenced.is_empty() {
        println!("- warning: stand-in brokers {fenced:?} were fenced during the run");
    }
    Ok(())
}

/// Polls `check` until it returns `Some`, at most `timeout`; the error says what was awaited.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `call`, bounded by `timeout` (no answer in time is DEADLINE_EXCEEDED).
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

async fn describe(coord: &Coord, min_offset: u64) -> Result<pb::DescribeClusterResponse> {
    let request = pb::DescribeClusterRequest {
        min_metadata_offset: min_offset,
    };
    bounded(RPC_TIMEOUT, coord.admin().describe_cluster(request))
        .await
        .with_context(|| format!("DescribeCluster on coordinator {}", coord.id))
}

fn leader_of(response: &pb::DescribeClusterResponse) -> Option<u64> {
    response
        .coordinators
        .iter()
        .find(|c| c.is_leader)
        .map(|c| c.node_id)
}

fn code(error: &Option<tributary_proto::common::v1::Error>) -> ErrorCode {
    error
        .as_ref()
        .and_then(|e| ErrorCode::try_from(e.code).ok())
        .unwrap_or(ErrorCode::UnknownServerError)
}

/// The cluster at rest: every node asked agrees on the leader, that leader has claimed the
/// controller role, and all are at the same metadata offset.
#[derive(Debug, Clone, Copy)]
struct Steady {
    leader: u64,
    controller_epoch: u64,
    offset: u64,
}

/// Waits until `coords` (all of them, except `excluded`) are [`Steady`].
async fn steady_cluster(coords: &[Coord], excluded: Option<u64>) -> Result<Steady> {
    let what = match excluded {
        None => "all coordinators to agree on a controller at one offset".to_owned(),
        Some(id) => format!("the coordinators but {id} to agree on a new controller"),
    };
    eventually(&what, WAIT, || async {
        let mut seen: Option<Steady> = None;
        for coord in coords.iter().filter(|c| Some(c.id) != excluded) {
            let response = describe(coord, 0).await.ok()?;
            let leader = leader_of(&response)?;
            let image = response.image?;
            let controller = image.controller?;
            if Some(leader) == excluded || controller.node_id != leader {
                return None;
            }
            let this = Steady {
                leader,
                controller_epoch: controller.epoch,
                offset: image.offset,
            };
            match seen {
                None => seen = Some(this),
                Some(s) if s.leader == this.leader && s.offset == this.offset => {}
                Some(_) => return None,
            }
        }
        seen
    })
    .await
}

/// Registers the stand-in brokers and keeps them heartbeating (round robin over the
/// coordinators; followers forward to the controller) until the returned flag is cleared.
async fn start_brokers(coords: &[Coord]) -> Result<Arc<AtomicBool>> {
    let alive = Arc::new(AtomicBool::new(true));
    for id in BROKERS {
        let incarnation = {
            let mut bytes = vec![0u8; 16];
            bytes[0] = 0x42;
            bytes[12..].copy_from_slice(&id.to_be_bytes());
            bytes
        };
        let epoch = eventually(&format!("broker {id} to register"), WAIT, || async {
            for coord in coords {
                let request = pb::RegisterBrokerRequest {
                    broker_id: id,
                    incarnation: incarnation.clone().into(),
                    listeners: [("PLAINTEXT".to_owned(), format!("127.0.0.1:{}", 19090 + id))]
                        .into(),
                    rack: None,
                };
                let mut client = coord.lifecycle();
                if let Ok(response) = bounded(RPC_TIMEOUT, client.register_broker(request)).await
                    && code(&response.error) == ErrorCode::None
                {
                    return Some(response.broker_epoch);
                }
            }
            None
        })
        .await?;
        let beating = alive.clone();
        let coords = coords.to_vec();
        tokio::spawn(async move {
            let mut turn = 0usize;
            while beating.load(Ordering::SeqCst) {
                let coord = &coords[turn % coords.len()];
                turn += 1;
                let request = pb::BrokerHeartbeatRequest {
                    broker_id: id,
                    broker_epoch: epoch,
                    metadata_offset: u64::MAX,
                    want_shutdown: false,
                };
                let _ = bounded(
                    Duration::from_secs(2),
                    coord.lifecycle().broker_heartbeat(request),
                )
                .await;
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            }
        });
    }
    Ok(alive)
}

fn create_request(names: &[String]) -> pb::CreateTopicsRequest {
    pb::CreateTopicsRequest {
        topics: names
            .iter()
            .map(|name| pb::create_topics_request::NewTopic {
                name: name.clone(),
                partitions: 1,
                replication_factor: 3,
                configs: Default::default(),
            })
            .collect(),
        validate_only: false,
    }
}

/// Worth retrying: the node cannot take the write now (no controller, not the controller any
/// more, Raft unavailable), or the call timed out or lost its connection.
fn retriable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    )
}

fn topic_name(i: usize) -> String {
    format!("perf-{i:06}")
}

#[derive(Debug)]
struct CreateStats {
    topics: usize,
    batch: usize,
    concurrency: usize,
    elapsed: Duration,
    /// Each CreateTopics request's, retries included, sorted.
    latencies: Vec<Duration>,
    retries: u64,
    last_offset: u64,
}

impl CreateStats {
    fn rate(&self) -> f64 {
        self.topics as f64 / self.elapsed.as_secs_f64()
    }

    fn table(&self, args: &Args) -> String {
        let l = &self.latencies;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Metadata writes: {} single-partition RF-3 topics, {} per CreateTopics, {} \
             requests in flight",
            args.topics, args.batch, args.concurrency
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| topics | per request | in flight | total | topics/s | p50 | p90 | p99 | max | \
             retries |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} s | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            self.topics,
            self.batch,
            self.concurrency,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(percentile(l, 50.0)),
            ms(percentile(l, 90.0)),
            ms(percentile(l, 99.0)),
            ms(l[l.len() - 1]),
            self.retries
        );
        let _ = write!(
            out,
            "\n(p50 to max: the latency of one CreateTopics request, retries included)"
        );
        out
    }
}

/// Creates `args.topics` topics, `args.batch` per request and `args.concurrency` requests at a
/// time, first through `leader`.
async fn create_topics(coords: &[Coord], leader: u64, args: &Args) -> Result<CreateStats> {
    let n = args.topics;
    let first = coords.iter().position(|c| c.id == leader).unwrap_or(0);
    let done = Arc::new(AtomicUsize::new(0));
    let phase_timeout = Duration::from_secs(120) + Duration::from_millis(30) * n as u32;
    let counter = done.clone();
    let work = async {
        let coords: Arc<[Coord]> = coords.into();
        let semaphore = Arc::new(Semaphore::new(args.concurrency));
        let retries = Arc::new(AtomicU64::new(0));
        let mut tasks: JoinSet<Result<(Duration, u64)>> = JoinSet::new();
        let mut results = Vec::with_capacity(n.div_ceil(args.batch));
        let start = Instant::now();
        let mut last_report = Instant::now();
        for first_topic in (0..n).step_by(args.batch) {
            let names: Vec<String> = (first_topic..n.min(first_topic + args.batch))
                .map(topic_name)
                .collect();
            let permit = semaphore.clone().acquire_owned().await?;
            while let Some(joined) = tasks.try_join_next() {
                results.push(joined??);
            }
            let (coords, retries, finished) = (coords.clone(), retries.clone(), counter.clone());
            tasks.spawn(async move {
                let count = names.len();
                let result = create_batch(&coords, first, names, &retries).await;
                finished.fetch_add(count, Ordering::Relaxed);
                drop(permit);
                result
            });
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!(
                    "  {} / {n} topics created after {:.1} s",
                    counter.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        while let Some(joined) = tasks.join_next().await {
            results.push(joined??);
        }
        let elapsed = start.elapsed();
        let last_offset = results.iter().map(|(_, offset)| *offset).max().unwrap_or(0);
        Ok::<_, anyhow::Error>(CreateStats {
            topics: n,
            batch: args.batch,
            concurrency: args.concurrency,
            elapsed,
            latencies: sorted(results.into_iter().map(|(latency, _)| latency).collect()),
            retries: retries.load(Ordering::Relaxed),
            last_offset,
        })
    };
    match tokio::time::timeout(phase_timeout, work).await {
        Ok(stats) => stats,
        Err(_) => bail!(
            "creating {n} topics did not finish within {phase_timeout:?} ({} created)",
            done.load(Ordering::Relaxed)
        ),
    }
}

/// Creates the topics `names` with one CreateTopics request, first through `coords[first]`,
/// retrying on the next coordinator after a retriable failure (the whole request: topics an
/// earlier attempt created answer TOPIC_ALREADY_EXISTS then, which counts as created). Returns
/// how long it took and the metadata offset of the answer.
async fn create_batch(
    coords: &[Coord],
    first: usize,
    names: Vec<String>,
    retries: &AtomicU64,
) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let timeout = RPC_TIMEOUT + PER_TOPIC_TIMEOUT * names.len() as u32;
    let what = match names.as_slice() {
        [one] => one.clone(),
        [first_name, .., last_name] => format!("{first_name}..{last_name}"),
        [] => return Ok((Duration::ZERO, 0)),
    };
    let mut attempt = 0usize;
    loop {
        let coord = &coords[(first + attempt) % coords.len()];
        let request = create_request(&names);
        let last_error = match bounded(timeout, coord.admin().create_topics(request)).await {
            Ok(response) => {
                if response.results.len() != names.len() {
                    bail!(
                        "CreateTopics {what}: {} results for {} topics",
                        response.results.len(),
                        names.len()
                    );
                }
                for result in &response.results {
                    match code(&result.error) {
                        ErrorCode::None => {}
                        // An earlier attempt created it; its answer was lost.
                        ErrorCode::TopicAlreadyExists if attempt > 0 => {}
                        other => bail!(
                            "CreateTopics {} on coordinator {}: {other:?}: {}",
                            result.name,
                            coord.id,
                            result.error.as_ref().map_or("", |e| e.message.as_str())
                        ),
                    }
                }
                return Ok((start.elapsed(), response.metadata_offset));
            }
            Err(status) if retriable(&status) => format!(
                "coordinator {}: {:?}: {}",
                coord.id,
                status.code(),
                status.message()
            ),
            Err(status) => bail!(
                "CreateTopics {what} on coordinator {}: {:?}: {}",
                coord.id,
                status.code(),
                status.message()
            ),
        };
        attempt += 1;
        retries.fetch_add(1, Ordering::Relaxed);
        if start.elapsed() >= TOPIC_RETRY_WINDOW {
            bail!(
                "CreateTopics {what}: still failing after {TOPIC_RETRY_WINDOW:?} and {attempt} \
                 attempts; last: {last_error}"
            );
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
}

/// Checks that every node, once it has applied `last_offset`, has all `n` topics with one
/// partition of three replicas.
async fn verify_topics(coords: &[Coord], n: usize, last_offset: u64) -> Result<String> {
    let expected: Vec<String> = (0..n).map(topic_name).collect();
    let mut lines = Vec::new();
    for coord in coords {
        let response = eventually(
            &format!("coordinator {} to apply offset {last_offset}", coord.id),
            WAIT,
            || async { describe(coord, last_offset).await.ok() },
        )
        .await?;
        let image = response
            .image
            .with_context(|| format!("coordinator {}: DescribeCluster without image", coord.id))?;
        let topics: BTreeMap<&str, &pb::Topic> =
            image.topics.iter().map(|t| (t.name.as_str(), t)).collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|name| !topics.contains_key(name.as_str()))
            .collect();
        if let Some(first) = missing.first() {
            bail!(
                "coordinator {} (at offset {}) lacks {} of the {n} topics, {first} among them",
                coord.id,
                image.offset,
                missing.len()
            );
        }
        let misshapen = expected
            .iter()
            .filter(|name| {
                let t = topics[name.as_str()];
                t.partitions.len() != 1 || t.partitions[0].replicas.len() != 3
            })
            .count();
        if misshapen > 0 {
            bail!(
                "coordinator {}: {misshapen} topics are not 1 partition of 3 replicas",
                coord.id
            );
        }
        let replica_sets: HashSet<Vec<i32>> = expected
            .iter()
            .map(|name| topics[name.as_str()].partitions[0].replicas.clone())
            .collect();
        lines.push(format!(
            "{} (offset {}, {} replica orders)",
            coord.id,
            image.offset,
            replica_sets.len()
        ));
    }
    Ok(format!(
        "verified: all {n} topics, 1 partition x 3 replicas each, on coordinators {}",
        lines.join(", ")
    ))
}

#[derive(Debug)]
struct Round {
    round: usize,
    killed: u64,
    old_epoch: u64,
    new_leader: u64,
    new_epoch: u64,
    /// When the kill was sent (UTC, to find it in the nodes' logs).
    killed_wall: std::time::SystemTime,
    /// From the kill to the first acknowledged CreateTopics.
    failover: Duration,
    /// Probes sent until then.
    probes: usize,
    /// The survivor that acknowledged it.
    acked_by: u64,
    /// From the restart to SERVING and caught up.
    rejoin: Duration,
}

fn failover_round(
    cluster: &mut Cluster,
    runtime: &tokio::runtime::Runtime,
    coords: &[Coord],
    round: usize,
) -> Result<Round> {
    cluster
        .wait_serving(WAIT)
        .context("every coordinator serving before the kill")?;
    let before = runtime.block_on(steady_cluster(coords, None))?;
    let killed = before.leader;
    let survivors: Vec<Coord> = coords.iter().filter(|c| c.id != killed).cloned().collect();

    let killed_wall = std::time::SystemTime::now();
    let killed_at = Instant::now();
    cluster.coordinator(killed).kill_9()?;
    let probe = runtime.block_on(probe_writes(&survivors, killed_at, round))?;
    let after = runtime.block_on(steady_cluster(coords, Some(killed)))?;
    if after.controller_epoch <= before.controller_epoch {
        bail!(
            "the controller epoch did not rise: {} before, {} after",
            before.controller_epoch,
            after.controller_epoch
        );
    }

    let restarted_at = Instant::now();
    let node = cluster.coordinator(killed);
    node.restart()?;
    node.wait_serving(RESTART_TIMEOUT)?;
    let restarted = coords
        .iter()
        .find(|c| c.id == killed)
        .context("the killed coordinator")?;
    runtime.block_on(eventually(
        &format!(
            "restarted coordinator {killed} to catch up to offset {}",
            probe.offset
        ),
        WAIT,
        || async { describe(restarted, probe.offset).await.ok() },
    ))?;
    Ok(Round {
        round,
        killed,
        old_epoch: before.controller_epoch,
        new_leader: after.leader,
        new_epoch: after.controller_epoch,
        killed_wall,
        failover: probe.elapsed,
        probes: probe.sent,
        acked_by: probe.acked_by,
        rejoin: restarted_at.elapsed(),
    })
}

#[derive(Debug)]
struct Probe {
    elapsed: Duration,
    sent: usize,
    acked_by: u64,
    offset: u64,
}

/// Sends a CreateTopics every [`PROBE_INTERVAL`] to the survivors (alternating) until one is
/// acknowledged; returns the time from `killed_at` to that acknowledgement.
async fn probe_writes(survivors: &[Coord], killed_at: Instant, round: usize) -> Result<Probe> {
    let mut attempts = JoinSet::new();
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(FAILOVER_TIMEOUT);
    tokio::pin!(deadline);
    let mut sent = 0usize;
    let mut last_error = "no answer yet".to_owned();
    loop {
        tokio::select! {
            () = &mut deadline => bail!(
                "no CreateTopics acknowledged within {FAILOVER_TIMEOUT:?} of the kill ({sent} \
                 sent; last error: {last_error})"
            ),
            _ = ticker.tick() => {
                let coord = survivors[sent % survivors.len()].clone();
                let names = [format!("failover-{round}-{sent}")];
                sent += 1;
                attempts.spawn(async move {
                    let answer = bounded(
                        PROBE_ATTEMPT_TIMEOUT,
                        coord.admin().create_topics(create_request(&names)),
                    )
                    .await;
                    (coord.id, answer, Instant::now())
                });
            }
            Some(joined) = attempts.join_next() => {
                let (id, answer, at) = joined.context("a probe task")?;
                match answer {
                    Ok(response) => {
                        let error = response.results.first().and_then(|r| r.error.clone());
                        match code(&error) {
                            ErrorCode::None => {
                                return Ok(Probe {
                                    elapsed: at.duration_since(killed_at),
                                    sent,
                                    acked_by: id,
                                    offset: response.metadata_offset,
                                });
                            }
                            other => {
                                last_error = format!(
                                    "coordinator {id}: {other:?}: {}",
                                    error.map(|e| e.message).unwrap_or_default()
                                );
                            }
                        }
                    }
                    Err(status) => {
                        last_error = format!(
                            "coordinator {id}: {:?}: {}",
                            status.code(),
                            status.message()
                        );
                    }
                }
            }
        }
    }
}

fn failover_table(rounds: &[Round]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Controller failover: kill -9 of the controller until a CreateTopics is acknowledged"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| round | killed | epoch before | new controller | epoch after | failover | probes sent | acked by | restart → serving, caught up |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rounds {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} ms | {} | {} | {:.1} s |",
            r.round,
            r.killed,
            r.old_epoch,
            r.new_leader,
            r.new_epoch,
            ms(r.failover),
            r.probes,
            r.acked_by,
            r.rejoin.as_secs_f64()
        );
    }
    let times = sorted(rounds.iter().map(|r| r.failover).collect());
    let _ = writeln!(out);
    let _ = write!(
        out,
        "failover over {} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[0]),
        ms(median(&times)),
        ms(times[times.len() - 1])
    );
    out
}

/// `hh:mm:ss.mmm` (UTC) of `t`, as the nodes' logs print it.
fn time_of_day(t: std::time::SystemTime) -> String {
    let since_epoch = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since_epoch.subsec_millis()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort_unstable();
    v
}

/// The nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median of sorted, non-empty `v`.
fn median(v: &[Duration]) -> Duration {
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    }
}
