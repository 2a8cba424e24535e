//! `cargo xtask cluster-up`, `cluster-down`, `cluster-status`: a local cluster on the default
//! ports (coordinators, then brokers), its nodes detached from the command that started them,
//! everything under one directory (default `.tributary/` in the workspace root):
//!
//! ```text
//! .tributary/coordinator-101/node.toml   the node's config, rewritten by every cluster-up
//! .tributary/coordinator-101/data/       its data, kept until `cluster-up --clean`
//! .tributary/coordinator-101/node.log    its stdout and stderr, appended to
//! .tributary/coordinator-101/pid         the pid of the running process
//! .tributary/broker-1/...                the same for broker 1
//! ```
//!
//! Processes are started, found, checked and stopped by the test harness
//! (`tributary_tests::harness`), so tests and this share one implementation. Whether the
//! brokers are registered and a controller is elected is the coordinators' `DescribeCluster`
//! answer (their Admin gRPC service).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint};
use tributary_proto::coordinator::v1 as pb;
use tributary_proto::coordinator::v1::admin_client::AdminClient;
use tributary_tests::harness::{
    self, BIN_DIR_ENV, Health, Node, NodeKind, NodeSpec, Stopped, toml_path, toml_string,
};

/// The cluster's directory unless `--dir` says otherwise (relative to the workspace root).
const DEFAULT_DIR: &str = ".tributary";
/// How long `cluster-down` waits after SIGTERM before SIGKILL (for brokers, the time their
/// controlled shutdown has to move their leaderships away).
const STOP_GRACE: Duration = Duration::from_secs(30);
/// A broker's grace: longer than its own controlled-shutdown bound (30 s by default), so a broker
/// whose leaderships could not move still flushes and closes its logs before SIGKILL.
const BROKER_STOP_GRACE: Duration = Duration::from_secs(40);
/// How long `cluster-up` waits, in all, for every node to serve, every broker to be registered
/// and a controller to be elected, unless `--timeout` says otherwise.
const DEFAULT_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// The most nodes of one kind `cluster-up` starts.
const MAX_NODES: u64 = 9;
/// How long one `DescribeCluster` call may take (connecting included) before it counts as no
/// answer: loopback answers in milliseconds.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `DescribeCluster` answer accepted (10,000 topics are about 1 MiB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The cluster tasks' lines of `cargo xtask help`.
pub const HELP: &str =
    "  cluster-up [--brokers N] [--coordinators N] [--dir DIR] [--clean] [--no-build]
             [--timeout SECS]
                     build the release binaries and start a local cluster in the background:
                     coordinators 101, 102, ... (default 3) on 127.0.0.1:9191, 9192, ...,
                     then brokers 1, 2, ... (default 3; 0: coordinators only) on
                     127.0.0.1:9092, 9093, ... (Prometheus /metrics on 10191, ... and 10092,
                     ...), each with its config, data, log and pid in DIR/<kind>-<id>/
                     (DIR: default .tributary, relative to the workspace root). Starts only
                     the nodes not running and keeps their data (brokers can be added to a
                     cluster, not removed); waits until every node is SERVING, every broker
                     is registered (RUNNING in the metadata) and a controller is elected
                     (default 60 s in all), else exits non-zero naming what it waited for and
                     the node's log. --clean: stop every node and wipe DIR first. --no-build:
                     use the binaries already in $TRIBUTARY_BIN_DIR, or else target/release
  cluster-down [--dir DIR]
                     stop every node of the cluster in DIR, brokers first (SIGTERM: a
                     controlled shutdown, SIGKILL after 40 s), then coordinators (30 s)
  cluster-status [--dir DIR]
                     each node's pid, address, health (its `healthcheck`) and what the
                     metadata says of it (broker state, controller); exits non-zero when a
                     node is not SERVING, a broker is not RUNNING or there is no controller
";

#[derive(Debug)]
struct Options {
    dir: PathBuf,
    coordinators: u64,
    brokers: u64,
    clean: bool,
    build: bool,
    timeout: Duration,
}

impl Options {
    /// How many nodes of `kind` the cluster has.
    fn count(&self, kind: NodeKind) -> u64 {
        match kind {
            NodeKind::Coordinator => self.coordinators,
            NodeKind::Broker => self.brokers,
        }
    }

    /// Every node of the cluster, in start order (coordinators first, by id).
    fn nodes(&self) -> Vec<(NodeKind, u64)> {
        NodeKind::ALL
            .into_iter()
            .flat_map(|kind| (0..self.count(kind)).map(move |i| (kind, kind.first_id() + i)))
            .collect()
    }
}

fn parse(task: &str, args: &[String], root: &Path) -> Result<Options> {
    let up = task == "cluster-up";
    let mut options = Options {
        dir: root.join(DEFAULT_DIR),
        coordinators: 3,
        brokers: 3,
        clean: false,
        build: true,
        timeout: DEFAULT_UP_TIMEOUT,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || match inline.clone().or_else(|| args.next().cloned()) {
            Some(value) => Ok(value),
            None => bail!("`{flag}` needs a value"),
        };
        match flag {
            "--dir" => options.dir = root.join(value()?),
            "--coordinators" if up => {
                let v = value()?;
                options.coordinators = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_NODES).contains(n))
                    .with_context(|| format!("--coordinators {v}: expected 1 to {MAX_NODES}"))?;
            }
            "--brokers" if up => {
                let v = value()?;
                options.brokers = v
                    .parse()
                    .ok()
                    .filter(|n| (0..=MAX_NODES).contains(n))
                    .with_context(|| {
                        format!("--brokers {v}: expected 0 (coordinators only) to {MAX_NODES}")
                    })?;
            }
            "--clean" if up => options.clean = true,
            "--no-build" if up => options.build = false,
            "--timeout" if up => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .with_context(|| format!("--timeout {v}: expected seconds"))?;
                options.timeout = Duration::from_secs(secs);
            }
            other => bail!("unknown option `{other}` for `cargo xtask {task}`\n\n{HELP}"),
        }
    }
    Ok(options)
}

/// `cargo xtask cluster-up`.
pub fn up(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-up", args, root)?;
    let dir = &options.dir;
    if options.clean && dir.exists() {
        down_nodes(dir, &program_dir(root)?)?;
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("removed {}", dir.display());
    }
    if options.build {
        build(root, options.brokers > 0)?;
    }
    let bin_dir = program_dir(root)?;
    for kind in NodeKind::ALL.into_iter().filter(|&k| options.count(k) > 0) {
        let program = bin_dir.join(kind.binary_name());
        if !program.is_file() {
            let hint = match kind {
                NodeKind::Coordinator => "",
                NodeKind::Broker => "; --brokers 0 starts the coordinators only",
            };
            bail!(
                "there is no {} (build it with `cargo build --release -p {}`, or drop \
                 --no-build{hint})",
                program.display(),
                kind.binary_name(),
            );
        }
    }

    let wanted = options.nodes();
    let existing = existing_nodes(dir)?;
    check_same_cluster(dir, &existing, &wanted)?;
    let members: Vec<(u64, String)> = wanted
        .iter()
        .filter(|(kind, _)| *kind == NodeKind::Coordinator)
        .map(|&(kind, id)| (id, default_addr(kind, id).to_string()))
        .collect();

    // First decide what to start, so that nothing is started when something is in the way.
    let mut nodes: Vec<(Node, bool)> = Vec::new(); // (node, started by this run)
    let mut to_start = Vec::new();
    for &(kind, id) in &wanted {
        let spec = node_spec(kind, dir, &bin_dir.join(kind.binary_name()), id, &members);
        match Node::adopt(spec.clone()) {
            Some(node) => nodes.push((node, false)),
            None if !harness::port_is_free(spec.listen) => bail!(
                "{}: port {} is taken by another process (a cluster in another --dir? `ss -ltnp` \
                 shows who has it)",
                spec.name(),
                spec.listen.port()
            ),
            None => to_start.push(spec),
        }
    }

    let deadline = Instant::now() + options.timeout;
    let came_up = bring_up(&mut nodes, to_start, deadline, options.timeout);
    nodes.sort_by_key(|(node, _)| (node.kind(), node.id()));
    let rows: Vec<Vec<String>> = nodes
        .iter_mut()
        .map(|(node, started)| {
            vec![
                node.name(),
                node.pid().map_or("-".into(), |pid| pid.to_string()),
                node.addr().to_string(),
                node.kind()
                    .default_metrics_port(node.id())
                    .map_or("-".into(), |p| format!("127.0.0.1:{p}")),
                if *started {
                    "started"
                } else {
                    "already running"
                }
                .into(),
                relative(&node.log_path(), root),
            ]
        })
        .collect();
    detach_all(nodes);
    let view = match came_up {
        Ok(view) => view,
        Err(err) => {
            return Err(err.context(format!(
                "the cluster in {} did not come up within {:?}; its nodes are left running \
                 (`cargo xtask cluster-status`, `cargo xtask cluster-down`)",
                dir.display(),
                options.timeout
            )));
        }
    };
    let brokers: Vec<u64> = wanted
        .iter()
        .filter(|(kind, _)| *kind == NodeKind::Broker)
        .map(|&(_, id)| id)
        .collect();
    println!(
        "cluster in {}: every node SERVING, {}\n",
        dir.display(),
        view.summary(&brokers)
    );
    print_table(&["NODE", "PID", "GRPC", "METRICS", "STATE", "LOG"], &rows);
    println!(
        "\nper node: node.toml (config), data/, node.log, pid. Stop: `cargo xtask cluster-down`; \
         check: `cargo xtask cluster-status`."
    );
    Ok(())
}

/// Starts `to_start` kind by kind (coordinators, then brokers: they register with the
/// coordinators), waiting after each kind until all its nodes serve, then waits until every
/// broker is registered and a controller is elected: by `deadline` in all (`timeout` is for
/// messages). Every node started is added to `nodes`.
fn bring_up(
    nodes: &mut Vec<(Node, bool)>,
    to_start: Vec<NodeSpec>,
    deadline: Instant,
    timeout: Duration,
) -> Result<MetadataView> {
    for kind in NodeKind::ALL {
        for spec in to_start.iter().filter(|spec| spec.kind == kind) {
            let node =
                Node::start(spec.clone()).with_context(|| format!("starting {}", spec.name()))?;
            nodes.push((node, true));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        harness::wait_all_serving(
            nodes
                .iter_mut()
                .map(|(node, _)| node)
                .filter(|node| node.kind() == kind),
            remaining,
        )?;
    }
    wait_registered(nodes, deadline, timeout)
}

/// Waits until the coordinators' metadata has every broker of `nodes` registered as RUNNING and
/// a controller, polling `DescribeCluster` until `deadline`. Fails at once when a broker's
/// process exits; after the deadline, names the first broker not registered (its log's path and
/// tail) or, when only the controller is missing, the coordinator that answered.
fn wait_registered(
    nodes: &mut [(Node, bool)],
    deadline: Instant,
    timeout: Duration,
) -> Result<MetadataView> {
    let of_kind = |nodes: &[(Node, bool)], kind| -> Vec<(u64, SocketAddr)> {
        nodes
            .iter()
            .filter(|(node, _)| node.kind() == kind)
            .map(|(node, _)| (node.id(), node.addr()))
            .collect()
    };
    let coordinators = of_kind(nodes, NodeKind::Coordinator);
    let brokers: Vec<u64> = of_kind(nodes, NodeKind::Broker)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut admin = Admin::connect(&coordinators)?;
    let mut interval = Duration::from_millis(50);
    loop {
        for (node, _) in nodes.iter_mut() {
            if node.kind() == NodeKind::Broker && !node.is_running() {
                let reason = match node.exit_status() {
                    Some(status) => format!("its process exited ({status})"),
                    None => "it is not running".to_owned(),
                };
                return Err(node.failure(&format!("{reason} before it was registered")));
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = admin.describe(remaining.clamp(Duration::from_millis(200), RPC_TIMEOUT));
        let missing = match &answer {
            Ok(view) => view.not_ready(&brokers),
            Err(why) => vec![(None, why.clone())],
        };
        if missing.is_empty() {
            return answer.map_err(anyhow::Error::msg);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(not_registered_error(nodes, answer.ok(), &missing, timeout));
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}

/// The error of [`wait_registered`] at its deadline: about the first broker in `missing`, with
/// its log, else about the coordinator that answered (or the first one), with its log.
fn not_registered_error(
    nodes: &[(Node, bool)],
    view: Option<MetadataView>,
    missing: &[(Option<u64>, String)],
    timeout: Duration,
) -> anyhow::Error {
    let (first, first_what) = &missing[0];
    let from = view.as_ref().map_or(String::new(), |view| {
        format!(
            " (metadata of {} at offset {})",
            NodeKind::Coordinator.node_name(view.coordinator),
            view.offset
        )
    });
    let mut what = match first {
        Some(_) => format!("not registered as RUNNING after {timeout:?}: {first_what}{from}"),
        None => format!("{first_what} after {timeout:?}{from}"),
    };
    if missing.len() > 1 {
        let others: Vec<String> = missing[1..]
            .iter()
            .map(|(broker, what)| match broker {
                Some(id) => format!("{} ({what})", NodeKind::Broker.node_name(*id)),
                None => what.clone(),
            })
            .collect();
        what.push_str(&format!("\n  still missing too: {}", others.join(", ")));
    }
    let node = |kind: NodeKind, id: Option<u64>| {
        nodes
            .iter()
            .map(|(node, _)| node)
            .find(|node| node.kind() == kind && id.is_none_or(|id| node.id() == id))
    };
    let blamed = match first {
        Some(id) => node(NodeKind::Broker, Some(*id)),
        None => node(NodeKind::Coordinator, view.map(|view| view.coordinator))
            .or_else(|| node(NodeKind::Coordinator, None)),
    };
    match blamed {
        Some(node) => node.failure(&what),
        None => anyhow::anyhow!(what),
    }
}

/// `cargo xtask cluster-down`.
pub fn down(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-down", args, root)?;
    if !options.dir.exists() {
        println!("no cluster in {}", options.dir.display());
        return Ok(());
    }
    down_nodes(&options.dir, &program_dir(root)?)
}

/// Stops every node in `dir`: the brokers first, while the coordinators still run (a broker's
/// SIGTERM starts a controlled shutdown, which moves its leaderships away through the
/// controller), then the coordinators. SIGKILL to those still running after
/// [`BROKER_STOP_GRACE`] / [`STOP_GRACE`].
fn down_nodes(dir: &Path, bin_dir: &Path) -> Result<()> {
    let found = existing_nodes(dir)?;
    for kind in NodeKind::ALL.into_iter().rev() {
        let mut nodes: Vec<Node> = Vec::new();
        let mut not_running = Vec::new();
        for &(_, id) in found.iter().filter(|(k, _)| *k == kind) {
            match Node::adopt(found_spec(dir, bin_dir, kind, id)) {
                Some(node) => nodes.push(node),
                None => not_running.push(kind.node_name(id)),
            }
        }
        let grace = match kind {
            NodeKind::Broker => BROKER_STOP_GRACE,
            NodeKind::Coordinator => STOP_GRACE,
        };
        if !nodes.is_empty() {
            let how = match kind {
                NodeKind::Broker => "SIGTERM: controlled shutdown",
                NodeKind::Coordinator => "SIGTERM",
            };
            println!(
                "stopping {} ({how}; SIGKILL after {grace:?})",
                nodes.iter().map(Node::name).collect::<Vec<_>>().join(", ")
            );
        }
        let stopped = harness::stop_all(&mut nodes, grace)?;
        for (node, stopped) in nodes.iter().zip(stopped) {
            let how = match stopped {
                Stopped::Terminated | Stopped::AlreadyDown => "stopped".to_owned(),
                Stopped::Killed => {
                    format!("killed (SIGKILL: it did not stop within {grace:?} of SIGTERM)")
                }
            };
            println!("{}: {how}", node.name());
        }
        for name in not_running {
            println!("{name}: was not running");
            let _ = std::fs::remove_file(dir.join(name).join("pid"));
        }
    }
    Ok(())
}

/// `cargo xtask cluster-status`.
pub fn status(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-status", args, root)?;
    let bin_dir = program_dir(root)?;
    let nodes = if options.dir.exists() {
        existing_nodes(&options.dir)?
    } else {
        Vec::new()
    };
    if nodes.is_empty() {
        bail!(
            "no cluster in {} (start one: `cargo xtask cluster-up`)",
            options.dir.display()
        );
    }
    let coordinators: Vec<(u64, SocketAddr)> = nodes
        .iter()
        .filter(|(kind, _)| *kind == NodeKind::Coordinator)
        .map(|&(kind, id)| (id, default_addr(kind, id)))
        .collect();
    let view = if coordinators.is_empty() {
        Err("no coordinator in the cluster's directory".to_owned())
    } else {
        Admin::connect(&coordinators)
            .map_err(|err| format!("{err:#}"))
            .and_then(|mut admin| admin.describe(RPC_TIMEOUT))
    };

    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for &(kind, id) in &nodes {
        let spec = found_spec(&options.dir, &bin_dir, kind, id);
        let (pid, health) = match Node::adopt(spec.clone()) {
            Some(mut node) => {
                let pid = node.pid().map_or("-".into(), |pid| pid.to_string());
                let health = if spec.program.is_file() {
                    node.health()
                } else {
                    Health::NotServing(format!("cannot check: no {}", spec.program.display()))
                };
                (pid, health)
            }
            None => ("-".into(), Health::NotServing("not running".into())),
        };
        let state = match health {
            Health::Serving => "up (SERVING)".to_owned(),
            Health::NotServing(why) => {
                problems.push(format!("{} not SERVING", spec.name()));
                format!("down: {why}")
            }
        };
        let metadata = match &view {
            Ok(view) => {
                let said = view.of_node(kind, id);
                if kind == NodeKind::Broker && said != "RUNNING" {
                    problems.push(format!("{}: {said}", spec.name()));
                }
                said
            }
            Err(_) => "?".to_owned(),
        };
        rows.push(vec![
            spec.name(),
            pid,
            spec.listen.to_string(),
            state,
            metadata,
        ]);
    }
    println!("cluster in {}\n", options.dir.display());
    print_table(&["NODE", "PID", "ADDRESS", "STATE", "METADATA"], &rows);
    match &view {
        Ok(view) => {
            println!(
                "\nmetadata of {} at offset {}: {}",
                NodeKind::Coordinator.node_name(view.coordinator),
                view.offset,
                view.controller_text()
            );
            if view.controller.is_none() {
                problems.push("no controller elected".to_owned());
            }
        }
        Err(why) => {
            println!("\nmetadata: unknown ({why})");
            problems.push("no metadata".to_owned());
        }
    }
    if !problems.is_empty() {
        bail!("the cluster is not up: {}", problems.join("; "));
    }
    Ok(())
}

/// The packages `cluster-up` builds: the coordinator, and the broker when the cluster has
/// brokers (so that `--brokers 0` needs no broker).
fn build_args(brokers: bool) -> Vec<&'static str> {
    // The `tributary` tool comes along: the README's quick start uses target/release/tributary.
    let mut args = vec![
        "build",
        "--release",
        "-p",
        "tributary-coordinator",
        "-p",
        "tributary-cli",
    ];
    if brokers {
        args.extend(["-p", "tributary-broker"]);
    }
    args
}

/// `cargo build --release -p tributary-coordinator -p tributary-cli [-p tributary-broker]`.
fn build(root: &Path, brokers: bool) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = build_args(brokers);
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(&args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if status.success() {
        return Ok(());
    }
    let mut arrives = vec![("tributary-coordinator", 3, "")];
    if brokers {
        arrives.push((
            "tributary-broker",
            4,
            "; `--brokers 0` starts the coordinators only",
        ));
    }
    for (package, issue, hint) in arrives {
        if !root
            .join("crates")
            .join(package)
            .join("Cargo.toml")
            .is_file()
        {
            bail!(
                "there is no {package} to build yet: crates/{package} arrives with issue {issue} \
                 (`cargo {}` failed: {status}){hint}",
                args.join(" ")
            );
        }
    }
    bail!(
        "`cargo {}` failed ({status}); see its output above. Nothing was started",
        args.join(" ")
    )
}

/// Where the node binaries are: `$TRIBUTARY_BIN_DIR`, else the release directory of the
/// workspace's target directory.
fn program_dir(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(root.join(dir));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d));
    Ok(target.join("release"))
}

/// The gRPC address of a node of the local cluster: the defaults table on 127.0.0.1.
fn default_addr(kind: NodeKind, id: u64) -> SocketAddr {
    let port = kind
        .default_grpc_port(id)
        .expect("ids of the local cluster are in the defaults table");
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Node `id` of `kind` of the cluster in `dir`, with its config: `members` are the coordinators
/// as `(id, host:port)` (a coordinator's initial members, a broker's coordinators).
fn node_spec(
    kind: NodeKind,
    dir: &Path,
    program: &Path,
    id: u64,
    members: &[(u64, String)],
) -> NodeSpec {
    let mut spec = NodeSpec::new(
        kind,
        id,
        program,
        dir.join(kind.node_name(id)),
        default_addr(kind, id),
    );
    spec.coordinators = members.to_vec();
    spec.detached = true;
    spec.config = Some(node_config(&spec));
    spec
}

/// The node's config file. It says what the flags say too (they win over it), so that the file
/// alone describes the node, its Prometheus endpoint on the metrics port included (they
/// refuse keys they do not know).
fn node_config(spec: &NodeSpec) -> String {
    let (id_key, members_key, members) = match spec.kind {
        NodeKind::Coordinator => {
            let members: Vec<String> = spec
                .coordinators
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect();
            ("node_id", "initial_members", members)
        }
        NodeKind::Broker => {
            let addrs = spec.coordinators.iter().map(|(_, addr)| addr.clone());
            ("broker_id", "coordinators", addrs.collect())
        }
    };
    let metrics = match spec.kind.default_metrics_port(spec.id) {
        Some(p) => format!(
            "metrics_listen = {}\n",
            toml_string(&format!("127.0.0.1:{p}"))
        ),
        None => String::new(),
    };
    format!(
        "# {name}: written by `cargo xtask cluster-up` (rewritten on every run).\n\
         {id_key} = {id}\n\
         data_dir = {data_dir}\n\
         listen = {listen}\n\
         advertised_address = {advertised}\n\
         {members_key} = {members}\n\
         {metrics}",
        name = spec.name(),
        id = spec.id,
        data_dir = toml_path(&spec.data_dir()),
        listen = toml_string(&spec.listen.to_string()),
        advertised = toml_string(&spec.advertised_address),
        members = toml_string(&members.join(",")),
    )
}

/// A node found in the cluster's directory, as far as finding, checking and stopping it goes.
fn found_spec(dir: &Path, bin_dir: &Path, kind: NodeKind, id: u64) -> NodeSpec {
    NodeSpec::new(
        kind,
        id,
        bin_dir.join(kind.binary_name()),
        dir.join(kind.node_name(id)),
        default_addr(kind, id),
    )
}

/// The nodes that have a directory in `dir`, in start order (coordinators first, by id).
fn existing_nodes(dir: &Path) -> Result<Vec<(NodeKind, u64)>> {
    let mut nodes = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(nodes),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some((kind, id)) = entry
            .file_name()
            .to_str()
            .and_then(NodeKind::parse_node_name)
            .filter(|(kind, id)| kind.default_grpc_port(*id).is_some())
        {
            nodes.push((kind, id));
        }
    }
    nodes.sort();
    Ok(nodes)
}

/// Fails unless the nodes found in `dir` (`existing`) and those asked for (`wanted`) are one
/// cluster: the same coordinators (a Raft group's members are fixed when it bootstraps), and no
/// broker but those asked for (brokers can be added; one left out would stay registered, down).
fn check_same_cluster(
    dir: &Path,
    existing: &[(NodeKind, u64)],
    wanted: &[(NodeKind, u64)],
) -> Result<()> {
    let of = |nodes: &[(NodeKind, u64)], kind| -> Vec<u64> {
        let mut ids: Vec<u64> = nodes
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|&(_, id)| id)
            .collect();
        ids.sort();
        ids
    };
    let coordinators = NodeKind::Coordinator;
    let brokers_fit = of(existing, NodeKind::Broker)
        .iter()
        .all(|id| wanted.contains(&(NodeKind::Broker, *id)));
    if existing.is_empty()
        || (of(existing, coordinators) == of(wanted, coordinators) && brokers_fit)
    {
        return Ok(());
    }
    let count = |kind| of(wanted, kind).len();
    bail!(
        "{} holds a cluster of {}; a cluster of {} coordinator(s) and {} broker(s) would be \
         another one. Pass the same --coordinators and --brokers (brokers can be added, not \
         removed), or --clean to start over (its data goes)",
        dir.display(),
        names(existing),
        count(NodeKind::Coordinator),
        count(NodeKind::Broker),
    )
}

fn names(nodes: &[(NodeKind, u64)]) -> String {
    nodes
        .iter()
        .map(|(kind, id)| kind.node_name(*id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one coordinator's `DescribeCluster` said, as far as these tasks care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MetadataView {
    /// The coordinator that answered.
    coordinator: u64,
    /// The metadata offset of its image.
    offset: u64,
    /// The controller's node id and epoch.
    controller: Option<(u64, u64)>,
    /// Each registered broker's state (`pb::BrokerState` as a number).
    brokers: BTreeMap<u64, i32>,
}

impl MetadataView {
    /// The view in `response`, `None` when it has no image.
    fn from_response(coordinator: u64, response: pb::DescribeClusterResponse) -> Option<Self> {
        let image = response.image?;
        Some(MetadataView {
            coordinator,
            offset: image.offset,
            controller: image.controller.map(|c| (c.node_id, c.epoch)),
            brokers: image
                .brokers
                .iter()
                .filter_map(|b| Some((u64::try_from(b.id).ok()?, b.state)))
                .collect(),
        })
    }

    /// What keeps the cluster from being up: each broker of `brokers` not registered as RUNNING
    /// (`Some(id)` and why), then `None` and why when there is no controller. Empty when up.
    fn not_ready(&self, brokers: &[u64]) -> Vec<(Option<u64>, String)> {
        let mut missing: Vec<(Option<u64>, String)> = brokers
            .iter()
            .filter_map(|&id| match self.brokers.get(&id) {
                None => Some((Some(id), "not registered".to_owned())),
                Some(&state) if state == pb::BrokerState::Running as i32 => None,
                Some(&state) => Some((Some(id), format!("registered but {}", state_name(state)))),
            })
            .collect();
        if self.controller.is_none() {
            missing.push((None, "no controller elected".to_owned()));
        }
        missing
    }

    /// What the metadata says of node `id` of `kind`: a broker's state (or `not registered`),
    /// `controller` for the coordinator that is, `-` for the others.
    fn of_node(&self, kind: NodeKind, id: u64) -> String {
        match kind {
            NodeKind::Broker => self
                .brokers
                .get(&id)
                .map_or("not registered".to_owned(), |&state| state_name(state)),
            NodeKind::Coordinator => match self.controller {
                Some((node, epoch)) if node == id => format!("controller (epoch {epoch})"),
                _ => "-".to_owned(),
            },
        }
    }

    /// `controller: coordinator-102 (epoch 7)`, or that there is none.
    fn controller_text(&self) -> String {
        match self.controller {
            Some((node, epoch)) => format!(
                "controller: {} (epoch {epoch})",
                NodeKind::Coordinator.node_name(node)
            ),
            None => "no controller elected".to_owned(),
        }
    }

    /// One line for `cluster-up`: the brokers registered and the controller.
    fn summary(&self, brokers: &[u64]) -> String {
        let brokers = if brokers.is_empty() {
            "no brokers".to_owned()
        } else {
            let ids: Vec<String> = brokers.iter().map(u64::to_string).collect();
            format!("brokers {} registered (RUNNING)", ids.join(", "))
        };
        format!("{brokers}, {}", self.controller_text())
    }
}

/// `RUNNING`, `FENCED`, `CONTROLLED_SHUTDOWN`, ...
fn state_name(state: i32) -> String {
    match pb::BrokerState::try_from(state) {
        Ok(state) => state
            .as_str_name()
            .trim_start_matches("BROKER_STATE_")
            .to_owned(),
        Err(_) => format!("state {state}"),
    }
}

/// The coordinators' Admin service, called from this synchronous program on a current-thread
/// runtime of its own.
struct Admin {
    runtime: tokio::runtime::Runtime,
    clients: Vec<(u64, AdminClient<Channel>)>,
}

impl Admin {
    /// Clients for `coordinators` (`(id, address)`); they connect on first use.
    fn connect(coordinators: &[(u64, SocketAddr)]) -> Result<Admin> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        let clients = {
            // A lazy channel spawns its worker on the runtime it is made in.
            let _runtime = runtime.enter();
            coordinators
                .iter()
                .map(|&(id, addr)| {
                    let channel = Endpoint::from_shared(format!("http://{addr}"))?
                        .connect_timeout(RPC_TIMEOUT)
                        .connect_lazy();
                    let client =
                        AdminClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
                    Ok((id, client))
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Admin { runtime, clients })
    }

    /// Asks every coordinator for its metadata, each within `timeout`, and returns the newest
    /// image (the highest offset: a follower may lag behind the leader), or why none answered.
    fn describe(&mut self, timeout: Duration) -> Result<MetadataView, String> {
        let Admin { runtime, clients } = self;
        runtime.block_on(async {
            let mut newest: Option<MetadataView> = None;
            let mut failures = Vec::new();
            for (id, client) in clients.iter_mut() {
                let request = pb::DescribeClusterRequest {
                    min_metadata_offset: 0,
                };
                let answer =
                    match tokio::time::timeout(timeout, client.describe_cluster(request)).await {
                        Ok(Ok(response)) => MetadataView::from_response(*id, response.into_inner())
                            .ok_or_else(|| "an answer without an image".to_owned()),
                        Ok(Err(status)) => Err(status_text(&status)),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                match answer {
                    Ok(view) => {
                        if newest.as_ref().is_none_or(|n| view.offset > n.offset) {
                            newest = Some(view);
                        }
                    }
                    Err(why) => {
                        failures.push(format!("{}: {why}", NodeKind::Coordinator.node_name(*id)))
                    }
                }
            }
            newest.ok_or_else(|| {
                format!(
                    "no coordinator answered DescribeCluster ({})",
                    failures.join("; ")
                )
            })
        })
    }
}

/// `Unavailable: tcp connect error: Connection refused (os error 111)`: the code, the message
/// and the root cause (a transport error says what went wrong only in its causes).
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut root = None;
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        root = Some(err.to_string());
        source = err.source();
    }
    if let Some(root) = root.filter(|root| !text.ends_with(root.as_str())) {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// Lets the processes run on after this command.
fn detach_all(nodes: Vec<(Node, bool)>) {
    for (node, _) in nodes {
        node.detach();
    }
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn flags(spec: &NodeSpec) -> Vec<String> {
        spec.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn coordinator_members() -> Vec<(u64, String)> {
        (101..=103)
            .map(|id| (id, default_addr(NodeKind::Coordinator, id).to_string()))
            .collect()
    }

    #[test]
    fn options_are_parsed_and_paths_are_relative_to_the_root() {
        let root = Path::new("/ws");
        let o = parse("cluster-up", &[], root).unwrap();
        assert_eq!(o.dir, Path::new("/ws/.tributary"));
        assert_eq!(
            (o.coordinators, o.brokers, o.clean, o.build),
            (3, 3, false, true)
        );
        assert_eq!(o.timeout, DEFAULT_UP_TIMEOUT);
        let o = parse(
            "cluster-up",
            &args(&[
                "--coordinators=1",
                "--dir",
                "x/y",
                "--clean",
                "--no-build",
                "--brokers",
                "2",
                "--timeout=5",
            ]),
            root,
        )
        .unwrap();
        assert_eq!(o.dir, Path::new("/ws/x/y"));
        assert_eq!(
            (o.coordinators, o.brokers, o.clean, o.build),
            (1, 2, true, false)
        );
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(
            parse("cluster-down", &args(&["--dir", "/abs"]), root)
                .unwrap()
                .dir,
            Path::new("/abs")
        );
        for bad in [
            &["--coordinators", "0"][..],
            &["--coordinators", "10"],
            &["--coordinators"],
            &["--brokers", "10"],
            &["--brokers", "-1"],
            &["--brokers=x"],
            &["--brokers"],
            &["--timeout", "x"],
            &["--bogus"],
        ] {
            assert!(parse("cluster-up", &args(bad), root).is_err(), "{bad:?}");
        }
        assert!(parse("cluster-down", &args(&["--clean"]), root).is_err());
        assert!(parse("cluster-status", &args(&["--brokers", "1"]), root).is_err());
    }

    #[test]
    fn brokers_zero_means_coordinators_only() {
        let o = parse("cluster-up", &args(&["--brokers=0"]), Path::new("/ws")).unwrap();
        assert_eq!(o.brokers, 0);
        assert_eq!(
            o.nodes(),
            [
                (NodeKind::Coordinator, 101),
                (NodeKind::Coordinator, 102),
                (NodeKind::Coordinator, 103)
            ]
        );
        let o = parse(
            "cluster-up",
            &args(&["--brokers", "2", "--coordinators", "1"]),
            Path::new("/ws"),
        )
        .unwrap();
        assert_eq!(
            o.nodes(),
            [
                (NodeKind::Coordinator, 101),
                (NodeKind::Broker, 1),
                (NodeKind::Broker, 2)
            ]
        );
    }

    #[test]
    fn the_build_step_builds_the_broker_only_for_a_cluster_with_brokers() {
        assert_eq!(
            build_args(true),
            [
                "build",
                "--release",
                "-p",
                "tributary-coordinator",
                "-p",
                "tributary-cli",
                "-p",
                "tributary-broker"
            ]
        );
        assert_eq!(
            build_args(false),
            [
                "build",
                "--release",
                "-p",
                "tributary-coordinator",
                "-p",
                "tributary-cli"
            ]
        );
    }

    #[test]
    fn a_coordinator_config_says_what_its_flags_say() {
        let spec = node_spec(
            NodeKind::Coordinator,
            Path::new("/c"),
            Path::new("/bin/tc"),
            102,
            &coordinator_members(),
        );
        assert!(spec.detached);
        let config = spec.config.as_deref().unwrap();
        for line in [
            "node_id = 102\n",
            "data_dir = \"/c/coordinator-102/data\"\n",
            "listen = \"127.0.0.1:9192\"\n",
            "advertised_address = \"127.0.0.1:9192\"\n",
            "initial_members = \"101=127.0.0.1:9191,102=127.0.0.1:9192,103=127.0.0.1:9193\"\n",
            "metrics_listen = \"127.0.0.1:10192\"\n",
        ] {
            assert!(config.contains(line), "{line:?} in\n{config}");
        }
        let flags = flags(&spec);
        assert!(flags.ends_with(&["--config".into(), "/c/coordinator-102/node.toml".into()]));
    }

    #[test]
    fn a_broker_config_says_what_its_flags_say() {
        let spec = node_spec(
            NodeKind::Broker,
            Path::new("/c"),
            Path::new("/bin/tributary-broker"),
            2,
            &coordinator_members(),
        );
        assert!(spec.detached);
        assert_eq!(spec.name(), "broker-2");
        let config = spec.config.as_deref().unwrap();
        let lines = [
            "broker_id = 2\n",
            "data_dir = \"/c/broker-2/data\"\n",
            "listen = \"127.0.0.1:9093\"\n",
            "advertised_address = \"127.0.0.1:9093\"\n",
            "coordinators = \"127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193\"\n",
            "metrics_listen = \"127.0.0.1:10093\"\n",
        ];
        for line in lines {
            assert!(config.contains(line), "{line:?} in\n{config}");
        }
        // Nothing but those keys and comments: the broker refuses keys it does not know.
        let keys: Vec<&str> = config
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" = ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "broker_id",
                "data_dir",
                "listen",
                "advertised_address",
                "coordinators",
                "metrics_listen"
            ]
        );
        // The flags say the same (the harness's command line), then `--config` with the file.
        assert_eq!(
            flags(&spec),
            [
                "--broker-id",
                "2",
                "--data-dir",
                "/c/broker-2/data",
                "--listen",
                "127.0.0.1:9093",
                "--advertised-address",
                "127.0.0.1:9093",
                "--coordinators",
                "127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193",
                "--config",
                "/c/broker-2/node.toml",
            ]
        );
    }

    #[test]
    fn the_nodes_of_a_cluster_dir_are_its_node_directories() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "coordinator-103",
            "coordinator-101",
            "broker-1",
            "notes",
            "coordinator-7",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("coordinator-102"), "a file").unwrap();
        assert_eq!(
            existing_nodes(dir.path()).unwrap(),
            [
                (NodeKind::Coordinator, 101),
                (NodeKind::Coordinator, 103),
                (NodeKind::Broker, 1)
            ]
        );
        assert!(existing_nodes(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn brokers_can_be_added_to_a_cluster_but_not_removed_and_coordinators_stay() {
        use NodeKind::{Broker, Coordinator};
        let dir = Path::new("/c");
        let cluster = |coordinators: u64, brokers: u64| Options {
            dir: dir.into(),
            coordinators,
            brokers,
            clean: false,
            build: false,
            timeout: DEFAULT_UP_TIMEOUT,
        };
        let three = cluster(3, 3).nodes();
        assert!(check_same_cluster(dir, &[], &three).is_ok());
        assert!(check_same_cluster(dir, &three, &three).is_ok());
        // A cluster of coordinators only (or fewer brokers) gets brokers.
        assert!(check_same_cluster(dir, &cluster(3, 0).nodes(), &three).is_ok());
        assert!(check_same_cluster(dir, &cluster(3, 1).nodes(), &three).is_ok());
        // Fewer brokers, or other coordinators, are another cluster.
        let err = check_same_cluster(dir, &three, &cluster(3, 2).nodes()).unwrap_err();
        assert!(err.to_string().contains("broker-3"), "{err}");
        assert!(err.to_string().contains("--clean"), "{err}");
        assert!(check_same_cluster(dir, &three, &cluster(3, 0).nodes()).is_err());
        assert!(check_same_cluster(dir, &three, &cluster(1, 3).nodes()).is_err());
        assert!(
            check_same_cluster(dir, &[(Broker, 1)], &[(Coordinator, 101), (Broker, 1)]).is_err()
        );
    }

    fn view(controller: Option<(u64, u64)>, brokers: &[(u64, pb::BrokerState)]) -> MetadataView {
        MetadataView {
            coordinator: 101,
            offset: 7,
            controller,
            brokers: brokers.iter().map(|&(id, s)| (id, s as i32)).collect(),
        }
    }

    #[test]
    fn the_cluster_is_up_when_every_broker_runs_and_there_is_a_controller() {
        use pb::BrokerState::{Fenced, Running};
        let up = view(Some((102, 5)), &[(1, Running), (2, Running), (3, Running)]);
        assert!(up.not_ready(&[1, 2, 3]).is_empty());
        assert!(up.not_ready(&[]).is_empty());
        assert!(view(Some((101, 1)), &[]).not_ready(&[]).is_empty());

        let down = view(None, &[(1, Running), (3, Fenced)]);
        assert_eq!(
            down.not_ready(&[1, 2, 3]),
            [
                (Some(2), "not registered".to_owned()),
                (Some(3), "registered but FENCED".to_owned()),
                (None, "no controller elected".to_owned()),
            ]
        );
        assert_eq!(down.of_node(NodeKind::Broker, 1), "RUNNING");
        assert_eq!(down.of_node(NodeKind::Broker, 2), "not registered");
        assert_eq!(
            up.of_node(NodeKind::Coordinator, 102),
            "controller (epoch 5)"
        );
        assert_eq!(up.of_node(NodeKind::Coordinator, 101), "-");
        assert_eq!(
            up.summary(&[1, 2, 3]),
            "brokers 1, 2, 3 registered (RUNNING), controller: coordinator-102 (epoch 5)"
        );
        assert_eq!(down.summary(&[]), "no brokers, no controller elected");
        assert_eq!(
            state_name(pb::BrokerState::ControlledShutdown as i32),
            "CONTROLLED_SHUTDOWN"
        );
        assert_eq!(state_name(42), "state 42");
    }

    #[test]
    fn a_describe_cluster_answer_becomes_a_view() {
        let response = pb::DescribeClusterResponse {
            image: Some(pb::MetadataImage {
                offset: 12,
                controller: Some(pb::Controller {
                    node_id: 103,
                    epoch: 9,
                }),
                brokers: vec![
                    pb::Broker {
                        id: 1,
                        state: pb::BrokerState::Running as i32,
                        ..Default::default()
                    },
                    pb::Broker {
                        id: -1,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            coordinators: Vec::new(),
        };
        assert_eq!(
            MetadataView::from_response(102, response),
            Some(MetadataView {
                coordinator: 102,
                offset: 12,
                controller: Some((103, 9)),
                brokers: BTreeMap::from([(1, pb::BrokerState::Running as i32)]),
            })
        );
        assert_eq!(
            MetadataView::from_response(102, pb::DescribeClusterResponse::default()),
            None
        );
    }

    #[test]
    fn no_coordinator_answering_is_reported_with_each_ones_error() {
        // A port nothing listens on: the connection is refused at once.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut admin = Admin::connect(&[(101, addr)]).unwrap();
        let err = admin.describe(Duration::from_secs(5)).unwrap_err();
        assert!(
            err.starts_with("no coordinator answered DescribeCluster (coordinator-101: "),
            "{err}"
        );
    }
}
